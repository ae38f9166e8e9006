"""The layer registry: one table from names to layer classes.

A layer class registers itself once, with the decorator::

    @register_layer("conv", aliases=("conv2d",))
    class Convolution2DLayer(Layer): ...

and from then on ``CNN.add("conv", ...)``, saving and loading, and the
estimators' ``layers=[("conv", {...})]`` descriptions all find it by name. The
class name is always an alias too. A layer defined outside nncore becomes
saveable the same way, without touching any nncore file.
"""

LAYERS = {}
"""``{name or alias: layer class}``."""


def register_layer(name, *, aliases=()):
    """Class decorator: register a :class:`~nncore.layers.Layer` subclass under ``name`` and ``aliases``.

    Sets ``cls.layer_name = name`` (the name written into model files). A name
    already taken by another class raises ``ValueError``.
    """

    def register(cls):
        from .base import Layer

        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"register_layer({name!r}): {cls!r} is not a Layer subclass")
        for key in (name, cls.__name__, *aliases):
            if not isinstance(key, str) or not key:
                raise TypeError(f"register_layer: layer names must be non-empty strings, got {key!r}")
            taken = LAYERS.get(key.lower())
            if taken is not None and taken.__qualname__ != cls.__qualname__:
                raise ValueError(f"register_layer: the name {key!r} is taken by {taken.__qualname__}")
        for key in (name, cls.__name__, *aliases):
            LAYERS[key.lower()] = cls  # re-registering a class of the same name (a module reload) replaces it
        cls.layer_name = name
        return cls

    return register


def layer_class(name):
    """The layer class registered under ``name`` (any case); ``ValueError`` listing the names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"a layer name must be a string such as 'conv', got {type(name).__name__} {name!r}")
    try:
        return LAYERS[name.lower()]
    except KeyError:
        known = sorted({cls.layer_name for cls in LAYERS.values()})
        raise ValueError(f"unknown layer {name!r}; registered layers are {known} "
                         "(register a new one with nncore.layers.register_layer)") from None
