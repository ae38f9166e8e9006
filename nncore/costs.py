"""Cost functions as in the course: ``Cost(target)`` returns ``func(X) -> scalar``.

``X`` and ``target`` have shape ``(n, k)``; costs are averaged over the ``n``
samples. The returned function carries its analytic gradient with respect to
``X`` as ``func.gradient(X)``. Integer and bool arrays (the notes call the
costs on integer arrays) are computed in float64, as NumPy's arithmetic
would; a float ``X`` keeps its dtype. Probabilities are clipped away from 0
(and, for the binary cross entropy, from 1) by ``eps``, the dtype's machine
epsilon, as Keras does, so that a saturated output gives a large but finite
cost.
"""

from . import activations
from ._array import namespace


def _operands(target, X):
    """``(xp, t, X)``: integer or bool arrays as float64, an integer target in ``X``'s float dtype."""
    xp = namespace(X)
    if xp.isdtype(X.dtype, ("bool", "integral")):
        X = xp.astype(X, xp.float64)
    if xp.isdtype(target.dtype, ("bool", "integral")):
        target = xp.astype(target, X.dtype)
    return xp, target, X


def _clip(xp, X, upper=True):
    eps = xp.finfo(X.dtype).eps
    return xp.clip(X, eps, 1 - eps if upper else None)


def CostOLS(target):
    """Mean over samples of the summed squared error, ``sum((t - X)**2) / n``."""
    n = target.shape[0]

    def func(X):
        xp, t, X = _operands(target, X)
        return xp.sum((t - X) ** 2) / n

    def gradient(X):
        _, t, X = _operands(target, X)
        return 2 * (X - t) / n

    func.gradient = gradient
    return func


def CostLogReg(target):
    """Binary cross entropy, ``-sum(t log X + (1 - t) log(1 - X)) / n``."""
    n = target.shape[0]

    def func(X):
        xp, t, X = _operands(target, X)
        X = _clip(xp, X)
        return -xp.sum(t * xp.log(X) + (1 - t) * xp.log(1 - X)) / n

    def gradient(X):
        xp, t, X = _operands(target, X)
        X = _clip(xp, X)
        return (X - t) / (X * (1 - X)) / n

    func.gradient = gradient
    return func


def CostCrossEntropy(target):
    """Categorical cross entropy, ``-sum(t log X) / n`` (``X`` clipped from below only: no log(1 - X) here)."""
    n = target.shape[0]

    def func(X):
        xp, t, X = _operands(target, X)
        return -xp.sum(t * xp.log(_clip(xp, X, upper=False))) / n

    def gradient(X):
        xp, t, X = _operands(target, X)
        return -t / _clip(xp, X, upper=False) / n

    func.gradient = gradient
    return func


COSTS = {f.__name__: f for f in (CostOLS, CostLogReg, CostCrossEntropy)}


def output_delta(cost_func, output_func, target, z, a):
    """``dC/dz`` at the output layer, where ``a = output_func(z)``.

    Softmax with cross entropy and sigmoid with binary cross entropy use the
    combined closed forms, which stay exact where ``a`` saturates.
    """
    n = target.shape[0]
    if output_func is activations.softmax and cost_func is CostCrossEntropy:
        xp = namespace(a)
        # Equals a - t when each target row sums to one.
        return (a * xp.sum(target, axis=-1, keepdims=True) - target) / n
    if output_func is activations.sigmoid and cost_func is CostLogReg:
        return (a - target) / n
    return activations.backprop(output_func, z, a, cost_func(target).gradient(a))
