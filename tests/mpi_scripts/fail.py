"""A failure on rank 1 in its second training step must end every process (no hang).

    mpiexec -n 2 python fail.py OUT

Uses MPI.COMM_WORLD directly (not ``distributed.world()``, whose exception
hook would abort anyway): what is tested is that ``fit`` itself aborts.
"""

from _common import count_training_steps, image_data, tiny_cnn
from mpi4py import MPI

comm = MPI.COMM_WORLD


def fail_on_rank_1(step):
    if comm.Get_rank() == 1 and step == 2:
        raise RuntimeError("injected failure on rank 1")


X, t = image_data(40)
cnn = tiny_cnn()
count_training_steps(cnn, fail_on_rank_1)
cnn.fit(X, t, epochs=3, batch_size=7, verbose=False, comm=comm)
print(f"rank {comm.Get_rank()}: fit returned although rank 1 failed", flush=True)
