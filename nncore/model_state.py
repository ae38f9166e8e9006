"""A CNN as a model file's contents, and back: metadata (JSON) plus named arrays.

The container itself (zip, JSON member, atomic writes, limits against hostile
files) is :mod:`nncore.io`; this module knows the model. Format version 1::

    {"format": "nncore.CNN", "format_version": 1, "nncore_version": "0.1.0",
     "saved_from_backend": "numpy",                # informational only
     "dtype": "float32", "seed": 2023,             # seed: int, list of ints or null
     "cost_func": "CostCrossEntropy",              # a key of nncore.costs.COSTS
     "scheduler": {"name": "Adam", "config": {"eta": 0.001, "rho": 0.9, ...}},
     "input_shape": [1, 28, 28],                   # null: never built (no arrays stored)
     "rng": {"init": <PCG64 state>, "shuffle": <PCG64 state>},
     "layers": [
       {"type": "Convolution2DLayer",              # the class name, registered in nncore.layers.LAYERS
        "config": {...},                           # the layer's get_config()
        "scheduler": null,                         # or {"name", "config"}: the layer's own scheduler
        "params": {"kernel": "param.0.kernel", "bias": "param.0.bias"},          # when built
        "optimizer": {"kernel": {"name": "Adam", "config": {...},
                                 "state": {"moment": {"array": "state.0.kernel.moment"},
                                           "second": {"array": "state.0.kernel.second"}, "t": 12}}, ...}},
       ...]}

Arrays: ``param.<layer>.<name>`` (the model's dtype) and
``state.<layer>.<name>.<key>`` (a parameter's slice of its scheduler's state).
Activations, costs, schedulers and layers are stored BY NAME and looked up in
nncore's registries on load; nothing is unpickled or run.
"""

import math
from numbers import Integral, Real

from backends import dtype_name, to_numpy

from . import costs, io, schedulers
from .layer_stack import COURSE_NAMES
from .layers import LAYERS, layer_class
from .validation import registered_name

FORMAT = "nncore.CNN"
FORMAT_VERSION = 1
MAX_SIZE = 2**40  # no layer size, count or shape entry in a file may exceed this


def save(model, path):
    """Write ``model`` to ``path`` (see :meth:`nncore.CNN.save`); returns the path."""
    comm = model.comm
    if comm is None:
        metadata, arrays = file_parts(model)
        return io.write(path, metadata, arrays)
    # After a distributed fit rank 0 writes; the others get its outcome: the path, or the same error.
    outcome = None
    if comm.Get_rank() == 0:
        try:
            metadata, arrays = file_parts(model)
            outcome = io.write(path, metadata, arrays)
        except Exception as exc:
            comm.bcast((type(exc), str(exc)), root=0)
            raise
    outcome = comm.bcast(outcome, root=0)
    if isinstance(outcome, tuple):
        kind, message = outcome
        raise (kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError)(
            f"rank 0 could not save the model: {message}")
    return outcome


