"""CNN: an ordered list of layers, trained by minibatch gradient descent.

Data flows one way: ``forward`` down the layer list, ``backward`` up it.
"""

import copy
import math
import sys

import numpy as np
from tqdm.auto import tqdm

from backends import backend_of, dtype_name, get_backend

from . import activations, costs
from .layers import Convolution2DLayer, FlattenLayer, FullyConnectedLayer, OutputLayer, Pooling2DLayer
from .schedulers import Adam, Scheduler
from .validation import as_host_or_device_array, as_model_array, check_non_negative_number, check_positive_int

SCORE_KEYS = ("train_error", "train_acc", "val_error", "val_acc")
PREDICT_BATCH = 1024


class TrainingDivergedError(FloatingPointError):
    """The training loss (or a weight) became NaN or infinite.

    ``fit`` raises it after restoring the weights and scheduler state of the
    last epoch that ended finite. Attributes: ``epoch`` (1-based, the epoch
    that diverged), ``loss`` (its loss) and ``scores`` (the scores dict up to
    the last finite epoch, NaN after).
    """

    def __init__(self, message, epoch=None, loss=None, scores=None):
        super().__init__(message)
        self.epoch = epoch
        self.loss = loss
        self.scores = scores


class CNN:
    """A convolutional network built layer by layer, in the course's API.

    Parameters
    ----------
    cost_func : cost factory
        ``CostCrossEntropy`` (default), ``CostLogReg`` or ``CostOLS``.
    scheduler : Scheduler
        Update rule copied to every parameter; default ``Adam(eta=1e-4, rho=0.9, rho2=0.999)``.
    seed : int, optional
        Seeds the initial weights and the shuffling; the same seed gives the
        same weights on every backend.
    backend : str or Backend
        ``"numpy"`` (default), ``"cupy"``, ``"auto"``, ``"array_api_strict"``, or a
        :class:`backends.Backend`.
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

    def __init__(self, cost_func=costs.CostCrossEntropy, scheduler=None, seed=None, backend="numpy",
                 dtype="float32"):
        if scheduler is None:
            scheduler = Adam(eta=1e-4, rho=0.9, rho2=0.999)
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"CNN: scheduler must be a Scheduler such as Adam(1e-3), got {type(scheduler).__name__}")
        if not callable(cost_func):
            raise TypeError(f"CNN: cost_func must be a cost factory such as CostCrossEntropy, got {cost_func!r}")
        if isinstance(cost_func, str):
            raise TypeError(f"CNN: cost_func must be a function, not the string {cost_func!r}")
        self.cost_func = cost_func
        self.scheduler = scheduler
        self.seed = seed
        self.backend = get_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.layers = []
        self.pred_format = None
        self.input_shape = None
        init_seed, shuffle_seed = np.random.SeedSequence(seed).spawn(2)
        self._init_rng = np.random.default_rng(init_seed)
        self._shuffle_rng = np.random.default_rng(shuffle_seed)

    # ---- building -----------------------------------------------------------------------

    def add_Convolution2DLayer(self, input_channels=1, feature_maps=1, kernel_height=3, kernel_width=3,
                               v_stride=1, h_stride=1, pad="same", act_func=activations.LRELU, optimized=True):
        """Append a :class:`~nncore.layers.Convolution2DLayer`."""
        previous = self._last_image_layer("add_Convolution2DLayer")
        layer = self._new_layer(Convolution2DLayer, input_channels, feature_maps, kernel_height, kernel_width,
                                v_stride, h_stride, pad, act_func, self.seed, optimized, self.scheduler)
        if isinstance(previous, Convolution2DLayer) and previous.feature_maps != input_channels:
            raise ValueError(
                f"add_Convolution2DLayer: layer {len(self.layers)} (Convolution2DLayer) has "
                f"input_channels={input_channels} but the previous convolution, layer {previous.position}, "
                f"outputs {previous.feature_maps} feature maps"
            )
        self._append(layer)

    def add_PoolingLayer(self, kernel_height=2, kernel_width=2, v_stride=1, h_stride=1, pooling="max"):
        """Append a :class:`~nncore.layers.Pooling2DLayer`."""
        self._last_image_layer("add_PoolingLayer")
        layer = self._new_layer(Pooling2DLayer, kernel_height, kernel_width, v_stride, h_stride, pooling, self.seed)
        self._append(layer)

    def add_FlattenLayer(self, act_func=None):
        """Append a :class:`~nncore.layers.FlattenLayer` (between image and dense layers)."""
        self._check_not_finished("add_FlattenLayer")
        self._append(FlattenLayer(seed=self.seed))

    def add_FullyConnectedLayer(self, nodes, act_func=activations.LRELU, scheduler=None):
        """Append a :class:`~nncore.layers.FullyConnectedLayer`; ``scheduler`` defaults to the CNN's."""
        self._check_dense_input("add_FullyConnectedLayer")
        layer = self._new_layer(FullyConnectedLayer, nodes, act_func, scheduler or self.scheduler, self.seed)
        self._append(layer)

    def add_OutputLayer(self, nodes, output_func=activations.sigmoid, scheduler=None):
        """Append the :class:`~nncore.layers.OutputLayer`; it must come last."""
        self._check_dense_input("add_OutputLayer")
        layer = self._new_layer(OutputLayer, nodes, output_func, self.cost_func, scheduler or self.scheduler,
                                self.seed)
        self._append(layer)
        self.pred_format = layer.pred_format

    def _new_layer(self, cls, *args):
        """``cls(*args)``, with any argument error re-raised naming the layer it would have been."""
        try:
            return cls(*args)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            prefix = f"{cls.__name__}: "
            if message.startswith(prefix):
                message = message[len(prefix):]
            raise type(exc)(f"add_{_ADD_NAMES[cls]}: layer {len(self.layers)} ({cls.__name__}): {message}") from None

    def _append(self, layer):
        layer.position = len(self.layers)
        self.layers.append(layer)
        self.input_shape = None  # the architecture changed: build again before use

    def _check_not_finished(self, method):
        if self.layers and isinstance(self.layers[-1], OutputLayer):
            raise ValueError(f"{method}: the CNN already ends with an OutputLayer (layer {len(self.layers) - 1}); "
                             "add every other layer before it")

    def _last_image_layer(self, method):
        self._check_not_finished(method)
        flat = [layer for layer in self.layers if isinstance(layer, (FlattenLayer, FullyConnectedLayer))]
        if flat:
            raise ValueError(f"{method}: layer {flat[0].position} ({type(flat[0]).__name__}) already made the data "
                             "flat (n, features); convolution and pooling layers must come before the FlattenLayer")
        images = [layer for layer in self.layers if isinstance(layer, Convolution2DLayer)]
        return images[-1] if images else None

    def _check_dense_input(self, method):
        self._check_not_finished(method)
        if self.layers and isinstance(self.layers[-1], (Convolution2DLayer, Pooling2DLayer)):
            last = self.layers[-1]
            raise ValueError(f"{method}: layer {last.position} ({type(last).__name__}) outputs images "
                             "(n, c, h, w); call add_FlattenLayer() before adding dense layers")

    def _check_complete(self, method):
        if not self.layers:
            raise ValueError(f"{method}: the CNN has no layers; add layers and end with add_OutputLayer(nodes, "
                             "output_func)")
        if not isinstance(self.layers[-1], OutputLayer):
            last = self.layers[-1]
            raise ValueError(f"{method}: the CNN has no OutputLayer: its {len(self.layers)} layer(s) end with "
                             f"{last.label}; end it with add_OutputLayer(nodes, output_func)")

    def _output_shapes(self, sample_shape):
        """Per-sample output shape of every layer (validates the whole stack, changes nothing)."""
        shapes, shape = [], tuple(sample_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
            shapes.append(shape)
        return shapes

    def _build(self, sample_shape, method="fit"):
        """Create every layer's parameters for per-sample input ``sample_shape``."""
        self._check_complete(method)
        shape = tuple(int(s) for s in sample_shape)
        # Check every layer first so that a bad stack draws no weights from the seed's stream.
        self._output_shapes(shape)
        for layer in self.layers:
            shape = layer.build(shape, self.backend, self.dtype, self._init_rng)
        self.input_shape = tuple(int(s) for s in sample_shape)

    def reset_weights(self):
        """Draw fresh initial weights (from the seed's stream) and forget scheduler state."""
        if self.input_shape is not None:
            self._build(self.input_shape)

    @property
    def output_layer(self):
        return self.layers[-1]

    # ---- forward and backward ---------------------------------------------------------

    def _feedforward(self, a, training=False):
        for layer in self.layers:
            a = layer.forward(a, training)
        return a

    def _backpropagate(self, target, lam=0.0):
        """Fill every layer's ``grads`` with the gradient of cost + ``lam/2 * sum(W**2)``."""
        delta = self.output_layer.backward_target(target, need_input_grad=len(self.layers) > 1)
        self.output_layer.add_penalty(lam)
        for index in range(len(self.layers) - 2, -1, -1):
            layer = self.layers[index]
            delta = layer.backward(delta, need_input_grad=index > 0)
            layer.add_penalty(lam)

    def _step(self):
        for layer in self.layers:
            layer.step()

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
        if self.input_shape is None:
            self._build(X.shape[1:], method)
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
            shuffle=True, verbose=True):
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

        Returns
        -------
        dict of numpy arrays of length ``epochs``
            ``train_error, train_acc, val_error, val_acc``; NaN where not
            computed (accuracies for regression, validation without data,
            epochs not run after Ctrl-C).

        Raises
        ------
        TrainingDivergedError
            The loss or a weight became NaN or infinite (or NumPy raised a
            floating-point error under ``np.seterr``/``-W error``); the weights
            and scheduler state of the last finite epoch are restored, and the
            exception carries ``epoch``, ``loss`` and ``scores``.
        ValueError, TypeError
            Bad data or settings, with a message naming the layer and numbers.

        Notes
        -----
        Ctrl-C (``KeyboardInterrupt``) stops training cleanly: the weights of
        every completed minibatch are kept (an update step that was cut short
        is rolled back), the progress bar is closed and the scores so far are
        returned (the interrupted epoch and later ones are NaN).
        """
        epochs = check_positive_int("fit: epochs", epochs)
        lam = check_non_negative_number("fit: lam", lam)
        X = self._inputs(X)
        t = self._targets(t, X.shape[0])
        n = X.shape[0]
        bounds = _batch_bounds(n, batches, batch_size)
        validate = X_val is not None or t_val is not None
        if validate:
            if X_val is None or t_val is None:
                given, missing = ("X_val", "t_val") if t_val is None else ("t_val", "X_val")
                raise ValueError(f"fit: {given} was given but {missing} was not; give both, or neither")
            X_val = self._inputs(X_val, "X_val")
            t_val = self._targets(t_val, X_val.shape[0], "t_val", inputs="X_val")

        xp = self.backend.xp
        scores = {key: np.full(epochs, np.nan) for key in SCORE_KEYS}
        bar = tqdm(total=epochs, disable=not verbose, unit="epoch", dynamic_ncols=True)
        last_good = self._snapshot(copy_arrays=True)  # the state after the last finite epoch
        epoch, before_batch = 0, None
        try:
            for epoch in range(epochs):
                order = self.backend.asarray(self._shuffle_rng.permutation(n)) if shuffle else None
                loss_sum, hits = 0.0, 0.0  # device scalars: no host round trip per batch
                try:
                    for start, stop in bounds:
                        # References only (layers replace their arrays): Ctrl-C mid-step rolls back to here.
                        before_batch = self._snapshot()
                        if order is None:
                            X_batch, t_batch = X[start:stop, ...], t[start:stop, ...]
                        else:
                            idx = order[start:stop]
                            X_batch, t_batch = xp.take(X, idx, axis=0), xp.take(t, idx, axis=0)
                        output = self._feedforward(X_batch, training=True)
                        loss_sum = loss_sum + self.cost_func(t_batch)(output) * (stop - start)
                        hits = hits + self._hits(output, t_batch)
                        self._backpropagate(t_batch, lam)
                        self._step()
                    before_batch = None
                    train_error = float(loss_sum) / n
                    if not math.isfinite(train_error):
                        problem = f"the loss became {train_error}"
                    elif not self._weights_finite():
                        problem = f"the weights became NaN or infinite (loss {train_error:.6g})"
                    else:
                        problem = None
                except (FloatingPointError, RuntimeWarning) as exc:
                    # Overflow warnings turned into errors (np.seterr, -W error): the same divergence.
                    before_batch, train_error = None, math.nan
                    problem = f"a floating-point error occurred ({type(exc).__name__}: {exc})"
                if problem is not None:
                    self._restore(last_good)
                    kept = (f"its weights after epoch {epoch}, the last finite one" if epoch
                            else "the weights it had before this fit")
                    raise TrainingDivergedError(
                        f"fit: training diverged in epoch {epoch + 1} of {epochs}: {problem}. The model was "
                        f"restored to {kept}. Try a smaller learning rate, e.g. a tenth of "
                        f"{_eta_of(self.scheduler)}, or scale the inputs and targets",
                        epoch=epoch + 1, loss=train_error, scores=scores,
                    )
                last_good = self._snapshot(copy_arrays=True)
                scores["train_error"][epoch] = train_error
                if self.pred_format != "Regression":
                    scores["train_acc"][epoch] = float(hits) / (n * self._hit_units())
                if validate:
                    scores["val_error"][epoch], scores["val_acc"][epoch] = self._evaluate(X_val, t_val)
                bar.set_postfix(_postfix(scores, epoch), refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            # Keep the weights of every completed minibatch (undo a half-applied update step) and
            # hand back the scores of the completed epochs.
            if before_batch is not None:
                self._restore(before_batch)
            if verbose:
                print(f"fit: interrupted in epoch {epoch + 1} of {epochs}; keeping the weights learnt so far",
                      file=sys.stderr)
        finally:
            bar.close()
        return scores

    def _weights_finite(self):
        xp = self.backend.xp
        ok = True
        for layer in self.layers:
            for name in layer.params:
                ok = ok & xp.all(xp.isfinite(getattr(layer, name)))  # one host round trip in the end
        return bool(ok)

    def _snapshot(self, copy_arrays=False):
        """Parameters and scheduler states of every layer; ``copy_arrays`` also copies the arrays.

        Cheap without ``copy_arrays`` (references and attribute dicts, no array work): layers and
        schedulers rebind their arrays instead of updating them in place.
        """
        def keep(value):
            if copy_arrays and value is not None and not isinstance(value, (int, float)):
                return self.backend.xp.asarray(value, copy=True)
            return value

        return [({name: keep(getattr(layer, name)) for name in layer.params},
                 {name: (sched, {key: keep(value) for key, value in vars(sched).items()})
                  for name, sched in layer.schedulers.items()})
                for layer in self.layers]

    def _restore(self, snapshot):
        for layer, (params, schedulers) in zip(self.layers, snapshot):
            for name, value in params.items():
                setattr(layer, name, value)
            restored = {}
            for name, (sched, attributes) in schedulers.items():
                restored[name] = copy.copy(sched)
                vars(restored[name]).update(attributes)
            layer.schedulers = restored

    def _hit_units(self):
        return self.output_layer.nodes if self.pred_format == "Binary" else 1

    def _hits(self, output, target):
        """Number of correct predictions (elements for binary outputs), as a device scalar."""
        xp = self.backend.xp
        if self.pred_format == "Multi-class":
            right = xp.argmax(output, axis=1) == xp.argmax(target, axis=1)
        elif self.pred_format == "Binary":
            right = (output > 0.5) == (target > 0.5)
        else:
            return 0.0
        return xp.sum(xp.astype(right, self.dtype))

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
        is not in nncore's registries raises ``ValueError``. See :mod:`nncore.io`.
        """
        from . import io

        return io.save(self, path)

    @classmethod
    def load(cls, path, backend=None, *, device=None):
        """Read a model written by :meth:`save` onto ``backend`` (default: ``NNCORE_BACKEND``, else numpy).

        Never unpickles or runs anything from the file; a file that is not a valid
        nncore model raises ``ValueError`` naming the file and the problem.
        """
        from . import io

        return io.load(path, backend, device=device)

    def summary(self, input_shape=None, *, print_fn=print):
        """Print (and return) a table of the layers, their output shapes and parameter counts.

        ``input_shape`` is the shape of ONE sample, e.g. ``(1, 28, 28)``; by default
        the shape the CNN was built for by ``fit``/``predict``. Nothing is built or
        changed. ``print_fn=None`` only returns the text.
        """
        if input_shape is None:
            if self.input_shape is None:
                raise ValueError("summary: the CNN is not built yet, so its input shape is unknown; call "
                                 "summary(input_shape=(channels, height, width)) with the shape of one sample, "
                                 "or fit/predict first")
            input_shape = self.input_shape
        if isinstance(input_shape, int) or not hasattr(input_shape, "__len__"):
            input_shape = (input_shape,)
        input_shape = tuple(check_positive_int("summary: input_shape entries", s) for s in input_shape)
        if not self.layers:
            raise ValueError("summary: the CNN has no layers")
        shapes = self._output_shapes(input_shape)
        rows, total, shape = [], 0, input_shape
        for layer, out in zip(self.layers, shapes):
            count = layer.n_params(shape)
            total += count
            rows.append((f"{layer.position} {type(layer).__name__}", str((None, *out)), f"{count:,}",
                         layer.describe()))
            shape = out
        header = ("Layer (type)", "Output Shape", "Param #", "Details")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

        def line(row):
            return "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

        rule = sum(widths) + 6
        lines = [f"CNN: backend {self.backend.name}, dtype {dtype_name(self.dtype)}, "
                 f"input shape {(None, *input_shape)}", "_" * rule, line(header), "=" * rule]
        lines += [line(row) for row in rows]
        complete = isinstance(self.layers[-1], OutputLayer)
        lines += ["=" * rule, f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0",
                  f"Cost: {getattr(self.cost_func, '__name__', self.cost_func)}; scheduler: {self.scheduler!r}"
                  + ("" if complete else "; no OutputLayer yet"), "_" * rule]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self):
        return f"CNN({len(self.layers)} layers, backend={self.backend.name!r}, dtype={dtype_name(self.dtype)!r})"


