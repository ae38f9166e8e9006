"""The layer contract and the registry: every layer keeps one contract, a new layer touches one file.

Also the course notes' demonstration of a layer used on its own, run as written.
"""

import ast
import math
import pathlib
import sys
import types

import numpy as np
import pytest

import nncore
from backends import to_numpy
from nncore import CNN, RELU, Adam, Constant, Convolution2DLayer, FullyConnectedLayer, identity, softmax
from nncore.layers import LAYERS, Layer, layer_class, register_layer

PACKAGE = pathlib.Path(nncore.__file__).parent


# ---- a layer defined here, outside nncore ------------------------------------------------------


@register_layer("test_scale", aliases=("TestScale",))
class ScaleLayer(Layer):
    """``a * gain + shift`` per feature: a toy parametric layer. Input and output ``(n, features)``."""

    params = ("gain", "shift")
    penalised = ("gain",)

    def __init__(self, start=1.0, seed=None, scheduler=None):
        super().__init__(seed, scheduler)
        self.start = float(start)

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.label} needs flat input, got {input_shape}")
        return tuple(input_shape)

    def param_shapes(self, input_shape):
        return {"gain": tuple(input_shape), "shift": tuple(input_shape)}

    def init_params(self, input_shape, rng):
        return {"gain": np.full(input_shape, self.start), "shift": rng.normal(0, 0.1, input_shape)}

    def forward(self, a, training=False):
        if training:
            self._cache = a
        return a * self.gain + self.shift

    def backward(self, delta, need_input_grad=True):
        a, self._cache = self._cache, None
        self.grads = {"gain": self.xp.sum(delta * a, axis=0), "shift": self.xp.sum(delta, axis=0)}
        return delta * self.gain if need_input_grad else None

    def get_config(self):
        return {"start": self.start}


def toy_net(seed=3, backend="numpy"):
    cnn = CNN(scheduler=Adam(1e-2), seed=seed, dtype="float64", backend=backend)
    cnn.add_FullyConnectedLayer(6, RELU)
    cnn.add("test_scale", start=0.5)
    cnn.add_OutputLayer(3, softmax)
    return cnn


def toy_data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, np.eye(3)[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]


def test_a_registered_layer_builds_trains_saves_and_loads(tmp_path, numgrad):
    X, t = toy_data()
    cnn = toy_net()
    assert isinstance(cnn.layers[1], ScaleLayer) and cnn.layers[1].scheduler is cnn.scheduler
    before = to_numpy(cnn.predict_proba(X))
    cnn.fit(X, t, epochs=20, batch_size=10, lam=1e-3, verbose=False)
    after = to_numpy(cnn.predict_proba(X))
    assert not np.allclose(before, after)
    assert np.all(to_numpy(cnn.layers[1].gain) != 0.5), "the toy layer's parameters were trained"

    # The toy layer's gradient, as the network computes it, matches central differences.
    layer, Xd, td = cnn.layers[1], cnn._inputs(X), cnn._targets(t, len(X))

    def loss(gain):
        layer.gain = cnn.backend.asarray(gain)
        return float(cnn.cost_func(td)(cnn._feedforward(Xd)))

    gain = to_numpy(layer.gain).copy()
    expected = numgrad(loss, gain)
    layer.gain = cnn.backend.asarray(gain)
    cnn._feedforward(Xd, training=True)
    cnn._backpropagate(td)
    np.testing.assert_allclose(to_numpy(layer.grads["gain"]), expected, rtol=1e-6, atol=1e-9)

    path = cnn.save(tmp_path / "toy")
    loaded = CNN.load(path)
    assert type(loaded.layers[1]) is ScaleLayer and loaded.layers[1].start == 0.5
    np.testing.assert_array_equal(to_numpy(loaded.predict_proba(X)), to_numpy(cnn.predict_proba(X)))
    # and it resumes exactly: the scheduler state of the toy layer was saved too
    cnn.fit(X, t, epochs=2, batch_size=10, verbose=False)
    loaded.fit(X, t, epochs=2, batch_size=10, verbose=False)
    np.testing.assert_array_equal(to_numpy(loaded.layers[1].gain), to_numpy(cnn.layers[1].gain))