def file_parts(model):
    """``(metadata, {name: host array})`` describing ``model`` completely."""
    from . import __version__

    seed = model.seed
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        seed = int(seed)
    elif isinstance(seed, (list, tuple)) and all(isinstance(s, Integral) for s in seed):
        seed = [int(s) for s in seed]
    else:
        seed = None  # a SeedSequence or Generator: the saved RNG states carry everything needed
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "nncore_version": __version__,
        "saved_from_backend": model.backend.name, "dtype": dtype_name(model.dtype), "seed": seed,
        "cost_func": _cost_name(model.cost_func),
        "scheduler": _scheduler_json(model.scheduler, "the CNN"),
        "input_shape": None if model.input_shape is None else [int(s) for s in model.input_shape],
        "rng": {"init": _rng_json(model.init_rng), "shuffle": _rng_json(model.shuffle_rng)},
        "layers": [],
    }
    arrays = {}
    if model.parameters is not None:
        model.parameters.adopt_assigned()  # assigned parameters and changed scheduler settings are what is saved
    for index, layer in enumerate(model.layers):
        where = f"layer {index} ({type(layer).__name__})"
        kind = type(layer).__name__  # registered as an alias of every layer; files keep the class name
        if layer.layer_name is None or layer_class(kind) is not type(layer):
            raise ValueError(f"save: {where} is not registered; register its class with "
                             "nncore.layers.register_layer(name) to save it (and before loading)")
        try:
            config = layer.get_config()
        except ValueError as exc:
            raise ValueError(f"save: {where} {exc}") from None
        entry = {"type": kind, "config": config}
        if layer.params:
            entry["scheduler"] = (None if layer.scheduler is model.scheduler
                                  else _scheduler_json(layer.scheduler, where))
        if layer.params and model.parameters is not None:
            entry["params"], entry["optimizer"] = {}, {}
            group = model.parameters.group_of(layer)
            for name in layer.params:
                entry["params"][name] = key = f"param.{index}.{name}"
                arrays[key] = to_numpy(getattr(layer, name))
                spec, state = _scheduler_json(group, f"{where} parameter {name!r}"), {}
                for attr, value in model.parameters.parameter_state(layer, name).items():
                    if value is None or isinstance(value, (bool, Integral, Real)):
                        state[attr] = value
                    else:
                        state[attr] = {"array": f"state.{index}.{name}.{attr}"}
                        arrays[state[attr]["array"]] = to_numpy(value)
                spec["state"] = state
                entry["optimizer"][name] = spec
        metadata["layers"].append(entry)
    for key, value in arrays.items():
        if value.dtype.kind != "f":
            raise ValueError(f"save: array {key!r} has dtype {value.dtype}; only floating-point arrays are saved")
    return metadata, arrays


def load(cls, path, backend):
    """A ``cls`` (CNN) read from ``path`` onto ``backend`` (see :meth:`nncore.CNN.load`)."""
    with io.read(path) as archive:
        return _model_from(cls, archive, backend)


