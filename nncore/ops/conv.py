"""2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

Two implementations of the same maths:

* :func:`conv2d_forward` / :func:`conv2d_backward`: im2col, then one matrix
  product forward and one per gradient backward (the fast path);
* :func:`conv2d_direct_forward` / :func:`conv2d_direct_backward`: a readable
  direct sum over kernel offsets, the teaching version and test oracle.

Shapes: ``x (n, c, h, w)``, ``kernel (f, c, kh, kw)``, ``bias (f,)``,
``z (n, f, oh, ow)``; ``padding`` is ``((top, bottom), (left, right))``.
"""

from array_api_compat import device

from .._array import namespace
from ..activations import leaky_relu, leaky_relu_derivative
from ._dispatch import overridable
from .im2col import _window, col2im, im2col
from .padding import conv_output_shape, pad2d, unpad2d

#: Activations that :func:`conv2d_act_forward` applies itself (``lrelu`` needs ``0 < slope < 1``).
FUSED_ACTIVATIONS = ("identity", "relu", "lrelu")


def conv2d_forward(x, kernel, bias, stride, padding):
    """Return ``z = x ⋆ kernel + bias`` and the columns that the backward pass needs."""
    xp = namespace(x)
    n = x.shape[0]
    f, c, kh, kw = kernel.shape
    out_hw = conv_output_shape(x.shape[2:], (kh, kw), stride, padding)
    col = im2col(pad2d(x, padding), (kh, kw), stride, out_hw)
    cols = xp.reshape(col, (n, c * kh * kw, out_hw[0] * out_hw[1]))
    z = xp.matmul(xp.reshape(kernel, (f, c * kh * kw)), cols)  # (n, f, oh*ow)
    return xp.reshape(z, (n, f, *out_hw)) + xp.reshape(bias, (f, 1, 1)), col


def conv2d_backward(dz, col, kernel, input_hw, stride, padding, need_input_grad=True):
    """Gradients ``(dx, dkernel, dbias)`` from ``dz = dL/dz`` and the forward columns.

    ``dx`` is ``None`` when ``need_input_grad`` is false (the first layer).
    """
    xp = namespace(dz)
    n, f, oh, ow = dz.shape
    _, c, kh, kw = kernel.shape
    dz3 = xp.reshape(dz, (n, f, oh * ow))
    cols = xp.reshape(col, (n, c * kh * kw, oh * ow))
    dbias = xp.sum(dz, axis=(0, 2, 3))
    dkernel = xp.sum(xp.matmul(dz3, xp.matrix_transpose(cols)), axis=0)
    dkernel = xp.reshape(dkernel, kernel.shape)
    if not need_input_grad:
        return None, dkernel, dbias
    weights = xp.reshape(kernel, (f, c * kh * kw))
    dcols = xp.matmul(xp.matrix_transpose(weights), dz3)  # (n, c*kh*kw, oh*ow)
    padded_hw = tuple(i + before + after for i, (before, after) in zip(input_hw, padding))
    dx = col2im(xp.reshape(dcols, col.shape), padded_hw, stride)
    return unpad2d(dx, padding), dkernel, dbias


def _activate(act, slope, z):
    """``act(z)``: RELU is the leaky ReLU of slope 0."""
    return z if act == "identity" else leaky_relu(z, slope if act == "lrelu" else 0)


def _activation_grad(act, slope, out, delta):
    """``dL/dz`` from ``dL/dout``, taken from the output (``z > 0`` exactly where ``out > 0``)."""
    return delta if act == "identity" else delta * leaky_relu_derivative(out, slope if act == "lrelu" else 0)


def _check_act(act, slope):
    if act not in FUSED_ACTIVATIONS:
        raise ValueError(f"act must be one of {FUSED_ACTIVATIONS}, got {act!r}")
    if act == "lrelu" and not 0 < slope < 1:
        raise ValueError(f"lrelu needs a slope between 0 and 1, got {slope!r}")


