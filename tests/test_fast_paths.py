"""The NumPy fast paths (backends/numpy_fast/) give the numbers of the generic ops.

Every fast function is compared with the generic, standard-only version of the
same op (``op.generic``, called explicitly) on random inputs over many shapes,
strides and paddings, and a whole network is trained both ways. The dispatch
must never pick a fast path for array_api_strict (or any non-NumPy) arrays.
"""

import itertools
import threading

import numpy as np
import pytest

import backends
from backends import numpy_fast
from backends import fast_paths
from backends.numpy_fast import buffers, conv_one_channel
from backends.numpy_fast import threads as fast_threads
from nncore import CNN, LRELU, RELU, Adam, CostCrossEntropy, ops, sigmoid, softmax, tanh
from nncore.layers import Convolution2DLayer, Pooling2DLayer

RNG = np.random.default_rng(20240501)


def close(a, b, dtype=np.float32):
    # Matrix products and sums are blocked differently by BLAS: float rounding only.
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    scale = max(float(np.max(np.abs(b))), 1.0) if np.size(b) else 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.fixture(params=["serial", "threads"])
def threads(request, monkeypatch):
    """Run the fast paths on one thread in one chunk, or split over 3 threads even for
    tiny inputs, each working in chunks of one sample."""
    if request.param == "threads":
        monkeypatch.setattr(fast_threads, "WORKERS", 3)
        monkeypatch.setattr(fast_threads, "PARALLEL_MIN_ELEMENTS", 0)
        monkeypatch.setattr(fast_threads, "COL_CHUNK_BYTES", 1)
    else:
        monkeypatch.setattr(fast_threads, "WORKERS", 1)
    return request.param


