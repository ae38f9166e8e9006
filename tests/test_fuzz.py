"""Fuzzing random layer stacks with hypothesis.

Every random stack (kernel sizes, strides, padding forms, pooling, channels, image size, batch) either

* builds, and then the im2col network gives the same forward output as a reference forward pass
  (the direct-sum convolution of its ``optimized=False`` twin with the same seed, a pooling loop written
  here, a reshape for Flatten) with the output shapes that SPEC's formulas give, and one epoch of
  training changes both twins' weights alike (the backward passes agree); or
* raises ``ValueError`` in ``add_*`` or ``fit`` exactly when SPEC's rules say the stack is invalid;

never anything else. ``NNCORE_FUZZ_EXAMPLES`` sets the number of examples (default 200, ~5 s).
"""

import math
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nncore import CNN, Constant, CostCrossEntropy, CostLogReg, CostOLS  # noqa: E402

EXAMPLES = int(os.environ.get("NNCORE_FUZZ_EXAMPLES", "200"))
OUTPUTS = {"softmax": CostCrossEntropy, "sigmoid": CostLogReg, "identity": CostOLS}
ACTS = ("lrelu", "relu", "sigmoid", "tanh", "identity")

pads = st.one_of(
    st.sampled_from(["same", "valid"]),
    st.integers(0, 3),
    st.tuples(st.integers(0, 3), st.integers(0, 3)),
    st.integers(-2, -1),  # invalid: negative
    st.tuples(st.integers(-1, 2), st.integers(-1, 2)),  # sometimes invalid
)


@st.composite
def stacks(draw):
    """A random network description (plain data, so hypothesis can shrink and print it)."""
    spec = {
        "n": draw(st.integers(1, 3)),
        "channels": draw(st.integers(1, 3)),
        "hw": (draw(st.integers(1, 10)), draw(st.integers(1, 10))),
        "seed": draw(st.integers(0, 2**16)),
        "layers": [],
    }
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            spec["layers"].append(("conv", {
                "feature_maps": draw(st.integers(1, 3)),
                "kernel_height": draw(st.integers(1, 5)),
                "kernel_width": draw(st.integers(1, 5)),
                "v_stride": draw(st.integers(1, 3)),
                "h_stride": draw(st.integers(1, 3)),
                "pad": draw(pads),
                "act_func": draw(st.sampled_from(ACTS)),
                "channel_error": draw(st.integers(0, 9)) == 0,  # input_channels off by one, 1 in 10
            }))
        else:
            spec["layers"].append(("pool", {
                "kernel_height": draw(st.integers(1, 4)),
                "kernel_width": draw(st.integers(1, 4)),
                "v_stride": draw(st.integers(1, 3)),
                "h_stride": draw(st.integers(1, 3)),
                "pooling": draw(st.sampled_from(["max", "average"])),
            }))
    # With no image layers, the input is either images (then Flatten) or already flat (no Flatten).
    spec["flat_input"] = not spec["layers"] and draw(st.booleans())
    spec["hidden"] = draw(st.one_of(st.none(), st.integers(1, 4)))
    spec["hidden_act"] = draw(st.sampled_from(ACTS))
    spec["output"] = (draw(st.integers(1, 3)), draw(st.sampled_from(sorted(OUTPUTS))))
    return spec


def expected_shapes(spec):
    """Per-layer output shapes by SPEC's formulas, or ``(index, "add"|"build")`` of the layer that must
    fail first: ``add_*`` checks the arguments and the channels against the previous convolution; the
    rest (sizes, the first convolution's channels) is checked when the network is built."""
    seen_conv = False
    for index, (kind, cfg) in enumerate(spec["layers"]):
        if kind == "conv":
            pad = cfg["pad"]
            if not isinstance(pad, str) and min((pad, pad) if isinstance(pad, int) else pad) < 0:
                return None, (index, "add")
            if cfg["channel_error"] and seen_conv:
                return None, (index, "add")
            seen_conv = True
    c, (h, w) = spec["channels"], spec["hw"]
    shapes = []
    for index, (kind, cfg) in enumerate(spec["layers"]):
        kh, kw, sv, sh = cfg["kernel_height"], cfg["kernel_width"], cfg["v_stride"], cfg["h_stride"]
        if kind == "conv":
            if cfg["channel_error"]:
                return None, (index, "build")
            pad = cfg["pad"]
            if pad == "same":
                oh, ow = math.ceil(h / sv), math.ceil(w / sh)
            else:
                ph, pw = (0, 0) if pad == "valid" else (pad, pad) if isinstance(pad, int) else pad
                if kh > h + 2 * ph or kw > w + 2 * pw:
                    return None, (index, "build")
                oh, ow = (h + 2 * ph - kh) // sv + 1, (w + 2 * pw - kw) // sh + 1
            c, h, w = cfg["feature_maps"], oh, ow
        else:
            if kh > h or kw > w:
                return None, (index, "build")
            h, w = (h - kh) // sv + 1, (w - kw) // sh + 1
        shapes.append((c, h, w))
    return shapes, None