_ADD_NAMES = {Convolution2DLayer: "Convolution2DLayer", Pooling2DLayer: "PoolingLayer",
              FullyConnectedLayer: "FullyConnectedLayer", OutputLayer: "OutputLayer"}


def _eta_of(scheduler):
    eta = getattr(scheduler, "eta", None)
    return f"eta={eta!r}" if eta is not None else "the current eta"


def _batch_bounds(n, batches, batch_size):
    """``[(start, stop), ...]`` for the course's ``batches`` or for ``batch_size``."""
    if batches is not None and batch_size is not None:
        raise ValueError(f"fit: give batches or batch_size, not both (got batches={batches}, batch_size={batch_size})")
    if batch_size is not None:
        size = check_positive_int("fit: batch_size", batch_size)
        return [(start, min(start + size, n)) for start in range(0, n, size)]
    batches = check_positive_int("fit: batches", 1 if batches is None else batches)
    if batches > n:
        raise ValueError(f"fit: batches={batches} is larger than the number of samples ({n})")
    size = n // batches
    # As in the course code, the last batch also takes the remainder.
    return [(b * size, (b + 1) * size if b < batches - 1 else n) for b in range(batches)]


def _postfix(scores, epoch):
    shown = {"loss": scores["train_error"][epoch], "acc": scores["train_acc"][epoch],
             "val_loss": scores["val_error"][epoch], "val_acc": scores["val_acc"][epoch]}
    return {key: f"{value:.4f}" for key, value in shown.items() if not math.isnan(value)}
