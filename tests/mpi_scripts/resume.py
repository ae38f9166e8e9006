"""Rank 0's whole training state wins at the start of a distributed fit, scheduler state included.

    python resume.py OUT     /     mpiexec -n 2 python resume.py OUT

Rank 0 (alone: the only process) first trains one epoch by itself, as if it had
loaded a checkpoint the others lack, so its weights, Adam moments and step
count differ from theirs; then every process continues with two distributed
epochs. Writes OUT/rank<R>.npz: the weights after that.
"""

import numpy as np
from _common import image_data, start, tiny_cnn, weights

comm, rank, out = start()
X, t = image_data(40)
cnn = tiny_cnn()
if rank == 0:
    cnn.fit(X, t, epochs=1, batch_size=7, verbose=False)  # alone, before the others join
cnn.fit(X, t, epochs=2, batch_size=7, verbose=False, comm=comm)
np.savez(out / f"rank{rank}.npz", **weights(cnn))
