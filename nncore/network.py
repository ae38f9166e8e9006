"""CNN: an ordered list of layers, trained by minibatch gradient descent.

Data flows one way: ``forward`` down the layer list, ``backward`` up it. The
training loop lives in :mod:`nncore.training`, the parameters in one flat
buffer (:mod:`nncore.parameters`), the model file in :mod:`nncore.model_state`
and :mod:`nncore.io`.
"""

import math

import numpy as np

from backends import backend_of, dtype_name, get_backend

from . import costs, model_state, training
from .layer_stack import LayerStack
from .layers import Convolution2DLayer, Pooling2DLayer
from .parameters import FlatParameters
from .summary import summary_table
from .schedulers import Adam, Scheduler
from .training import TrainingDivergedError
from .validation import as_host_or_device_array, as_model_array, check_positive_int

PREDICT_BATCH = 1024

__all__ = ["CNN", "TrainingDivergedError"]


class CNN(LayerStack):
    """A convolutional network built layer by layer, in the course's API.

    Parameters
    ----------
    cost_func : cost factory
        ``CostCrossEntropy`` (default), ``CostLogReg`` or ``CostOLS``.
    scheduler : Scheduler
        Update rule for every parameter; default ``Adam(eta=1e-4, rho=0.9, rho2=0.999)``.
    seed : int, optional
        Seeds the initial weights and the shuffling; the same seed gives the
        same weights on every backend.
    backend : str, Backend or None
        ``"numpy"``, ``"cupy"``, ``"auto"``, ``"array_api_strict"``, or a
        :class:`backends.Backend`; ``None`` (default) reads the environment
        variable ``NNCORE_BACKEND``, else NumPy.
    dtype : {"float32", "float64"}
        Floating type of weights and computation; inputs are cast to it.

    Examples
    --------
    >>> cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(1e-3, 0.9, 0.999), seed=2023)
    >>> cnn.add_Convolution2DLayer(input_channels=1, feature_maps=1, kernel_height=3, kernel_width=3)
    >>> cnn.add_FlattenLayer()
    >>> cnn.add_FullyConnectedLayer(30, LRELU)
    >>> cnn.add_OutputLayer(10, softmax)
    >>> scores = cnn.fit(X, t, epochs=10, batches=10, verbose=False)  # doctest: +SKIP
    """

    def __init__(self, cost_func=costs.CostCrossEntropy, scheduler=None, seed=None, backend=None,
                 dtype="float32"):
        if scheduler is None:
            scheduler = Adam(eta=1e-4, rho=0.9, rho2=0.999)
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"CNN: scheduler must be a Scheduler such as Adam(1e-3), got {type(scheduler).__name__}")
        if isinstance(cost_func, str):
            raise TypeError(f"CNN: cost_func must be a function, not the string {cost_func!r}")
        if not callable(cost_func):
            raise TypeError(f"CNN: cost_func must be a cost factory such as CostCrossEntropy, got {cost_func!r}")
        self.cost_func = cost_func
        self._scheduler = scheduler
        self.seed = seed
        self.backend = get_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.layers = []
        self.pred_format = None
        self.input_shape = None
        self.parameters = None  # FlatParameters once built
        self.comm = None  # the communicator of the last distributed fit (save writes on rank 0 only)
        init_seed, shuffle_seed = np.random.SeedSequence(seed).spawn(2)
        self.init_rng = np.random.default_rng(init_seed)
        self.shuffle_rng = np.random.default_rng(shuffle_seed)

    @property
    def scheduler(self):
        """The update rule of every layer that has none of its own (its settings may change at any time)."""
        return self._scheduler

    @scheduler.setter
    def scheduler(self, scheduler):
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"CNN: scheduler must be a Scheduler such as Adam(1e-3), got {type(scheduler).__name__}")
        if self.parameters is not None and scheduler is not self._scheduler:
            raise ValueError("CNN: the scheduler cannot be replaced once the CNN is built (its state belongs to the "
                             "parameters); change its settings instead (cnn.scheduler.eta = ...), or build a new CNN")
        for layer in self.layers:  # layers added so far follow the CNN's scheduler
            if layer.scheduler is self._scheduler:
                layer.scheduler = scheduler
        self._scheduler = scheduler

    # ---- building ----------------------------------------------------------------------

    def _output_shapes(self, sample_shape):
        """Per-sample output shape of every layer (validates the whole stack, changes nothing)."""
        shapes, shape = [], tuple(sample_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
            shapes.append(shape)
        return shapes

    def build(self, sample_shape, *, init=True, method="fit"):
        """Create every layer's parameters for per-sample input ``sample_shape``, e.g. ``(1, 28, 28)``.

        ``fit`` and ``predict`` build on first use. ``init=False`` checks the
        shapes and sets nothing up (loading a file supplies the parameters and
        then calls :meth:`bind_parameters`).
        """
        self._check_complete(method)
        shape = tuple(int(s) for s in sample_shape)
        # Check every layer first so that a bad stack draws no weights from the seed's stream.
        self._output_shapes(shape)
        for layer in self.layers:
            shape = layer.build(shape, self.backend, self.dtype, self.init_rng, init=init)
        self.input_shape = tuple(int(s) for s in sample_shape)
        self.parameters = None
        if init:
            self.bind_parameters()

    def bind_parameters(self):
        """Gather the layers' parameters into one flat buffer with fresh scheduler state."""
        self.parameters = FlatParameters(self.layers, self.backend, self.dtype)

    def reset_weights(self):
        """Draw fresh initial weights (from the seed's stream) and forget scheduler state."""
        if self.input_shape is not None:
            self.build(self.input_shape)

    @property
    def output_layer(self):
        return self.layers[-1]

    # ---- forward and backward ---------------------------------------------------------

    def _feedforward(self, a, training=False):
        for layer in self.layers:
            a = layer.forward(a, training)
        return a

    def _backpropagate(self, target, lam=0.0):
        """Fill every layer's ``grads`` with the gradient of cost + ``lam/2 * sum(W**2)``.

        Training passes ``lam=0`` and lets the flat update add the L2 term (one
        operation for all layers instead of one per layer).
        """
        delta = self.output_layer.backward_target(target, need_input_grad=len(self.layers) > 1)
        self.output_layer.add_penalty(lam)
        for index in range(len(self.layers) - 2, -1, -1):
            layer = self.layers[index]
            delta = layer.backward(delta, need_input_grad=index > 0)
            layer.add_penalty(lam)

    # ---- data in ----------------------------------------------------------------------

    def _inputs(self, X, what="X", method="fit"):
        self._check_complete(method)
        X = as_model_array(self.backend, X, self.dtype, what)
        first = self.layers[0]
        images = isinstance(first, (Convolution2DLayer, Pooling2DLayer))
        if images and X.ndim != 4:
            raise ValueError(f"{method}: {what} must be 4-D (n, channels, height, width) for {first.label}, "
                             f"got shape {tuple(X.shape)}")
        if X.ndim < 2:
            raise ValueError(f"{method}: {what} must have a sample axis and at least one feature axis, e.g. "
                             f"(n, features) for {first.label}; got shape {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError(f"{method}: {what} has no samples (shape {tuple(X.shape)})")
        _check_channels_first(X.shape, first, what, method)
        if self.input_shape is None:
            self.build(X.shape[1:], method=method)
        elif tuple(X.shape[1:]) != self.input_shape:
            raise ValueError(f"{method}: {what} has samples of shape {tuple(X.shape[1:])} but the CNN was built "
                             f"for samples of shape {self.input_shape} (the input of {first.label})")
        return X

    def _targets(self, t, n, what="t", inputs="X", method="fit"):
        t = as_model_array(self.backend, t, self.dtype, what)
        out = self.output_layer
        nodes = out.nodes
        if t.ndim == 1 and nodes == 1:
            t = self.backend.xp.reshape(t, (-1, 1))
        if t.ndim != 2 or t.shape[1] != nodes:
            hint = " (one-hot encode class labels, e.g. nncore.datasets.onehot)" if t.ndim == 1 else ""
            raise ValueError(f"{method}: {what} has shape {tuple(t.shape)} but {out.label} has {nodes} "
                             f"node(s): expected ({n}, {nodes}){hint}")
        if t.shape[0] != n:
            raise ValueError(f"{method}: {what} has {t.shape[0]} rows but {inputs} has {n} samples")
        return t

    # ---- training ---------------------------------------------------------------------

    def fit(self, X, t, epochs=100, lam=0, batches=None, X_val=None, t_val=None, *, batch_size=None,
            shuffle=True, verbose=True, comm=None):
        """Train with minibatch gradient descent; returns the scores per epoch.

        Parameters
        ----------
        X : array, shape (n, channels, height, width)
            Inputs (NumPy, CuPy or array-like); cast to the CNN's dtype.
        t : array, shape (n, nodes)
            Targets (one-hot for multi-class).
        epochs : int
            Passes over the data. Calling ``fit`` again continues training.
        lam : float
            L2 penalty: adds ``lam/2 * sum(W**2)`` over all weights (not biases).
        batches : int, optional
            Number of minibatches per epoch (course semantics; default 1, the
            last batch takes the remainder). Give this or ``batch_size``.
        X_val, t_val : arrays, optional
            Validation data, scored after every epoch.
        batch_size : int, optional
            Samples per minibatch instead of ``batches``.
        shuffle : bool
            Reshuffle the samples every epoch (from the seed).
        verbose : bool
            Show a progress bar with loss and accuracy.
        comm : mpi4py communicator, optional
            Train data-parallel over its processes (see :mod:`nncore.distributed`):
            every process passes the same data and settings; each computes the
            gradient of its share of every minibatch, the gradients are summed,
            and all processes take the same step (the weights equal one process's
            training on the same minibatches).

        Returns
        -------
        dict of numpy arrays, one entry per epoch
            ``train_error, train_acc, val_error, val_acc``; NaN where not
            computed (accuracies for regression, validation without data,
            epochs not run after Ctrl-C or divergence). The arrays have length
            ``epochs``; only when that would take more than
            ``training.MAX_PADDED_EPOCHS`` entries and fewer epochs ran are they
            as long as the epochs that ran.

        Raises
        ------
        TrainingDivergedError
            The loss, a weight or the scheduler state became NaN or infinite, or
            the loss grew beyond ``training.ABSURD_GROWTH`` times its first
            minibatch's value (or NumPy raised a floating-point error under
            ``np.seterr``/``-W error``); the weights and scheduler state of the
            last good epoch are restored, and the exception carries ``epoch``,
            ``loss`` and ``scores``.
        ValueError, TypeError
            Bad data or settings, with a message naming the layer and numbers.

        Notes
        -----
        Ctrl-C (``KeyboardInterrupt``) at any point stops training cleanly: the
        weights of every completed minibatch are kept (a Ctrl-C during an update
        step takes effect when the step is complete), the progress bar is closed
        and the scores so far are returned. Changing the scheduler's settings
        (``cnn.scheduler.eta = ...``) between or during fits takes effect at the
        next step, as changing a ``torch.optim`` learning rate does.
        """
        return training.fit(self, X, t, epochs=epochs, lam=lam, batches=batches, X_val=X_val, t_val=t_val,
                            batch_size=batch_size, shuffle=shuffle, verbose=verbose, comm=comm)

    def _hit_units(self):
        return self.output_layer.nodes if self.pred_format == "Binary" else 1

    def _hits(self, output, target, total=True):
        """Number of correct predictions (elements for binary outputs), as a device scalar.

        ``total=False`` returns the flat boolean array of right answers instead (summed later).
        """
        xp = self.backend.xp
        if self.pred_format == "Multi-class":
            right = xp.argmax(output, axis=1) == xp.argmax(target, axis=1)
        elif self.pred_format == "Binary":
            right = xp.reshape((output > 0.5) == (target > 0.5), (-1,))
        else:
            return 0.0 if total else None
        return xp.sum(xp.astype(right, self.dtype)) if total else right

    def _evaluate(self, X, t):
        """``(cost, accuracy)`` of the network on device arrays ``X``, ``t``."""
        output = self._predict_device(X)
        error = float(self.cost_func(t)(output))
        if self.pred_format == "Regression":
            return error, math.nan
        return error, float(self._hits(output, t)) / (X.shape[0] * self._hit_units())

    # ---- prediction -------------------------------------------------------------------

    def _predict_device(self, X, batch_size=PREDICT_BATCH):
        xp = self.backend.xp
        n = X.shape[0]
        chunks = [self._feedforward(X[i : min(i + batch_size, n), ...]) for i in range(0, n, batch_size)]
        return chunks[0] if len(chunks) == 1 else xp.concat(chunks, axis=0)

    def _predict_raw(self, X, batch_size, method="predict"):
        self._check_complete(method)
        batch_size = check_positive_int(f"{method}: batch_size", batch_size)
        X = as_host_or_device_array(X, "X")
        if X.ndim == 0:
            raise ValueError(f"{method}: X must be an array of samples, got a scalar")
        source = backend_of(X)
        n = X.shape[0]
        outputs = []
        for start in range(0, max(n, 1), batch_size):
            # Move and check one batch at a time: a large host array never sits whole on the device.
            chunk = self._inputs(X[start : min(start + batch_size, n), ...], method=method)
            outputs.append(self._feedforward(chunk))
        xp = self.backend.xp
        return source, (outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0))

    def predict_proba(self, X, *, batch_size=PREDICT_BATCH):
        """Raw network outputs ``(n, nodes)``, in the namespace of ``X``."""
        source, output = self._predict_raw(X, batch_size, "predict_proba")
        return source.asarray(output)

    def predict(self, X, *, threshold=0.5, batch_size=PREDICT_BATCH):
        """Class predictions as in the course code, in the namespace of ``X``.

        One-hot rows (multi-class), 0/1 (binary, ``output > threshold``) or the
        raw outputs (regression); all in the CNN's dtype.
        """
        source, output = self._predict_raw(X, batch_size)
        return source.asarray(self._decide(output, threshold))

    def _decide(self, output, threshold=0.5):
        xp = self.backend.xp
        if self.pred_format == "Multi-class":
            classes = xp.arange(output.shape[1], device=self.backend.device)
            return xp.astype(xp.argmax(output, axis=1, keepdims=True) == classes, self.dtype)
        if self.pred_format == "Binary":
            return xp.astype(output > threshold, self.dtype)
        return output

    def score(self, X, t):
        """Accuracy for classification, mean squared error for regression (a float)."""
        X = self._inputs(X, method="score")
        t = self._targets(t, X.shape[0], method="score")
        output = self._predict_device(X)
        xp = self.backend.xp
        if self.pred_format == "Regression":
            return float(xp.mean((output - t) ** 2))
        return float(self._hits(output, t)) / (X.shape[0] * self._hit_units())

    # ---- moving, saving, describing ---------------------------------------------------

    def to(self, backend, *, device=None):
        """Move the weights and the scheduler state (Adam moments, ...) to ``backend``; returns ``self``.

        ``backend`` is a name such as ``"cupy"`` or a :class:`backends.Backend`;
        ``device`` picks the device within it (a GPU number, ``"device1"``, ...).
        """
        backend = get_backend(backend, device)
        dtype = backend.dtype(self.dtype)
        if self.parameters is not None:
            self.parameters.to(backend, dtype)  # the buffer and the scheduler state, once
        for layer in self.layers:
            layer.to(backend)
        self.backend, self.dtype = backend, dtype
        return self

    def save(self, path):
        """Write the model to one ``.npz`` file (atomically); returns the path written.

        The file holds the architecture, weights, dtype, cost, scheduler settings
        and state (Adam moments and step counts) and the shuffling RNG state, so
        :meth:`load` gives a model that predicts exactly the same and resumes
        training where this one stopped. ``.npz`` is appended when missing.
        Functions are stored by name: a custom activation, cost or scheduler that
        is not in nncore's registries raises ``ValueError``. After a distributed
        ``fit`` only rank 0 writes (the others wait for it). See
        :mod:`nncore.model_state` and :mod:`nncore.io`.
        """
        return model_state.save(self, path)

    @classmethod
    def load(cls, path, backend=None, *, device=None):
        """Read a model written by :meth:`save` onto ``backend`` (default: ``NNCORE_BACKEND``, else numpy).

        Never unpickles or runs anything from the file; a file that is not a valid
        nncore model raises ``ValueError`` naming the file and the problem.
        """
        return model_state.load(cls, path, get_backend(backend, device))

    def summary(self, input_shape=None, *, print_fn=print):
        """Print (and return) a table of the layers, their output shapes and parameter counts.

        ``input_shape`` is the shape of ONE sample, e.g. ``(1, 28, 28)``; by default
        the shape the CNN was built for by ``fit``/``predict``. Nothing is built or
        changed. ``print_fn=None`` only returns the text.
        """
        text = summary_table(self, input_shape)
        if print_fn is not None:
            print_fn(text)
        return text

    def __getstate__(self):
        """Pickle and deepcopy state: the flat buffer holds every parameter; a communicator stays behind."""
        if self.parameters is not None:
            self.parameters.adopt_assigned()
        return {**vars(self), "comm": None}

    def __setstate__(self, state):
        vars(self).update(state)
        if self.parameters is not None:
            # Copies do not share memory: the layers' parameters become views of the copied buffer again.
            self.parameters.bind(self.parameters.flat)

    def __repr__(self):
        return f"CNN({len(self.layers)} layers, backend={self.backend.name!r}, dtype={dtype_name(self.dtype)!r})"


def _check_channels_first(shape, first, what, method):
    """A clear error for channels-last images ``(n, h, w, c)`` given to a convolution expecting ``c`` channels."""
    if not isinstance(first, Convolution2DLayer) or len(shape) != 4:
        return
    channels = first.input_channels
    if shape[1] != channels and shape[3] == channels:
        raise ValueError(f"{method}: {what} has shape {tuple(shape)}, which looks channels-last (n, h, w, c), "
                         f"but {first.label} expects {channels} input channel(s): channels-first (n, c, h, w) "
                         "expected; use np.moveaxis(X, -1, 1)")
