"""nncore.filters against independent oracles: SciPy, NumPy and formulas written out by hand."""

import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import get_backend
from nncore.filters import convolution_matrix, convolve2d, gaussian_kernel, sobel_kernels

MODES = ("full", "same", "valid")
METHODS = ("direct", "separable", "fft")

# (image shape, kernel shape): odd, even, non-square, single row/column, and
# kernels larger than the image in one or both dimensions.
SHAPES = [
    ((7, 9), (3, 3)),
    ((8, 8), (2, 2)),
    ((6, 7), (4, 3)),
    ((5, 4), (2, 5)),
    ((1, 6), (1, 3)),
    ((6, 1), (3, 1)),
    ((5, 6), (1, 1)),
    ((4, 5), (4, 5)),
    ((3, 4), (5, 6)),  # kernel larger in both dimensions
    ((5, 4), (9, 10)),
    ((6, 3), (2, 5)),  # kernel wider but not taller: "valid" is refused
]


def rank1_kernel(rng, shape):
    return np.outer(rng.normal(size=shape[0]), rng.normal(size=shape[1]))


def scipy_or_error(x, k, mode):
    try:
        return scipy.signal.convolve2d(x, k, mode)
    except ValueError:
        return None


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: f"{s[0]}*{s[1]}")
def test_convolve2d_matches_scipy(shapes, mode, method):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shapes[0])
    kernel = rank1_kernel(rng, shapes[1]) if method == "separable" else rng.normal(size=shapes[1])
    expected = scipy_or_error(image, kernel, mode)
    if expected is None:
        with pytest.raises(ValueError, match="at least as large"):
            convolve2d(image, kernel, mode, method)
        return
    out = convolve2d(image, kernel, mode, method)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ("direct", "fft"))
def test_convolve2d_full_rank_kernels_with_integers(mode, method):
    # Small integers convolve exactly in float64, so SciPy's result is exact.
    rng = np.random.default_rng(1)
    image = rng.integers(-5, 6, size=(10, 12))
    kernel = rng.integers(-3, 4, size=(4, 5))
    out = convolve2d(image, kernel, mode, method)
    assert out.dtype == np.float64  # integer input computes in float64
    np.testing.assert_allclose(out, scipy.signal.convolve2d(image, kernel, mode), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    kh=st.integers(1, 6),
    kw=st.integers(1, 6),
    mode=st.sampled_from(MODES),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**16),
)
def test_convolve2d_matches_scipy_property(h, w, kh, kw, mode, method, seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(h, w))
    kernel = rank1_kernel(rng, (kh, kw)) if method == "separable" else rng.normal(size=(kh, kw))
    expected = scipy_or_error(image, kernel, mode)
    if expected is None:
        with pytest.raises(ValueError):
            convolve2d(image, kernel, mode, method)
    else:
        np.testing.assert_allclose(convolve2d(image, kernel, mode, method), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_float32_stays_float32(mode, method):
    rng = np.random.default_rng(2)
    image = rng.normal(size=(9, 11)).astype(np.float32)
    kernel = rank1_kernel(rng, (3, 4))  # float64 kernel: cast to the image's dtype
    out = convolve2d(image, kernel, mode, method)
    assert out.dtype == np.float32
    expected = scipy.signal.convolve2d(image.astype(np.float64), kernel.astype(np.float32).astype(np.float64), mode)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_list_input_gives_numpy():
    out = convolve2d([[1, 2], [3, 4]], [[0, 1], [1, 0]], mode="full")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [[0, 1, 2], [1, 5, 4], [3, 4, 0]])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_array_api_strict_on_device1(mode, method):
    """Only standard operations, and no silent transfer off the image's device."""
    be = get_backend("array_api_strict", "device1")
    rng = np.random.default_rng(3)
    image_np = rng.normal(size=(7, 6)).astype(np.float32)
    kernel_np = rank1_kernel(rng, (3, 2)).astype(np.float32)
    # The kernel arrives as NumPy; convolve2d must move it to the image's device.
    out = convolve2d(be.asarray(image_np), kernel_np, mode, method)
    assert type(out).__module__.startswith("array_api_strict")
    assert out.device == be.device
    assert out.dtype == be.xp.float32
    expected = scipy.signal.convolve2d(image_np.astype(np.float64), kernel_np.astype(np.float64), mode)
    np.testing.assert_allclose(be.to_numpy(out), expected, rtol=1e-4, atol=1e-5)


