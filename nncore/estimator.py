"""scikit-learn estimators around :class:`nncore.CNN`: ``CNNClassifier`` and ``CNNRegressor``.

They follow scikit-learn's estimator rules (``GridSearchCV``, ``Pipeline``,
``clone``, ...): every constructor argument is stored unchanged, and ``fit``
checks them and builds a fresh :class:`~nncore.CNN` each time.

``X`` may be ``(n, c, h, w)`` images (``(n, h, w, c)`` with
``data_format="channels_last"``), ``(n, h, w)`` one-channel images, or flat
rows ``(n, features)``: a square number of features is one square channel (64
-> 1x8x8 for scikit-learn's digits), any other number ``N`` a 1x1xN image, so
any table works; ``image_shape`` says otherwise.

``layers`` lists the hidden layers; the output layer is added (softmax with
cross entropy, or identity with squared error). Each entry is a name from the
layer registry (:data:`nncore.layers.LAYERS`: ``"conv"``, ``"pool"``,
``"flatten"``, ``"dense"``, their aliases, or a layer you registered), alone
or with keyword arguments, e.g. :data:`DEFAULT_LAYERS`::

    [("conv", {"feature_maps": 16, "kernel_height": 3, "kernel_width": 3, "act_func": "relu"}),
     ("pool", {"kernel_height": 2, "kernel_width": 2, "v_stride": 2, "h_stride": 2}),
     "flatten", ("dense", {"nodes": 64, "act_func": "relu"})]

nncore's own layers take the arguments and defaults of the course's
``CNN.add_*`` methods (``nodes`` required); a conv's ``input_channels`` may be
left out, and a flatten layer is added before the first dense layer after
image layers. Other registered layers are added with ``CNN.add(name, **kw)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_array, column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from backends import backend_of, to_numpy

from . import activations
from ._array import namespace
from .costs import CostCrossEntropy, CostOLS
from .layers import Convolution2DLayer, FlattenLayer, FullyConnectedLayer, OutputLayer, Pooling2DLayer, layer_class
from .network import CNN
from .schedulers import SCHEDULERS, Scheduler
from .validation import check_non_negative_number

__all__ = ["CNNClassifier", "CNNRegressor", "DEFAULT_LAYERS", "SCHEDULER_NAMES"]

#: The architecture used when ``layers`` is None (no pooling for images smaller than 2x2).
DEFAULT_LAYERS = (
    ("conv", {"feature_maps": 16, "kernel_height": 3, "kernel_width": 3, "act_func": "relu"}),
    ("pool", {"kernel_height": 2, "kernel_width": 2, "v_stride": 2, "h_stride": 2}),
    ("flatten",),
    ("dense", {"nodes": 64, "act_func": "relu"}),
)

# The settings besides ``eta`` that a scheduler given by name gets.
_SETTINGS = {"Adam": {"rho": 0.9, "rho2": 0.999}, "Momentum": {"momentum": 0.9},
             "AdagradMomentum": {"momentum": 0.9}, "RMS_prop": {"rho": 0.9}}
#: ``scheduler=`` names: ``{name: (class name in nncore.schedulers.SCHEDULERS, settings)}``, each
#: class by its lower-cased name plus the aliases "sgd", "rmsprop" and "adagrad_momentum".
SCHEDULER_NAMES = {name.lower(): (name, _SETTINGS.get(name, {})) for name in SCHEDULERS}
SCHEDULER_NAMES.update(sgd=SCHEDULER_NAMES["constant"], rmsprop=SCHEDULER_NAMES["rms_prop"],
                       adagrad_momentum=SCHEDULER_NAMES["adagradmomentum"])
DEFAULT_ETA = 1e-3
DATA_FORMATS = ("channels_first", "channels_last")

# nncore's layers are added through the course's methods, whose defaults the descriptions rely on.
_COURSE_ADD = {Convolution2DLayer: "add_Convolution2DLayer", Pooling2DLayer: "add_PoolingLayer",
               FlattenLayer: "add_FlattenLayer", FullyConnectedLayer: "add_FullyConnectedLayer"}
_TYPICAL_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what a channels-last image's last axis usually holds


class _CNNEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, input handling, building, pickling."""

    _output_func = None  # set by subclasses
    _cost_func = None

    def __init__(self, layers=None, *, image_shape=None, data_format=None, eta=None, lam=0.0, epochs=30,
                 batch_size=32, scheduler="adam", backend=None, random_state=None, dtype=None, shuffle=True,
                 verbose=False):
        self.layers = layers
        self.image_shape = image_shape
        self.data_format = data_format
        self.eta = eta
        self.lam = lam
        self.epochs = epochs
        self.batch_size = batch_size
        self.scheduler = scheduler
        self.backend = backend
        self.random_state = random_state
        self.dtype = dtype
        self.shuffle = shuffle
        self.verbose = verbose

    # ---- input -------------------------------------------------------------------------

    def _images(self, X, reset):
        """``X`` as ``(n, c, h, w)`` images (NumPy, or the array's own library for CuPy etc.)."""
        name = type(self).__name__
        channels_last = _channels_last(self.data_format, name)
        if backend_of(X).name == "numpy":
            # Convert once, to the model's float type (an invalid dtype is reported by CNN below);
            # with dtype=None float32 stays float32 and anything else becomes float64.
            dtypes = [np.float32, np.float64] if "32" in str(self.dtype) else [np.float64, np.float32]
            X = check_array(X, allow_nd=True, dtype=dtypes, estimator=self)
            xp = np
        else:  # CuPy or array_api_strict arrays stay where they are; the CNN checks their values.
            xp = namespace(X)
            if X.ndim < 2:
                raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
        n = X.shape[0]
        if self.image_shape is not None:
            shape = _image_shape(self.image_shape, math.prod(X.shape[1:]), name)
            X = xp.reshape(X, (n, *shape))
            if channels_last:
                X = xp.moveaxis(X, -1, 1)
        elif X.ndim == 4:
            if channels_last:
                X = xp.moveaxis(X, -1, 1)
            elif self.data_format is None:
                _refuse_channels_last(X.shape, name)
        elif X.ndim == 3:
            X = xp.reshape(X, (n, 1, *X.shape[1:]))
        elif X.ndim == 2:
            side = math.isqrt(X.shape[1])
            X = xp.reshape(X, (n, 1, side, side) if side * side == X.shape[1] else (n, 1, 1, X.shape[1]))
        else:
            raise ValueError(f"{name}: X must be 2-D (n, features), 3-D (n, h, w) or 4-D images, "
                             f"got shape {tuple(X.shape)}")
        shape = tuple(X.shape[1:])
        if reset:
            self.image_shape_ = shape
            self.n_features_in_ = math.prod(shape)
        else:
            features = math.prod(shape)
            if features != self.n_features_in_:
                raise ValueError(f"X has {features} features, but {name} is expecting {self.n_features_in_} "
                                 f"features as input (images of shape {self.image_shape_})")
            if shape != self.image_shape_:
                raise ValueError(f"{name}: X holds images of shape {shape}, but it was fitted on images of "
                                 f"shape {self.image_shape_}")
        return X

    # ---- building ----------------------------------------------------------------------

    def _scheduler(self):
        name = type(self).__name__
        eta = self.eta
        if eta is not None:
            if isinstance(eta, bool) or not isinstance(eta, numbers.Real):
                raise TypeError(f"{name}: eta must be a positive number or None, got {type(eta).__name__} {eta!r}")
            if not math.isfinite(eta) or eta <= 0:
                raise ValueError(f"{name}: eta must be a positive number or None, got {eta!r}")
        if isinstance(self.scheduler, Scheduler):
            scheduler = self.scheduler.fresh()
            if eta is not None:
                scheduler.eta = float(eta)
            return scheduler
        key = self.scheduler.lower() if isinstance(self.scheduler, str) else None
        if key not in SCHEDULER_NAMES:  # an unknown name is a ValueError, anything else a TypeError
            raise (ValueError if key else TypeError)(
                f"{name}: scheduler must be a Scheduler instance or one of {sorted(SCHEDULER_NAMES)}, "
                f"got {type(self.scheduler).__name__} {self.scheduler!r}")
        class_name, settings = SCHEDULER_NAMES[key]
        return SCHEDULERS[class_name](DEFAULT_ETA if eta is None else float(eta), **settings)

    def _build_cnn(self, n_outputs, dtype):
        """A fresh, unbuilt CNN for images of shape ``self.image_shape_`` with ``n_outputs`` output nodes."""
        name = type(self).__name__
        check_non_negative_number(f"{name}: lam", self.lam)
        cnn = CNN(cost_func=self._cost_func, scheduler=self._scheduler(), seed=_seed(self.random_state, name),
                  backend=self.backend, dtype=dtype)
        channels, height, width = self.image_shape_
        default = self.layers is None
        flat = False
        for index, (kind, cls, kwargs) in enumerate(_parse_layers(DEFAULT_LAYERS if default else self.layers, name)):
            if cls is Pooling2DLayer and default and min(height, width) < 2:
                continue
            if cls is Convolution2DLayer:
                kwargs.setdefault("input_channels", channels)
                channels = kwargs.get("feature_maps", 1)
            if cls is FullyConnectedLayer and not flat:
                cnn.add_FlattenLayer()
            flat = flat or cls in (FlattenLayer, FullyConnectedLayer)
            try:
                if cls in _COURSE_ADD:
                    getattr(cnn, _COURSE_ADD[cls])(**kwargs)
                else:
                    cnn.add(kind, **kwargs)
            except (TypeError, ValueError) as exc:  # the same type as CNN's own error, naming the entry
                raise type(exc)(f"{name}: layers[{index}] ({kind!r}): {exc}") from exc
        if not flat:
            cnn.add_FlattenLayer()
        cnn.add_OutputLayer(n_outputs, self._output_func)
        return cnn

    def _train(self, X, t):
        """Build a fresh CNN and train it on images ``X`` and 2-D targets ``t``."""
        dtype = self.dtype
        if dtype is None:  # scikit-learn's rule: float32 data stays float32, anything else is float64
            dtype = "float32" if str(X.dtype).endswith("float32") else "float64"
        self.model_ = self._build_cnn(t.shape[1], dtype)
        self.history_ = self.model_.fit(X, t, epochs=self.epochs, lam=float(self.lam), batch_size=self.batch_size,
                                        shuffle=self.shuffle, verbose=self.verbose)
        return self

    def _outputs(self, X):
        """Network outputs for ``X`` as a NumPy array (n, nodes)."""
        check_is_fitted(self, "model_")
        return to_numpy(self.model_.predict_proba(self._images(X, reset=False)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


class CNNClassifier(ClassifierMixin, _CNNEstimator):
    """A convolutional network classifier with scikit-learn's interface.

    Parameters
    ----------
    layers : list, optional
        The hidden layers, as described in :mod:`nncore.estimator`. Default
        :data:`DEFAULT_LAYERS`: conv 16@3x3 ReLU, max-pool 2x2 stride 2, dense 64 ReLU.
    image_shape : tuple of 3 ints, optional
        ``(channels, height, width)``, or ``(height, width, channels)`` with
        ``data_format="channels_last"``, to reshape every ``X`` to (C order;
        one entry may be -1). Default: see :mod:`nncore.estimator`.
    data_format : {"channels_first", "channels_last"}, optional
        The axis order of 4-D ``X`` and of ``image_shape`` (Keras' names).
        Default None: channels-first, refusing 4-D input that looks
        channels-last (1, 3 or 4 in the last axis, not in the second).
    eta : float, optional
        Learning rate; default: the ``scheduler`` instance's own, or 1e-3.
    lam : float, default=0.0
        L2 penalty on all weights (not biases), as in ``CNN.fit``.
    epochs : int, default=30
    batch_size : int, default=32
    scheduler : str or Scheduler, default="adam"
        A name from :data:`SCHEDULER_NAMES` (``"adam"``, ``"sgd"``, ``"momentum"``,
        ...) or an instance such as ``Adam(1e-3, 0.9, 0.999)``, copied for each
        fit (its ``eta`` replaced by ``eta`` when that is given).
    backend : str, optional
        ``"numpy"``, ``"cupy"``, ``"auto"`` or ``"array_api_strict"``. Default
        None: the environment variable ``NNCORE_BACKEND`` if set, else NumPy.
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None
        Seeds the initial weights and the shuffling. An int gives the same model
        on every fit (the weights of ``CNN(seed=random_state)``); a generator is
        drawn from, so successive fits differ; None differs per fit.
    dtype : {"float32", "float64"}, optional
        Default None: float32 for float32 ``X``, else float64, as scikit-learn
        does (float64 predictions do not depend on the batch in the last bit).
    shuffle : bool, default=True
        Reshuffle the training samples every epoch.
    verbose : bool, default=False
        Show the CNN's progress bar.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The sorted class labels (integers, strings, ...).
    model_ : CNN
        The trained network (``model_.summary()``, ``model_.save(path)``).
    history_ : dict of ndarrays
        ``CNN.fit``'s scores per epoch (``train_error``, ``train_acc``, ...).
    image_shape_ : tuple
        ``(channels, height, width)`` of the images the network reads.
    n_features_in_ : int
        ``channels * height * width``.

    Notes
    -----
    Two classes use a softmax over two output nodes (not one sigmoid node).
    ``predict`` returns a NumPy array of labels; ``predict_proba`` returns
    NumPy probabilities, columns in the order of ``classes_``.
    """

    _output_func = staticmethod(activations.softmax)
    _cost_func = staticmethod(CostCrossEntropy)

    def fit(self, X, y):
        """Train a fresh network on images ``X`` and class labels ``y`` (any hashable, sortable labels)."""
        _require_y(self, y)
        X = self._images(X, reset=True)
        y = column_or_1d(to_numpy(y) if backend_of(y).name != "numpy" else y, warn=True)
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y")  # rejects NaN and inf labels
        check_consistent_length(X, y)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in y; "
                             f"got 1 class: {self.classes_[0]!r}")
        t = np.zeros((len(y), len(self.classes_)), dtype=self.dtype)
        t[np.arange(len(y)), encoded.ravel()] = 1
        return self._train(X, t)

    def predict_proba(self, X):
        """Class probabilities ``(n, n_classes)``, columns ordered as ``classes_``."""
        return self._outputs(X)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba` (clipped away from 0)."""
        proba = self.predict_proba(X)
        return np.log(np.clip(proba, np.finfo(proba.dtype).tiny, None))

    def predict(self, X):
        """The most probable class label for each sample."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class CNNRegressor(RegressorMixin, _CNNEstimator):
    """A convolutional network regressor with scikit-learn's interface.

    Same parameters as :class:`CNNClassifier`; the output layer has one
    identity node per target column and the loss is the squared error
    (``CostOLS``). Targets are used as given: scale them (e.g. with
    ``sklearn.compose.TransformedTargetRegressor``) if they are far from unit
    size. ``score`` is scikit-learn's R^2 (``CNN.score`` gives the MSE).

    Attributes
    ----------
    n_outputs_ : int
        Number of target columns; ``predict`` returns 1-D arrays when ``y``
        was 1-D.
    model_, history_, image_shape_, n_features_in_ : as in :class:`CNNClassifier`.
    """

    _output_func = staticmethod(activations.identity)
    _cost_func = staticmethod(CostOLS)

    def fit(self, X, y):
        """Train a fresh network on images ``X`` and targets ``y`` of shape (n,) or (n, n_outputs)."""
        _require_y(self, y)
        X = self._images(X, reset=True)
        y = check_array(to_numpy(y) if backend_of(y).name != "numpy" else y, ensure_2d=False,
                        dtype=[np.float64, np.float32], input_name="y")
        if y.ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: y must be 1-D or 2-D, got shape {y.shape}")
        check_consistent_length(X, y)
        self._y_1d = y.ndim == 1
        t = y.reshape(len(y), -1)
        self.n_outputs_ = t.shape[1]
        return self._train(X, t)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def predict(self, X):
        """Predicted targets, shape (n,) or (n, n_outputs) like the ``y`` given to ``fit``."""
        out = self._outputs(X).astype(np.float64)  # scikit-learn's convention for regression outputs
        return out[:, 0] if self._y_1d else out


def _parse_layers(layers, name):
    """``[(name, layer class, kwargs), ...]`` from the ``layers`` description (kwargs are fresh dicts)."""
    if isinstance(layers, (str, dict)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"{name}: layers must be a list such as [('conv', {{...}}), ('dense', {{'nodes': 64}})], "
                        f"got {layers!r}")
    parsed = []
    for index, entry in enumerate(layers):
        entry = (entry,) if isinstance(entry, str) else entry
        if not isinstance(entry, (tuple, list)) or not 1 <= len(entry) <= 2:
            raise TypeError(f"{name}: layers[{index}] must be a layer name such as 'flatten' or a pair "
                            f"(name, {{keyword arguments}}), got {entry!r}")
        kind, kwargs = entry[0], (entry[1] if len(entry) == 2 else {})
        try:
            cls = layer_class(kind)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: layers[{index}] has unknown kind {kind!r}: {exc}") from None
        if issubclass(cls, OutputLayer):
            raise ValueError(f"{name}: layers[{index}] is an output layer; the estimator adds it for you")
        if not isinstance(kwargs, dict):
            raise TypeError(f"{name}: layers[{index}] options must be a dict of keyword arguments, got {kwargs!r}")
        if cls is FullyConnectedLayer and "nodes" not in kwargs:
            raise ValueError(f"{name}: layers[{index}] ({kind!r}) needs the number of nodes, e.g. "
                             "('dense', {'nodes': 64})")
        parsed.append((kind, cls, dict(kwargs)))
    return parsed


def _channels_last(data_format, name):
    """Whether ``data_format`` says ``(n, h, w, c)``; None and "channels_first" say ``(n, c, h, w)``."""
    if data_format is None or data_format in DATA_FORMATS:
        return data_format == "channels_last"
    raise (ValueError if isinstance(data_format, str) else TypeError)(
        f"{name}: data_format must be one of {DATA_FORMATS} or None, got {data_format!r}")


def _refuse_channels_last(shape, name):
    """Refuse 4-D ``shape`` that reads as ``(n, h, w, c)`` rather than ``(n, c, h, w)``."""
    _, first, height, last = shape
    if last in _TYPICAL_CHANNELS and first not in _TYPICAL_CHANNELS:
        raise ValueError(
            f"{name}: X has shape {tuple(shape)}, which looks channels-last (n, h, w, c) with {last} channel(s); "
            f"channels-first (n, c, h, w) expected; use np.moveaxis(X, -1, 1), or pass "
            f"data_format='channels_last' (data_format='channels_first' reads it as {first} channels "
            f"of {height}x{last} images)")


def _seed(random_state, name):
    """``random_state`` as the CNN's seed: None, the int itself, or an int drawn from the generator."""
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**32:
            raise ValueError(f"{name}: random_state must be in [0, 2**32), got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise TypeError(f"{name}: random_state must be None, an int, a numpy RandomState or Generator, "
                    f"got {type(random_state).__name__} {random_state!r}")


def _require_y(estimator, y):
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None")


def _image_shape(image_shape, features, name):
    """``image_shape`` with its -1 resolved for ``features`` values per sample, as ``numpy.reshape`` does."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{name}: image_shape must be (channels, height, width) with positive ints and at most "
                         f"one -1, got {image_shape!r}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape and features % known == 0:
        shape = tuple(features // known if s == -1 else s for s in shape)
    if math.prod(shape) != features:
        raise ValueError(f"{name}: X has {features} features per sample, but image_shape={tuple(image_shape)} "
                         f"needs {'a multiple of ' if -1 in shape else ''}{known}")
    return shape
