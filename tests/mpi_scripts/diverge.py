"""Divergence: every process raises TrainingDivergedError in the same epoch, with the same weights.

    python diverge.py OUT MODE     /     mpiexec -n 2 python diverge.py OUT MODE

A dense regression net with plain gradient descent at eta=2 blows up in its
second epoch. MODE is NumPy's floating-point error mode: "ignore" (NaN reaches
the loss) or "raise" (a FloatingPointError inside a step, perhaps on one process
only). Writes OUT/rank<R>.npz: the epoch that diverged and the weights fit left.
"""

import sys

import numpy as np
from _common import start, weights

from nncore import CNN, LRELU, Constant, CostOLS, TrainingDivergedError, identity

comm, rank, out = start()
rng = np.random.default_rng(0)
X = rng.random((40, 4))
t = X @ rng.random((4, 2))
cnn = CNN(cost_func=CostOLS, scheduler=Constant(2.0), seed=1, dtype="float64")
cnn.add_FullyConnectedLayer(8, act_func=LRELU)
cnn.add_OutputLayer(2, identity)
with np.errstate(all=sys.argv[2]):
    try:
        cnn.fit(X, t, epochs=50, batch_size=7, verbose=False, comm=comm)
        epoch = 0
    except TrainingDivergedError as error:
        epoch = error.epoch
np.savez(out / f"rank{rank}.npz", epoch=epoch, **weights(cnn))