def channels_last(x):
    """The same values as ``x``, stored (n, h, w, c) as the fast convolution hands them on."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# ---- dispatch -------------------------------------------------------------------------


def test_fast_path_only_for_real_numpy_arrays():
    x = np.zeros((1, 1, 4, 4), np.float32)
    assert backends.fast_path("pool2d_forward", x) is numpy_fast.pool2d_forward
    assert backends.fast_path("pool2d_forward", x.view(ToyArray)) is None  # a subclass
    assert backends.fast_path("no_such_op", x) is None
    assert backends.fast_path("pool2d_forward", x, [1.0]) is None
    assert backends.fast_path("pool2d_forward", np.ma.zeros((1, 1, 4, 4))) is None  # a subclass
    with backends.use_fast_paths(False):
        assert not backends.fast_paths_enabled()
        assert backends.fast_path("pool2d_forward", x) is None
    assert backends.fast_paths_enabled()


@pytest.fixture
def registry(monkeypatch):
    """The fast-path tables, restored after the test (which may register its own)."""
    tables = {kind: table if callable(table) else dict(table) for kind, table in fast_paths._tables.items()}
    monkeypatch.setattr(fast_paths, "_tables", tables)
    return fast_paths


def test_strict_arrays_never_take_a_fast_path(registry):
    xps = pytest.importorskip("array_api_strict")

    def boom(*args, **kwargs):
        raise AssertionError("a NumPy fast path ran on array_api_strict arrays")

    registry.register_fast_paths(np.ndarray, {name: boom for name in numpy_fast.FAST_PATHS})
    be = backends.get_backend("array_api_strict", "device1")
    x = be.asarray(RNG.random((3, 2, 6, 6)), dtype="float32")
    assert backends.fast_path("pool2d_forward", x) is None
    cnn = _small_cnn(be)
    X, t = _data(8)
    cnn.fit(X, t, epochs=1, batch_size=4, verbose=False)
    assert cnn.predict_proba(X).shape == (8, 10)


def test_ops_dispatch_to_the_fast_path(registry):
    calls = []
    real = numpy_fast.FAST_PATHS["pool2d_forward"]

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    registry.register_fast_paths(np.ndarray, {"pool2d_forward": spy})
    x = RNG.random((1, 1, 4, 4)).astype(np.float32)
    ops.pool2d_forward(x, (2, 2), (2, 2))
    assert calls == [1]
    with backends.use_fast_paths(False):
        ops.pool2d_forward(x, (2, 2), (2, 2))
    assert calls == [1]
    ops.pool2d_forward.generic(x, (2, 2), (2, 2))
    assert calls == [1]


class ToyArray(np.ndarray):
    """An array type of a pretend library, to plug fast paths in for it."""


def test_a_new_array_type_plugs_in_by_registering(registry):
    # No nncore file changes: a table registered for the type is what the ops run.
    x = RNG.random((2, 3, 4, 4)).view(ToyArray)
    loads = []

    def toy_pool(x, kernel_hw, stride_hw, pooling="max", *, need_argmax=True):
        return "toy", None

    def load():
        loads.append(1)
        return {"pool2d_forward": toy_pool}

    registry.register_fast_paths(ToyArray, load)
    assert loads == []  # registering imports and loads nothing
    assert ops.pool2d_forward(x, (2, 2), (2, 2)) == ("toy", None)
    assert ops.pool2d_forward(x, (2, 2), (2, 2)) == ("toy", None)
    assert loads == [1]  # loaded once, at the first lookup
    assert backends.fast_path("pool2d_forward", x, np.asarray(x)) is None  # mixed types: generic
    assert backends.fast_path("pool2d_backward", x) is None  # not in the table: generic
    registry.register_fast_paths(ToyArray, {"pool2d_backward": toy_pool})  # adds to the table
    assert backends.fast_path("pool2d_backward", x) is toy_pool
    assert backends.fast_path("pool2d_forward", x) is toy_pool
    with backends.use_fast_paths(False):
        y, argmax = ops.pool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(y, ops.pool2d_forward.generic(np.asarray(x), (2, 2), (2, 2))[0])


def test_register_fast_paths_checks_its_arguments():
    with pytest.raises(TypeError, match="array_type"):
        backends.register_fast_paths("numpy.ndarray", {})
    with pytest.raises(TypeError, match="table"):
        backends.register_fast_paths(np.ndarray, ["conv2d_act_forward"])


def test_a_fast_path_may_decline_and_the_generic_op_runs(registry):
    registry.register_fast_paths(np.ndarray, {"pool2d_forward": lambda *args, **kwargs: NotImplemented})
    x = RNG.random((2, 3, 4, 4))
    got = ops.pool2d_forward(x, (2, 2), (2, 2))
    want = ops.pool2d_forward.generic(x, (2, 2), (2, 2))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_forward_and_backward_dispatch_alike():
    # The backward pass is chosen by the same registry as the forward pass; a cache made by
    # the generic forward is declined by the fast backward (the generic one runs), and a fast
    # cache handed to the generic backward is a clear error.
    x = RNG.standard_normal((2, 3, 6, 6))
    kernel, bias = RNG.standard_normal((4, 3, 3, 3)), RNG.standard_normal(4)
    padding = ops.resolve_padding("same", (6, 6), (3, 3), (1, 1))
    delta = RNG.standard_normal((2, 4, 6, 6))
    assert backends.fast_path("conv2d_act_backward", delta, kernel) is numpy_fast.conv2d_act_backward
    _, fast_cache = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, "relu", training=True)
    with backends.use_fast_paths(False):
        _, generic_cache = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, "relu", training=True)
        with pytest.raises(TypeError, match="fast path"):
            ops.conv2d_act_backward(delta, fast_cache, kernel, (1, 1), padding, "relu")
    assert isinstance(generic_cache, tuple) and not isinstance(fast_cache, tuple)
    want = ops.conv2d_act_backward.generic(delta, generic_cache, kernel, (1, 1), padding, "relu")
    for got in (ops.conv2d_act_backward(delta, generic_cache, kernel, (1, 1), padding, "relu"),
                ops.conv2d_act_backward(delta, fast_cache, kernel, (1, 1), padding, "relu")):
        for a, b in zip(got, want):
            close(a, b, np.float64)


def test_im2col_has_no_override():
    assert not hasattr(ops.im2col, "generic") and "im2col" not in numpy_fast.FAST_PATHS


# ---- col2im and pooling ---------------------------------------------------------------


@pytest.mark.parametrize("kernel,stride", [((3, 3), (1, 1)), ((2, 3), (2, 1)), ((1, 1), (3, 2)), ((4, 2), (3, 3))])
def test_col2im(kernel, stride):
    n, c, (kh, kw), (sh, sw) = 2, 3, kernel, stride
    padded = (9, 8)
    oh, ow = ((p - k) // s + 1 for p, k, s in zip(padded, kernel, stride))
    col = RNG.standard_normal((n, c, kh, kw, oh, ow)).astype(np.float32)
    fast = ops.col2im(col, padded, stride)
    generic = ops.col2im.generic(col, padded, stride)
    assert fast.dtype == np.float32 and fast.shape == generic.shape
    np.testing.assert_array_equal(fast, generic)  # same additions in the same order


POOL_CASES = [
    ((2, 2), (2, 2), (8, 8)),
    ((2, 2), (2, 2), (7, 9)),  # leftover row/column
    ((3, 3), (1, 1), (7, 6)),  # overlapping windows
    ((3, 2), (2, 1), (9, 7)),  # overlapping in one direction
    ((2, 2), (3, 3), (8, 8)),  # gaps between windows
    ((1, 1), (1, 1), (4, 5)),
    ((4, 4), (4, 4), (4, 4)),
]


@pytest.mark.parametrize("kernel,stride,hw", POOL_CASES)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pooling(kernel, stride, hw, layout, ties, threads):
    x = RNG.integers(0, 3, (3, 4, *hw)) if ties else RNG.standard_normal((3, 4, *hw))
    x = x.astype(np.float32)
    if layout == "nhwc":
        x = channels_last(x)
    y, argmax = ops.pool2d_forward(x, kernel, stride, "max")
    y0, argmax0 = ops.pool2d_forward.generic(x, kernel, stride, "max")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(argmax, argmax0)  # first maximum on ties
    y_inf, none = ops.pool2d_forward(x, kernel, stride, "max", need_argmax=False)
    assert none is None
    np.testing.assert_array_equal(y_inf, y0)
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    if layout == "nhwc":
        dy = channels_last(dy)
    dx = ops.pool2d_backward(dy, hw, kernel, stride, "max", argmax)
    dx0 = ops.pool2d_backward.generic(dy, hw, kernel, stride, "max", argmax0)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    np.testing.assert_array_equal(dx, dx0)


@pytest.mark.parametrize("kernel,stride,hw", POOL_CASES)
def test_average_pooling(kernel, stride, hw, threads):
    x = RNG.standard_normal((2, 3, *hw)).astype(np.float32)
    y, _ = ops.pool2d_forward(x, kernel, stride, "average")
    y0, _ = ops.pool2d_forward.generic(x, kernel, stride, "average")
    np.testing.assert_array_equal(y, y0)
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    dx = ops.pool2d_backward(dy, hw, kernel, stride, "average")
    dx0 = ops.pool2d_backward.generic(dy, hw, kernel, stride, "average")
    np.testing.assert_array_equal(dx, dx0)


# ---- convolution + activation ---------------------------------------------------------

CONV_CASES = [
    # (n, c, h, w, f, kh, kw, stride, pad)
    (4, 1, 28, 28, 1, 3, 3, (1, 1), "same"),
    (3, 1, 12, 12, 16, 3, 3, (1, 1), "same"),
    (3, 16, 7, 7, 32, 3, 3, (1, 1), "same"),
    (2, 3, 9, 8, 5, 3, 2, (2, 1), "same"),
    (2, 2, 10, 11, 4, 5, 5, (3, 2), "same"),
    (2, 3, 8, 8, 2, 3, 3, (2, 2), "valid"),
    (2, 2, 7, 9, 3, 2, 4, (1, 3), (1, 2)),
    (1, 4, 5, 5, 3, 5, 5, (1, 1), "valid"),  # kernel as large as the image
    (5, 2, 6, 6, 3, 1, 1, (1, 1), 0),
    (2, 3, 5, 6, 2, 2, 3, (1, 1), (3, 4)),  # padding wider than the kernel
    (2, 3, 6, 5, 4, 4, 2, (1, 1), "same"),  # even kernel: the odd padding row at the bottom
    # One channel, one map, stride 1: the direct route (shifted sums on flat images).
    (3, 1, 9, 7, 1, 2, 4, (1, 1), (1, 2)),
    (2, 1, 6, 6, 1, 5, 5, (1, 1), "same"),
    (2, 1, 5, 6, 1, 3, 3, (1, 1), "valid"),
    (2, 1, 5, 6, 1, 2, 3, (1, 1), (3, 4)),
    (3, 1, 4, 5, 1, 1, 1, (1, 1), 0),
    (2, 1, 4, 4, 1, 4, 4, (1, 1), "valid"),  # kernel as large as the image: one output
    (1, 1, 7, 5, 1, 3, 3, (1, 1), "same"),  # one sample
    # One channel, two maps, stride 1: the wide route.
    (3, 1, 9, 8, 2, 3, 3, (1, 1), "same"),
    (2, 1, 6, 7, 2, 2, 3, (1, 1), (2, 0)),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("act", ["identity", "relu", "lrelu"])
@pytest.mark.parametrize("chunk_bytes", [None, 1])  # one chunk / one sample per chunk
def test_conv_act_matches_generic(case, act, chunk_bytes, threads, monkeypatch):
    if chunk_bytes is not None:
        monkeypatch.setattr(fast_threads, "COL_CHUNK_BYTES", chunk_bytes)
    n, c, h, w, f, kh, kw, stride, pad = case
    x = RNG.standard_normal((n, c, h, w)).astype(np.float32)
    kernel = RNG.standard_normal((f, c, kh, kw)).astype(np.float32)
    bias = RNG.standard_normal(f).astype(np.float32)
    padding = ops.resolve_padding(pad, (h, w), (kh, kw), stride)
    slope = 1e-3 if act == "lrelu" else 0.0

    out, cache = ops.conv2d_act_forward(x, kernel, bias, stride, padding, act, slope, training=True)
    out0, cache0 = ops.conv2d_act_forward.generic(x, kernel, bias, stride, padding, act, slope, training=True)
    assert out.dtype == np.float32 and out.shape == out0.shape
    close(out, out0)
    out_inference, none = ops.conv2d_act_forward(x, kernel, bias, stride, padding, act, slope)
    assert none is None
    close(out_inference, out0)

    delta = RNG.standard_normal(out.shape).astype(np.float32)
    for need_input_grad in (True, False):
        dx, dk, db = ops.conv2d_act_backward(delta, cache, kernel, stride, padding, act, slope, need_input_grad)
        dx0, dk0, db0 = ops.conv2d_act_backward.generic(
            delta, cache0, kernel, stride, padding, act, slope, need_input_grad
        )
        assert dk.dtype == db.dtype == np.float32
        assert dk.shape == kernel.shape and db.shape == bias.shape
        close(dk, dk0)
        close(db, db0)
        if need_input_grad:
            assert dx.dtype == np.float32 and dx.shape == x.shape
            close(dx, dx0)
        else:
            assert dx is None and dx0 is None


def test_conv_act_channels_last_input_and_float64():
    x = channels_last(RNG.standard_normal((3, 4, 6, 6)))
    kernel = RNG.standard_normal((5, 4, 3, 3))
    bias = RNG.standard_normal(5)
    padding = ops.resolve_padding("same", (6, 6), (3, 3), (1, 1))
    out, cache = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, "relu", training=True)
    out0, cache0 = ops.conv2d_act_forward.generic(x, kernel, bias, (1, 1), padding, "relu", training=True)
    assert out.dtype == np.float64
    close(out, out0, np.float64)
    delta = channels_last(RNG.standard_normal(out.shape))
    for got, want in zip(ops.conv2d_act_backward(delta, cache, kernel, (1, 1), padding, "relu"),
                         ops.conv2d_act_backward.generic(delta, cache0, kernel, (1, 1), padding, "relu")):
        close(got, want, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("blas_axpy", [True, False])
def test_direct_route_zero_weights_keep_inf_and_nan(dtype, blas_axpy, monkeypatch):
    # BLAS axpy skips a zero weight, which would drop 0 * inf = NaN; the direct route
    # (one channel, one map) must give the generic op's NaN there, with or without SciPy.
    if blas_axpy:
        assert fast_threads.axpy_for(dtype) is not None  # SciPy is a dependency: BLAS is used
    else:
        monkeypatch.setattr(fast_threads, "_axpy", {})
    x = RNG.standard_normal((3, 1, 7, 8)).astype(dtype)
    x[0, 0, 3, 4], x[2, 0, 0, 0] = np.inf, np.nan
    kernel = RNG.standard_normal((1, 1, 3, 3)).astype(dtype)
    kernel[0, 0, 1, 1] = kernel[0, 0, 0, 2] = 0
    bias = RNG.standard_normal(1).astype(dtype)
    padding = ops.resolve_padding("same", (7, 8), (3, 3), (1, 1))
    with np.errstate(invalid="ignore", over="ignore"):
        out, _ = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, training=True)
        out0, _ = ops.conv2d_act_forward.generic(x, kernel, bias, (1, 1), padding, training=True)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.isnan(out), np.isnan(out0))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(out0))
    finite = np.isfinite(out0)
    close(out[finite], out0[finite], dtype)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_view", "fortran"])
def test_direct_route_chunks_layouts_and_mixed_dtypes(layout, monkeypatch):
    # Several multi-sample chunks with a short last one, any memory layout of the input,
    # and a float64 kernel on float32 images (the op computes in float64 then).
    # Three samples a chunk: two arrays of (12 * 11 + 2) float64 per sample (padded 12 x 11, kw - 1 = 2).
    monkeypatch.setattr(fast_threads, "COL_CHUNK_BYTES", 3 * 2 * (12 * 11 + 2) * 8)
    chunks = []
    fill = conv_one_channel.FlatImages.fill
    monkeypatch.setattr(conv_one_channel.FlatImages, "fill",
                        lambda self, x, start, stop: chunks.append(stop - start) or fill(self, x, start, stop))
    base = RNG.standard_normal((17, 1, 11, 9)).astype(np.float32)
    x = {
        "contiguous": base[:8],
        "channels_last": channels_last(base[:8]),
        "strided_view": base[:16:2, :, ::-1, :],
        "fortran": np.asfortranarray(base[:8]),
    }[layout]
    kernel = RNG.standard_normal((1, 1, 2, 3))
    bias = RNG.standard_normal(1).astype(np.float32)
    padding = ops.resolve_padding("same", (11, 9), (2, 3), (1, 1))
    out, cache = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, "lrelu", 1e-3, training=True)
    out0, cache0 = ops.conv2d_act_forward.generic(x, kernel, bias, (1, 1), padding, "lrelu", 1e-3, training=True)
    assert chunks == [3, 3, 2]
    assert out.dtype == out0.dtype == np.float64
    close(out, out0, np.float64)
    delta = RNG.standard_normal(out.shape)
    got = ops.conv2d_act_backward(delta, cache, kernel, (1, 1), padding, "lrelu", 1e-3, False)
    want = ops.conv2d_act_backward.generic(delta, cache0, kernel, (1, 1), padding, "lrelu", 1e-3, False)
    for a, b in zip(got[1:], want[1:]):
        close(a, b, np.float64)


def test_direct_route_holds_scipys_blas_to_one_thread(monkeypatch):
    # Inside the op, the BLAS that runs axpy is held to one thread; any other BLAS (NumPy's
    # own, when SciPy bundles a separate one) keeps its threads.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    axpy = fast_threads.axpy_for(np.float32)
    held = {lib.filepath for lib in fast_threads.axpy_libraries or fast_threads.blas_controllers()}
    counts = lambda: {info["filepath"]: info["num_threads"]  # noqa: E731
                      for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}
    before, inside = counts(), {}

    def spy(*args, **kwargs):
        if not inside:  # threadpool_info() is slow: look once
            inside.update(counts())
        return axpy(*args, **kwargs)

    monkeypatch.setattr(fast_threads, "_axpy", {np.dtype(np.float32): spy})
    x = RNG.standard_normal((4, 1, 6, 6)).astype(np.float32)
    kernel = RNG.standard_normal((1, 1, 3, 3)).astype(np.float32)
    padding = ops.resolve_padding("same", (6, 6), (3, 3), (1, 1))
    ops.conv2d_act_forward(x, kernel, np.zeros(1, np.float32), (1, 1), padding)
    assert held and inside
    assert inside == {path: 1 if path in held else count for path, count in before.items()}
    assert counts() == before


def test_fast_convolutions_of_an_empty_batch():
    for c, f in ((1, 1), (1, 2), (3, 4)):
        x = np.zeros((0, c, 6, 6), np.float32)
        kernel = RNG.standard_normal((f, c, 3, 3)).astype(np.float32)
        padding = ops.resolve_padding("same", (6, 6), (3, 3), (1, 1))
        out, _ = ops.conv2d_act_forward(x, kernel, np.zeros(f, np.float32), (1, 1), padding, "relu")
        assert out.shape == (0, f, 6, 6) and out.dtype == np.float32


def test_direct_route_restores_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = RNG.standard_normal((4, 1, 6, 6)).astype(np.float32)
    kernel = RNG.standard_normal((1, 1, 3, 3)).astype(np.float32)
    padding = ops.resolve_padding("same", (6, 6), (3, 3), (1, 1))
    ops.conv2d_act_forward(x, kernel, np.zeros(1, np.float32), (1, 1), padding)  # loads SciPy's BLAS
    before = [(info["filepath"], info["num_threads"]) for info in threadpoolctl.threadpool_info()]
    ops.conv2d_act_forward(x, kernel, np.zeros(1, np.float32), (1, 1), padding)
    assert [(info["filepath"], info["num_threads"]) for info in threadpoolctl.threadpool_info()] == before


def test_concurrent_direct_routes_restore_blas_threads():
    # The BLAS thread count is process-wide: overlapping holds from several threads
    # give the right numbers and leave it as it was.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = RNG.standard_normal((256, 1, 28, 28)).astype(np.float32)
    kernel = RNG.standard_normal((1, 1, 3, 3)).astype(np.float32)
    padding = ops.resolve_padding("same", (28, 28), (3, 3), (1, 1))
    bias = np.zeros(1, np.float32)
    ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding)  # loads SciPy's BLAS
    before = [(info["filepath"], info["num_threads"]) for info in threadpoolctl.threadpool_info()]
    want, _ = ops.conv2d_act_forward.generic(x, kernel, bias, (1, 1), padding)
    errors = []

    def run():
        try:
            for _ in range(20):
                got, _ = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding)
                close(got, want)
        except Exception as exc:  # reported below: an assert in a thread would be lost
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert [(info["filepath"], info["num_threads"]) for info in threadpoolctl.threadpool_info()] == before


def test_conv_layer_fast_and_generic_agree_for_unfused_activations():
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    delta = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    for act in (sigmoid, tanh, RELU, LRELU):
        results = []
        for fast in (True, False):
            layer = Convolution2DLayer(3, 4, 3, 3, act_func=act, seed=3, scheduler=Adam(1e-3))
            layer.build((3, 6, 6))
            with backends.use_fast_paths(fast):
                out = layer.forward(x, training=True)
                dx = layer.backward(delta)
            results.append((out, dx, layer.grads["kernel"], layer.grads["bias"]))
        for got, want in zip(*results):
            close(got, want)


# ---- whole networks ---------------------------------------------------------------------


def _small_cnn(backend="numpy", pooling="max"):
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(1e-3, 0.9, 0.999), seed=7, backend=backend)
    cnn.add_Convolution2DLayer(1, 4, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling=pooling)
    cnn.add_Convolution2DLayer(4, 6, 3, 3, act_func=LRELU)
    cnn.add_PoolingLayer(3, 3, 1, 1, pooling=pooling)
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(12, RELU)
    cnn.add_OutputLayer(10, softmax)
    return cnn


def _data(n, side=12):
    rng = np.random.default_rng(n)
    X = rng.random((n, 1, side, side), dtype=np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    return X, t


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_whole_network_fast_equals_generic(pooling, threads):
    X, t = _data(48)
    results = []
    for fast in (True, False):
        with backends.use_fast_paths(fast):
            cnn = _small_cnn(pooling=pooling)
            scores = cnn.fit(X, t, epochs=3, batch_size=16, verbose=False)
            proba = cnn.predict_proba(X)
        assert proba.dtype == np.float32
        weights = [getattr(layer, name) for layer in cnn.layers for name in layer.params]
        assert all(w.dtype == np.float32 for w in weights)
        results.append((scores["train_error"], proba, weights))
    (err, proba, weights), (err0, proba0, weights0) = results
    np.testing.assert_allclose(err, err0, rtol=1e-4)
    np.testing.assert_allclose(proba, proba0, rtol=1e-4, atol=1e-6)
    for w, w0 in zip(weights, weights0):
        np.testing.assert_allclose(w, w0, rtol=1e-4, atol=1e-5)


def test_seed_demo_network_fast_equals_generic():
    X, t = _data(40, side=28)
    outputs = []
    for fast in (True, False):
        with backends.use_fast_paths(fast):
            cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(1e-3, 0.9, 0.999), seed=2023)
            cnn.add_Convolution2DLayer(1, 1, 3, 3, act_func=LRELU)
            cnn.add_FlattenLayer()
            cnn.add_FullyConnectedLayer(30, LRELU)
            cnn.add_FullyConnectedLayer(20, LRELU)
            cnn.add_OutputLayer(10, softmax)
            cnn.fit(X, t, epochs=2, batch_size=10, verbose=False)
            outputs.append(cnn.predict_proba(X))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-6)


def test_pooling_layer_output_keeps_input_values():
    # The layer's forward in inference (no argmax) equals its training forward.
    layer = Pooling2DLayer(2, 2, 2, 2)
    layer.build((3, 8, 8))
    x = channels_last(RNG.standard_normal((2, 3, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(layer.forward(x), layer.forward(x, training=True))


def test_fast_paths_over_many_random_geometries():
    rng = np.random.default_rng(5)
    for kh, kw, sh, sw in itertools.islice(itertools.product((1, 2, 3), (1, 3), (1, 2), (1, 3)), 0, None, 2):
        c, f = rng.integers(1, 4, 2)
        h, w = rng.integers(max(kh, 3), 9, 2)
        x = rng.standard_normal((2, c, h, w)).astype(np.float32)
        kernel = rng.standard_normal((f, c, kh, kw)).astype(np.float32)
        bias = rng.standard_normal(f).astype(np.float32)
        for pad in ("same", "valid", 1):
            padding = ops.resolve_padding(pad, (h, w), (kh, kw), (sh, sw))
            out, cache = ops.conv2d_act_forward(x, kernel, bias, (sh, sw), padding, "lrelu", 1e-3, True)
            out0, cache0 = ops.conv2d_act_forward.generic(x, kernel, bias, (sh, sw), padding, "lrelu", 1e-3, True)
            close(out, out0)
            delta = rng.standard_normal(out.shape).astype(np.float32)
            got = ops.conv2d_act_backward(delta, cache, kernel, (sh, sw), padding, "lrelu", 1e-3)
            want = ops.conv2d_act_backward.generic(delta, cache0, kernel, (sh, sw), padding, "lrelu", 1e-3)
            for a, b in zip(got, want):
                close(a, b)


@pytest.mark.parametrize("kernel,stride", [((2, 2), (2, 2)), ((3, 3), (1, 1))])
def test_max_pooling_nan_and_inf_follow_the_generic_rule(kernel, stride):
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    x[0, 0, 0, 0] = x[1, 2, 3, 4] = np.nan  # a window starting with NaN, one with NaN inside
    x[0, 1, 2, 2] = np.inf
    y, argmax = ops.pool2d_forward(x, kernel, stride)
    y0, argmax0 = ops.pool2d_forward.generic(x, kernel, stride)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(argmax, argmax0)
    # The rule, written out: a window holding NaN pools to NaN at its first NaN, else to its
    # first maximum (as NumPy's max/argmax and torch's max pooling).
    (kh, kw), (sh, sw) = kernel, stride
    for n, c, i, j in np.ndindex(*y.shape):
        values = list(x[n, c, i * sh : i * sh + kh, j * sw : j * sw + kw].ravel())
        nan = [k for k, v in enumerate(values) if np.isnan(v)]
        first = nan[0] if nan else values.index(max(values))
        assert argmax[n, c, i, j] == first
        np.testing.assert_array_equal(y[n, c, i, j], values[first])
    _, none = ops.pool2d_forward(x, kernel, stride, need_argmax=False)
    assert none is None
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    dy[0, 0, 0, 0], dy[1, 1, 1, 1] = np.inf, np.nan
    dx = ops.pool2d_backward(dy, (6, 6), kernel, stride, "max", argmax)
    dx0 = ops.pool2d_backward.generic(dy, (6, 6), kernel, stride, "max", argmax0)
    np.testing.assert_array_equal(dx, dx0)


def test_threaded_results_are_deterministic(monkeypatch):
    monkeypatch.setattr(fast_threads, "WORKERS", 2)
    monkeypatch.setattr(fast_threads, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(fast_threads, "COL_CHUNK_BYTES", 4096)
    x = RNG.standard_normal((9, 3, 10, 10)).astype(np.float32)
    kernel = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = RNG.standard_normal(4).astype(np.float32)
    padding = ops.resolve_padding("same", (10, 10), (3, 3), (1, 1))
    delta = RNG.standard_normal((9, 4, 10, 10)).astype(np.float32)
    runs = []
    for _ in range(3):
        out, cache = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, "relu", training=True)
        runs.append((out, *ops.conv2d_act_backward(delta, cache, kernel, (1, 1), padding, "relu")))
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)


def test_recycled_results_are_never_shared_while_in_use():
    x = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
    kernel = RNG.standard_normal((5, 3, 3, 3)).astype(np.float32)
    bias = RNG.standard_normal(5).astype(np.float32)
    padding = ops.resolve_padding("same", (8, 8), (3, 3), (1, 1))
    first, _ = ops.conv2d_act_forward(x, kernel, bias, (1, 1), padding, "relu")
    kept = first.copy()
    pooled, _ = ops.pool2d_forward(first, (2, 2), (2, 2), need_argmax=False)  # inference: recycled
    for _ in range(3):  # same shapes again: the arrays above are still referenced
        second, _ = ops.conv2d_act_forward(2 * x, kernel, bias, (1, 1), padding, "relu")
        again, _ = ops.pool2d_forward(second, (2, 2), (2, 2), need_argmax=False)
        assert not np.shares_memory(first, second) and not np.shares_memory(pooled, again)
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(pooled, ops.pool2d_forward.generic(kept, (2, 2), (2, 2))[0])
    view = second[:, :2]  # a view keeps its base in use
    del second
    third, _ = ops.conv2d_act_forward(3 * x, kernel, bias, (1, 1), padding, "relu")
    assert not np.shares_memory(view, third)
    numpy_fast.release_memory()


def test_fresh_arrays_in_use_are_never_handed_out_again():
    numpy_fast.release_memory()
    held = [buffers.fresh((5, 7), np.float32) for _ in range(6)]  # more than the pool keeps
    assert len({id(a) for a in held}) == 6
    view = held[0][1:]
    first_id = id(held[0])
    del held[0]
    again = buffers.fresh((5, 7), np.float32)
    assert id(again) != first_id and not np.shares_memory(again, view)
    del view
    reused = buffers.fresh((5, 7), np.float32)  # now nothing references the first one
    assert id(reused) == first_id or buffers._UNREFERENCED is None
    numpy_fast.release_memory()
