"""Saving and loading a :class:`~nncore.CNN`: one ``.npz`` file, no pickle.

File format (``FORMAT_VERSION = 1``)
------------------------------------
A standard NumPy ``.npz`` (zip) archive. Every member is a plain numeric
array written from the host (``backends.to_numpy``) with ``allow_pickle=False``
and read back with ``np.load(..., allow_pickle=False)``, so loading a file
never unpickles or runs anything from it.

``nncore_metadata``
    The UTF-8 bytes of one JSON document, as a 1-D ``uint8`` array::

        {"format": "nncore.CNN", "format_version": 1, "nncore_version": "0.1.0",
         "saved_from_backend": "numpy",           # informational only
         "dtype": "float32", "seed": 2023,          # seed: int, list of ints or null
         "cost_func": "CostCrossEntropy",            # a key of nncore.costs.COSTS
         "scheduler": {"name": "Adam", "config": {"eta": 0.001, "rho": 0.9, ...}},
         "input_shape": [1, 28, 28],                # null: never built (no weights stored)
         "rng": {"init": <bit_generator.state>, "shuffle": <bit_generator.state>},  # PCG64
         "layers": [
           {"type": "Convolution2DLayer",
            "config": {"input_channels": 1, "feature_maps": 16, "kernel_height": 3, "kernel_width": 3,
                       "v_stride": 1, "h_stride": 1, "pad": "same", "act_func": "relu", "optimized": true},
            "scheduler": null,                     # or {"name", "config"} if the layer got its own
            "params": {"kernel": "param.0.kernel", "bias": "param.0.bias"},        # when built
            "optimizer": {"kernel": {"name": "Adam", "config": {...},
                                     "state": {"moment": {"array": "state.0.kernel.moment"},
                                               "second": {"array": "state.0.kernel.second"},
                                               "t": 12}}, ...}},
           {"type": "Pooling2DLayer", "config": {"kernel_height": 2, "kernel_width": 2,
                                                 "v_stride": 2, "h_stride": 2, "pooling": "max"}},
           {"type": "FlattenLayer", "config": {}},
           {"type": "FullyConnectedLayer", "config": {"nodes": 128, "act_func": "relu"}, ...},
           {"type": "OutputLayer", "config": {"nodes": 10, "output_func": "softmax"}, ...}]}

``param.<layer>.<name>``
    A parameter (``kernel``, ``weights``, ``bias``) in the model's dtype.
``state.<layer>.<name>.<attribute>``
    A scheduler state array of that parameter (Adam ``moment``/``second``, ...).

Activations, costs and schedulers are stored BY NAME and looked up on load in
``nncore.activations.ACTIVATIONS``, ``nncore.costs.COSTS`` and
``nncore.schedulers.SCHEDULERS``; a function that is not registered cannot be
saved (``ValueError``). The shuffling generator's state is saved, so training
2 epochs, saving, loading and training 2 more gives bit-for-bit the weights of
4 epochs straight, shuffled or not.

Writing is atomic: the archive goes to a temporary file in the target folder,
is flushed and fsynced, then ``os.replace``-d over the target, so a crash
leaves either the old file or the new one, and no temporary file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import zipfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from backends import dtype_name, get_backend, to_numpy

from . import activations, costs, schedulers
from .layers import Convolution2DLayer, FlattenLayer, FullyConnectedLayer, OutputLayer, Pooling2DLayer

FORMAT = "nncore.CNN"
FORMAT_VERSION = 1
METADATA_KEY = "nncore_metadata"

_LAYER_TYPES = {cls.__name__: cls for cls in (Convolution2DLayer, Pooling2DLayer, FlattenLayer,
                                               FullyConnectedLayer, OutputLayer)}
_CONFIG_KEYS = {
    "Convolution2DLayer": ("input_channels", "feature_maps", "kernel_height", "kernel_width", "v_stride",
                           "h_stride", "pad", "act_func", "optimized"),
    "Pooling2DLayer": ("kernel_height", "kernel_width", "v_stride", "h_stride", "pooling"),
    "FlattenLayer": (),
    "FullyConnectedLayer": ("nodes", "act_func"),
    "OutputLayer": ("nodes", "output_func"),
}


class _Corrupt(ValueError):
    """A problem found in a file's contents; ``load`` adds the file name."""


# ---- names of functions and schedulers ------------------------------------------------------