def test_the_toy_layer_runs_on_strict_device1(strict_device1):
    X, t = toy_data()
    on_numpy, on_strict = toy_net(), toy_net(backend=strict_device1)
    on_numpy.fit(X, t, epochs=3, batch_size=10, verbose=False)
    on_strict.fit(X, t, epochs=3, batch_size=10, verbose=False)
    np.testing.assert_allclose(to_numpy(on_strict.layers[1].gain), to_numpy(on_numpy.layers[1].gain),
                               rtol=1e-12)


def test_registry_lookup_and_errors():
    assert layer_class("conv") is layer_class("Convolution2DLayer") is layer_class("CONV2D") is Convolution2DLayer
    assert layer_class("dense") is layer_class("fc") is FullyConnectedLayer
    assert layer_class("testscale") is ScaleLayer and ScaleLayer.layer_name == "test_scale"
    with pytest.raises(ValueError, match=r"unknown layer 'convolution'.*'conv'.*'dense'"):
        layer_class("convolution")
    with pytest.raises(TypeError, match="string"):
        layer_class(3)
    with pytest.raises(ValueError, match="'conv' is taken by Convolution2DLayer"):
        register_layer("conv")(type("Other", (Layer,), {}))
    with pytest.raises(TypeError, match="not a Layer subclass"):
        register_layer("thing")(int)
    assert "thing" not in LAYERS


def test_add_by_name_names_the_layer_in_errors():
    cnn = CNN()
    with pytest.raises(ValueError, match=r"add\('conv'\): layer 0 \(Convolution2DLayer\).*feature_maps must be at least"):
        cnn.add("conv", input_channels=1, feature_maps=0, kernel_height=3, kernel_width=3)
    with pytest.raises(TypeError, match="add_layer: expected a Layer"):
        cnn.add_layer("conv")


@pytest.mark.parametrize("layer", [
    Convolution2DLayer(2, 3, 3, 2, v_stride=2, h_stride=1, pad=(1, 0), act_func=RELU, optimized=False),
    nncore.Pooling2DLayer(3, 2, 1, 2, pooling="average"),
    nncore.FlattenLayer(),
    FullyConnectedLayer(7, "tanh"),
    nncore.OutputLayer(4, identity),
    ScaleLayer(2.0),
], ids=lambda layer: type(layer).__name__)
def test_every_layer_round_trips_its_config(layer):
    config = layer.get_config()
    import json

    clone = type(layer).from_config(json.loads(json.dumps(config)))  # survives JSON
    assert clone.get_config() == config
    assert layer_class(layer.layer_name) is type(layer)
    for method in ("build", "forward", "backward", "step", "describe", "get_config", "from_config"):
        assert callable(getattr(clone, method))


# ---- a layer on its own, as the course notes use it ----------------------------------------------


