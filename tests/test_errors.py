"""Bad input gets a clear ValueError/TypeError naming the layer and the numbers (SPEC's list, item by item).

Every case is one row of ``CASES``: what the user does, the exception type, and the fragments that the
message must contain (the layer and the numbers involved). ``python tests/test_errors.py`` prints the
table of messages.
"""

import ast
import pathlib

import numpy as np
import pytest

from nncore import CNN, LRELU, Adam, CostOLS, identity, sigmoid, softmax

ROOT = pathlib.Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
X4 = RNG.random((4, 1, 8, 8))  # 4 images, 1 channel, 8x8
T3 = np.eye(3)[[0, 1, 2, 0]]  # one-hot, 3 classes


def conv_net(**conv):
    """Conv(1->4, 3x3) -> MaxPool 2x2/2 -> Flatten -> FC 5 -> Output 3 softmax."""
    cnn = CNN(scheduler=Adam(1e-3), seed=1)
    cnn.add_Convolution2DLayer(**{"input_channels": 1, "feature_maps": 4, "kernel_height": 3, "kernel_width": 3,
                                  **conv})
    cnn.add_PoolingLayer(2, 2, 2, 2)
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(5)
    cnn.add_OutputLayer(3, softmax)
    return cnn


def dense_net():
    cnn = CNN(cost_func=CostOLS, seed=1)
    cnn.add_FullyConnectedLayer(4, LRELU)
    cnn.add_OutputLayer(2, identity)
    return cnn


def built(cnn, X=X4, t=T3):
    cnn.fit(X, t, epochs=1, verbose=False)
    return cnn


def with_value(array, index, value):
    array = np.array(array, dtype=float)
    array[index] = value
    return array


def layers(*adds):
    """A CNN with the given ``(method, args, kwargs)`` additions applied in order."""
    cnn = CNN(seed=1)
    for method, args, kwargs in adds:
        getattr(cnn, method)(*args, **kwargs)
    return cnn


CONV = ("add_Convolution2DLayer", (1, 4, 3, 3), {})
POOL = ("add_PoolingLayer", (2, 2, 2, 2), {})
FLAT = ("add_FlattenLayer", (), {})
FC = ("add_FullyConnectedLayer", (5,), {})
OUT = ("add_OutputLayer", (3, softmax), {})

