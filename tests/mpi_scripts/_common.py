"""What the scripts share: a tiny float64 CNN, its data, and how a process reports what it holds.

Every script runs alone (``python script.py OUT``: one process, ``comm`` is None)
or under ``mpiexec -n N``; each process writes ``OUT/rank<R>.npz`` or ``.json``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: its nncore, not an installed one

import numpy as np  # noqa: E402

from backends import to_numpy  # noqa: E402
from nncore import CNN, RELU, Adam, distributed, softmax  # noqa: E402


def tiny_cnn(seed=5, scheduler=None):
    """Conv 1->2 3x3 ReLU, max pool 2x2, dense 8, softmax 3, on 6x6 images, in float64."""
    cnn = CNN(scheduler=scheduler or Adam(1e-2, 0.9, 0.999), seed=seed, dtype="float64")
    cnn.add_Convolution2DLayer(1, 2, 3, 3, act_func=RELU)
    cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(8)
    cnn.add_OutputLayer(3, softmax)
    return cnn


def image_data(n=40, seed=0):
    """``X`` (n, 1, 6, 6) in [0, 1) and one-hot ``t`` (n, 3)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 6, 6)), np.eye(3)[rng.integers(0, 3, n)]


def weights(cnn, prefix=""):
    """``{"<prefix><layer>.<param>": host array}`` of every parameter."""
    return {f"{prefix}{i}.{name}": to_numpy(getattr(layer, name)).copy()
            for i, layer in enumerate(cnn.layers) for name in layer.params}


def start():
    """``(comm, rank, out)``: the communicator (None alone), this process's rank, and the output folder."""
    comm = distributed.world()
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    return comm, 0 if comm is None else comm.Get_rank(), out


def count_training_steps(cnn, before_step=None):
    """Count the training forward passes of the first layer (one per step on a process with a share).

    ``before_step(count)`` runs before each of them, with the count so far (1-based).
    Returns a list whose length is the count.
    """
    layer, steps = cnn.layers[0], []
    forward = layer.forward

    def counted(a, training=False):
        if training:
            steps.append(1)
            if before_step is not None:
                before_step(len(steps))
        return forward(a, training)

    layer.forward = counted
    return steps


def report(out, rank, **values):
    """Write this process's ``values`` (JSON-able) to ``out/rank<R>.json``."""
    (out / f"rank{rank}.json").write_text(json.dumps(values))