def _name_in(registry, func, what, where, registry_name):
    for name, value in registry.items():
        if value is func:
            return name
    label = getattr(func, "__name__", repr(func))
    raise ValueError(
        f"save: {where} uses the {what} {label!r}, which is not in {registry_name}; nncore saves functions by "
        f"name only (no pickle), so register it first (e.g. {registry_name}[{label.lower()!r}] = {label}) and do "
        "the same before loading"
    )


def _scheduler_json(scheduler, where):
    cls = type(scheduler)
    if schedulers.SCHEDULERS.get(cls.__name__) is not cls:
        raise ValueError(
            f"save: {where} uses the scheduler {cls.__name__}, which is not in nncore.schedulers.SCHEDULERS; "
            "nncore saves schedulers by name only (no pickle), so register the class first "
            f"(nncore.schedulers.SCHEDULERS[{cls.__name__!r}] = {cls.__name__}) and do the same before loading"
        )
    config = {}
    for key, value in scheduler.get_config().items():
        config[key] = _json_number(value, f"{where}: scheduler {cls.__name__} setting {key!r}")
    return {"name": cls.__name__, "config": config}


def _json_number(value, what):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real) and math.isfinite(float(value)):
        return float(value)
    raise ValueError(f"save: {what} is {value!r}; only finite numbers, booleans and None can be saved")


def _scheduler_from_json(spec, where):
    _expect(isinstance(spec, dict) and set(spec) >= {"name", "config"}, f"{where}: malformed scheduler entry")
    name, config = spec["name"], spec["config"]
    cls = schedulers.SCHEDULERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise _Corrupt(f"{where}: unknown scheduler {name!r}; known: {sorted(schedulers.SCHEDULERS)}")
    _expect(isinstance(config, dict) and all(isinstance(k, str) and (v is None or isinstance(v, (int, float)))
                                             for k, v in config.items()), f"{where}: malformed scheduler config")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise _Corrupt(f"{where}: cannot create {name}(**{config}): {exc}") from None


# ---- save -------------------------------------------------------------------------------------


def save(model, path):
    """Write ``model`` (a :class:`~nncore.CNN`) to ``path`` (``.npz`` appended if missing), atomically.

    Returns the :class:`pathlib.Path` written. Raises ``ValueError`` when the
    model uses a function or scheduler that is not registered by name.
    """
    path = _npz_path(path)
    metadata, arrays = _serialise(model)
    text = json.dumps(metadata, allow_nan=False, sort_keys=False)
    members = {METADATA_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    members.update(arrays)
    _atomic_savez(path, members)
    return path


def _npz_path(path):
    path = Path(os.fspath(path))
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _serialise(model):
    from . import __version__

    cost = _name_in(costs.COSTS, model.cost_func, "cost function", "the CNN", "nncore.costs.COSTS")
    seed = model.seed
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        seed = int(seed)
    elif isinstance(seed, (list, tuple)) and all(isinstance(s, Integral) for s in seed):
        seed = [int(s) for s in seed]
    else:
        seed = None  # a SeedSequence or Generator: the saved RNG states carry everything needed
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nncore_version": __version__,
        "saved_from_backend": model.backend.name,
        "dtype": dtype_name(model.dtype),
        "seed": seed,
        "cost_func": cost,
        "scheduler": _scheduler_json(model.scheduler, "the CNN"),
        "input_shape": None if model.input_shape is None else [int(s) for s in model.input_shape],
        "rng": {"init": _rng_json(model._init_rng), "shuffle": _rng_json(model._shuffle_rng)},
        "layers": [],
    }
    arrays = {}
    for index, layer in enumerate(model.layers):
        where = f"layer {index} ({type(layer).__name__})"
        kind = type(layer).__name__
        if _LAYER_TYPES.get(kind) is not type(layer):
            raise ValueError(f"save: {where} is a custom layer class; only nncore's own layers can be saved")
        entry = {"type": kind, "config": _layer_config(layer, where)}
        if layer.params:
            entry["scheduler"] = (None if layer.scheduler is model.scheduler
                                  else _scheduler_json(layer.scheduler, where))
        if layer.params and model.input_shape is not None:
            entry["params"], entry["optimizer"] = {}, {}
            for name in layer.params:
                key = f"param.{index}.{name}"
                arrays[key] = to_numpy(getattr(layer, name))
                entry["params"][name] = key
                sched = layer.schedulers[name]
                spec = _scheduler_json(sched, f"{where} parameter {name!r}")
                state = {}
                for attr in sched._state:
                    value = getattr(sched, attr, None)
                    if value is None or isinstance(value, (bool, Integral, Real)):
                        state[attr] = _json_number(value, f"{where}: scheduler state {attr!r}")
                    else:
                        skey = f"state.{index}.{name}.{attr}"
                        arrays[skey] = to_numpy(value)
                        state[attr] = {"array": skey}
                spec["state"] = state
                entry["optimizer"][name] = spec
        metadata["layers"].append(entry)
    for key, value in arrays.items():
        if value.dtype.kind not in "fiub":
            raise ValueError(f"save: array {key!r} has dtype {value.dtype}; only numeric arrays can be saved")
    return metadata, arrays


