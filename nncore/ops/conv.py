"""2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

Two implementations of the same maths:

* :func:`conv2d_forward` / :func:`conv2d_backward`: im2col, then ONE matrix
  product over the whole batch for the output and one for each gradient; the
  input gradient is a transposed convolution (the output gradient laid out on
  the input grid, correlated with the flipped kernel), so no per-offset sums;
* :func:`conv2d_direct_forward` / :func:`conv2d_direct_backward`: a readable
  direct sum over kernel offsets, the teaching version and test oracle.

Shapes: ``x (n, c, h, w)``, ``kernel (f, c, kh, kw)``, ``bias (f,)``,
``z (n, f, oh, ow)``; ``padding`` is ``((top, bottom), (left, right))``.
"""

from array_api_compat import device

from backends.geometry import kernel_offsets, spread

from .._array import namespace
from ..activations import leaky_relu, leaky_relu_derivative
from ._dispatch import overridable
from .im2col import im2col
from .padding import conv_output_shape, pad2d, unpad2d

#: Activations that :func:`conv2d_act_forward` applies itself (``lrelu`` needs ``0 < slope < 1``).
FUSED_ACTIVATIONS = ("identity", "relu", "lrelu")


def conv2d_forward(x, kernel, bias, stride, padding):
    """Return ``z = x ⋆ kernel + bias`` and the columns that the backward pass needs."""
    xp = namespace(x)
    out_hw = conv_output_shape(x.shape[2:], kernel.shape[2:], stride, padding)
    col = im2col(pad2d(x, padding), kernel.shape[2:], stride, out_hw)  # (n, c, kh, kw, oh, ow)
    z = xp.tensordot(col, kernel, axes=([1, 2, 3], [1, 2, 3]))  # (n, oh, ow, f)
    return xp.permute_dims(z + bias, (0, 3, 1, 2)), col


def conv2d_backward(dz, col, kernel, input_hw, stride, padding, need_input_grad=True):
    """Gradients ``(dx, dkernel, dbias)`` from ``dz = dL/dz`` and the forward columns.

    ``dx`` is ``None`` when ``need_input_grad`` is false (the first layer).
    """
    xp = namespace(dz)
    dkernel = xp.tensordot(dz, col, axes=([0, 2, 3], [0, 4, 5]))  # (f, c, kh, kw)
    dx = _input_grad(dz, kernel, input_hw, stride, padding) if need_input_grad else None
    return dx, dkernel, _bias_grad(dz)


def _bias_grad(dz):
    """``dL/dbias``: ``dz`` summed over samples and positions, one contiguous axis at a time.

    (``sum(dz, axis=(0, 2, 3))`` reduces over non-adjacent axes, which CuPy does slowly.)
    """
    xp = namespace(dz)
    n, f = dz.shape[:2]
    return xp.sum(xp.sum(xp.reshape(dz, (n, f, -1)), axis=2), axis=0)


def _input_grad(dz, kernel, input_hw, stride, padding):
    """``dL/dx`` as a transposed convolution: ``dz`` laid out on the input grid, correlated with
    the flipped kernel, whose input and output channels swap.

    Input row ``r`` met output row ``y`` through kernel row ``i`` when ``r = y*s + i - top``.
    On a canvas of ``h + kh - 1`` rows holding ``dz[y]`` at row ``y*s + kh - 1 - top``,
    ``dx[r] = sum_i' canvas[r + i'] * kernel[kh - 1 - i']``: a stride-1 correlation.
    Rows of ``dz`` that land outside the canvas met only padding.
    """
    xp = namespace(dz)
    n, f, oh, ow = dz.shape
    kh, kw = kernel.shape[2:]
    (h, w), (sh, sw), ((top, _), (left, _)) = input_hw, stride, padding
    from_rows, to_rows = spread(oh, sh, kh - 1 - top, h + kh - 1)
    from_cols, to_cols = spread(ow, sw, kw - 1 - left, w + kw - 1)
    canvas = xp.zeros((n, f, h + kh - 1, w + kw - 1), dtype=dz.dtype, device=device(dz))
    canvas[:, :, to_rows, to_cols] = dz[:, :, from_rows, from_cols]
    col = im2col(canvas, (kh, kw), (1, 1), (h, w))  # (n, f, kh, kw, h, w)
    dx = xp.tensordot(col, xp.flip(kernel, axis=(2, 3)), axes=([1, 2, 3], [0, 2, 3]))  # (n, h, w, c)
    return xp.permute_dims(dx, (0, 3, 1, 2))


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


@overridable("conv2d_act_forward", arrays=3)
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


@overridable("conv2d_act_backward", arrays=(0, 2))
def conv2d_act_backward(delta, cache, kernel, stride, padding, act="identity", slope=0.0, need_input_grad=True):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`conv2d_act_forward` from ``delta = dL/dout``.

    ``cache`` must come from :func:`conv2d_act_forward` with the same ``act``,
    and from the same implementation (a fast path's cache goes to its own
    backward pass, chosen like the forward one); ``dx`` is ``None`` when
    ``need_input_grad`` is false.
    """
    _check_act(act, slope)
    if not isinstance(cache, tuple):
        raise TypeError(
            f"conv2d_act_backward got a {type(cache).__name__} cache from a backend fast path; "
            "run the backward pass with fast paths as they were for the forward pass"
        )
    shape, col, out = cache
    dz = _activation_grad(act, slope, out, delta)
    return conv2d_backward(dz, col, kernel, shape[2:], stride, padding, need_input_grad)


def conv2d_direct_forward(x, kernel, bias, stride, padding):
    """Readable convolution: ``z[n, f] = bias[f] + sum_{c,i,j} kernel[f, c, i, j] * x[n, c, i + s*y, j + s*x]``."""
    xp = namespace(x)
    f = kernel.shape[0]
    out_hw = conv_output_shape(x.shape[2:], kernel.shape[2:], stride, padding)
    xpad = pad2d(x, padding)
    z = xp.zeros((x.shape[0], f, *out_hw), dtype=x.dtype, device=device(x))
    for i, j, rows, cols in kernel_offsets(kernel.shape[2:], stride, out_hw):
        # (n, c, oh, ow) · (f, c) over c -> (n, oh, ow, f)
        contribution = xp.tensordot(xpad[:, :, rows, cols], kernel[:, :, i, j], axes=([1], [1]))
        z = z + xp.permute_dims(contribution, (0, 3, 1, 2))
    return z + xp.reshape(bias, (f, 1, 1))


def conv2d_direct_backward(dz, x, kernel, stride, padding):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`conv2d_direct_forward`."""
    xp = namespace(dz)
    xpad = pad2d(x, padding)
    dxpad = xp.zeros(xpad.shape, dtype=x.dtype, device=device(x))
    dkernel = xp.zeros(kernel.shape, dtype=kernel.dtype, device=device(kernel))
    for i, j, rows, cols in kernel_offsets(kernel.shape[2:], stride, dz.shape[2:]):
        dkernel[:, :, i, j] = xp.tensordot(dz, xpad[:, :, rows, cols], axes=([0, 2, 3], [0, 2, 3]))
        back = xp.tensordot(dz, kernel[:, :, i, j], axes=([1], [0]))  # (n, oh, ow, c)
        dxpad[:, :, rows, cols] = dxpad[:, :, rows, cols] + xp.permute_dims(back, (0, 3, 1, 2))
    return unpad2d(dxpad, padding), dkernel, _bias_grad(dz)
