"""Equivalence: one model trained 3 epochs in one fit call, a twin in three fit calls of one epoch.

    python train.py OUT [BATCH_SIZE]     /     mpiexec -n 2 python train.py OUT [BATCH_SIZE]

Writes OUT/rank<R>.npz: ``once:*`` weights after the 3-epoch fit, its scores
``scores:*``, and ``epoch<E>:*`` the twin's weights after each epoch.
"""

import sys

import numpy as np
from _common import image_data, start, tiny_cnn, weights

comm, rank, out = start()
batch_size = int(sys.argv[2]) if len(sys.argv) > 2 else 7
X, t = image_data(40)
X_val, t_val = image_data(12, seed=1)
fit = dict(batch_size=batch_size, lam=1e-3, verbose=False, comm=comm)

once = tiny_cnn()
scores = once.fit(X, t, epochs=3, X_val=X_val, t_val=t_val, **fit)
results = {**weights(once, "once:"), **{f"scores:{key}": value for key, value in scores.items()}}

twin = tiny_cnn()
for epoch in range(3):
    twin.fit(X, t, epochs=1, **fit)
    results.update(weights(twin, f"epoch{epoch}:"))
np.savez(out / f"rank{rank}.npz", **results)
