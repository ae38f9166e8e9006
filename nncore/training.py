"""The training loop behind :meth:`nncore.CNN.fit`.

One epoch is: shuffle, then for every minibatch one training step (forward,
backward, one update of the flat parameter buffer), then the divergence check
and the scores. Guarantees, each tested:

- Ctrl-C at any point keeps the weights of every completed minibatch and returns
  the scores so far: a Ctrl-C during an update step takes effect when the step
  is complete, and an exception inside a step leaves it undone
  (:meth:`FlatParameters.step`);
- divergence (a NaN/inf loss, weight or scheduler state, a loss grown absurdly
  large, or a NumPy floating-point error) restores the last good epoch and
  raises :class:`TrainingDivergedError`;
- no host synchronisation inside an epoch (losses and hit counts stay on the
  device until the epoch ends);
- with a communicator (``comm``), every process takes the same steps as one
  process would on the same minibatches (see :mod:`nncore.distributed`).
"""

import contextlib
import math
import signal
import threading

import numpy as np

from .progress import message, progress_bar
from .validation import check_non_negative_number, check_positive_int

SCORE_KEYS = ("train_error", "train_acc", "val_error", "val_acc")
ABSURD_GROWTH = 1e8
"""An epoch's loss above this many times the first minibatch's loss (or above this, when that was
below 1) counts as divergence."""
MAX_PADDED_EPOCHS = 1_000_000
"""Score arrays are padded with NaN to ``epochs`` up to this length (32 MB); longer runs cut short are not."""


class TrainingDivergedError(FloatingPointError):
    """The training loss, a weight or the scheduler state became NaN, infinite or absurdly large.

    ``fit`` raises it after restoring the weights and scheduler state of the
    last epoch that ended well. Attributes: ``epoch`` (1-based, the epoch that
    diverged), ``loss`` (its loss) and ``scores`` (the scores up to the last
    good epoch, NaN after).
    """

    def __init__(self, message, epoch=None, loss=None, scores=None):
        super().__init__(message)
        self.epoch = epoch
        self.loss = loss
        self.scores = scores


def fit(model, X, t, *, epochs, lam, batches, X_val, t_val, batch_size, shuffle, verbose, comm):
    """:meth:`nncore.CNN.fit` (see there)."""
    epochs = check_positive_int("fit: epochs", epochs)
    lam = check_non_negative_number("fit: lam", lam)
    parallel = None
    if comm is not None:
        from .distributed import DataParallel

        parallel = DataParallel(comm, model.backend)
    trainer = Trainer(model, lam, shuffle, parallel)
    with trainer.interrupts_between_steps():  # from here on, Ctrl-C is handled (distributed: agreed on)
        try:
            trainer.prepare(X, t, batches, batch_size, X_val, t_val)
            stopped = trainer.pending
        except KeyboardInterrupt:
            stopped = True
        except Exception as exc:
            if parallel is not None:  # bad data on one process only: the others must not wait for it
                parallel.abort(f"fit failed: {type(exc).__name__}: {exc}")
            raise
        if parallel is not None:
            stopped = parallel.agree(stopped)
        if stopped:
            # Ctrl-C while the data are checked and moved (the model may have been built): nothing was trained.
            if verbose and (parallel is None or parallel.is_root):
                message(f"fit: interrupted before epoch 1 of {epochs}; nothing was trained")
            return Scores(epochs).result()
        return trainer.run(epochs, verbose)