def test_same_mode_even_kernel_centring():
    # A shifted impulse shows where "same" cuts the full result: SciPy keeps
    # the part starting at (kh - 1) // 2, so a 2x2 kernel's copy is not shifted.
    image = np.zeros((5, 5))
    image[2, 2] = 1.0
    kernel = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = convolve2d(image, kernel, "same")
    expected = np.zeros((5, 5))
    expected[2:4, 2:4] = kernel
    np.testing.assert_array_equal(out, expected)


def test_separable_rejects_rank2_kernel():
    kernel = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"not separable.*rank 2"):
        convolve2d(np.ones((4, 4)), kernel, method="separable")


def test_separable_accepts_zero_kernel():
    out = convolve2d(np.ones((4, 5)), np.zeros((3, 3)), method="separable")
    np.testing.assert_array_equal(out, np.zeros((4, 5)))


@pytest.mark.parametrize(
    ("image", "kernel", "kwargs", "error", "match"),
    [
        (np.ones(5), np.ones((3, 3)), {}, ValueError, r"image must be 2-D, got shape \(5,\)"),
        (np.ones((2, 3, 3)), np.ones((3, 3)), {}, ValueError, "image must be 2-D"),
        (np.ones((5, 5)), np.ones(3), {}, ValueError, r"kernel must be 2-D, got shape \(3,\)"),
        (np.ones((0, 5)), np.ones((3, 3)), {}, ValueError, "image is empty"),
        (np.ones((5, 5)), np.ones((3, 0)), {}, ValueError, "kernel is empty"),
        (np.ones((5, 5)), np.ones((3, 3)), {"mode": "circular"}, ValueError, "'full', 'same', 'valid'"),
        (np.ones((5, 5)), np.ones((3, 3)), {"method": "winograd"}, ValueError, "'direct', 'separable', 'fft'"),
        (np.ones((6, 3)), np.ones((2, 5)), {"mode": "valid"}, ValueError, r"\(6, 3\).*\(2, 5\)"),
        (np.ones((5, 5), dtype=complex), np.ones((3, 3)), {}, TypeError, "real numbers"),
        (np.ones((5, 5)), np.ones((3, 3), dtype=complex), {}, TypeError, "kernel must hold real numbers"),
        ([["a", "b"], ["c", "d"]], np.ones((1, 1)), {}, TypeError, "image must hold real numbers"),
    ],
)
def test_convolve2d_errors(image, kernel, kwargs, error, match):
    with pytest.raises(error, match=match):
        convolve2d(image, kernel, **kwargs)


# --- gaussian_kernel and sobel_kernels -----------------------------------------


@pytest.mark.parametrize(("sigma", "size"), [(1.0, None), (0.5, None), (2.3, None), (1.5, 4), (3.0, 1)])
def test_gaussian_kernel_closed_form(sigma, size):
    g = gaussian_kernel(sigma, size)
    n = 2 * math.ceil(3 * sigma) + 1 if size is None else size
    c = (n - 1) / 2
    expected = np.array(
        [[math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma**2)) for j in range(n)] for i in range(n)]
    )
    expected /= expected.sum()
    assert g.shape == (n, n) and g.dtype == np.float64
    np.testing.assert_allclose(g, expected, rtol=1e-12)
    assert abs(g.sum() - 1.0) < 1e-12


def test_gaussian_default_sizes():
    assert gaussian_kernel(1.0).shape == (7, 7)
    assert gaussian_kernel(0.5).shape == (5, 5)
    assert gaussian_kernel(0.1).shape == (3, 3)


