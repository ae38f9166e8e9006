"""save that fails on rank 0 (its folder does not exist) fails on every process, not only there.

    mpiexec -n 2 python save_fail.py OUT

Writes OUT/rank<R>.json: the exception each process got from save (or none).
"""

from _common import image_data, report, start, tiny_cnn

comm, rank, out = start()
X, t = image_data(40)
cnn = tiny_cnn()
cnn.fit(X, t, epochs=1, batch_size=7, verbose=False, comm=comm)
try:
    cnn.save(out / "no such folder" / "model.npz")
    error = None
except Exception as exc:  # whatever rank 0's writer raises
    error = f"{type(exc).__name__}: {exc}"
report(out, rank, error=error)