class Trainer:
    """One ``fit`` call: the data, the settings and the loop's named steps."""

    def __init__(self, model, lam, shuffle, parallel):
        self.model, self.lam, self.shuffle, self.parallel = model, lam, shuffle, parallel
        self.xp = model.backend.xp
        self.X = self.t = self.bounds = self.validation = None  # set by prepare
        self.start_loss = None  # the first minibatch's loss: the yardstick of an absurd loss
        self.start_share = 0.0  # this process's part of it (distributed training; an empty share adds 0)
        self.pending = False  # a Ctrl-C that came during a step or the end of an epoch, not yet acted on
        self.interrupted = False  # distributed: a Ctrl-C every process knows of (from the all-reduce)
        self.in_step = False  # inside an update step or the end of an epoch: Ctrl-C waits
        self.failure = None  # a floating-point error in some process's share (distributed training only)

    def prepare(self, X, t, batches, batch_size, X_val, t_val):
        """Check and move the data and build the model if needed."""
        model = self.model
        self.X = model._inputs(X)
        self.t = model._targets(t, self.X.shape[0])
        self.bounds = batch_bounds(self.X.shape[0], batches, batch_size)
        if X_val is not None or t_val is not None:
            if X_val is None or t_val is None:
                given, missing = ("X_val", "t_val") if t_val is None else ("t_val", "X_val")
                raise ValueError(f"fit: {given} was given but {missing} was not; give both, or neither")
            X_val = model._inputs(X_val, "X_val")
            self.validation = (X_val, model._targets(t_val, X_val.shape[0], "t_val", inputs="X_val"))

    def run(self, epochs, verbose):
        model, parallel = self.model, self.parallel
        scores = Scores(epochs)
        epoch = 0
        bar = last_good = None
        try:
            if parallel is not None:
                self.synchronise_start()
            bar = progress_bar(epochs, disable=not verbose or (parallel is not None and not parallel.is_root),
                               unit="epoch", dynamic_ncols=True)
            last_good = model.parameters.snapshot()
            for epoch in range(epochs):
                loss, accuracy, problem = self.train_epoch()
                if parallel is not None and not self.interrupted:
                    # A Ctrl-C that came during the epoch's last step missed its all-reduce: agree on it now.
                    self.interrupted = parallel.agree(self.pending)
                if self.interrupted:
                    raise KeyboardInterrupt  # distributed: the epoch was cut short, as in one process
                with self.uninterrupted():  # the divergence check and its restore, or the new snapshot
                    if problem is None:
                        problem = self.divergence(loss)
                    if problem is not None:
                        model.parameters.restore(last_good)
                        raise self.diverged(epoch, epochs, loss, problem, scores)
                    last_good = model.parameters.snapshot()
                scores.record(loss, accuracy, *self.validation_scores())
                bar.set_postfix(scores.postfix(epoch), refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            if last_good is not None and not (bool(model.parameters.finite()) and
                                              bool(model.parameters.state_finite())):
                model.parameters.restore(last_good)  # cut short while a diverged epoch was being undone
            if verbose and (parallel is None or parallel.is_root):
                message(f"fit: interrupted in epoch {epoch + 1} of {epochs}; keeping the weights learnt so far")
        except TrainingDivergedError:
            raise
        except Exception as exc:
            if parallel is not None:
                parallel.abort(f"fit failed: {type(exc).__name__}: {exc}")
            raise
        finally:
            if bar is not None:
                bar.close()
        if parallel is not None:
            model.comm = parallel.comm
        return scores.result()

    # ---- the named steps -------------------------------------------------------------------

    def train_epoch(self):
        """Every minibatch once; returns ``(loss, accuracy, problem)`` with ``problem`` None when fine."""
        model, parallel = self.model, self.parallel
        n = self.X.shape[0]
        order = model.backend.asarray(model.shuffle_rng.permutation(n)) if self.shuffle else None
        losses, hits = [], []  # device scalars, summed once at the end of the epoch: no host round trip per batch
        try:
            for start, stop in self.bounds:
                if parallel is not None:
                    start, stop, weight = (*parallel.share(start, stop), (stop - start))
                gradient = self.batch_gradient(order, start, stop, losses, hits)
                if parallel is not None:
                    gradient = self.reduce(gradient, (stop - start) / weight)
                    if self.failure is not None:  # on some process: every process stops here, unchanged
                        raise FloatingPointError(self.failure)
                    if self.start_loss is None:  # the global first minibatch's loss, as one process measures it
                        self.start_loss = parallel.sum_floats([self.start_share])[0] / weight
                with self.uninterrupted():
                    model.parameters.step(gradient, self.lam)
                if self.interrupted:
                    break  # distributed: every process saw the flag in the same all-reduce
            with self.uninterrupted():
                loss_sum, hit_sum = self.epoch_totals(losses, hits)
                if parallel is not None:
                    loss_sum, hit_sum = parallel.sum_floats([loss_sum, hit_sum])
        except (FloatingPointError, RuntimeWarning) as exc:
            # Overflow warnings turned into errors (np.seterr, -W error): the same divergence.
            return math.nan, math.nan, f"a floating-point error occurred ({type(exc).__name__}: {exc})"
        accuracy = math.nan if model.pred_format == "Regression" else hit_sum / (n * model._hit_units())
        return loss_sum / n, accuracy, None

    def batch_gradient(self, order, start, stop, losses, hits):
        """Forward and backward on samples ``[start, stop)`` of the epoch's order; the flat gradient.

        Records the batch's loss and hits. In distributed training a floating-point
        error here is recorded (and a zero gradient returned) so that every process
        learns of it at the next all-reduce instead of waiting there forever.
        """
        model, xp = self.model, self.xp
        if stop <= start:
            return xp.zeros(model.parameters.size, dtype=model.dtype, device=model.backend.device)
        try:
            X_batch, t_batch = self.batch(order, start, stop)
            output = model._feedforward(X_batch, training=True)
            loss = model.cost_func(t_batch)(output)
            if self.start_loss is None and self.parallel is None:
                self.start_loss = float(loss)  # one host round trip per fit
            elif self.start_loss is None:
                self.start_share = float(loss) * (stop - start)  # summed over the processes after the step
            losses.append((loss, stop - start))
            hits.append(model._hits(output, t_batch, total=False))
            model._backpropagate(t_batch)
            return model.parameters.gradient()
        except (FloatingPointError, RuntimeWarning) as exc:
            if self.parallel is None:
                raise
            self.failure = f"{type(exc).__name__} on rank {self.parallel.rank}: {exc}"
            return xp.zeros(model.parameters.size, dtype=model.dtype, device=model.backend.device)

    def epoch_totals(self, losses, hits):
        """``(sum of loss * batch size, number of hits)`` over the epoch's batches, as host floats."""
        xp = self.xp
        if not losses:
            return 0.0, 0.0
        sizes = {size for _, size in losses}
        stacked = xp.stack([loss for loss, _ in losses])
        if len(sizes) == 1:
            loss_sum = float(xp.sum(stacked)) * sizes.pop()
        else:
            weights = self.model.backend.asarray([float(size) for _, size in losses], dtype=stacked.dtype)
            loss_sum = float(xp.sum(stacked * weights))
        if self.model.pred_format == "Regression":
            return loss_sum, 0.0
        right = hits[0] if len(hits) == 1 else xp.concat(hits)
        return loss_sum, float(xp.sum(xp.astype(right, self.model.dtype)))

    def batch(self, order, start, stop):
        if order is None:
            return self.X[start:stop, ...], self.t[start:stop, ...]
        index = order[start:stop]
        return self.xp.take(self.X, index, axis=0), self.xp.take(self.t, index, axis=0)

    def divergence(self, loss):
        """Why the epoch that ended with ``loss`` counts as diverged, or None."""
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        parameters = self.model.parameters
        if not bool(parameters.finite()):
            return f"the weights became NaN or infinite (loss {loss:.6g})"
        if not bool(parameters.state_finite()):
            return (f"the scheduler state became NaN or infinite (loss {loss:.6g}); the gradients overflowed, "
                    "so the weights would not move any more")
        start = self.start_loss
        if start is not None and math.isfinite(start) and loss > ABSURD_GROWTH * max(abs(start), 1.0):
            return (f"the loss grew to {loss:.6g}, more than {ABSURD_GROWTH:.0e} times its first minibatch's "
                    f"{start:.6g}")
        return None

    def diverged(self, epoch, epochs, loss, problem, scores):
        kept = f"its weights after epoch {epoch}, the last finite one" if epoch else "the weights it had before this fit"
        eta = getattr(self.model.scheduler, "eta", None)
        eta = f"eta={eta!r}" if eta is not None else "the current eta"
        return TrainingDivergedError(
            f"fit: training diverged in epoch {epoch + 1} of {epochs}: {problem}. The model was restored to "
            f"{kept}. Try a smaller learning rate, e.g. a tenth of {eta}, or scale the inputs and targets",
            epoch=epoch + 1, loss=loss, scores=scores.result())

    def validation_scores(self):
        if self.validation is None:
            return math.nan, math.nan
        return self.model._evaluate(*self.validation)

    # ---- data-parallel pieces -----------------------------------------------------------------

    def synchronise_start(self):
        """The same weights, scheduler state and shuffling on every process: rank 0's."""
        model, parallel, xp = self.model, self.parallel, self.xp
        parameters = model.parameters
        parameters.adopt_assigned()
        parameters.bind(parallel.broadcast(parameters.flat))
        for scheduler, start, stop in parameters.groups:
            state = scheduler.state_dict()
            # The step count and which state arrays exist come as one small object, the arrays after it.
            layout = parallel.broadcast_object({key: value if key == "t" else value is not None
                                                for key, value in state.items()})
            synced = {}
            for key, present in layout.items():
                if key == "t" or not present:
                    synced[key] = present if key == "t" else None
                else:
                    local = state[key] if state[key] is not None else xp.zeros(
                        (stop - start,), dtype=model.dtype, device=model.backend.device)
                    synced[key] = parallel.broadcast(local)
            scheduler.load_state_dict(synced)
        model.shuffle_rng.bit_generator.state = parallel.broadcast_object(model.shuffle_rng.bit_generator.state)

    def reduce(self, gradient, share):
        """The global gradient: this process's ``share`` of it summed over the processes.

        Two extra elements carry a deferred Ctrl-C and a floating-point failure,
        so that every process stops after the same step (one host round trip
        per step for the two flags).
        """
        xp = self.xp
        flags = self.model.backend.asarray([1.0 if self.pending else 0.0, 0.0 if self.failure is None else 1.0],
                                           dtype=gradient.dtype)
        total = self.parallel.allreduce(xp.concat([gradient * share, flags]))
        interrupted, failed = (float(v) for v in self.model.backend.to_numpy(total[-2:]))
        self.interrupted = interrupted > 0  # the same on every process
        if failed > 0 and self.failure is None:
            self.failure = "a floating-point error on another process"
        return total[:-2]

    @contextlib.contextmanager
    def uninterrupted(self):
        """A stretch that a Ctrl-C must not cut (an update step, the end of an epoch).

        In one process a Ctrl-C that came meanwhile is raised at its end; in
        distributed training it travels in the next all-reduce instead.
        """
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False
        if self.pending and self.parallel is None:
            self.pending = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interrupts_between_steps(self):
        """Ctrl-C never lands inside an update step (whose commit is one in-place operation).

        In one process a Ctrl-C outside a step raises ``KeyboardInterrupt`` at
        once (nothing is half done); during a step it sets a flag and the
        interrupt comes when the step is complete. In distributed training it
        always sets the flag, which every process sees in the next all-reduce.
        Only the main thread receives signals, and only Python's default handler
        is replaced (a notebook's or the user's own is left alone).
        """
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            yield
            return

        def handler(signum, frame):
            if self.parallel is None and not self.in_step:
                raise KeyboardInterrupt
            self.pending = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class Scores:
    """The per-epoch scores, grown as epochs complete (nothing allocated for epochs that never run)."""

    def __init__(self, epochs):
        self.epochs = epochs
        self.rows = []

    def record(self, train_error, train_acc, val_error, val_acc):
        self.rows.append((train_error, train_acc, val_error, val_acc))

    def postfix(self, epoch):
        names = ("loss", "acc", "val_loss", "val_acc")
        return {name: f"{value:.4f}" for name, value in zip(names, self.rows[epoch]) if not math.isnan(value)}

    def result(self):
        length = self.epochs if self.epochs <= MAX_PADDED_EPOCHS else len(self.rows)
        table = np.full((length, len(SCORE_KEYS)), np.nan)
        if self.rows:
            table[: len(self.rows)] = self.rows
        return {key: np.ascontiguousarray(table[:, i]) for i, key in enumerate(SCORE_KEYS)}


def batch_bounds(n, batches, batch_size):
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