def build(spec, optimized):
    """The network of ``spec``; ``ValueError`` propagates from ``add_*``."""
    nodes, output = spec["output"]
    cnn = CNN(cost_func=OUTPUTS[output], scheduler=Constant(0.01), seed=spec["seed"], dtype="float64")
    channels = spec["channels"]
    for kind, cfg in spec["layers"]:
        if kind == "conv":
            given_channels = channels + 1 if cfg["channel_error"] else channels
            cnn.add_Convolution2DLayer(given_channels, cfg["feature_maps"], cfg["kernel_height"],
                                       cfg["kernel_width"], cfg["v_stride"], cfg["h_stride"], cfg["pad"],
                                       cfg["act_func"], optimized=optimized)
            channels = cfg["feature_maps"]
        else:
            cnn.add_PoolingLayer(cfg["kernel_height"], cfg["kernel_width"], cfg["v_stride"], cfg["h_stride"],
                                 cfg["pooling"])
    if not spec["flat_input"]:
        cnn.add_FlattenLayer()
    if spec["hidden"] is not None:
        cnn.add_FullyConnectedLayer(spec["hidden"], spec["hidden_act"])
    cnn.add_OutputLayer(nodes, output)
    return cnn


def pool_loop(a, cfg):
    """Max/average pooling by explicit loops over output positions (the test's own oracle)."""
    kh, kw, sv, sh = cfg["kernel_height"], cfg["kernel_width"], cfg["v_stride"], cfg["h_stride"]
    n, c, h, w = a.shape
    out = np.empty((n, c, (h - kh) // sv + 1, (w - kw) // sh + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = a[:, :, i * sv : i * sv + kh, j * sh : j * sh + kw]
            out[:, :, i, j] = window.max(axis=(2, 3)) if cfg["pooling"] == "max" else window.mean(axis=(2, 3))
    return out


def reference_forward(twin, spec, X, shapes):
    """Forward pass through the ``optimized=False`` twin, with this file's pooling loop."""
    a = X
    for index, layer in enumerate(twin.layers):
        kind = spec["layers"][index][0] if index < len(spec["layers"]) else None
        if kind == "pool":
            a = pool_loop(a, spec["layers"][index][1])
        else:
            a = np.asarray(layer.forward(a))
        if index < len(shapes):
            assert a.shape[1:] == shapes[index], (index, a.shape, shapes[index])
    return a


def data(spec):
    rng = np.random.default_rng(spec["seed"])
    n, (h, w) = spec["n"], spec["hw"]
    X = rng.random((n, spec["channels"] * h * w)) if spec["flat_input"] else rng.random((n, spec["channels"], h, w))
    nodes, output = spec["output"]
    if output == "softmax":
        t = np.eye(nodes)[rng.integers(0, nodes, n)]
    elif output == "sigmoid":
        t = (rng.random((n, nodes)) > 0.5) * 1.0
    else:
        t = rng.random((n, nodes))
    return X, t


def params(cnn):
    return [np.asarray(getattr(layer, name)) for layer in cnn.layers for name in layer.params]


def check_stack(spec):
    """One fuzz example; returns "ok", "add" or "build" (where the expected ValueError came from)."""
    shapes, failure = expected_shapes(spec)
    try:
        fast = build(spec, optimized=True)
    except ValueError:
        assert failure is not None and failure[1] == "add", f"unexpected ValueError at add time, {failure}"
        return "add"
    assert failure is None or failure[1] == "build", f"add_* accepted a stack that must fail there: {failure}"
    slow = build(spec, optimized=False)
    X, t = data(spec)
    if failure is not None:
        with pytest.raises(ValueError, match=f"layer {failure[0]} "):
            fast.fit(X, t, epochs=1, verbose=False)
        return "build"

    # Same seed: identical initial weights. One epoch of plain SGD on each twin: the gradients of
    # im2col and of the direct sum agree, so the weights stay (nearly) equal.
    fast.fit(X, t, epochs=1, verbose=False)
    slow.fit(X, t, epochs=1, verbose=False)
    for a, b in zip(params(fast), params(slow)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # Forward: give the twin the very same weights, then compare with the reference pass.
    for fast_layer, slow_layer in zip(fast.layers, slow.layers):
        for name in fast_layer.params:
            setattr(slow_layer, name, getattr(fast_layer, name))
    got = fast.predict_proba(X)
    want = reference_forward(slow, spec, X, shapes)
    assert got.shape == (spec["n"], spec["output"][0])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    return "ok"


OUTCOMES = {"ok": 0, "add": 0, "build": 0}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 1000, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=stacks())
def test_random_stacks_match_the_oracles_or_raise_value_error(spec):
    OUTCOMES[check_stack(spec)] += 1


def test_fuzz_outcomes_cover_all_branches():
    """The generator reaches valid stacks and both kinds of invalid ones (run after the fuzz test)."""
    if sum(OUTCOMES.values()) < 50:
        pytest.skip("the fuzz test did not run first in this session")
    assert all(count > 0 for count in OUTCOMES.values()), OUTCOMES
