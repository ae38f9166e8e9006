"""save after a distributed fit writes on rank 0 only; every process (and anyone later) loads it.

    mpiexec -n 2 python save_load.py OUT

Each process watches (through Python's audit hooks, whatever the writing code
is) which files it opens for writing or renames in OUT while ``save`` runs.
Writes OUT/model.npz (rank 0 only, if right), OUT/rank<R>.json and OUT/proba<R>.npy.
"""

import os
import sys
from pathlib import Path

import numpy as np
from _common import image_data, report, start, tiny_cnn

from nncore import CNN

comm, rank, out = start()
folder = str(out.resolve())
watching, writes = False, []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


def in_folder(path):
    return isinstance(path, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(path)).startswith(folder)


def audit(event, args):
    if not watching:
        return
    if event == "open" and in_folder(args[0]) and isinstance(args[2], int) and args[2] & WRITE_FLAGS:
        writes.append(f"open {os.fsdecode(args[0])}")
    elif event in ("os.rename", "os.replace") and in_folder(args[1]):
        writes.append(f"{event} {os.fsdecode(args[1])}")


sys.addaudithook(audit)
X, t = image_data(40)
cnn = tiny_cnn()
cnn.fit(X, t, epochs=2, batch_size=7, verbose=False, comm=comm)
watching = True
path = cnn.save(out / "model.npz")
watching = False
written = Path(path).is_file()  # on every rank: save returns once the file is there
proba = cnn.predict_proba(X)
np.save(out / f"proba{rank}.npy", proba)
same = bool(np.array_equal(CNN.load(path).predict_proba(X), proba))
report(out, rank, writes=writes, written=written, loaded_predicts_the_same=same, path=str(path))