def _model_from(cls, archive, backend):
    meta = archive.metadata
    if not isinstance(meta, dict):
        raise archive.error(None, "the metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        raise archive.error(None, f"its metadata says format {meta.get('format')!r}, not {FORMAT!r}")
    version = meta.get("format_version")
    if not _is_count(version, 1):
        raise archive.error("format_version", f"must be an int >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise archive.error(None, f"written by a newer nncore (file format version {version}, saved by nncore "
                            f"{meta.get('nncore_version', '?')}); this nncore reads format versions up to "
                            f"{FORMAT_VERSION}. Upgrade nncore to load it")
    missing = [key for key in ("dtype", "cost_func", "scheduler", "input_shape", "layers", "rng", "seed")
               if key not in meta]
    if missing:
        raise archive.error(None, f"the metadata lacks {missing}")
    if meta["dtype"] not in ("float32", "float64"):
        raise archive.error("dtype", f"must be 'float32' or 'float64', got {meta['dtype']!r}")
    cost = costs.COSTS.get(meta["cost_func"]) if isinstance(meta["cost_func"], str) else None
    if cost is None:
        raise archive.error("cost_func", f"unknown cost function {meta['cost_func']!r}; known: {sorted(costs.COSTS)}")
    seed = meta["seed"]
    if not (seed is None or _is_count(seed) or isinstance(seed, list) and len(seed) <= 64
            and all(_is_count(s) for s in seed)):
        raise archive.error("seed", f"must be null, an int >= 0 or a short list of them, got {seed!r}")
    model = cls(cost_func=cost, scheduler=_scheduler_from(archive, meta["scheduler"], "the CNN"), seed=seed,
                backend=backend, dtype=meta["dtype"])
    layers = meta["layers"]
    if not isinstance(layers, list):
        raise archive.error("layers", "must be a list")
    for index, entry in enumerate(layers):
        layer = _layer_from(archive, entry, index)
        try:
            model.add_layer(layer)
        except ValueError as exc:
            raise archive.error(f"layer {index} ({type(layer).__name__})", str(exc)) from None
    _set_rng(archive, model.init_rng, meta["rng"], "init")
    _set_rng(archive, model.shuffle_rng, meta["rng"], "shuffle")
    shape = meta["input_shape"]
    if shape is None:
        archive.expect_members(())
        return model
    if not (isinstance(shape, list) and 1 <= len(shape) <= 8 and all(_is_count(s, 1) for s in shape)):
        raise archive.error("input_shape", f"must be a list of 1 to 8 ints >= 1, got {shape!r}")
    try:
        model.build(tuple(shape), init=False, method="load")  # shapes only: nothing is drawn or allocated
    except (TypeError, ValueError) as exc:
        raise archive.error(None, f"the layers cannot be built for input shape {tuple(shape)}: {exc}") from None
    _load_arrays(archive, model, layers)
    return model


def _layer_from(archive, entry, index):
    """An unbuilt layer from its metadata entry (any registered type, by name)."""
    if not (isinstance(entry, dict) and isinstance(entry.get("type"), str) and isinstance(entry.get("config"), dict)):
        raise archive.error(f"layer {index}", "malformed entry: needs a 'type' string and a 'config' object")
    try:
        cls = layer_class(entry["type"])
    except ValueError:
        known = sorted({c.__name__ for c in LAYERS.values()})
        raise archive.error(f"layer {index}", f"unknown layer type {entry['type']!r}; known: {known}") from None
    where, config = f"layer {index} ({cls.__name__})", entry["config"]
    for key, value in config.items():
        if isinstance(value, Integral) and not isinstance(value, bool) and not 0 <= value <= MAX_SIZE:
            raise archive.error(f"{where} config {key!r}", f"is {value}, outside [0, {MAX_SIZE}]")
    try:
        layer = cls.from_config(config)
    except (TypeError, ValueError) as exc:
        raise archive.error(f"{where} cannot be rebuilt", f"{_add_method(cls)}: {where}: {exc}") from None
    own = entry.get("scheduler")
    if own is not None and layer.params:
        layer.scheduler = _scheduler_from(archive, own, where)
    return layer


def _add_method(cls):
    """The CNN method that adds a ``cls`` (for messages in the words a user of the course API knows)."""
    return f"add_{COURSE_NAMES[cls.__name__]}" if cls.__name__ in COURSE_NAMES else "add_layer"


def _load_arrays(archive, model, layers):
    """Read every parameter and scheduler state array, each checked against the shape the layers imply."""
    dtype, names = dtype_name(model.dtype), archive.names()
    expected, reads, states = [], [], {}
    for index, (layer, entry) in enumerate(zip(model.layers, layers)):
        if not layer.params:
            continue
        where = f"layer {index} ({type(layer).__name__})"
        params, optimizer = entry.get("params"), entry.get("optimizer")
        if not (isinstance(params, dict) and set(params) == set(layer.params)):
            raise archive.error(where, f"expected parameters {list(layer.params)}, the file has {params!r}")
        if not (isinstance(optimizer, dict) and set(optimizer) == set(layer.params)):
            raise archive.error(where, f"expected scheduler state for {list(layer.params)}, the file has "
                                f"{_short(optimizer)}")
        for name, shape in layer.param_shapes(layer.input_shape).items():
            field = f"{where} parameter {name!r}"
            reads.append((layer, name, None, params[name], shape, field))
            template = _scheduler_from(archive, optimizer[name], field)
            state, keys = optimizer[name].get("state"), sorted(template.state_dict())
            if not (isinstance(state, dict) and sorted(state) == keys):
                raise archive.error(field, f"scheduler state {_short(state)}, expected the keys {keys}")
            states[(layer, name)] = state = dict(state)
            for key, value in state.items():
                what = f"{field} scheduler state {key!r}"
                if isinstance(value, dict):
                    if set(value) != {"array"} or not isinstance(value["array"], str):
                        raise archive.error(what, f"malformed entry {_short(value)}")
                    reads.append((layer, name, key, value["array"], shape, what))
                elif key == "t" and not _is_count(value, 0, schedulers.MAX_STEPS):
                    raise archive.error(what, f"the step count must be an int >= 0, got {value!r}"
                                        + (f" (at most {schedulers.MAX_STEPS})" if _is_count(value) else ""))
                elif key != "t" and value is not None:
                    raise archive.error(what, f"unexpected value {_short(value)}")
    for *_, member, _, field in reads:
        if member not in names:
            raise archive.error(field, f"the array {member!r} is missing")
        expected.append(member)
    if len(set(expected)) != len(expected):
        raise archive.error(None, "two entries name the same array")
    archive.expect_members(expected)
    for layer, name, key, member, shape, field in reads:  # only now, with every header checked, read data
        value = archive.array(member, shape, dtype, field=field)
        if key is None:
            setattr(layer, name, model.backend.asarray(value, dtype=model.dtype))
        else:
            states[(layer, name)][key] = value
    model.bind_parameters()
    try:
        model.parameters.load_parameter_states(states)
    except ValueError as exc:
        raise archive.error(None, str(exc)) from None


def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- names, schedulers and generators --------------------------------------------------------


def _cost_name(cost_func):
    try:
        return registered_name(costs.COSTS, cost_func, "cost function", "nncore.costs.COSTS")
    except ValueError as exc:
        raise ValueError(f"save: the CNN {exc}") from None


def _scheduler_json(scheduler, where):
    cls = type(scheduler)
    if schedulers.SCHEDULERS.get(cls.__name__) is not cls:
        raise ValueError(
            f"save: {where} uses the scheduler {cls.__name__}, which is not in nncore.schedulers.SCHEDULERS; "
            "nncore saves schedulers by name only (no pickle), so register the class first "
            f"(nncore.schedulers.SCHEDULERS[{cls.__name__!r}] = {cls.__name__}) and do the same before loading")
    config = {}
    for key, value in scheduler.get_config().items():
        if not (value is None or isinstance(value, (bool, Integral))
                or isinstance(value, Real) and math.isfinite(float(value))):
            raise ValueError(f"save: {where}: scheduler {cls.__name__} setting {key!r} is {value!r}; only finite "
                             "numbers, booleans and None can be saved")
        config[key] = value if value is None or isinstance(value, bool) else (
            int(value) if isinstance(value, Integral) else float(value))
    return {"name": cls.__name__, "config": config}


def _scheduler_from(archive, spec, where):
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("config"), dict)):
        raise archive.error(where, "malformed scheduler entry: needs a 'name' string and a 'config' object")
    cls = schedulers.SCHEDULERS.get(spec["name"])
    if cls is None:
        raise archive.error(where, f"unknown scheduler {spec['name']!r}; known: {sorted(schedulers.SCHEDULERS)}")
    config = spec["config"]
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
               for k, v in config.items()):
        raise archive.error(where, f"malformed scheduler config {_short(config)}: settings must be numbers")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise archive.error(where, f"cannot create {spec['name']}(**{_short(config)}): {exc}") from None


def _rng_json(rng):
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"save: only PCG64 generators can be saved, got {state.get('bit_generator')!r}")
    return {"bit_generator": "PCG64", "state": {"state": int(state["state"]["state"]),
                                               "inc": int(state["state"]["inc"])},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def _set_rng(archive, rng, spec, which):
    field = f"rng.{which}"
    state = spec.get(which) if isinstance(spec, dict) else None
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise archive.error(field, "must be a PCG64 generator state")
    inner = state.get("state")
    if not (isinstance(inner, dict) and all(_is_count(inner.get(k), 0, 2**128 - 1) for k in ("state", "inc"))
            and _is_count(state.get("has_uint32"), 0, 1) and _is_count(state.get("uinteger"), 0, 2**32 - 1)):
        raise archive.error(field, "malformed PCG64 state")
    rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": inner["state"], "inc": inner["inc"]},
                               "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}


def _is_count(value, low=0, high=MAX_SIZE):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