# (id, action, exception type, fragments the message must contain)
CASES = [
    # -- wrong input rank or channel count
    ("rank: 3-D images into a conv net", lambda: conv_net().fit(X4[:, 0], T3, verbose=False), ValueError,
     ["fit: X must be 4-D (n, channels, height, width) for layer 0 (Convolution2DLayer), got shape (4, 8, 8)"]),
    ("rank: 3-D images to predict", lambda: built(conv_net()).predict(X4[:, 0]), ValueError,
     ["predict: X must be 4-D", "layer 0 (Convolution2DLayer)", "(4, 8, 8)"]),
    ("rank: 1-D input to a dense net", lambda: dense_net().fit(np.ones(4), np.ones((4, 2)), verbose=False),
     ValueError, ["fit: X must have a sample axis", "layer 0 (FullyConnectedLayer)", "got shape (4,)"]),
    ("rank: images into a dense net", lambda: dense_net().fit(X4, np.ones((4, 2)), verbose=False), ValueError,
     ["layer 0 (FullyConnectedLayer) needs flat (n, features) input but gets samples of shape (1, 8, 8)",
      "add a FlattenLayer"]),
    ("rank: scalar to predict", lambda: built(conv_net()).predict(np.float64(3.0)), ValueError,
     ["predict: X must be an array of samples, got a scalar"]),
    ("channels: 3-channel images, conv expects 1", lambda: conv_net().fit(RNG.random((4, 3, 8, 8)), T3,
                                                                           verbose=False),
     ValueError, ["layer 0 (Convolution2DLayer) expects 1 input channels, got 3"]),
    ("channels: predict with other shape after fit", lambda: built(conv_net()).predict(RNG.random((2, 3, 8, 8))),
     ValueError, ["predict: X has samples of shape (3, 8, 8) but the CNN was built for samples of shape (1, 8, 8)",
                  "layer 0 (Convolution2DLayer)"]),
    ("channels: conv after conv with wrong input_channels",
     lambda: layers(CONV, ("add_Convolution2DLayer", (2, 4, 3, 3), {})), ValueError,
     ["add_Convolution2DLayer: layer 1 (Convolution2DLayer) has input_channels=2 but the previous convolution, "
      "layer 0, outputs 4 feature maps"]),
    ("channels: dense net with other feature count after fit",
     lambda: built(dense_net(), np.ones((4, 3)), np.ones((4, 2))).predict(np.ones((2, 5))), ValueError,
     ["X has samples of shape (5,) but the CNN was built for samples of shape (3,)",
      "layer 0 (FullyConnectedLayer)"]),
    # -- kernel or pool window larger than the (padded) input
    ("kernel 5x5 'valid' on 3x3 images", lambda: conv_net(kernel_height=5, kernel_width=5, pad="valid").fit(
        RNG.random((4, 1, 3, 3)), T3, verbose=False), ValueError,
     ["layer 0 (Convolution2DLayer): kernel 5x5 is larger than its padded input 3x3 (input 3x3, pad='valid')"]),
    ("kernel 7x7 pad=1 on 4x4 images", lambda: conv_net(kernel_height=7, kernel_width=7, pad=1).fit(
        RNG.random((4, 1, 4, 4)), T3, verbose=False), ValueError,
     ["layer 0 (Convolution2DLayer): kernel 7x7 is larger than its padded input 6x6 (input 4x4, pad=1)"]),
    ("pool window 2x2 on 1x1 maps", lambda: conv_net(pad="valid").fit(RNG.random((4, 1, 3, 3)), T3, verbose=False),
     ValueError, ["layer 1 (Pooling2DLayer): pooling window 2x2 is larger than its input 1x1"]),
    # -- FC/Output before Flatten after conv layers, layer order
    ("FullyConnected right after conv", lambda: layers(CONV, FC), ValueError,
     ["add_FullyConnectedLayer: layer 0 (Convolution2DLayer) outputs images (n, c, h, w); call add_FlattenLayer()"]),
    ("Output right after pooling", lambda: layers(CONV, POOL, OUT), ValueError,
     ["add_OutputLayer: layer 1 (Pooling2DLayer) outputs images (n, c, h, w); call add_FlattenLayer()"]),
    ("conv after Flatten", lambda: layers(CONV, FLAT, CONV), ValueError,
     ["add_Convolution2DLayer: layer 1 (FlattenLayer) already made the data flat (n, features)"]),
    ("pooling after a dense layer", lambda: layers(FC, POOL), ValueError,
     ["add_PoolingLayer: layer 0 (FullyConnectedLayer) already made the data flat"]),
    ("a layer after the OutputLayer", lambda: layers(FC, OUT, FC), ValueError,
     ["add_FullyConnectedLayer: the CNN already ends with an OutputLayer (layer 1)"]),
    # -- no OutputLayer
    ("no OutputLayer: fit", lambda: layers(CONV, FLAT, FC).fit(X4, T3, verbose=False), ValueError,
     ["fit: the CNN has no OutputLayer: its 3 layer(s) end with layer 2 (FullyConnectedLayer)",
      "add_OutputLayer(nodes, output_func)"]),
    ("no OutputLayer: predict", lambda: layers(CONV, FLAT).predict(X4), ValueError,
     ["predict: the CNN has no OutputLayer: its 2 layer(s) end with layer 1 (FlattenLayer)"]),
    ("no layers at all: predict", lambda: CNN().predict(X4), ValueError, ["predict: the CNN has no layers"]),
    ("no layers at all: fit", lambda: CNN().fit(X4, T3, verbose=False), ValueError, ["fit: the CNN has no layers"]),
    # -- target shape versus output nodes
    ("labels instead of one-hot", lambda: conv_net().fit(X4, np.array([0, 1, 2, 0]), verbose=False), ValueError,
     ["fit: t has shape (4,) but layer 4 (OutputLayer) has 3 node(s): expected (4, 3)", "one-hot"]),
    ("one-hot with 2 columns for 3 nodes", lambda: conv_net().fit(X4, T3[:, :2], verbose=False), ValueError,
     ["fit: t has shape (4, 2) but layer 4 (OutputLayer) has 3 node(s): expected (4, 3)"]),
    ("t rows != X samples", lambda: conv_net().fit(X4, T3[:3], verbose=False), ValueError,
     ["fit: t has 3 rows but X has 4 samples"]),
    ("score with wrong targets", lambda: built(conv_net()).score(X4, T3[:, :1]), ValueError,
     ["score: t has shape (4, 1) but layer 4 (OutputLayer) has 3 node(s)"]),
    # -- validation data
    ("X_val without t_val", lambda: conv_net().fit(X4, T3, X_val=X4, verbose=False), ValueError,
     ["fit: X_val was given but t_val was not"]),
    ("t_val without X_val", lambda: conv_net().fit(X4, T3, t_val=T3, verbose=False), ValueError,
     ["fit: t_val was given but X_val was not"]),
    ("X_val image size differs", lambda: conv_net().fit(X4, T3, X_val=RNG.random((2, 1, 9, 9)), t_val=T3[:2],
                                                        verbose=False), ValueError,
     ["fit: X_val has samples of shape (1, 9, 9) but the CNN was built for samples of shape (1, 8, 8)"]),
    ("t_val rows != X_val samples", lambda: conv_net().fit(X4, T3, X_val=X4[:2], t_val=T3, verbose=False),
     ValueError, ["fit: t_val has 4 rows but X_val has 2 samples"]),
    ("t_val columns != output nodes", lambda: conv_net().fit(X4, T3, X_val=X4, t_val=T3[:, :2], verbose=False),
     ValueError, ["fit: t_val has shape (4, 2) but layer 4 (OutputLayer) has 3 node(s): expected (4, 3)"]),
    # -- NaN / inf
    ("NaN in X", lambda: conv_net().fit(with_value(X4, (2, 0, 3, 4), np.nan), T3, verbose=False), ValueError,
     ["X contains 1 NaN or infinite value(s) (the first, nan, at index (2, 0, 3, 4))"]),
    ("inf in t", lambda: conv_net().fit(X4, with_value(T3, (1, 2), np.inf), verbose=False), ValueError,
     ["t contains 1 NaN or infinite value(s) (the first, inf, at index (1, 2);"]),
    ("NaN in X_val", lambda: conv_net().fit(X4, T3, X_val=with_value(X4, (0, 0, 0, 0), np.nan), t_val=T3,
                                            verbose=False), ValueError, ["X_val contains 1 NaN"]),
    ("-inf in t_val", lambda: conv_net().fit(X4, T3, X_val=X4, t_val=with_value(T3, (3, 0), -np.inf),
                                             verbose=False), ValueError,
     ["t_val contains 1 NaN or infinite value(s) (the first, -inf, at index (3, 0);"]),
    ("NaN in predict input", lambda: built(conv_net()).predict(with_value(X4, (1, 0, 0, 0), np.nan)), ValueError,
     ["X contains 1 NaN or infinite value(s)"]),
    ("float64 too large for float32", lambda: conv_net().fit(with_value(X4, (0, 0, 1, 1), 1e300), T3,
                                                             verbose=False),
     ValueError, ["X contains 1 NaN or infinite value(s) (the first, inf, at index (0, 0, 1, 1); values beyond "
                  "+-3.403e+38 overflow"]),
    # -- non-numeric dtypes
    ("strings as X", lambda: dense_net().fit(np.array([["a", "b"]] * 4), np.ones((4, 2)), verbose=False), TypeError,
     ["X must be a real numeric array, got dtype <U1 (strings)"]),
    ("objects as X", lambda: dense_net().fit(np.array([[1, None]] * 4, dtype=object), np.ones((4, 2)),
                                             verbose=False), TypeError,
     ["X must be a real numeric array, got dtype object (Python objects)"]),
    ("complex X", lambda: dense_net().fit(np.ones((4, 2)) * 1j, np.ones((4, 2)), verbose=False), TypeError,
     ["X must be a real numeric array, got dtype complex128 (complex numbers)"]),
    ("string targets", lambda: conv_net().fit(X4, np.array(["cat", "dog", "cat", "emu"]), verbose=False), TypeError,
     ["t must be a real numeric array, got dtype <U3 (strings)"]),
    ("ragged list as X", lambda: dense_net().fit([[1.0, 2.0], [3.0]], np.ones((2, 2)), verbose=False), TypeError,
     ["X must be a numeric array, could not convert it"]),
    ("bytes as X to predict", lambda: built(dense_net(), np.ones((4, 2)), np.ones((4, 2))).predict(
        np.array([[b"a", b"b"]])), TypeError, ["X must be a real numeric array, got dtype |S1 (bytes)"]),
    # -- batches / batch_size
    ("batches > samples", lambda: conv_net().fit(X4, T3, batches=5, verbose=False), ValueError,
     ["fit: batches=5 is larger than the number of samples (4)"]),
    ("batches and batch_size", lambda: conv_net().fit(X4, T3, batches=2, batch_size=2, verbose=False), ValueError,
     ["fit: give batches or batch_size, not both (got batches=2, batch_size=2)"]),
    ("batches=0", lambda: conv_net().fit(X4, T3, batches=0, verbose=False), ValueError,
     ["fit: batches must be at least 1, got 0"]),
    ("batch_size=2.5", lambda: conv_net().fit(X4, T3, batch_size=2.5, verbose=False), TypeError,
     ["fit: batch_size must be an int, got float 2.5"]),
    ("epochs=0", lambda: conv_net().fit(X4, T3, epochs=0, verbose=False), ValueError,
     ["fit: epochs must be at least 1, got 0"]),
    ("lam=-0.1", lambda: conv_net().fit(X4, T3, lam=-0.1, verbose=False), ValueError,
     ["fit: lam must be a finite non-negative number, got -0.1"]),
    ("lam='0.1'", lambda: conv_net().fit(X4, T3, lam="0.1", verbose=False), TypeError,
     ["fit: lam must be a non-negative number, got str '0.1'"]),
    ("no samples", lambda: conv_net().fit(X4[:0], T3[:0], verbose=False), ValueError,
     ["fit: X has no samples (shape (0, 1, 8, 8))"]),
    ("predict batch_size=0", lambda: built(conv_net()).predict(X4, batch_size=0), ValueError,
     ["predict: batch_size must be at least 1, got 0"]),
    # -- unknown names, bad layer settings
    ("unknown activation (conv)", lambda: layers(("add_Convolution2DLayer", (1, 4, 3, 3), {"act_func": "rleu"})),
     ValueError, ["add_Convolution2DLayer: layer 0 (Convolution2DLayer): unknown activation 'rleu'",
                  "valid names are"]),
    ("unknown activation (dense)", lambda: layers(CONV, FLAT, ("add_FullyConnectedLayer", (5, "swish"), {})),
     ValueError, ["add_FullyConnectedLayer: layer 2 (FullyConnectedLayer): unknown activation 'swish'"]),
    ("unknown output function", lambda: layers(FC, ("add_OutputLayer", (3, "softmx"), {})), ValueError,
     ["add_OutputLayer: layer 1 (OutputLayer): unknown activation 'softmx'"]),
    ("activation without a derivative", lambda: layers(("add_FullyConnectedLayer", (5, np.tanh), {})), TypeError,
     ["add_FullyConnectedLayer: layer 0 (FullyConnectedLayer): no analytic derivative for activation 'tanh'"]),
    ("unknown pooling", lambda: layers(CONV, ("add_PoolingLayer", (2, 2), {"pooling": "mean"})), ValueError,
     ["add_PoolingLayer: layer 1 (Pooling2DLayer): unknown pooling 'mean'", "'max'", "'average'"]),
    ("unknown pad name", lambda: layers(("add_Convolution2DLayer", (1, 4, 3, 3), {"pad": "full"})), ValueError,
     ["add_Convolution2DLayer: layer 0 (Convolution2DLayer): unknown pad 'full'"]),
    ("negative pad", lambda: layers(("add_Convolution2DLayer", (1, 4, 3, 3), {"pad": -1})), ValueError,
     ["add_Convolution2DLayer: layer 0 (Convolution2DLayer):", "-1"]),
    ("negative pad in a pair", lambda: layers(("add_Convolution2DLayer", (1, 4, 3, 3), {"pad": (1, -2)})),
     ValueError, ["add_Convolution2DLayer: layer 0 (Convolution2DLayer):", "(1, -2)"]),
    ("float pad", lambda: layers(("add_Convolution2DLayer", (1, 4, 3, 3), {"pad": 1.5})), TypeError,
     ["add_Convolution2DLayer: layer 0 (Convolution2DLayer):", "1.5"]),
    ("non-int kernel size", lambda: layers(("add_Convolution2DLayer", (1, 4, 2.5, 3), {})), TypeError,
     ["add_Convolution2DLayer: layer 0 (Convolution2DLayer): kernel_height must be a positive int, got 2.5"]),
    ("kernel size as string", lambda: layers(("add_Convolution2DLayer", (1, 4, 3, "3"), {})), TypeError,
     ["layer 0 (Convolution2DLayer): kernel_width must be a positive int, got '3'"]),
    ("zero kernel", lambda: layers(("add_Convolution2DLayer", (1, 4, 0, 3), {})), ValueError,
     ["layer 0 (Convolution2DLayer): kernel_height must be at least 1, got 0"]),
    ("zero stride", lambda: layers(CONV, ("add_PoolingLayer", (2, 2, 0, 2), {})), ValueError,
     ["add_PoolingLayer: layer 1 (Pooling2DLayer): v_stride must be at least 1, got 0"]),
    ("non-int pool window", lambda: layers(CONV, ("add_PoolingLayer", (2.0, 2), {})), TypeError,
     ["add_PoolingLayer: layer 1 (Pooling2DLayer): kernel_height must be a positive int, got 2.0"]),
    ("zero nodes", lambda: layers(FC, ("add_OutputLayer", (0, softmax), {})), ValueError,
     ["add_OutputLayer: layer 1 (OutputLayer): nodes must be at least 1, got 0"]),
    ("float nodes", lambda: layers(("add_FullyConnectedLayer", (5.0,), {})), TypeError,
     ["add_FullyConnectedLayer: layer 0 (FullyConnectedLayer): nodes must be a positive int, got 5.0"]),
    ("scheduler that is not a Scheduler", lambda: layers(("add_FullyConnectedLayer", (5,), {"scheduler": 0.1})),
     TypeError, ["add_FullyConnectedLayer: layer 0 (FullyConnectedLayer): scheduler must be a Scheduler, got float"]),
    ("unknown backend", lambda: CNN(backend="tpu"), ValueError,
     ["unknown backend 'tpu'; valid names are 'numpy', 'cupy', 'array_api_strict', 'auto'"]),
    ("unknown array_api_strict device", lambda: CNN(backend="array_api_strict").to("array_api_strict",
                                                                                     device="device9"),
     ValueError, ["array_api_strict has no device 'device9'"]),
    ("unsupported dtype", lambda: CNN(dtype="float16"), ValueError,
     ["dtype must be one of ('float32', 'float64'), got 'float16'"]),
    ("scheduler given as a string", lambda: CNN(scheduler="adam"), TypeError,
     ["CNN: scheduler must be a Scheduler such as Adam(1e-3), got str"]),
    ("cost given as a string", lambda: CNN(cost_func="CostOLS"), TypeError, ["CNN: cost_func must be a"]),
]