def test_gaussian_float32_on_strict_device_and_separable():
    be = get_backend("array_api_strict", "device1")
    g = gaussian_kernel(1.2, dtype="float32", backend=be)
    assert g.dtype == be.xp.float32 and g.device == be.device
    assert abs(float(be.xp.sum(g)) - 1.0) < 1e-6
    image = be.asarray(np.random.default_rng(4).normal(size=(12, 10)), dtype="float32")
    direct = be.to_numpy(convolve2d(image, g, method="direct"))
    separable = be.to_numpy(convolve2d(image, g, method="separable"))
    np.testing.assert_allclose(separable, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sigma": 0}, ValueError),
        ({"sigma": -1.0}, ValueError),
        ({"sigma": float("nan")}, ValueError),
        ({"sigma": float("inf")}, ValueError),
        ({"sigma": "1"}, TypeError),
        ({"sigma": 1.0, "size": 0}, ValueError),
        ({"sigma": 1.0, "size": 2.5}, ValueError),
        ({"sigma": 1.0, "dtype": "int32"}, ValueError),
    ],
)
def test_gaussian_kernel_errors(kwargs, error):
    with pytest.raises(error):
        gaussian_kernel(**kwargs)


def test_sobel_kernels_values():
    gx, gy = sobel_kernels()
    np.testing.assert_array_equal(gx, [[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    np.testing.assert_array_equal(gy, [[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    assert gx.dtype == np.float64


def test_sobel_orientation_on_ramps():
    gx, gy = sobel_kernels()
    cols, rows = np.meshgrid(np.arange(8.0), np.arange(6.0))
    # Intensity growing to the right: gx responds (a vertical edge), gy does not.
    np.testing.assert_array_equal(convolve2d(cols, gx, "valid"), np.full((4, 6), 8.0))
    np.testing.assert_array_equal(convolve2d(cols, gy, "valid"), np.zeros((4, 6)))
    # Intensity growing downwards: gy responds (a horizontal edge).
    np.testing.assert_array_equal(convolve2d(rows, gy, "valid"), np.full((4, 6), 8.0))
    np.testing.assert_array_equal(convolve2d(rows, gx, "valid"), np.zeros((4, 6)))


def test_sobel_float32_on_strict_device():
    be = get_backend("array_api_strict", "device1")
    gx, gy = sobel_kernels(dtype="float32", backend=be)
    assert gx.dtype == be.xp.float32 and gy.device == be.device


# --- convolution_matrix ----------------------------------------------------------


def window(n, k, mode):
    """Start and length of the ``mode`` output inside the full one (SciPy's rule)."""
    return {"full": (0, n + k - 1), "same": ((k - 1) // 2, n), "valid": (min(n, k) - 1, abs(n - k) + 1)}[mode]


def matrix_by_formula(kernel, input_shape, stride, mode):
    """W'[o, i] from the definition full[a, b] = sum_{m, n} k[m, n] x[a - m, b - n]."""
    (H, W), (kh, kw), (sv, sh) = input_shape, kernel.shape, stride
    (r0, oh), (c0, ow) = window(H, kh, mode), window(W, kw, mode)
    rows, cols = range(r0, r0 + oh, sv), range(c0, c0 + ow, sh)
    matrix = np.zeros((len(rows) * len(cols), H * W))
    for p, a in enumerate(rows):
        for q, b in enumerate(cols):
            for m in range(kh):
                for n in range(kw):
                    i, j = a - m, b - n
                    if 0 <= i < H and 0 <= j < W:
                        matrix[p * len(cols) + q, i * W + j] = kernel[m, n]
    return matrix


@pytest.mark.parametrize(
    ("input_shape", "kshape", "stride", "mode"),
    [
        ((5, 5), (3, 3), 1, None),
        ((6, 7), (2, 3), 1, "valid"),
        ((7, 7), (3, 3), 2, "valid"),
        ((8, 9), (3, 2), (2, 3), "valid"),
        ((5, 6), (3, 4), 1, "same"),
        ((5, 6), (2, 2), 2, "same"),
        ((4, 5), (3, 3), 1, "full"),
        ((3, 3), (4, 5), (1, 2), "full"),
        ((2, 3), (4, 5), 1, "valid"),  # kernel larger: SciPy's commuted "valid"
    ],
)
def test_convolution_matrix_formula_and_scipy(input_shape, kshape, stride, mode):
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=kshape)
    strides = (stride, stride) if isinstance(stride, int) else stride
    W = convolution_matrix(kernel, input_shape, stride, mode=mode)
    np.testing.assert_array_equal(W, matrix_by_formula(kernel, input_shape, strides, mode or "valid"))
    x = rng.normal(size=input_shape)
    expected = scipy.signal.convolve2d(x, kernel, mode or "valid")[:: strides[0], :: strides[1]]
    np.testing.assert_allclose(W @ x.ravel(), expected.ravel(), rtol=1e-12, atol=1e-12)
    ours = convolve2d(x, kernel, mode or "valid")[:: strides[0], :: strides[1]]
    np.testing.assert_allclose(W @ x.ravel(), ours.ravel(), rtol=1e-12, atol=1e-12)


def test_convolution_matrix_is_the_toeplitz_matrix_of_the_notes():
    # p(t) = 1 + 2t + 3t^2 times s(t) = 4 + 5t + 6t^2 + 7t^3: the 6x4 matrix of the notes.
    alpha = np.array([1.0, 2.0, 3.0])
    beta = np.array([4.0, 5.0, 6.0, 7.0])
    A = convolution_matrix(alpha, (4,))
    expected = np.array(
        [
            [1, 0, 0, 0],
            [2, 1, 0, 0],
            [3, 2, 1, 0],
            [0, 3, 2, 1],
            [0, 0, 3, 2],
            [0, 0, 0, 3],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(A, expected)
    np.testing.assert_array_equal(A @ beta, np.convolve(alpha, beta))
    # np.polymul wants the highest power first; reversing both keeps the product.
    np.testing.assert_array_equal(A @ beta, np.polymul(alpha[::-1], beta[::-1])[::-1])


@pytest.mark.parametrize(("m", "n"), [(1, 1), (3, 7), (6, 2), (4, 4)])
def test_convolution_matrix_1d_polynomial_product(m, n):
    rng = np.random.default_rng(m * 10 + n)
    a, b = rng.normal(size=m), rng.normal(size=n)
    T = convolution_matrix(a, (n,))
    assert T.shape == (n + m - 1, n)
    np.testing.assert_allclose(T @ b, np.convolve(a, b), rtol=1e-12, atol=1e-12)


def test_convolution_matrix_1d_stride_and_valid():
    a, b = np.array([1.0, -2.0, 0.5]), np.arange(9.0)
    np.testing.assert_allclose(convolution_matrix(a, (9,), 2) @ b, np.convolve(a, b)[::2])
    np.testing.assert_allclose(convolution_matrix(a, (9,), mode="valid") @ b, np.convolve(a, b, "valid"))


def test_convolution_matrix_on_strict_device_float32():
    be = get_backend("array_api_strict", "device1")
    kernel = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    W = convolution_matrix(be.asarray(kernel), (3, 4), 1)
    assert W.device == be.device and W.dtype == be.xp.float32 and W.shape == (6, 12)
    np.testing.assert_array_equal(be.to_numpy(W), matrix_by_formula(kernel, (3, 4), (1, 1), "valid"))


def test_convolution_matrix_integer_kernel_is_float64():
    assert convolution_matrix([[1, 2], [3, 4]], (3, 3)).dtype == np.float64


@pytest.mark.parametrize(
    ("kernel", "input_shape", "kwargs", "error", "match"),
    [
        (np.ones((3, 3)), (5,), {}, ValueError, "input_shape must be 2 integer"),
        (np.ones(3), (5, 5), {}, ValueError, "input_shape must be 1 integer"),
        (np.ones((3, 3)), (5, 0), {}, ValueError, "input_shape must be >= 1"),
        (np.ones((3, 3)), 5, {}, TypeError, "input_shape"),
        (np.ones((3, 3)), (5, 5), {"stride": 0}, ValueError, "stride must be >= 1"),
        (np.ones((3, 3)), (5, 5), {"stride": (1, 2, 3)}, ValueError, "stride must be 2 integer"),
        (np.ones((3, 3)), (5, 5), {"stride": 1.5}, TypeError, "stride"),
        (np.ones((3, 3)), (5, 5), {"mode": "wrap"}, ValueError, "'full', 'same', 'valid'"),
        (np.ones((3, 6)), (5, 5), {}, ValueError, "at least as large"),
        (np.ones((2, 2, 2)), (5, 5, 5), {}, ValueError, "1-D or 2-D"),
        (np.ones((0, 2)), (5, 5), {}, ValueError, "empty"),
        (np.ones((2, 2), dtype=complex), (5, 5), {}, TypeError, "real numbers"),
    ],
)
def test_convolution_matrix_errors(kernel, input_shape, kwargs, error, match):
    with pytest.raises(error, match=match):
        convolution_matrix(kernel, input_shape, **kwargs)
