"""Convolution, im2col/col2im and pooling against oracles written out in this file.

The oracles are plain nested Python loops over (n, f, c, oh, ow, kh, kw),
scipy.signal.correlate2d, and central finite differences in float64; none of
them calls nncore.
"""

import math

import numpy as np
import pytest
import scipy.signal

from backends import get_backend, to_numpy
from nncore import ops
from nncore.activations import LRELU, RELU, identity, tanh
from nncore.layers import Convolution2DLayer, Pooling2DLayer
from nncore.schedulers import Constant

NUMPY = get_backend("numpy")
# NumPy arrays may take a backend fast path; array_api_strict on "device1" always runs the
# generic, standard-only code (and fails on any stray host round trip).
NAMESPACES = ["numpy", "strict"]
TOL = dict(rtol=1e-10, atol=1e-12)


def backend_for(ns):
    return NUMPY if ns == "numpy" else get_backend("array_api_strict", "device1")


def assert_on(be, got, want, **tol):
    """``got`` lives on ``be`` (namespace and device) and equals ``want``."""
    if be.name == "numpy":
        assert isinstance(got, np.ndarray)
    else:
        assert type(got).__module__.startswith("array_api_strict") and got.device == be.device
    np.testing.assert_allclose(to_numpy(got), want, **(tol or TOL))

# --------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------


def tf_same_pads(size, kernel, stride):
    """TensorFlow's "SAME" rule: output ceil(i/s); total pad max((o-1)s+k-i, 0); odd one bottom/right."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def oracle_pads(pad, hw, khw, stride):
    if pad == "same":
        return tuple(tf_same_pads(i, k, s) for i, k, s in zip(hw, khw, stride))
    if pad == "valid":
        return (0, 0), (0, 0)
    if isinstance(pad, int):
        return (pad, pad), (pad, pad)
    ph, pw = pad
    return (ph, ph), (pw, pw)


def conv_loops(x, k, b, stride, pads):
    """Cross-correlation by explicit loops over n, f, oh, ow, c, kh, kw (zero padding)."""
    (top, bottom), (left, right) = pads
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    sh, sw = stride
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kw) // sw + 1
    xl, kl, bl = x.tolist(), k.tolist(), list(b)
    z = np.zeros((n, f, oh, ow))
    for a in range(n):
        for o in range(f):
            for y in range(oh):
                for q in range(ow):
                    acc = float(bl[o])
                    for ch in range(c):
                        for i in range(kh):
                            r = y * sh + i - top
                            if not 0 <= r < h:
                                continue
                            for j in range(kw):
                                col = q * sw + j - left
                                if 0 <= col < w:
                                    acc += xl[a][ch][r][col] * kl[o][ch][i][j]
                    z[a, o, y, q] = acc
    return z


def conv_backward_loops(dz, x, k, stride, pads):
    """Gradients (dx, dk, db) of ``sum(dz * conv(x, k, b))`` by the same explicit loops."""
    (top, _), (left, _) = pads
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    sh, sw = stride
    _, _, oh, ow = dz.shape
    xl, kl, dzl = x.tolist(), k.tolist(), dz.tolist()
    dx = np.zeros(x.shape)
    dk = np.zeros(k.shape)
    db = np.zeros(f)
    for a in range(n):
        for o in range(f):
            for y in range(oh):
                for q in range(ow):
                    g = dzl[a][o][y][q]
                    db[o] += g
                    for ch in range(c):
                        for i in range(kh):
                            r = y * sh + i - top
                            if not 0 <= r < h:
                                continue
                            for j in range(kw):
                                col = q * sw + j - left
                                if 0 <= col < w:
                                    dx[a, ch, r, col] += g * kl[o][ch][i][j]
                                    dk[o, ch, i, j] += g * xl[a][ch][r][col]
    return dx, dk, db


def conv_scipy(x, k, b, stride, pads):
    """Second oracle: scipy's valid cross-correlation of the padded image, subsampled by the stride."""
    xpad = np.pad(x, ((0, 0), (0, 0), *pads))
    n, c = x.shape[:2]
    f = k.shape[0]
    out = []
    for a in range(n):
        maps = []
        for o in range(f):
            acc = sum(scipy.signal.correlate2d(xpad[a, ch], k[o, ch], mode="valid") for ch in range(c))
            maps.append(acc[:: stride[0], :: stride[1]] + b[o])
        out.append(maps)
    return np.array(out)


