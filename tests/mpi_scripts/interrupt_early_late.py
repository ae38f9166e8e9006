"""Ctrl-C reaching one process at the edges of a distributed fit: while the data are prepared, while
the start is synchronised, or inside the very last update step.

    mpiexec -n 2 python interrupt_early_late.py OUT WHERE      (WHERE: prepare, sync or last)

Every process must return from fit (no process left waiting in a collective) with the same weights
and the same number of recorded epochs. Writes OUT/rank<R>.npz (weights, epochs recorded).
"""

import os
import signal
import sys

import numpy as np
from _common import image_data, start, tiny_cnn, weights

from nncore import training
from nncore.parameters import FlatParameters

comm, rank, out = start()
where = sys.argv[2]
size = 1 if comm is None else comm.Get_size()
X, t = image_data(64)
cnn = tiny_cnn()
steps = []


def interrupt():
    if rank == size - 1:
        os.kill(os.getpid(), signal.SIGINT)


if where == "prepare":
    original_prepare = training.Trainer.prepare

    def prepare(self, *args):
        interrupt()
        return original_prepare(self, *args)

    training.Trainer.prepare = prepare
elif where == "sync":
    original_sync = training.Trainer.synchronise_start

    def synchronise_start(self):
        interrupt()
        return original_sync(self)

    training.Trainer.synchronise_start = synchronise_start
else:
    original_step = FlatParameters.step

    def step(self, gradient, lam=0.0):
        steps.append(1)
        if len(steps) == 16:  # 2 epochs x 8 steps: the last one
            interrupt()
        return original_step(self, gradient, lam)

    FlatParameters.step = step
scores = cnn.fit(X, t, epochs=2, batch_size=8, verbose=False, comm=comm)
np.savez(out / f"rank{rank}.npz", epochs=int((~np.isnan(scores["train_error"])).sum()), **weights(cnn))
