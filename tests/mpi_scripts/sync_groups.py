"""Rank 0 has scheduler state in two scheduler groups, the others none: fit starts from rank 0's state.

    mpiexec -n 2 python sync_groups.py OUT

A dense layer has its own Momentum beside the CNN's Adam (two groups of different
sizes). Writes OUT/rank<R>.npz with the weights after one distributed epoch.
"""

from _common import image_data, start, weights

from nncore import CNN, RELU, Adam, Momentum, softmax

comm, rank, out = start()
X, t = image_data(64)
cnn = CNN(scheduler=Adam(1e-2), seed=5, dtype="float64")
cnn.add_Convolution2DLayer(1, 2, 3, 3, act_func=RELU)
cnn.add_FlattenLayer()
cnn.add_FullyConnectedLayer(8, scheduler=Momentum(1e-2, 0.9))
cnn.add_OutputLayer(3, softmax)
if rank == 0:
    cnn.fit(X, t, epochs=1, batch_size=8, verbose=False)  # rank 0 alone: both groups now have state
else:
    cnn.predict(X[:1])  # built, without state
cnn.fit(X, t, epochs=1, batch_size=8, verbose=False, comm=comm)
import numpy as np  # noqa: E402

np.savez(out / f"rank{rank}.npz", **weights(cnn))
