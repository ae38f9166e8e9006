"""CNN: an ordered list of layers, trained by minibatch gradient descent.

Data flows one way: ``forward`` down the layer list, ``backward`` up it.
"""

import copy
import math

import numpy as np
from tqdm.auto import tqdm

from backends import backend_of, get_backend

from . import activations, costs
from .layers import Convolution2DLayer, FlattenLayer, FullyConnectedLayer, OutputLayer, Pooling2DLayer
from .schedulers import Adam, Scheduler
from .validation import as_model_array, check_positive_int

SCORE_KEYS = ("train_error", "train_acc", "val_error", "val_acc")
PREDICT_BATCH = 1024


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


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
        layer = Convolution2DLayer(input_channels, feature_maps, kernel_height, kernel_width, v_stride, h_stride,
                                   pad, act_func, self.seed, optimized, self.scheduler)
        previous = self._last_image_layer("add_Convolution2DLayer")
        if isinstance(previous, Convolution2DLayer) and previous.feature_maps != input_channels:
            raise ValueError(
                f"add_Convolution2DLayer: input_channels={input_channels} but the previous convolution "
                f"(layer {previous.position}) outputs {previous.feature_maps} feature maps"
            )
        self._append(layer)

    def add_PoolingLayer(self, kernel_height=2, kernel_width=2, v_stride=1, h_stride=1, pooling="max"):
        """Append a :class:`~nncore.layers.Pooling2DLayer`."""
        layer = Pooling2DLayer(kernel_height, kernel_width, v_stride, h_stride, pooling, self.seed)
        self._last_image_layer("add_PoolingLayer")
        self._append(layer)

    def add_FlattenLayer(self, act_func=None):
        """Append a :class:`~nncore.layers.FlattenLayer` (between image and dense layers)."""
        self._check_not_finished("add_FlattenLayer")
        self._append(FlattenLayer(seed=self.seed))

    def add_FullyConnectedLayer(self, nodes, act_func=activations.LRELU, scheduler=None):
        """Append a :class:`~nncore.layers.FullyConnectedLayer`; ``scheduler`` defaults to the CNN's."""
        layer = FullyConnectedLayer(nodes, act_func, scheduler or self.scheduler, self.seed)
        self._check_dense_input("add_FullyConnectedLayer")
        self._append(layer)

    def add_OutputLayer(self, nodes, output_func=activations.sigmoid, scheduler=None):
        """Append the :class:`~nncore.layers.OutputLayer`; it must come last."""
        layer = OutputLayer(nodes, output_func, self.cost_func, scheduler or self.scheduler, self.seed)
        self._check_dense_input("add_OutputLayer")
        self._append(layer)
        self.pred_format = layer.pred_format

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

    def _build(self, sample_shape):
        """Create every layer's parameters for per-sample input ``sample_shape``."""
        if not self.layers or not isinstance(self.layers[-1], OutputLayer):
            raise ValueError("the CNN has no OutputLayer; end it with add_OutputLayer(nodes, output_func)")
        shape = tuple(sample_shape)
        for layer in self.layers:
            shape = layer.build(shape, self.backend, self.dtype, self._init_rng)
        self.input_shape = tuple(sample_shape)

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

    def _inputs(self, X, what="X"):
        X = as_model_array(self.backend, X, self.dtype, what)
        images = self.layers and isinstance(self.layers[0], (Convolution2DLayer, Pooling2DLayer))
        if images and X.ndim != 4:
            raise ValueError(f"{what} must be 4-D (n, channels, height, width), got shape {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError(f"{what} has no samples (shape {tuple(X.shape)})")
        if self.input_shape is None:
            self._build(X.shape[1:])
        elif tuple(X.shape[1:]) != self.input_shape:
            raise ValueError(f"{what} has samples of shape {tuple(X.shape[1:])} but the CNN was built for "
                             f"{self.input_shape}")
        return X

    def _targets(self, t, n, what="t"):
        t = as_model_array(self.backend, t, self.dtype, what)
        nodes = self.output_layer.nodes
        if t.ndim == 1 and nodes == 1:
            t = self.backend.xp.reshape(t, (-1, 1))
        if t.ndim != 2 or t.shape[1] != nodes:
            hint = " (one-hot encode class labels)" if t.ndim == 1 else ""
            raise ValueError(f"{what} has shape {tuple(t.shape)} but the OutputLayer has {nodes} nodes: "
                             f"expected ({n}, {nodes}){hint}")
        if t.shape[0] != n:
            raise ValueError(f"{what} has {t.shape[0]} rows but the inputs have {n} samples")
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
            The loss became NaN or infinite; the weights of the last finite
            epoch are restored.
        """
        epochs = check_positive_int("fit: epochs", epochs)
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam) or lam < 0:
            raise ValueError(f"fit: lam must be a non-negative number, got {lam!r}")
        X = self._inputs(X)
        t = self._targets(t, X.shape[0])
        n = X.shape[0]
        bounds = _batch_bounds(n, batches, batch_size)
        validate = X_val is not None or t_val is not None
        if validate:
            if X_val is None or t_val is None:
                raise ValueError("fit: give both X_val and t_val, or neither")
            X_val = self._inputs(X_val, "X_val")
            t_val = self._targets(t_val, X_val.shape[0], "t_val")

        xp = self.backend.xp
        scores = {key: np.full(epochs, np.nan) for key in SCORE_KEYS}
        bar = tqdm(total=epochs, disable=not verbose, unit="epoch", dynamic_ncols=True)
        last_good = self._snapshot()
        try:
            for epoch in range(epochs):
                order = self.backend.asarray(self._shuffle_rng.permutation(n)) if shuffle else None
                loss_sum, hits = 0.0, 0.0  # device scalars: no host round trip per batch
                for start, stop in bounds:
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
                train_error = float(loss_sum) / n
                if not math.isfinite(train_error):
                    self._restore(last_good)
                    raise TrainingDivergedError(
                        f"training diverged: the loss became {train_error} in epoch {epoch + 1}; the weights "
                        "of the last finite epoch were kept. Try a smaller learning rate (eta) or a larger lam"
                    )
                last_good = self._snapshot()
                scores["train_error"][epoch] = train_error
                if self.pred_format != "Regression":
                    scores["train_acc"][epoch] = float(hits) / (n * self._hit_units())
                if validate:
                    scores["val_error"][epoch], scores["val_acc"][epoch] = self._evaluate(X_val, t_val)
                bar.set_postfix(_postfix(scores, epoch), refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            # Keep the weights learnt so far and hand back the scores up to here.
            pass
        finally:
            bar.close()
        return scores

    def _snapshot(self):
        # Layers replace (never mutate) their parameter and state arrays, so references suffice.
        return [({name: getattr(layer, name) for name in layer.params},
                 {name: copy.copy(s) for name, s in layer.schedulers.items()}) for layer in self.layers]

    def _restore(self, snapshot):
        for layer, (params, schedulers) in zip(self.layers, snapshot):
            for name, value in params.items():
                setattr(layer, name, value)
            layer.schedulers = schedulers

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

    def _predict_raw(self, X, batch_size):
        if self.input_shape is None and not self.layers:
            raise ValueError("the CNN has no layers; add layers and an OutputLayer first")
        batch_size = check_positive_int("batch_size", batch_size)
        source = backend_of(X)
        n = X.shape[0] if hasattr(X, "shape") else len(X)
        outputs = []
        for start in range(0, max(n, 1), batch_size):
            # Move and check one batch at a time: a large host array never sits whole on the device.
            chunk = self._inputs(X[start : min(start + batch_size, n)])
            outputs.append(self._feedforward(chunk))
        xp = self.backend.xp
        return source, (outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0))

    def predict_proba(self, X, *, batch_size=PREDICT_BATCH):
        """Raw network outputs ``(n, nodes)``, in the namespace of ``X``."""
        source, output = self._predict_raw(X, batch_size)
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
        X = self._inputs(X)
        t = self._targets(t, X.shape[0])
        output = self._predict_device(X)
        xp = self.backend.xp
        if self.pred_format == "Regression":
            return float(xp.mean((output - t) ** 2))
        return float(self._hits(output, t)) / (X.shape[0] * self._hit_units())

    def __repr__(self):
        return f"CNN({len(self.layers)} layers, backend={self.backend.name!r}, dtype={self.dtype})"


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
