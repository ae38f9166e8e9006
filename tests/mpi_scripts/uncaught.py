"""An exception that nothing catches on rank 1, outside fit, must end every process.

    mpiexec -n 2 python uncaught.py OUT

Rank 0 waits at a barrier that rank 1 never reaches: without the exception
hook of ``distributed.world()`` it would wait forever.
"""

from _common import start

comm, rank, out = start()
comm.Barrier()
if rank == 1:
    raise RuntimeError("uncaught on rank 1")
comm.Barrier()