@overridable("conv2d_act_forward", n_arrays=3)
def conv2d_act_forward(x, kernel, bias, stride, padding, act="identity", slope=0.0, training=False):
    """A convolution layer's forward pass: ``out = act(x ⋆ kernel + bias)``.

    ``act`` is ``"identity"``, ``"relu"`` or ``"lrelu"`` (negative slope
    ``slope``), the activations a backend may fuse into the convolution.
    Returns ``(out, cache)``; ``cache`` (``None`` unless ``training``) is
    opaque: hand it to :func:`conv2d_act_backward`. The generic version is
    :func:`conv2d_forward` followed by the activation; a fast path (NumPy) may
    keep other layouts inside the cache and recompute columns in chunks.
    """
    _check_act(act, slope)
    z, col = conv2d_forward(x, kernel, bias, stride, padding)
    out = _activate(act, slope, z)
    return out, ((tuple(x.shape), col, out) if training else None)


def conv2d_act_backward(delta, cache, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`conv2d_act_forward` from ``delta = dL/dout``.

    ``cache`` must come from :func:`conv2d_act_forward` with the same ``act``;
    ``dx`` is ``None`` when ``need_input_grad`` is false. A cache made by a
    fast path carries its own ``backward`` (the matching fast backward pass).
    """
    _check_act(act, slope)
    if not isinstance(cache, tuple):
        return cache.backward(delta, kernel, stride, padding, act, slope, need_input_grad)
    return _conv2d_act_backward(delta, cache, kernel, stride, padding, act, slope, need_input_grad)


def _conv2d_act_backward(delta, cache, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
    shape, col, out = cache
    dz = _activation_grad(act, slope, out, delta)
    return conv2d_backward(dz, col, kernel, shape[2:], stride, padding, need_input_grad)


conv2d_act_backward.generic = _conv2d_act_backward


def _taps(kernel_hw, stride, out_hw):
    """Each kernel offset ``(i, j)`` with the input slices it meets."""
    (kh, kw), (sh, sw), (oh, ow) = kernel_hw, stride, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(None), _window(i, sh, oh), _window(j, sw, ow))


def conv2d_direct_forward(x, kernel, bias, stride, padding):
    """Readable convolution: ``z[n, f] = bias[f] + sum_{c,i,j} kernel[f, c, i, j] * x[n, c, i + s*y, j + s*x]``."""
    xp = namespace(x)
    f = kernel.shape[0]
    out_hw = conv_output_shape(x.shape[2:], kernel.shape[2:], stride, padding)
    xpad = pad2d(x, padding)
    z = xp.zeros((x.shape[0], f, *out_hw), dtype=x.dtype, device=device(x))
    for i, j, under in _taps(kernel.shape[2:], stride, out_hw):
        # (n, c, oh, ow) · (f, c) over c -> (n, oh, ow, f)
        contribution = xp.tensordot(xpad[under], kernel[:, :, i, j], axes=([1], [1]))
        z = z + xp.permute_dims(contribution, (0, 3, 1, 2))
    return z + xp.reshape(bias, (f, 1, 1))


def conv2d_direct_backward(dz, x, kernel, stride, padding):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`conv2d_direct_forward`."""
    xp = namespace(dz)
    xpad = pad2d(x, padding)
    dxpad = xp.zeros(xpad.shape, dtype=x.dtype, device=device(x))
    dkernel = xp.zeros(kernel.shape, dtype=kernel.dtype, device=device(kernel))
    for i, j, under in _taps(kernel.shape[2:], stride, dz.shape[2:]):
        dkernel[:, :, i, j] = xp.tensordot(dz, xpad[under], axes=([0, 2, 3], [0, 2, 3]))
        back = xp.tensordot(dz, kernel[:, :, i, j], axes=([1], [0]))  # (n, oh, ow, c)
        dxpad[under] = dxpad[under] + xp.permute_dims(back, (0, 3, 1, 2))
    return unpad2d(dxpad, padding), dkernel, xp.sum(dz, axis=(0, 2, 3))
