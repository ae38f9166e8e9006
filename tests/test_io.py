"""CNN.save / CNN.load / CNN.to: one .npz, no pickle, atomic, portable across backends, resumable."""

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import nncore
from backends import get_backend, to_numpy
from nncore import CNN, Adam, Constant, CostOLS, Momentum, RMS_prop, identity, softmax
from nncore import io as nio


def make_data(n=24, channels=1, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, channels, size, size))
    t = np.eye(classes)[rng.integers(0, classes, n)]
    return X, t


def make_cnn(backend="numpy", dtype="float64", seed=7, fc_scheduler=None, device=None, pad=(1, 0)):
    cnn = CNN(scheduler=Adam(1e-2, 0.9, 0.999), seed=seed, backend=get_backend(backend, device), dtype=dtype)
    cnn.add_Convolution2DLayer(1, 2, 3, 3, pad=pad)
    cnn.add_PoolingLayer(2, 2, 2, 2)
    cnn.add_Convolution2DLayer(2, 3, 2, 2, v_stride=2, pad="same", act_func="relu", optimized=False)
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(5, act_func="tanh", scheduler=fc_scheduler)
    cnn.add_OutputLayer(3, softmax)
    return cnn


def weights(cnn):
    return {(i, name): to_numpy(getattr(layer, name)) for i, layer in enumerate(cnn.layers) for name in layer.params}


def assert_same_weights(a, b, exact=True, rtol=1e-6):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if exact:
            np.testing.assert_array_equal(wa[key], wb[key], err_msg=str(key))
        else:
            np.testing.assert_allclose(wa[key], wb[key], rtol=rtol, atol=1e-12, err_msg=str(key))


@pytest.fixture
def trained():
    X, t = make_data()
    cnn = make_cnn()
    cnn.fit(X, t, epochs=2, batches=3, verbose=False)
    return cnn, X, t


# ---- round trip and file format ---------------------------------------------------------------


def test_roundtrip_predicts_exactly_and_format(tmp_path, trained):
    cnn, X, t = trained
    path = cnn.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz"
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    loaded = CNN.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), cnn.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), cnn.predict(X))
    assert loaded.pred_format == cnn.pred_format == "Multi-class"
    assert loaded.input_shape == cnn.input_shape
    assert loaded.layers[2].optimized is False and loaded.layers[0].pad == (1, 0)
    assert_same_weights(loaded, cnn)

    # The file is a plain .npz: no object arrays, every member readable without pickle.
    with np.load(path, allow_pickle=False) as archive:
        members = {key: archive[key] for key in archive.files}
    assert all(a.dtype != object for a in members.values())
    meta_bytes = members.pop(nio.METADATA_KEY)
    assert meta_bytes.dtype == np.uint8 and meta_bytes.ndim == 1
    meta = json.loads(meta_bytes.tobytes().decode("utf-8"))
    assert meta["format"] == "nncore.CNN" and meta["format_version"] == nio.FORMAT_VERSION == 1
    assert meta["cost_func"] == "CostCrossEntropy" and meta["dtype"] == "float64"
    assert meta["scheduler"] == {"name": "Adam", "config": {"eta": 0.01, "rho": 0.9, "rho2": 0.999, "eps": 1e-08}}
    assert [layer["type"] for layer in meta["layers"]] == [
        "Convolution2DLayer", "Pooling2DLayer", "Convolution2DLayer", "FlattenLayer", "FullyConnectedLayer",
        "OutputLayer"]
    assert meta["layers"][4]["config"] == {"nodes": 5, "act_func": "tanh"}
    adam = meta["layers"][0]["optimizer"]["kernel"]
    assert adam["state"]["t"] == 6  # 2 epochs x 3 batches
    assert set(members) == {f"param.{i}.{n}" for i, n in weights(cnn)} | {
        f"state.{i}.{n}.{s}" for i, n in weights(cnn) for s in ("moment", "second")}


