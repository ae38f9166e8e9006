"""Ctrl-C that reaches one process while it applies an update (after that step's all-reduce).

    mpiexec -n 2 python interrupt_in_step.py OUT

The last process sends itself SIGINT inside its third update step. Every process
must stop after the same step (the flag travels in the next all-reduce) with the
same weights, instead of one process leaving the loop while the others wait in a
collective. Writes OUT/rank<R>.npz with the weights and the number of steps taken.
"""

import os
import signal

from _common import image_data, start, tiny_cnn, weights

from nncore.parameters import FlatParameters

comm, rank, out = start()
size = 1 if comm is None else comm.Get_size()
X, t = image_data(64)
cnn = tiny_cnn()
steps = []
original = FlatParameters.step


def step(self, gradient, lam=0.0):
    steps.append(1)
    if rank == size - 1 and len(steps) == 3:
        os.kill(os.getpid(), signal.SIGINT)  # arrives inside this step, after its all-reduce
    return original(self, gradient, lam)


FlatParameters.step = step
cnn.fit(X, t, epochs=5, batch_size=8, verbose=False, comm=comm)
import numpy as np  # noqa: E402

np.savez(out / f"rank{rank}.npz", steps=len(steps), **weights(cnn))
