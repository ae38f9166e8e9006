"""Divergence: every process raises TrainingDivergedError in the same epoch, with the same weights.

    python diverge.py OUT MODE ETA     /     mpiexec -n 2 python diverge.py OUT MODE ETA

A dense regression net with plain gradient descent at learning rate ETA: 1.2
makes the loss grow absurdly in the second epoch, 1000 overflows in the first.
MODE is NumPy's floating-point error mode: "ignore" (NaN reaches the loss),
"raise" (a FloatingPointError inside a step), or "inject": the last process
alone raises FloatingPointError in its third step, as an overflow in its share
of a batch would, while the others go on to the all-reduce.
Writes OUT/rank<R>.npz: the epoch that diverged and the weights fit left.
"""

import sys

import numpy as np
from _common import count_training_steps, start, weights

from nncore import CNN, LRELU, Constant, CostOLS, TrainingDivergedError, identity

comm, rank, out = start()
mode, eta = sys.argv[2], float(sys.argv[3])
rng = np.random.default_rng(0)
X = rng.random((40, 4))
t = X @ rng.random((4, 2))
cnn = CNN(cost_func=CostOLS, scheduler=Constant(eta), seed=1, dtype="float64")
cnn.add_FullyConnectedLayer(8, act_func=LRELU)
cnn.add_OutputLayer(2, identity)
if mode == "inject" and rank == (0 if comm is None else comm.Get_size() - 1):

    def overflow_in_step_3(step):
        if step == 3:
            raise FloatingPointError(f"injected overflow on rank {rank}")

    count_training_steps(cnn, overflow_in_step_3)
with np.errstate(all="ignore" if mode == "inject" else mode):
    try:
        cnn.fit(X, t, epochs=50, batch_size=7, verbose=False, comm=comm)
        epoch = 0
    except TrainingDivergedError as error:
        epoch = error.epoch
np.savez(out / f"rank{rank}.npz", epoch=epoch, **weights(cnn))