@pytest.mark.parametrize("action, error, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gets_a_clear_error(action, error, fragments):
    with pytest.raises(error) as info:
        action()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_corrupt_or_foreign_model_file(tmp_path):
    """A model file that is not one (more kinds in test_io.py)."""
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match=f"'{text}' is not an nncore model file: it is a text file"):
        CNN.load(text)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, w=np.zeros(2))
    with pytest.raises(ValueError, match=f"'{foreign}' is an .npz archive but not an nncore model"):
        CNN.load(foreign)


def test_nan_and_dtype_errors_on_strict_device1(strict_device1):
    cnn = CNN(seed=1, backend=strict_device1)
    cnn.add_FlattenLayer()
    cnn.add_OutputLayer(3, softmax)
    with pytest.raises(ValueError, match=r"X contains 2 NaN or infinite value\(s\) \(the first, nan, at index "
                                         r"\(1, 0, 2, 3\)\)"):
        cnn.fit(with_value(with_value(X4, (1, 0, 2, 3), np.nan), (3, 0, 0, 0), np.inf), T3, verbose=False)
    import array_api_strict as xps

    strict_ints = xps.asarray(np.arange(12).reshape(4, 3), device=strict_device1.device)
    cnn.fit(X4, strict_ints * 0 + xps.asarray(T3, dtype=xps.int64, device=strict_device1.device), epochs=1,
            verbose=False)  # integer targets from another library are fine
    with pytest.raises(TypeError, match=r"t must be a real numeric array, got dtype .*complex128 \(complex numbers\)"):
        cnn.fit(X4, xps.asarray(T3 * 1j, device=strict_device1.device), verbose=False)