def _layer_config(layer, where):
    def act(func):
        return _name_in(activations.ACTIVATIONS, func, "activation", where, "nncore.activations.ACTIVATIONS")

    if isinstance(layer, Convolution2DLayer):
        pad = layer.pad
        if not isinstance(pad, str):
            pad = int(pad) if isinstance(pad, Integral) else [int(p) for p in pad]
        return {"input_channels": int(layer.input_channels), "feature_maps": int(layer.feature_maps),
                "kernel_height": int(layer.kernel_hw[0]), "kernel_width": int(layer.kernel_hw[1]),
                "v_stride": int(layer.stride[0]), "h_stride": int(layer.stride[1]), "pad": pad,
                "act_func": act(layer.act_func), "optimized": bool(layer.optimized)}
    if isinstance(layer, Pooling2DLayer):
        return {"kernel_height": int(layer.kernel_hw[0]), "kernel_width": int(layer.kernel_hw[1]),
                "v_stride": int(layer.stride[0]), "h_stride": int(layer.stride[1]), "pooling": layer.pooling}
    if isinstance(layer, OutputLayer):
        return {"nodes": int(layer.nodes), "output_func": act(layer.act_func)}
    if isinstance(layer, FullyConnectedLayer):
        return {"nodes": int(layer.nodes), "act_func": act(layer.act_func)}
    return {}


def _rng_json(rng):
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"save: only PCG64 generators can be saved, got {state.get('bit_generator')!r}")
    return {"bit_generator": "PCG64", "state": {"state": int(state["state"]["state"]),
                                               "inc": int(state["state"]["inc"])},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def _atomic_savez(path, members):
    """``np.savez`` to a temporary file in ``path``'s folder, fsync, then ``os.replace`` it over ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    while True:
        tmp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # O_EXCL: never clobber anything; mode 0o666 lets the umask decide, as open() would.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, allow_pickle=False, **members)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- load -------------------------------------------------------------------------------------


def load(path, backend=None, *, device=None):
    """Read a model written by :func:`save`; see :meth:`nncore.CNN.load`.

    Raises
    ------
    FileNotFoundError
        No such file (also tried with ``.npz`` appended).
    ValueError
        The file is empty, truncated, not an ``.npz``, a foreign ``.npz``, written by
        a newer nncore, carries pickled objects, or its contents are inconsistent;
        the message names the file and the problem. Nothing in the file is executed.
    """
    path = Path(os.fspath(path))
    if not path.exists() and path.suffix != ".npz" and _npz_path(path).exists():
        path = _npz_path(path)
    backend = get_backend(backend, device)  # a bad backend name is the caller's error, not the file's
    name = f"'{path}'"
    with open(path, "rb") as handle:
        head = handle.read(64)
    _check_magic(head, name, path)
    try:
        metadata, arrays = _read_archive(path, name)
        return _deserialise(metadata, arrays, backend)
    except _Corrupt as exc:
        raise ValueError(f"{name} is not a valid nncore model file: {exc}") from None


def _check_magic(head, name, path):
    if not head:
        raise ValueError(f"{name} is not an nncore model file: the file is empty (0 bytes)")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{name} is not an nncore model file: it is a single NumPy .npy array, not an .npz "
                         "archive written by CNN.save")
    if head[:1] == b"\x80":
        raise ValueError(f"{name} is not an nncore model file: it is a Python pickle; nncore never unpickles "
                         "anything, so it refuses to read it")
    if head.startswith(b"PK"):
        raise ValueError(f"{name} is not a valid nncore model file: it starts like a zip archive but the header "
                         "is damaged")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut in two at the end of the 64 bytes is still text
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 and exc.start > 0 else None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        raise ValueError(f"{name} is not an nncore model file: it is a text file (it starts with {text[:30]!r}), "
                         "not an .npz archive written by CNN.save")
    raise ValueError(f"{name} is not an nncore model file: it is not an .npz (zip) archive (it starts with "
                     f"the bytes {head[:8]!r})")


def _read_archive(path, name):
    """The JSON metadata and every member array, read with ``allow_pickle=False``."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{name} is truncated or corrupt: it starts like an .npz (zip) archive but cannot be "
                         f"opened ({type(exc).__name__}: {exc})") from None
    with contextlib.closing(archive) if hasattr(archive, "close") else contextlib.nullcontext(archive):
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{name} is not an nncore model file: it is not an .npz archive")
        keys = list(archive.files)
        if METADATA_KEY not in keys:
            shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
            entries = f"{len(keys)} {'entry' if len(keys) == 1 else 'entries'}: {shown or 'none'}"
            raise ValueError(f"{name} is an .npz archive but not an nncore model: it has no {METADATA_KEY!r} "
                             f"entry (it holds {entries})")
        arrays = {}
        for key in keys:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "pickle" in str(exc):
                    raise ValueError(f"{name} is not a valid nncore model file: its entry {key!r} holds pickled "
                                     "Python objects (an object array); nncore files never contain pickle, so "
                                     "it refuses to read it (nothing was unpickled)") from None
                raise ValueError(f"{name} is corrupt: its entry {key!r} cannot be read ({exc})") from None
            except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
                raise ValueError(f"{name} is truncated or corrupt: its entry {key!r} cannot be read "
                                 f"({type(exc).__name__}: {exc})") from None
            if not isinstance(arrays[key], np.ndarray):
                raise ValueError(f"{name} is not a valid nncore model file: its entry {key!r} is not a NumPy "
                                 "array (.npy); it was left unread")
    raw = arrays.pop(METADATA_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{name} is not a valid nncore model file: {METADATA_KEY!r} should be UTF-8 JSON bytes "
                         f"(1-D uint8), got dtype {raw.dtype} and shape {raw.shape}")
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{name} is not a valid nncore model file: its metadata is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise ValueError(f"{name} is not an nncore model file: its metadata says format {found!r}, "
                         f"expected {FORMAT!r}")
    version = metadata.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{name} is not a valid nncore model file: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{name} was written by a newer nncore (file format version {version}, saved by nncore "
                         f"{metadata.get('nncore_version', '?')}); this nncore reads format versions up to "
                         f"{FORMAT_VERSION}. Upgrade nncore to load it")
    return metadata, arrays