def test_npz_suffix_is_added_and_found(tmp_path, trained):
    cnn, X, _ = trained
    path = cnn.save(tmp_path / "model")
    assert path.name == "model.npz" and path.exists()
    np.testing.assert_array_equal(CNN.load(tmp_path / "model").predict(X), cnn.predict(X))
    np.testing.assert_array_equal(CNN.load(str(path)).predict(X), cnn.predict(X))


def test_unbuilt_model_roundtrip_keeps_the_seed_stream(tmp_path):
    X, t = make_data()
    fresh = make_cnn(fc_scheduler=Momentum(1e-2, 0.5))
    loaded = CNN.load(fresh.save(tmp_path / "arch.npz"))
    assert loaded.input_shape is None and len(loaded.layers) == 6
    assert isinstance(loaded.layers[4].scheduler, Momentum) and loaded.layers[4].scheduler.momentum == 0.5
    a = fresh.fit(X, t, epochs=2, batches=2, verbose=False)
    b = loaded.fit(X, t, epochs=2, batches=2, verbose=False)
    np.testing.assert_array_equal(a["train_error"], b["train_error"])
    assert_same_weights(loaded, fresh)


def test_regression_binary_and_float32(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.random((10, 6))
    for output_func, cost, t in [(identity, CostOLS, rng.random((10, 2))),
                                 (nncore.sigmoid, nncore.CostLogReg, (rng.random((10, 2)) > 0.5) * 1.0)]:
        cnn = CNN(cost_func=cost, scheduler=Constant(0.1), seed=3, dtype="float32")
        cnn.add_FullyConnectedLayer(4, act_func=nncore.LRELU)
        cnn.add_OutputLayer(2, output_func)
        cnn.fit(X, t, epochs=2, verbose=False)
        loaded = CNN.load(cnn.save(tmp_path / f"{cost.__name__}.npz"))
        assert loaded.cost_func is cost and loaded.pred_format == cnn.pred_format
        assert loaded.layers[0].weights.dtype == np.float32
        np.testing.assert_array_equal(loaded.predict(X), cnn.predict(X))


# ---- portable across backends ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_to_strict_device1_and_back(tmp_path, dtype, strict_device1):
    X, t = make_data()
    cnn = make_cnn(dtype=dtype)
    cnn.fit(X, t, epochs=1, batches=2, verbose=False)
    before = cnn.predict_proba(X)
    on_strict = CNN.load(cnn.save(tmp_path / "np.npz"), backend="array_api_strict", device="device1")
    assert on_strict.backend == strict_device1
    assert on_strict.layers[0].kernel.device == strict_device1.device
    assert on_strict.layers[0].schedulers["kernel"].moment.device == strict_device1.device
    np.testing.assert_array_equal(on_strict.predict_proba(X), before)  # NumPy in, NumPy out, same numbers
    np.testing.assert_array_equal(on_strict.predict(X), cnn.predict(X))
    back = CNN.load(on_strict.save(tmp_path / "strict.npz"))  # saved from device1, loaded on numpy
    assert back.backend.name == "numpy"
    np.testing.assert_array_equal(back.predict_proba(X), before)
    assert_same_weights(back, cnn)


def test_load_backend_default_reads_environment(tmp_path, trained, monkeypatch):
    cnn, X, _ = trained
    path = cnn.save(tmp_path / "m.npz")
    monkeypatch.setenv("NNCORE_BACKEND", "array_api_strict")
    assert CNN.load(path).backend.name == "array_api_strict"
    monkeypatch.delenv("NNCORE_BACKEND")
    assert CNN.load(path).backend.name == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        CNN.load(path, backend="tpu")


# ---- resuming training -------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_equals_training_straight_through(tmp_path, shuffle):
    """2 epochs + save/load + 2 epochs == 4 epochs, bit for bit: Adam moments, step counts, per-layer
    schedulers and the shuffling generator's state are all in the file."""
    X, t = make_data(n=30)
    straight = make_cnn(fc_scheduler=RMS_prop(1e-3, 0.9))
    s4 = straight.fit(X, t, epochs=4, batches=4, shuffle=shuffle, verbose=False)

    first = make_cnn(fc_scheduler=RMS_prop(1e-3, 0.9))
    s2 = first.fit(X, t, epochs=2, batches=4, shuffle=shuffle, verbose=False)
    resumed = CNN.load(first.save(tmp_path / "half.npz"))
    assert resumed.layers[0].schedulers["kernel"].t == 8
    s2b = resumed.fit(X, t, epochs=2, batches=4, shuffle=shuffle, verbose=False)

    assert_same_weights(resumed, straight)
    np.testing.assert_array_equal(np.concatenate([s2["train_error"], s2b["train_error"]]), s4["train_error"])
    # Starting the schedulers over (as a fresh Adam would) gives different weights: the test has teeth.
    restarted = CNN.load(tmp_path / "half.npz")
    for layer in restarted.layers:
        if layer.params:
            layer.reset_schedulers()
    restarted.fit(X, t, epochs=2, batches=4, shuffle=shuffle, verbose=False)
    assert not np.array_equal(weights(restarted)[(0, "kernel")], weights(straight)[(0, "kernel")])


def test_to_moves_weights_and_scheduler_state(strict_device1):
    X, t = make_data()
    on_numpy = make_cnn()
    on_numpy.fit(X, t, epochs=1, batches=2, verbose=False)
    moved = make_cnn()
    moved.fit(X, t, epochs=1, batches=2, verbose=False)
    assert moved.to("array_api_strict", device="device1") is moved
    assert moved.backend == strict_device1
    for layer in moved.layers:
        for name in layer.params:
            assert getattr(layer, name).device == strict_device1.device
            sched = layer.schedulers[name]
            assert sched.moment.device == strict_device1.device and sched.t == 2
    on_numpy.fit(X, t, epochs=1, batches=2, verbose=False)
    moved.fit(X, t, epochs=1, batches=2, verbose=False)  # continues Adam on device1
    assert_same_weights(moved, on_numpy, exact=False, rtol=1e-9)
    assert moved.to("numpy") is moved and moved.backend.name == "numpy"
    assert isinstance(moved.layers[0].kernel, np.ndarray)
    assert isinstance(moved.layers[0].schedulers["kernel"].second, np.ndarray)
    np.testing.assert_allclose(moved.predict_proba(X), on_numpy.predict_proba(X), rtol=1e-9)


def test_to_before_building_and_errors():
    cnn = make_cnn()
    assert cnn.to("array_api_strict", device="device1") is cnn
    X, t = make_data(n=6)
    cnn.fit(X, t, epochs=1, verbose=False)
    assert cnn.layers[0].kernel.device == cnn.backend.device
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        cnn.to("gpu")


# ---- atomic writes -----------------------------------------------------------------------------


def _crash_on_call(monkeypatch, module, name, call, exc=OSError("disk full (simulated)")):
    original = getattr(module, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("crash", ["mid-write", "fsync", "replace", "ctrl-c"])
def test_crash_while_saving_leaves_the_old_file_and_no_leftovers(tmp_path, trained, monkeypatch, crash):
    cnn, X, t = trained
    path = cnn.save(tmp_path / "model.npz")
    old_bytes = path.read_bytes()
    old_prediction = cnn.predict_proba(X)
    cnn.fit(X, t, epochs=1, verbose=False)  # the model changes; saving it again will crash
    if crash == "mid-write":  # the third array: the zip on disk is half written
        calls = _crash_on_call(monkeypatch, np.lib.format, "write_array", 3)
    elif crash == "fsync":
        calls = _crash_on_call(monkeypatch, os, "fsync", 1)
    elif crash == "replace":
        calls = _crash_on_call(monkeypatch, os, "replace", 1)
    else:
        calls = _crash_on_call(monkeypatch, np.lib.format, "write_array", 2, KeyboardInterrupt())
    with pytest.raises((OSError, KeyboardInterrupt)):
        cnn.save(path)
    assert calls, "the patched function was never called: the test does not test anything"
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind
    assert path.read_bytes() == old_bytes
    np.testing.assert_array_equal(CNN.load(path).predict_proba(X), old_prediction)
    cnn.save(path)  # and saving works again afterwards
    np.testing.assert_array_equal(CNN.load(path).predict_proba(X), cnn.predict_proba(X))


def test_saved_file_gets_normal_permissions(tmp_path, trained):
    cnn = trained[0]
    umask = os.umask(0o022)
    try:
        path = cnn.save(tmp_path / "m.npz")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


# ---- only registered functions can be saved ----------------------------------------------------


def _custom_act(X):
    return X


_custom_act.derivative = lambda X: X * 0 + 1


class MyAdam(Adam):
    pass


def test_unregistered_functions_cannot_be_saved(tmp_path, monkeypatch):
    cnn = CNN(seed=1)
    cnn.add_FullyConnectedLayer(3, act_func=_custom_act)
    cnn.add_OutputLayer(2, softmax)
    with pytest.raises(ValueError, match=r"layer 0 \(FullyConnectedLayer\) uses the activation '_custom_act'.*"
                                         r"nncore.activations.ACTIVATIONS"):
        cnn.save(tmp_path / "m.npz")

    def my_cost(target):
        return nncore.CostOLS(target)

    cnn = CNN(cost_func=my_cost)
    with pytest.raises(ValueError, match="cost function 'my_cost'.*nncore.costs.COSTS"):
        cnn.save(tmp_path / "m.npz")
    cnn = CNN(scheduler=MyAdam(1e-3))
    with pytest.raises(ValueError, match="scheduler MyAdam.*nncore.schedulers.SCHEDULERS"):
        cnn.save(tmp_path / "m.npz")
    cnn = CNN()
    cnn.add_FullyConnectedLayer(3, scheduler=MyAdam(1e-3))
    with pytest.raises(ValueError, match=r"layer 0 \(FullyConnectedLayer\) uses the scheduler MyAdam"):
        cnn.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []  # nothing written

    # Registered by name, the same function round-trips (looked up again on load).
    monkeypatch.setitem(nncore.activations.ACTIVATIONS, "_custom_act", _custom_act)
    cnn = CNN(seed=1)
    cnn.add_FullyConnectedLayer(3, act_func=_custom_act)
    cnn.add_OutputLayer(2, softmax)
    X = np.random.default_rng(0).random((4, 5))
    loaded = CNN.load(cnn.save(tmp_path / "m.npz"))
    assert loaded.layers[0].act_func is _custom_act
    np.testing.assert_array_equal(loaded.predict_proba(X), cnn.predict_proba(X))


# ---- bad files: a ValueError naming the file and the problem; nothing executed -----------------

FLAG = {"unpickled": False}


def _set_flag():
    FLAG["unpickled"] = True
    return np.zeros(1)


class SetsFlagWhenUnpickled:
    def __reduce__(self):
        return (_set_flag, ())


def _rewrite(src, dst, change_meta=None, change_arrays=None):
    """Copy an nncore file, editing its metadata and/or arrays (written without pickle)."""
    with np.load(src, allow_pickle=False) as archive:
        members = {key: archive[key] for key in archive.files}
    meta = json.loads(members.pop(nio.METADATA_KEY).tobytes())
    if change_meta:
        change_meta(meta)
    if change_arrays:
        change_arrays(members)
    members[nio.METADATA_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **members)
    return dst


def _bad_files(tmp_path, good):
    """``{name: (path, expected message fragment)}`` for every kind of bad file."""
    files = {}

    def add(name, writer, expected):
        path = tmp_path / f"{name}.npz"
        writer(path)
        files[name] = (path, expected)

    data = good.read_bytes()
    add("empty", lambda p: p.write_bytes(b""), "the file is empty")
    add("truncated", lambda p: p.write_bytes(data[: len(data) // 2]), "truncated or corrupt")
    add("truncated-tiny", lambda p: p.write_bytes(data[:3]), "zip archive but the header is damaged")
    add("garbage", lambda p: p.write_bytes(bytes(range(7, 256)) * 4), "not an .npz (zip) archive")
    add("text", lambda p: p.write_text("layers: conv, pool, dense\n"), "it is a text file")
    add("npy", lambda p: np.save(open(p, "wb"), np.zeros(3)), "single NumPy .npy array")
    add("pickle", lambda p: p.write_bytes(pickle.dumps(SetsFlagWhenUnpickled())), "it is a Python pickle")
    add("foreign-npz", lambda p: np.savez(p, weights=np.zeros(3), bias=np.ones(2)),
        "no 'nncore_metadata' entry (it holds 2 entries: 'weights', 'bias')")
    add("pickled-metadata", lambda p: np.savez(p, nncore_metadata=np.array([SetsFlagWhenUnpickled()], dtype=object)),
        "entry 'nncore_metadata' holds pickled Python objects")
    add("pickled-extra", lambda p: _rewrite(good, p, change_arrays=lambda a: a.update(
        extra=np.array([SetsFlagWhenUnpickled(), 1], dtype=object))), "entry 'extra' holds pickled Python objects")
    def torch_like(p, with_metadata):
        with zipfile.ZipFile(p, "w") as archive:
            if with_metadata:
                with zipfile.ZipFile(good) as source:
                    archive.writestr("nncore_metadata.npy", source.read("nncore_metadata.npy"))
            archive.writestr("archive/data.pkl", pickle.dumps(SetsFlagWhenUnpickled()))

    add("zip-with-pickle", lambda p: torch_like(p, False),
        "no 'nncore_metadata' entry (it holds 1 entry: 'archive/data.pkl')")
    add("metadata-and-pickle", lambda p: torch_like(p, True),
        "its entry 'archive/data.pkl' is not a NumPy array (.npy); it was left unread")
    add("newer", lambda p: _rewrite(good, p, lambda m: m.update(format_version=2, nncore_version="9.0")),
        "written by a newer nncore (file format version 2, saved by nncore 9.0); this nncore reads format "
        "versions up to 1")
    add("not-json", lambda p: np.savez(p, nncore_metadata=np.frombuffer(b"{not json", dtype=np.uint8)),
        "metadata is not valid JSON")
    add("metadata-unicode", lambda p: np.savez(p, nncore_metadata=np.array("{}")), "should be UTF-8 JSON bytes")
    add("other-format", lambda p: np.savez(p, nncore_metadata=np.frombuffer(b'{"format": "keras"}', np.uint8)),
        "its metadata says format 'keras'")
    add("missing-array", lambda p: _rewrite(good, p, change_arrays=lambda a: a.pop("param.0.kernel")),
        "layer 0 (Convolution2DLayer) parameter 'kernel': the array 'param.0.kernel' is missing")
    add("wrong-shape", lambda p: _rewrite(good, p, change_arrays=lambda a: a.update(
        {"param.4.weights": np.zeros((4, 5))})),
        "layer 4 (FullyConnectedLayer) parameter 'weights': the array 'param.4.weights' has shape (4, 5), "
        "expected (18, 5)")
    add("int-weights", lambda p: _rewrite(good, p, change_arrays=lambda a: a.update(
        {"param.5.bias": np.zeros(3, dtype=np.int64)})), "has dtype int64, expected floats")
    add("wrong-state-shape", lambda p: _rewrite(good, p, change_arrays=lambda a: a.update(
        {"state.5.bias.moment": np.zeros(4)})), "scheduler state 'moment': the array 'state.5.bias.moment' has "
        "shape (4,), expected (3,)")
    add("unknown-layer", lambda p: _rewrite(good, p, lambda m: m["layers"][1].update(type="Dropout")),
        "layer 1: unknown layer type 'Dropout'")
    add("unknown-activation", lambda p: _rewrite(good, p, lambda m: m["layers"][4]["config"].update(
        act_func="swish")), "layer 4 (FullyConnectedLayer) cannot be rebuilt: add_FullyConnectedLayer: layer 4 "
        "(FullyConnectedLayer): unknown activation 'swish'")
    add("unknown-cost", lambda p: _rewrite(good, p, lambda m: m.update(cost_func="__import__('os')")),
        "unknown cost function \"__import__('os')\"")
    add("unknown-scheduler", lambda p: _rewrite(good, p, lambda m: m["scheduler"].update(name="eval")),
        "the CNN: unknown scheduler 'eval'")
    add("bad-step-count", lambda p: _rewrite(good, p, lambda m: m["layers"][0]["optimizer"]["kernel"]["state"]
                                             .update(t=-1)), "the step count must be an int >= 0, got -1")
    add("bad-channels", lambda p: _rewrite(good, p, lambda m: m.update(input_shape=[3, 8, 8])),
        "cannot be built for input shape (3, 8, 8)")
    add("missing-key", lambda p: _rewrite(good, p, lambda m: m.pop("layers")), "the metadata lacks ['layers']")
    return files


def test_bad_files_raise_clear_value_errors_and_execute_nothing(tmp_path, trained):
    cnn = trained[0]
    good = cnn.save(tmp_path / "good.npz")
    CNN.load(good)  # the base file is fine
    files = _bad_files(tmp_path, good)
    for name, (path, expected) in files.items():
        with pytest.raises(ValueError) as info:
            CNN.load(path)
        message = str(info.value)
        assert str(path) in message, (name, message)
        assert expected in message, (name, message)
    assert FLAG["unpickled"] is False


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        CNN.load(tmp_path / "nothing.npz")


def test_save_refuses_to_write_object_arrays(tmp_path, trained):
    # (A layer's schedulers are snapshots of the CNN's flat scheduler state since issue 10, so the object
    # array goes where save reads it: a parameter, which the CNN takes in before it saves.)
    cnn = trained[0]
    cnn.layers[0].kernel = np.full((2, 1, 3, 3), None, dtype=object)
    with pytest.raises(TypeError, match=r"layer 0 \(Convolution2DLayer\).kernel was assigned an array of dtype "
                                        r"object; parameters must be real numbers"):
        cnn.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match=r"'param\.0\.kernel'.*dtype object"):
        nncore.io.write(tmp_path / "m.npz", {"format": "x"}, {"param.0.kernel": np.full(3, None, dtype=object)})
    assert os.listdir(tmp_path) == []


def test_archive_is_a_plain_zip(tmp_path, trained):
    path = trained[0].save(tmp_path / "m.npz")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert all(name.endswith(".npy") for name in archive.namelist())


# ---- files written by older nncore versions keep loading ---------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("name", ["model_v1_lenet", "model_v1_regression_f64"])
def test_format_v1_fixture_predicts_exactly_what_it_did(name):
    """Written by tests/fixtures/make_v1_fixtures.py on commit 8d619d2 (before the io/network split)."""
    with np.load(FIXTURES / "model_v1_expected.npz", allow_pickle=False) as expected:
        X, proba = expected[f"{name}.X"], expected[f"{name}.proba"]
    model = CNN.load(FIXTURES / f"{name}.npz")
    got = to_numpy(model.predict_proba(X))
    assert got.dtype == proba.dtype
    np.testing.assert_array_equal(got, proba)
