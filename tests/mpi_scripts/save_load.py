"""save after a distributed fit writes on rank 0 only; every process (and anyone later) loads it.

    mpiexec -n 2 python save_load.py OUT

Writes OUT/model.npz (rank 0), OUT/rank<R>.json and OUT/proba<R>.npy.
"""

from pathlib import Path

import numpy as np
from _common import image_data, report, start, tiny_cnn

import nncore.io
from nncore import CNN

comm, rank, out = start()
writes = []
save = nncore.io.save


def counted_save(*args, **kwargs):
    writes.append(1)
    return save(*args, **kwargs)


nncore.io.save = counted_save
X, t = image_data(40)
cnn = tiny_cnn()
cnn.fit(X, t, epochs=2, batch_size=7, verbose=False, comm=comm)
path = cnn.save(out / "model.npz")
written = Path(path).is_file()  # on every rank: save returns once the file is there
proba = cnn.predict_proba(X)
np.save(out / f"proba{rank}.npy", proba)
same = bool(np.array_equal(CNN.load(path).predict_proba(X), proba))
report(out, rank, writes=len(writes), written=written, loaded_predicts_the_same=same, path=str(path))