def test_errors_do_not_half_build_the_model():
    """A stack that fails to build draws no weights: fixing the data then gives the seed's weights."""
    cnn = conv_net(kernel_height=5, kernel_width=5, pad="valid")
    with pytest.raises(ValueError, match="kernel 5x5"):
        cnn.fit(RNG.random((4, 1, 3, 3)), T3, verbose=False)
    assert cnn.input_shape is None
    cnn.fit(X4, T3, epochs=1, verbose=False)
    fresh = conv_net(kernel_height=5, kernel_width=5, pad="valid")
    fresh.fit(X4, T3, epochs=1, verbose=False)
    np.testing.assert_array_equal(cnn.layers[0].kernel, fresh.layers[0].kernel)


def test_bad_add_leaves_the_model_unchanged():
    cnn = layers(CONV)
    with pytest.raises(ValueError):
        cnn.add_PoolingLayer(2, 2, pooling="median")
    with pytest.raises(ValueError):
        cnn.add_FullyConnectedLayer(3)
    assert len(cnn.layers) == 1


def test_binary_and_regression_targets():
    cnn = CNN(cost_func=CostOLS)
    cnn.add_FullyConnectedLayer(3)
    cnn.add_OutputLayer(1, sigmoid)
    cnn.fit(np.ones((4, 2)), np.array([0, 1, 1, 0]), epochs=1, verbose=False)  # (n,) is fine for 1 node
    with pytest.raises(ValueError, match=r"t has shape \(4, 2\) but layer 1 \(OutputLayer\) has 1 node"):
        cnn.fit(np.ones((4, 2)), np.ones((4, 2)), epochs=1, verbose=False)


def test_no_bare_assert_in_the_library():
    """Asserts vanish under ``python -O`` and give no message: nncore/ and backends/ must not use them."""
    offenders = []
    for folder in ("nncore", "backends"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Assert):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


if __name__ == "__main__":  # print the table of messages
    for name, action, error, _ in CASES:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - we want to show whatever comes out
            print(f"| {name} | {type(exc).__name__} | {str(exc).replace('|', '/')} |")
        else:
            print(f"| {name} | (no error) | |")
