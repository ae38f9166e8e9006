"""Cost functions as in the course: ``Cost(target)`` returns ``func(X) -> scalar``.

``X`` and ``target`` have shape ``(n, k)``; costs are averaged over the ``n``
samples. The returned function carries its analytic gradient with respect to
``X`` as ``func.gradient(X)``. Probabilities are clipped to ``[eps, 1 - eps]``
(``eps`` the dtype's machine epsilon, as Keras does) so that a saturated output
gives a large but finite cost.
"""

from . import activations
from ._array import namespace


def _clip(xp, X):
    eps = xp.finfo(X.dtype).eps
    return xp.clip(X, eps, 1 - eps)


def CostOLS(target):
    """Mean over samples of the summed squared error, ``sum((t - X)**2) / n``."""
    n = target.shape[0]

    def func(X):
        return namespace(X).sum((target - X) ** 2) / n

    func.gradient = lambda X: 2 * (X - target) / n
    return func


def CostLogReg(target):
    """Binary cross entropy, ``-sum(t log X + (1 - t) log(1 - X)) / n``."""
    n = target.shape[0]

    def func(X):
        xp = namespace(X)
        X = _clip(xp, X)
        return -xp.sum(target * xp.log(X) + (1 - target) * xp.log(1 - X)) / n

    def gradient(X):
        X = _clip(namespace(X), X)
        return (X - target) / (X * (1 - X)) / n

    func.gradient = gradient
    return func


def CostCrossEntropy(target):
    """Categorical cross entropy, ``-sum(t log X) / n``."""
    n = target.shape[0]

    def func(X):
        xp = namespace(X)
        return -xp.sum(target * xp.log(_clip(xp, X))) / n

    func.gradient = lambda X: -target / _clip(namespace(X), X) / n
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
