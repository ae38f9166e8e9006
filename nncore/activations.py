"""Activation functions and their analytic derivatives.

Each activation maps an array ``z`` of any shape to an array of the same shape
and dtype. ``derivate(func)`` returns the elementwise derivative ``d func / dz``
as a function of ``z``; no automatic differentiation is involved. All are
stable for large ``|z|``: no overflow, no warnings, no NaN.
"""

from ._array import namespace

LRELU_SLOPE = 1e-3  # the course's leaky slope (10e-4)


def identity(X):
    """``f(z) = z`` (regression outputs)."""
    return X


def sigmoid(X):
    """Logistic function ``1 / (1 + exp(-z))``, computed without overflow."""
    xp = namespace(X)
    # exp(-|z|) never overflows; the two branches are the same function.
    e = xp.exp(-xp.abs(X))
    return xp.where(X >= 0, 1 / (1 + e), e / (1 + e))


def tanh(X):
    """Hyperbolic tangent."""
    return namespace(X).tanh(X)


def softmax(X):
    """Softmax over the last axis (rows of ``(n, k)`` sum to one)."""
    xp = namespace(X)
    e = xp.exp(X - xp.max(X, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def leaky_relu(X, slope):
    """``z`` where ``z > 0``, else ``slope * z``; ``slope=0`` gives exact zeros (also for ``-inf``).

    The one formula behind :func:`RELU` and :func:`LRELU`, and behind the
    activations that the convolution op applies itself (``nncore.ops``).
    """
    return leaky_relu_with_sign(X, slope)[0]


def leaky_relu_derivative(X, slope):
    """``d leaky_relu / dz``: 1 where ``z > 0``, else ``slope``.

    For ``0 <= slope``, ``z > 0`` exactly where ``leaky_relu(z) > 0``, so ``X`` may
    also be the activation's output.
    """
    xp = namespace(X)
    return xp.where(X > 0, xp.ones_like(X), xp.full_like(X, slope))


def leaky_relu_backprop(X, grad, slope):
    """``grad * leaky_relu_derivative(X, slope)`` in one pass: ``grad`` where ``X > 0``, else ``slope * grad``.

    ``X`` may be the input or (for ``slope >= 0``) the output of :func:`leaky_relu`.
    """
    return leaky_relu_backprop_sign(X > 0, grad, slope)


def leaky_relu_with_sign(X, slope):
    """``(leaky_relu(X, slope), X > 0)``: the sign mask is what the backward pass needs (one operation there)."""
    xp = namespace(X)
    positive = X > 0
    return xp.where(positive, X, slope * X if slope else 0.0), positive


def leaky_relu_backprop_sign(positive, grad, slope):
    """``dL/dz`` of :func:`leaky_relu` from its sign mask ``z > 0`` and ``grad = dL/da``."""
    return namespace(grad).where(positive, grad, slope * grad if slope else 0.0)


def RELU(X):
    """Rectified linear unit ``max(z, 0)``."""
    return leaky_relu(X, 0)


def LRELU(X):
    """Leaky ReLU with slope ``1e-3`` for negative ``z`` (as in the course)."""
    return leaky_relu(X, LRELU_SLOPE)


def _d_identity(X):
    return namespace(X).ones_like(X)


def _d_sigmoid(X):
    s = sigmoid(X)
    return s * (1 - s)


def _d_tanh(X):
    t = namespace(X).tanh(X)
    return 1 - t * t


def _d_softmax(X):
    # Diagonal of the Jacobian; layers backpropagate through the full Jacobian.
    s = softmax(X)
    return s * (1 - s)


def _d_relu(X):
    return leaky_relu_derivative(X, 0)


def _d_lrelu(X):
    return leaky_relu_derivative(X, LRELU_SLOPE)


_DERIVATIVES = {
    identity: _d_identity,
    sigmoid: _d_sigmoid,
    tanh: _d_tanh,
    softmax: _d_softmax,
    RELU: _d_relu,
    LRELU: _d_lrelu,
}

ACTIVATIONS = {f.__name__.lower(): f for f in _DERIVATIVES}
_LEAKY_SLOPES = {RELU: 0.0, LRELU: LRELU_SLOPE}


def derivate(func):
    """Return the analytic elementwise derivative of activation ``func``.

    For ``softmax`` this is the diagonal of its Jacobian, ``s * (1 - s)``.
    A user-defined activation may carry its own derivative as ``func.derivative``.

    Raises
    ------
    TypeError
        ``func`` is not a known activation and has no ``derivative`` attribute.
    """
    if func in _DERIVATIVES:
        return _DERIVATIVES[func]
    if callable(getattr(func, "derivative", None)):
        return func.derivative
    raise TypeError(
        f"no analytic derivative for activation {getattr(func, '__name__', func)!r}; use one of "
        f"{sorted(ACTIVATIONS)} or give the function a `derivative` attribute"
    )


def resolve(func, what="activation"):
    """Turn a name such as ``"relu"`` or a callable into an activation function.

    Raises ``ValueError`` for an unknown name and ``TypeError`` for a callable
    without an analytic derivative.
    """
    if isinstance(func, str):
        try:
            return ACTIVATIONS[func.lower()]
        except KeyError:
            raise ValueError(f"unknown {what} {func!r}; valid names are {sorted(ACTIVATIONS)}") from None
    if not callable(func):
        raise TypeError(f"{what} must be a function or a name, got {type(func).__name__}")
    derivate(func)  # fail now, not in the middle of training
    return func


def forward(func, z):
    """``(func(z), saved)``, where ``saved`` is what :func:`backprop_saved` needs.

    For the ReLU family that is only the sign mask of ``z`` (one operation fewer
    backward, and a boolean array instead of two float ones); otherwise ``(z, a)``.
    """
    if func in _LEAKY_SLOPES:
        return leaky_relu_with_sign(z, _LEAKY_SLOPES[func])
    a = func(z)
    return a, (z, a)


def backprop_saved(func, saved, grad):
    """Vector-Jacobian product ``dL/dz`` from ``grad = dL/da`` and :func:`forward`'s ``saved``."""
    if func in _LEAKY_SLOPES:
        return leaky_relu_backprop_sign(saved, grad, _LEAKY_SLOPES[func])
    return backprop(func, *saved, grad)


def backprop(func, z, a, grad):
    """Vector-Jacobian product: ``dL/dz`` from ``dL/da`` for ``a = func(z)``."""
    if func is softmax:
        xp = namespace(a)
        return a * (grad - xp.sum(grad * a, axis=-1, keepdims=True))
    if func is identity:
        return grad
    if func in _LEAKY_SLOPES:
        return leaky_relu_backprop(a, grad, _LEAKY_SLOPES[func])
    return grad * derivate(func)(z)