def _expect(condition, message):
    if not condition:
        raise _Corrupt(message)


def _deserialise(meta, arrays, backend):
    from .network import CNN

    required = ("dtype", "cost_func", "scheduler", "input_shape", "layers", "rng", "seed")
    missing = [key for key in required if key not in meta]
    _expect(not missing, f"the metadata lacks {missing}")
    _expect(meta["dtype"] in ("float32", "float64"), f"unsupported dtype {meta['dtype']!r}")
    cost = costs.COSTS.get(meta["cost_func"]) if isinstance(meta["cost_func"], str) else None
    _expect(cost is not None, f"unknown cost function {meta['cost_func']!r}; known: {sorted(costs.COSTS)}")
    scheduler = _scheduler_from_json(meta["scheduler"], "the CNN")
    seed = meta["seed"]
    _expect(seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0)
            or (isinstance(seed, list) and all(isinstance(s, int) and s >= 0 for s in seed)), f"bad seed {seed!r}")
    try:
        model = CNN(cost_func=cost, scheduler=scheduler, seed=seed, backend=backend, dtype=meta["dtype"])
    except (TypeError, ValueError) as exc:
        raise _Corrupt(f"cannot create the CNN: {exc}") from None

    layers = meta["layers"]
    _expect(isinstance(layers, list), "'layers' is not a list")
    for index, entry in enumerate(layers):
        where = f"layer {index}"
        _expect(isinstance(entry, dict) and isinstance(entry.get("type"), str)
                and isinstance(entry.get("config"), dict), f"{where}: malformed entry")
        kind, config = entry["type"], dict(entry["config"])
        _expect(kind in _LAYER_TYPES, f"{where}: unknown layer type {kind!r}; known: {sorted(_LAYER_TYPES)}")
        _expect(set(config) == set(_CONFIG_KEYS[kind]),
                f"{where} ({kind}): config keys {sorted(config)}, expected {sorted(_CONFIG_KEYS[kind])}")
        own = entry.get("scheduler")
        own = None if own is None else _scheduler_from_json(own, f"{where} ({kind})")
        try:
            if kind == "Convolution2DLayer":
                if isinstance(config["pad"], list):
                    config["pad"] = tuple(config["pad"])
                model.add_Convolution2DLayer(**config)
            elif kind == "Pooling2DLayer":
                model.add_PoolingLayer(**config)
            elif kind == "FlattenLayer":
                model.add_FlattenLayer()
            elif kind == "FullyConnectedLayer":
                model.add_FullyConnectedLayer(config["nodes"], config["act_func"], scheduler=own)
            else:
                model.add_OutputLayer(config["nodes"], config["output_func"], scheduler=own)
        except (TypeError, ValueError) as exc:
            raise _Corrupt(f"{where} ({kind}) cannot be rebuilt: {exc}") from None
        if own is not None:
            model.layers[-1].scheduler = own

    shape = meta["input_shape"]
    if shape is not None:
        _expect(isinstance(shape, list) and shape and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                          for s in shape), f"bad input_shape {shape!r}")
        try:
            model._build(tuple(shape), "load")
        except (TypeError, ValueError) as exc:
            raise _Corrupt(f"the layers cannot be built for input shape {tuple(shape)}: {exc}") from None
        for index, (layer, entry) in enumerate(zip(model.layers, layers)):
            _load_layer_state(model, layer, index, entry, arrays)
    _set_rng(model._init_rng, meta["rng"], "init")
    _set_rng(model._shuffle_rng, meta["rng"], "shuffle")
    return model


