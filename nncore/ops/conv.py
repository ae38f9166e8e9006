"""2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

Two implementations of the same maths:

* :func:`conv2d_forward` / :func:`conv2d_backward`: the columns in one gather
  (:mod:`nncore.ops.gather`), then ONE matrix product over the whole batch for
  the output and one for each gradient; the input gradient is the adjoint
  gather (every input pixel sums the column entries that read it). A handful of
  array operations per call, whatever the kernel size: what a GPU needs;
* :func:`conv2d_direct_forward` / :func:`conv2d_direct_backward`: a readable
  direct sum over kernel offsets, the teaching version and test oracle.

Shapes: ``x (n, c, h, w)``, ``kernel (f, c, kh, kw)``, ``bias (f,)``,
``z (n, f, oh, ow)``; ``padding`` is ``((top, bottom), (left, right))``.
"""

from array_api_compat import device

from backends.geometry import kernel_offsets

from .._array import namespace
from ..activations import leaky_relu_backprop_sign, leaky_relu_with_sign
from ._dispatch import overridable
from .gather import gather_columns, scatter_columns
from .padding import conv_output_shape, pad2d, unpad2d

#: Activations that :func:`conv2d_act_forward` applies itself (``lrelu`` needs ``0 < slope < 1``).
FUSED_ACTIVATIONS = ("identity", "relu", "lrelu")


def conv2d_forward(x, kernel, bias, stride, padding):
    """Return ``z = x ⋆ kernel + bias`` ``(n, f, oh, ow)`` and the columns that the backward pass needs."""
    xp = namespace(x)
    n, f = x.shape[0], kernel.shape[0]
    out_hw = conv_output_shape(x.shape[2:], kernel.shape[2:], stride, padding)
    cols = gather_columns(x, kernel.shape[2:], stride, padding)  # (n, c*kh*kw, oh*ow)
    z = xp.matmul(xp.reshape(kernel, (f, -1)), cols) + xp.reshape(bias, (f, 1))  # (n, f, oh*ow)
    return xp.reshape(z, (n, f, *out_hw)), cols


def conv2d_backward(dz, cols, kernel, input_hw, stride, padding, need_input_grad=True):
    """Gradients ``(dx, dkernel, dbias)`` from ``dz = dL/dz`` and the forward columns.

    ``dx`` is ``None`` when ``need_input_grad`` is false (the first layer).
    """
    xp = namespace(dz)
    n, f = dz.shape[:2]
    dz = xp.reshape(dz, (n, f, -1))  # (n, f, oh*ow)
    dkernel = xp.reshape(xp.tensordot(dz, cols, axes=([0, 2], [0, 2])), kernel.shape)
    dbias = _bias_grad(dz)
    if not need_input_grad:
        return None, dkernel, dbias
    dcols = xp.matmul(xp.matrix_transpose(xp.reshape(kernel, (f, -1))), dz)  # (n, c*kh*kw, oh*ow)
    return scatter_columns(dcols, (kernel.shape[1], *input_hw), kernel.shape[2:], stride, padding), dkernel, dbias


def _bias_grad(dz):
    """``dL/dbias`` from ``dz`` ``(n, f, oh*ow)``: summed over positions, then samples.

    (Two reductions over adjacent axes: CuPy reduces slowly over non-adjacent ones, ``axis=(0, 2)``.)
    """
    xp = namespace(dz)
    return xp.sum(xp.sum(dz, axis=2), axis=0)


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
    if act == "identity":
        out, sign = z, None
    else:
        out, sign = leaky_relu_with_sign(z, slope if act == "lrelu" else 0)
    return out, ((tuple(x.shape), col, sign) if training else None)


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
    shape, col, sign = cache
    dz = delta if act == "identity" else leaky_relu_backprop_sign(sign, delta, slope if act == "lrelu" else 0)
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
    return unpad2d(dxpad, padding), dkernel, _bias_grad(xp.reshape(dz, (*dz.shape[:2], -1)))