def pool_loops(x, khw, stride, pooling):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = khw, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for a in range(n):
        for ch in range(c):
            for r in range(oh):
                for q in range(ow):
                    window = [x[a, ch, r * sh + i, q * sw + j] for i in range(kh) for j in range(kw)]
                    y[a, ch, r, q] = max(window) if pooling == "max" else sum(window) / (kh * kw)
    return y


def pool_backward_loops(x, dy, khw, stride, pooling):
    """Max: each gradient to the FIRST maximal element in row-major window order; windows add up."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = khw, stride
    _, _, oh, ow = dy.shape
    dx = np.zeros(x.shape)
    for a in range(n):
        for ch in range(c):
            for r in range(oh):
                for q in range(ow):
                    g = dy[a, ch, r, q]
                    cells = [(r * sh + i, q * sw + j) for i in range(kh) for j in range(kw)]
                    if pooling == "average":
                        for rr, cc in cells:
                            dx[a, ch, rr, cc] += g / (kh * kw)
                    else:
                        best = max(x[a, ch, rr, cc] for rr, cc in cells)
                        rr, cc = next(cell for cell in cells if x[a, ch, cell[0], cell[1]] == best)
                        dx[a, ch, rr, cc] += g
    return dx


def sample_indices(rng, size, at_most=30):
    return range(size) if size <= at_most else rng.choice(size, at_most, replace=False)


# --------------------------------------------------------------------------------------
# Convolution cases: every kernel with every stride, each once with "same" and once with
# another pad form (cycled), channels 1-4, batch 1-3, odd and even image sizes.
# --------------------------------------------------------------------------------------

KERNELS = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (7, 1), (1, 3), (3, 2)]
STRIDES = [(1, 1), (2, 2), (2, 3), (3, 1)]
OTHER_PADS = ["valid", 1, (2, 1), 0, (0, 2), 2, (1, 0)]


def _conv_cases():
    cases = []
    index = 0
    for kernel in KERNELS:
        for stride in STRIDES:
            for pad in ("same", OTHER_PADS[index % len(OTHER_PADS)]):
                n = 1 + index % 3
                c = 1 + index % 4
                f = 1 + (index // 4) % 4
                hw = (7 + index % 3, 6 + (index // 3) % 3)
                name = f"k{kernel}-s{stride}-p{pad}-n{n}c{c}f{f}-{hw}"
                cases.append(pytest.param((n, c, f, hw, kernel, stride, pad), id=name))
                index += 1
    return cases


CONV_CASES = _conv_cases()
# A sample of the cases for the (slower) finite-difference checks.
CONV_FD_CASES = CONV_CASES[::5]


def make_conv(rng, case, dtype=np.float64):
    n, c, f, hw, kernel, stride, pad = case
    x = rng.normal(size=(n, c, *hw)).astype(dtype)
    k = rng.normal(size=(f, c, *kernel)).astype(dtype)
    b = rng.normal(size=f).astype(dtype)
    pads = oracle_pads(pad, hw, kernel, stride)
    return x, k, b, stride, pads


@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [
        (5, 3, 1, (1, 1)),
        (5, 4, 1, (1, 2)),
        (6, 3, 2, (0, 1)),
        (7, 3, 2, (1, 1)),
        (7, 1, 3, (0, 0)),
        (4, 5, 1, (2, 2)),
        (8, 4, 3, (1, 1)),
        (5, 2, 2, (0, 1)),
        (28, 4, 3, (1, 2)),
        (28, 7, 1, (3, 3)),
        (9, 2, 4, (0, 1)),
        (9, 2, 5, (0, 0)),
    ],
)
def test_same_padding_follows_tensorflow(size, kernel, stride, expected):
    # Hard-coded values of TensorFlow's SAME padding (top, bottom) for one axis.
    (rows, cols) = ops.resolve_padding("same", (size, 3), (kernel, 1), (stride, 1))
    assert rows == expected
    out = ops.conv_output_shape((size, 3), (kernel, 1), (stride, 1), (rows, cols))
    assert out[0] == math.ceil(size / stride)


@pytest.mark.parametrize(
    "pad,expected",
    [
        ("valid", ((0, 0), (0, 0))),
        (0, ((0, 0), (0, 0))),
        (2, ((2, 2), (2, 2))),
        ((1, 3), ((1, 1), (3, 3))),
        ([2, 0], ((2, 2), (0, 0))),
    ],
)
def test_explicit_padding_forms(pad, expected):
    assert tuple(map(tuple, ops.resolve_padding(pad, (6, 6), (3, 3), (1, 1)))) == expected


@pytest.mark.parametrize(
    "pad,error", [("full", ValueError), (-1, ValueError), (1.5, TypeError), ((1, 2, 3), TypeError), (True, TypeError)]
)
def test_bad_padding_is_refused(pad, error):
    with pytest.raises(error):
        ops.resolve_padding(pad, (6, 6), (3, 3), (1, 1))


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_loops(case, ns, rng):
    be = backend_for(ns)
    x, k, b, stride, pads = make_conv(rng, case)
    expected = conv_loops(x, k, b, stride, pads)
    if case[-1] == "same":
        assert expected.shape[2:] == tuple(math.ceil(i / s) for i, s in zip(x.shape[2:], stride))
    padding = ops.resolve_padding(case[-1], x.shape[2:], k.shape[2:], stride)
    assert tuple(map(tuple, padding)) == pads
    assert tuple(ops.conv_output_shape(x.shape[2:], k.shape[2:], stride, padding)) == expected.shape[2:]
    xs, ks, bs = be.asarray(x), be.asarray(k), be.asarray(b)
    z, _ = ops.conv2d_forward(xs, ks, bs, stride, padding)
    assert_on(be, z, expected)
    assert_on(be, ops.conv2d_direct_forward(xs, ks, bs, stride, padding), expected)


@pytest.mark.parametrize("case", CONV_CASES[1::3])
def test_conv_forward_matches_scipy(case, rng):
    x, k, b, stride, pads = make_conv(rng, case)
    z, _ = ops.conv2d_forward(x, k, b, stride, pads)
    np.testing.assert_allclose(z, conv_scipy(x, k, b, stride, pads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_matches_loops(case, ns, rng):
    be = backend_for(ns)
    x, k, b, stride, pads = make_conv(rng, case)
    xs, ks, bs = be.asarray(x), be.asarray(k), be.asarray(b)
    z, col = ops.conv2d_forward(xs, ks, bs, stride, pads)
    dz = rng.normal(size=tuple(z.shape))
    dzs = be.asarray(dz)
    refs = conv_backward_loops(dz, x, k, stride, pads)
    for got, want in zip(ops.conv2d_backward(dzs, col, ks, x.shape[2:], stride, pads), refs):
        assert_on(be, got, want)
    # The first layer needs no input gradient; the parameter gradients are the same.
    none, dk2, db2 = ops.conv2d_backward(dzs, col, ks, x.shape[2:], stride, pads, need_input_grad=False)
    assert none is None
    assert_on(be, dk2, refs[1])
    assert_on(be, db2, refs[2])
    # The direct-sum (optimized=False) version against the same oracle.
    for got, want in zip(ops.conv2d_direct_backward(dzs, xs, ks, stride, pads), refs):
        assert_on(be, got, want)


@pytest.mark.parametrize("direct", [False, True], ids=["im2col", "direct"])
@pytest.mark.parametrize("case", CONV_FD_CASES)
def test_conv_gradients_finite_differences(case, direct, rng, numgrad):
    x, k, b, stride, pads = make_conv(rng, case)
    forward = (lambda x_, k_, b_: ops.conv2d_direct_forward(x_, k_, b_, stride, pads)) if direct else (
        lambda x_, k_, b_: ops.conv2d_forward(x_, k_, b_, stride, pads)[0])
    z = forward(x, k, b)
    weights = rng.normal(size=z.shape)  # L = sum(weights * z), so dL/dz = weights

    if direct:
        dx, dk, db = ops.conv2d_direct_backward(weights, x, k, stride, pads)
    else:
        _, col = ops.conv2d_forward(x, k, b, stride, pads)
        dx, dk, db = ops.conv2d_backward(weights, col, k, x.shape[2:], stride, pads)

    for value, grad, loss in [
        (x, dx, lambda v: np.sum(weights * forward(v, k, b))),
        (k, dk, lambda v: np.sum(weights * forward(x, v, b))),
        (b, db, lambda v: np.sum(weights * forward(x, k, v))),
    ]:
        idx = sample_indices(rng, value.size)
        fd = numgrad(loss, value, indices=idx)
        np.testing.assert_allclose(np.asarray(grad).reshape(-1)[idx], fd.reshape(-1)[idx], rtol=1e-6, atol=1e-8)


# Activations written out for the layer oracle: (function, value, derivative).
LAYER_ACTS = {
    "identity": (identity, lambda z: z, lambda z: np.ones_like(z)),
    "RELU": (RELU, lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "LRELU": (LRELU, lambda z: np.where(z > 0, z, 1e-3 * z), lambda z: np.where(z > 0, 1.0, 1e-3)),
    "tanh": (tanh, np.tanh, lambda z: 1 / np.cosh(z) ** 2),
}
# (case, activation, optimized, namespace): a fixed sample, not the full product.
LAYER_CASES = [
    pytest.param(CONV_CASES[i].values[0], act, optimized, ns,
                 id=f"{CONV_CASES[i].id}-{act}-{'im2col' if optimized else 'direct'}-{ns}")
    for j, i in enumerate(range(0, len(CONV_CASES), 3))
    for act, optimized, ns in [
        (list(LAYER_ACTS)[j % 4], True, "numpy"),
        (list(LAYER_ACTS)[(j + 1) % 4], j % 2 == 0, "strict"),
        (list(LAYER_ACTS)[(j + 2) % 4], False, "numpy"),
    ]
]


@pytest.mark.parametrize("case,act,optimized,ns", LAYER_CASES)
def test_convolution_layer_matches_loops(case, act, optimized, ns, rng):
    be = backend_for(ns)
    n, c, f, hw, kernel, stride, pad = case
    func, value, slope = LAYER_ACTS[act]
    x, k, b, stride, pads = make_conv(rng, case)
    layer = Convolution2DLayer(c, f, *kernel, *stride, pad=pad, act_func=func, optimized=optimized,
                               scheduler=Constant(0.1))
    out_shape = layer.build(x.shape[1:], be, "float64")
    layer.kernel, layer.bias = be.asarray(k), be.asarray(b)
    z = conv_loops(x, k, b, stride, pads)
    assert tuple(out_shape) == z.shape[1:]
    a = layer.forward(be.asarray(x), training=True)
    assert_on(be, a, value(z))

    delta = rng.normal(size=z.shape)
    dx_ref, dk_ref, db_ref = conv_backward_loops(delta * slope(z), x, k, stride, pads)
    assert_on(be, layer.backward(be.asarray(delta)), dx_ref)
    assert_on(be, layer.grads["kernel"], dk_ref)
    assert_on(be, layer.grads["bias"], db_ref)
    # As the first layer of a network: the same parameter gradients (no input gradient needed).
    layer.forward(be.asarray(x), training=True)
    layer.backward(be.asarray(delta), need_input_grad=False)
    assert_on(be, layer.grads["kernel"], dk_ref)
    assert_on(be, layer.grads["bias"], db_ref)


def test_conv_float32_stays_float32(rng):
    x, k, b, stride, pads = make_conv(rng, CONV_CASES[5].values[0], np.float32)
    z, col = ops.conv2d_forward(x, k, b, stride, pads)
    assert z.dtype == np.float32 and col.dtype == np.float32
    grads = ops.conv2d_backward(np.ones_like(z), col, k, x.shape[2:], stride, pads)
    assert all(g.dtype == np.float32 for g in grads)
    assert ops.conv2d_direct_forward(x, k, b, stride, pads).dtype == np.float32
    assert all(g.dtype == np.float32 for g in ops.conv2d_direct_backward(np.ones_like(z), x, k, stride, pads))


# --------------------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------------------

IM2COL_CASES = [
    # (n, c, padded hw, kernel, stride)
    (2, 3, (6, 7), (3, 3), (1, 1)),  # overlapping
    (1, 2, (7, 7), (3, 2), (2, 3)),
    (2, 1, (8, 9), (2, 2), (3, 3)),  # stride larger than the kernel: gaps
    (1, 2, (5, 6), (1, 1), (2, 2)),
    (3, 1, (9, 4), (7, 1), (1, 2)),
    (1, 4, (6, 6), (6, 6), (1, 1)),  # kernel covers the whole image
]


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_matches_loops(case, rng):
    n, c, hw, kernel, stride = case
    x = rng.normal(size=(n, c, *hw))
    out = tuple((i - k) // s + 1 for i, k, s in zip(hw, kernel, stride))
    col = np.asarray(ops.im2col(x, kernel, stride, out))
    assert col.shape == (n, c, *kernel, *out)
    for a in range(n):
        for ch in range(c):
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    for y in range(out[0]):
                        for q in range(out[1]):
                            assert col[a, ch, i, j, y, q] == x[a, ch, y * stride[0] + i, q * stride[1] + j]


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_col2im_is_adjoint_of_im2col(case, rng):
    n, c, hw, kernel, stride = case
    out = tuple((i - k) // s + 1 for i, k, s in zip(hw, kernel, stride))
    x = rng.normal(size=(n, c, *hw))
    y = rng.normal(size=(n, c, *kernel, *out))
    lhs = np.sum(np.asarray(ops.im2col(x, kernel, stride, out)) * y)
    rhs = np.sum(x * np.asarray(ops.col2im(y, hw, stride)))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------

POOL_CASES = [
    # (window, stride, input hw)
    pytest.param((2, 2), (2, 2), (6, 6), id="2x2s2-nonoverlapping"),
    pytest.param((2, 2), (1, 1), (5, 6), id="2x2s1-overlapping"),
    pytest.param((3, 3), (2, 2), (7, 7), id="3x3s2-overlapping"),
    pytest.param((3, 3), (1, 1), (5, 5), id="3x3s1-overlapping"),
    pytest.param((2, 2), (3, 3), (8, 7), id="2x2s3-stride>window"),
    pytest.param((1, 2), (2, 3), (5, 8), id="1x2s2,3-stride>window"),
    pytest.param((2, 3), (1, 2), (6, 7), id="2x3s1,2-nonsquare"),
    pytest.param((3, 1), (2, 1), (7, 4), id="3x1s2,1-nonsquare"),
    pytest.param((3, 2), (3, 2), (8, 5), id="3x2s3,2-leftover"),
    pytest.param((4, 4), (1, 1), (4, 4), id="window=input"),
]


def pool_input(rng, kind, hw, n=2, c=3):
    if kind == "continuous":
        return rng.normal(size=(n, c, *hw))
    if kind == "ties":
        return rng.integers(0, 3, size=(n, c, *hw)).astype(np.float64)
    return np.full((n, c, *hw), 1.5)  # "constant": every window is one big tie


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("kind", ["continuous", "ties", "constant"])
@pytest.mark.parametrize("pooling", ["max", "average"])
@pytest.mark.parametrize("window,stride,hw", POOL_CASES)
def test_pooling_matches_loops(window, stride, hw, pooling, kind, ns, rng):
    be = backend_for(ns)
    x = pool_input(rng, kind, hw)
    expected = pool_loops(x, window, stride, pooling)
    assert tuple(ops.pool_output_shape(hw, window, stride)) == expected.shape[2:]
    y, argmax = ops.pool2d_forward(be.asarray(x), window, stride, pooling)
    assert_on(be, y, expected)
    dy = rng.normal(size=expected.shape)
    dx = ops.pool2d_backward(be.asarray(dy), hw, window, stride, pooling, argmax)
    assert_on(be, dx, pool_backward_loops(x, dy, window, stride, pooling))


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("pooling", ["max", "average"])
@pytest.mark.parametrize("window,stride,hw", POOL_CASES[1::2])
def test_pooling_layer_matches_loops(window, stride, hw, pooling, ns, rng):
    be = backend_for(ns)
    x = pool_input(rng, "ties", hw)
    layer = Pooling2DLayer(*window, *stride, pooling=pooling)
    out_shape = layer.build(x.shape[1:], be, "float64")
    expected = pool_loops(x, window, stride, pooling)
    assert tuple(out_shape) == expected.shape[1:]
    assert_on(be, layer.forward(be.asarray(x), training=True), expected)
    dy = rng.normal(size=expected.shape)
    assert_on(be, layer.backward(be.asarray(dy)), pool_backward_loops(x, dy, window, stride, pooling))
    # Inference (training=False) gives the same values.
    assert_on(be, layer.forward(be.asarray(x)), expected)


def test_max_pool_tie_goes_to_first_element_in_row_major_order():
    # One 2x2 window with the maximum at (0, 1) and (1, 0): torch routes to (0, 1).
    x = np.array([[[[0.0, 5.0], [5.0, 1.0]]]])
    y, argmax = ops.pool2d_forward(x, (2, 2), (2, 2), "max")
    dx = ops.pool2d_backward(np.ones((1, 1, 1, 1)), (2, 2), (2, 2), (2, 2), "max", argmax)
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])
    # Overlapping windows (stride 1) over a constant row: each window's first element gets its gradient.
    x = np.zeros((1, 1, 1, 4))
    y, argmax = ops.pool2d_forward(x, (1, 2), (1, 1), "max")
    dx = ops.pool2d_backward(np.array([[[[1.0, 10.0, 100.0]]]]), (1, 4), (1, 2), (1, 1), "max", argmax)
    np.testing.assert_array_equal(dx, [[[[1.0, 10.0, 100.0, 0.0]]]])


@pytest.mark.parametrize("pooling", ["max", "average"])
@pytest.mark.parametrize("window,stride,hw", POOL_CASES[::3])
def test_pooling_finite_differences(window, stride, hw, pooling, rng, numgrad):
    x = rng.normal(size=(2, 2, *hw))  # continuous values: no ties, max is differentiable
    y, argmax = ops.pool2d_forward(x, window, stride, pooling)
    weights = rng.normal(size=y.shape)
    dx = ops.pool2d_backward(weights, hw, window, stride, pooling, argmax)
    fd = numgrad(lambda v: np.sum(weights * ops.pool2d_forward(v, window, stride, pooling)[0]), x)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_pooling_float32_stays_float32(pooling, rng):
    x = rng.normal(size=(2, 2, 6, 6)).astype(np.float32)
    y, argmax = ops.pool2d_forward(x, (2, 2), (2, 2), pooling)
    assert y.dtype == np.float32
    assert ops.pool2d_backward(np.ones_like(y), (6, 6), (2, 2), (2, 2), pooling, argmax).dtype == np.float32


# --------------------------------------------------------------------------------------
# Layers as a network uses them: odd memory layouts, no mutation of inputs, no aliasing.
# --------------------------------------------------------------------------------------

LAYOUT_CASES = [
    pytest.param(CONV_CASES[i].values[0], act, id=f"{CONV_CASES[i].id}-{act}")
    for i, act in [(4, "LRELU"), (13, "RELU"), (22, "identity"), (37, "tanh"), (50, "LRELU"), (61, "RELU")]
]


def odd_layouts(x):
    """The same values as C-contiguous, Fortran-ordered, channels-last and reversed-stride arrays."""
    channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    reversed_view = np.ascontiguousarray(x[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]
    return {"C": x.copy(), "F": np.asfortranarray(x), "NHWC": channels_last, "reversed": reversed_view}


@pytest.mark.parametrize("optimized", [True, False], ids=["im2col", "direct"])
@pytest.mark.parametrize("case,act", LAYOUT_CASES)
def test_convolution_layer_any_memory_layout_no_mutation_no_aliasing(case, act, optimized, rng):
    n, c, f, hw, kernel, stride, pad = case
    func, value, slope = LAYER_ACTS[act]
    x, k, b, stride, pads = make_conv(rng, case)
    x2 = rng.normal(size=x.shape)
    layer = Convolution2DLayer(c, f, *kernel, *stride, pad=pad, act_func=func, optimized=optimized,
                               scheduler=Constant(0.1))
    layer.build(x.shape[1:], NUMPY, "float64")
    layer.kernel, layer.bias = k.copy(), b.copy()
    z = conv_loops(x, k, b, stride, pads)
    delta = rng.normal(size=z.shape)
    refs = conv_backward_loops(delta * slope(z), x, k, stride, pads)
    for name, xin in odd_layouts(x).items():
        keep_x, keep_delta = xin.copy(), delta.copy()
        a = layer.forward(xin, training=True)
        np.testing.assert_allclose(a, value(z), **TOL, err_msg=name)
        a_copy = np.array(a, copy=True)
        dx = layer.backward(delta)
        grads = {key: np.array(v, copy=True) for key, v in layer.grads.items()}
        held = dict(layer.grads)
        for got, want in zip((dx, grads["kernel"], grads["bias"]), refs):
            np.testing.assert_allclose(got, want, **TOL, err_msg=name)
        np.testing.assert_array_equal(xin, keep_x, err_msg=f"{name}: forward/backward changed the input")
        np.testing.assert_array_equal(delta, keep_delta, err_msg=f"{name}: backward changed delta")
        # Another pass on other data must not overwrite what the first one handed out.
        layer.forward(x2, training=True)
        layer.backward(rng.normal(size=z.shape))
        np.testing.assert_array_equal(a, a_copy, err_msg=f"{name}: a later pass overwrote an earlier output")
        for key in grads:
            np.testing.assert_array_equal(held[key], grads[key], err_msg=f"{name}: a later pass overwrote grads")
    np.testing.assert_array_equal(layer.kernel, k)


@pytest.mark.parametrize("chunk_bytes", [2048, 12000])
def test_convolution_layer_batch_spanning_several_column_chunks(chunk_bytes, rng, monkeypatch):
    # Fast paths may build im2col columns a chunk of samples at a time; make the chunks tiny
    # (one sample each, and two samples each with a remainder of one for a batch of 7).
    try:
        from backends.numpy_fast import threads as fast
    except ImportError:
        fast = None
    if fast is not None and hasattr(fast, "COL_CHUNK_BYTES"):
        monkeypatch.setattr(fast, "COL_CHUNK_BYTES", chunk_bytes)
    case = (7, 3, 2, (9, 8), (3, 2), (2, 1), "same")
    x, k, b, stride, pads = make_conv(rng, case)
    for func, value, slope in (LAYER_ACTS["LRELU"], LAYER_ACTS["tanh"]):
        layer = Convolution2DLayer(3, 2, 3, 2, 2, 1, pad="same", act_func=func, scheduler=Constant(0.1))
        layer.build(x.shape[1:], NUMPY, "float64")
        layer.kernel, layer.bias = k.copy(), b.copy()
        z = conv_loops(x, k, b, stride, pads)
        np.testing.assert_allclose(layer.forward(x, training=True), value(z), **TOL)
        delta = rng.normal(size=z.shape)
        refs = conv_backward_loops(delta * slope(z), x, k, stride, pads)
        for got, want in zip((layer.backward(delta), layer.grads["kernel"], layer.grads["bias"]), refs):
            np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("act", ["LRELU", "RELU", "identity", "tanh"])
@pytest.mark.parametrize("ns", NAMESPACES)
def test_convolution_layer_float32(act, ns, rng):
    be = backend_for(ns)
    case = (2, 3, 4, (8, 7), (3, 3), (2, 3), "same")
    func, value, slope = LAYER_ACTS[act]
    x, k, b, stride, pads = make_conv(rng, case)
    layer = Convolution2DLayer(3, 4, 3, 3, 2, 3, pad="same", act_func=func, scheduler=Constant(0.1))
    layer.build(x.shape[1:], be, "float32")
    layer.kernel, layer.bias = be.asarray(k, dtype="float32"), be.asarray(b, dtype="float32")
    x32, k32, b32 = x.astype(np.float32), k.astype(np.float32), b.astype(np.float32)
    z = conv_loops(x32.astype(np.float64), k32.astype(np.float64), b32.astype(np.float64), stride, pads)
    a = layer.forward(be.asarray(x32), training=True)
    assert a.dtype == be.xp.float32
    assert_on(be, a, value(z), rtol=1e-5, atol=1e-5)
    delta = rng.normal(size=z.shape).astype(np.float32)
    refs = conv_backward_loops(delta * slope(z), x32.astype(np.float64), k32.astype(np.float64), stride, pads)
    dx = layer.backward(be.asarray(delta))
    for got, want in zip((dx, layer.grads["kernel"], layer.grads["bias"]), refs):
        assert got.dtype == be.xp.float32
        assert_on(be, got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pooling", ["max", "average"])
@pytest.mark.parametrize("window,stride,hw", POOL_CASES[::2])
def test_pooling_layer_any_memory_layout_no_mutation_no_aliasing(window, stride, hw, pooling, rng):
    x = pool_input(rng, "ties", hw, n=2, c=3)
    expected = pool_loops(x, window, stride, pooling)
    dy = rng.normal(size=expected.shape)
    want_dx = pool_backward_loops(x, dy, window, stride, pooling)
    layer = Pooling2DLayer(*window, *stride, pooling=pooling)
    layer.build(x.shape[1:], NUMPY, "float64")
    for name, xin in odd_layouts(x).items():
        keep_x, keep_dy = xin.copy(), dy.copy()
        y = layer.forward(xin, training=True)
        np.testing.assert_allclose(y, expected, **TOL, err_msg=name)
        y_copy = np.array(y, copy=True)
        dx = layer.backward(dy)
        np.testing.assert_allclose(dx, want_dx, **TOL, err_msg=name)
        dx_copy = np.array(dx, copy=True)
        np.testing.assert_array_equal(xin, keep_x, err_msg=f"{name}: pooling changed its input")
        np.testing.assert_array_equal(dy, keep_dy, err_msg=f"{name}: pooling backward changed dy")
        layer.forward(rng.normal(size=x.shape), training=True)
        layer.backward(rng.normal(size=dy.shape))
        np.testing.assert_array_equal(y, y_copy, err_msg=f"{name}: a later pass overwrote an earlier output")
        np.testing.assert_array_equal(dx, dx_copy, err_msg=f"{name}: a later pass overwrote an earlier dx")