def test_the_notes_layer_demonstration_runs_as_written(monkeypatch):
    """The notes' 'Demonstration' of a Convolution2DLayer on a photo, verbatim; the photo is
    scikit-learn's bundled china.jpg (the notes' dog picture is not here) and plots go nowhere."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.datasets import load_sample_image

    photo = load_sample_image("china.jpg")[::4, ::4]  # (107, 160, 3) uint8, smaller for speed
    fake = types.ModuleType("imageio.v3")
    fake.imread = lambda path: photo
    monkeypatch.setitem(sys.modules, "imageio", types.ModuleType("imageio"))
    monkeypatch.setitem(sys.modules, "imageio.v3", fake)
    sys.modules["imageio"].v3 = fake
    results = []
    original = Convolution2DLayer._feedforward
    monkeypatch.setattr(Convolution2DLayer, "_feedforward",
                        lambda self, X: results.append(original(self, X)) or results[-1])
    demo = '''
import numpy as np
import imageio.v3 as imageio
import matplotlib.pyplot as plt

def plot_convolution_result(X, layer):
    plt.imshow(X[0, 0, :, :], vmin=0, vmax=255, cmap="gray")
    plt.title("Original image")
    plt.colorbar()
    plt.show()
    conv_result = layer._feedforward(X)
    plt.title("Result of convolutional layer")
    plt.imshow(conv_result[0, 0, :, :], vmin=0, vmax=255, cmap="gray")
    plt.colorbar()
    plt.show()

# create layer
layer = Convolution2DLayer(
    input_channels=3,
    feature_maps=1,
    kernel_height=4,
    kernel_width=4,
    v_stride=2,
    h_stride=2,
    pad="same",
    act_func=identity,
    seed=2023,
)

# read in image path, make data correct format
img_path = "data/IMG-2167.JPG"
image_of_cute_dog = imageio.imread(img_path)
image_shape = image_of_cute_dog.shape
image_of_cute_dog = image_of_cute_dog.reshape(1, image_shape[0], image_shape[1], image_shape[2])

image_of_cute_dog = image_of_cute_dog.transpose(0, 3, 1, 2)

# plot the result of the convolution
plot_convolution_result(image_of_cute_dog, layer)
'''
    scope = {"Convolution2DLayer": Convolution2DLayer, "identity": identity}
    exec(compile(demo, "cnn-lecture-notes.md (layer demonstration)", "exec"), scope)
    (result,) = results
    layer = scope["layer"]
    assert isinstance(result, np.ndarray) and result.dtype == np.float64  # integer pixels: computed in float64
    # Oracle: a direct sum over kernel offsets with TensorFlow's "same" padding (4x4 kernel, stride 2).
    image = photo.transpose(2, 0, 1).astype(np.float64)
    h, w = image.shape[1:]
    oh, ow = math.ceil(h / 2), math.ceil(w / 2)
    pad_h, pad_w = max((oh - 1) * 2 + 4 - h, 0), max((ow - 1) * 2 + 4 - w, 0)
    padded = np.pad(image, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)))
    kernel = to_numpy(layer.kernel)[0]
    expected = np.full((oh, ow), float(to_numpy(layer.bias)[0]))
    for c in range(3):
        for i in range(4):
            for j in range(4):
                expected += kernel[c, i, j] * padded[c, i : i + 2 * oh : 2, j : j + 2 * ow : 2]
    np.testing.assert_allclose(result[0, 0], expected, rtol=1e-10, atol=1e-9)
    # the same seed gives the same kernel
    again = Convolution2DLayer(3, 1, 4, 4, 2, 2, "same", identity, seed=2023)
    again._feedforward(image[None])
    np.testing.assert_array_equal(to_numpy(again.kernel), to_numpy(layer.kernel))


def test_a_layer_on_its_own_learns_with_backpropagate():
    """_feedforward / _backpropagate as in the course: the layer updates itself with its own scheduler."""
    rng = np.random.default_rng(0)
    layer = FullyConnectedLayer(1, identity, scheduler=Constant(0.1), seed=1)
    X = rng.normal(size=(50, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])
    for _ in range(200):
        out = layer._feedforward(X)
        layer._backpropagate((out - y) / len(X))
    np.testing.assert_allclose(layer.weights, [[1.0], [-2.0], [0.5]], atol=1e-3)
    # without a scheduler of its own the layer gets the CNN's default (Adam)
    free = FullyConnectedLayer(2, seed=1)
    free._backpropagate(free._feedforward(X)[:, :2] * 0 + 1.0)
    assert isinstance(free.schedulers["weights"], Adam) and free.schedulers["weights"].t == 1
    with pytest.raises(ValueError, match=r"built for samples of shape \(3,\), got \(4,\)"):
        layer._feedforward(np.ones((2, 4)))


# ---- the package's shape: small modules, no import circles ------------------------------------


def _imports(path):
    """Modules of nncore/backends that ``path`` imports (relative imports resolved), at any depth."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in ("nncore", "backends"))
    return found


def test_no_module_of_the_package_is_over_450_lines():
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines())
             for root in (PACKAGE, PACKAGE.parent / "backends") for p in root.rglob("*.py")}
    assert sizes and max(sizes.values()) <= 450, {k: v for k, v in sizes.items() if v > 450}


def test_no_import_circles():
    files = [p for root in (PACKAGE, PACKAGE.parent / "backends") for p in root.rglob("*.py")]
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in files}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    assert not any(m.startswith("backends") and any(t.startswith("nncore") for t in graph[m]) for m in graph), \
        "backends must not import nncore"
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if target.startswith(node + "."):
                continue  # a package importing its own submodules is not a circle
            if state.get(target) == "open":
                cycle.extend(stack[stack.index(target):] + [target])
                return True
            if target not in state and visit(target, stack + [target]):
                return True
        state[node] = "done"
        return False

    for module in sorted(graph):
        if module not in state and visit(module, [module]):
            break
    assert not cycle, " -> ".join(cycle)