def _float_array(arrays, key, shape, where, backend, dtype):
    _expect(isinstance(key, str) and key in arrays, f"{where}: the array {key!r} is missing")
    value = arrays[key]
    _expect(value.dtype.kind == "f", f"{where}: the array {key!r} has dtype {value.dtype}, expected floats")
    _expect(tuple(value.shape) == tuple(shape),
            f"{where}: the array {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    return backend.asarray(value, dtype=dtype)


def _load_layer_state(model, layer, index, entry, arrays):
    where = f"layer {index} ({type(layer).__name__})"
    if not layer.params:
        return
    params, optim = entry.get("params"), entry.get("optimizer")
    _expect(isinstance(params, dict) and set(params) == set(layer.params),
            f"{where}: expected parameters {list(layer.params)}, the file has {params!r}")
    _expect(isinstance(optim, dict) and set(optim) == set(layer.params),
            f"{where}: expected scheduler state for {list(layer.params)}, the file has {optim!r}")
    for name in layer.params:
        shape = tuple(getattr(layer, name).shape)
        setattr(layer, name, _float_array(arrays, params[name], shape, f"{where} parameter {name!r}",
                                          model.backend, model.dtype))
        spec = optim[name]
        sched = _scheduler_from_json(spec, f"{where} parameter {name!r}")
        state = spec.get("state")
        _expect(isinstance(state, dict) and set(state) == set(sched._state),
                f"{where} parameter {name!r}: scheduler state {state!r}, expected the keys {list(sched._state)}")
        for attr, value in state.items():
            what = f"{where} parameter {name!r} scheduler state {attr!r}"
            if isinstance(value, dict):
                _expect(set(value) == {"array"}, f"{what}: malformed entry {value!r}")
                value = _float_array(arrays, value["array"], shape, what, model.backend, model.dtype)
            elif attr == "t":
                _expect(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                        f"{what}: the step count must be an int >= 0, got {value!r}")
            else:
                _expect(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)),
                        f"{what}: unexpected value {value!r}")
            setattr(sched, attr, value)
        layer.schedulers[name] = sched


def _set_rng(rng, spec, which):
    _expect(isinstance(spec, dict) and isinstance(spec.get(which), dict), f"rng state {which!r} is missing")
    state = spec[which]
    _expect(state.get("bit_generator") == "PCG64", f"rng {which!r}: unsupported bit generator "
            f"{state.get('bit_generator')!r} (only PCG64)")
    inner = state.get("state")
    _expect(isinstance(inner, dict) and all(isinstance(inner.get(k), int) and inner[k] >= 0 for k in ("state", "inc"))
            and isinstance(state.get("has_uint32"), int) and isinstance(state.get("uinteger"), int),
            f"rng {which!r}: malformed state")
    try:
        rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": inner["state"], "inc": inner["inc"]},
                                   "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Corrupt(f"rng {which!r}: cannot restore the state: {exc}") from None
