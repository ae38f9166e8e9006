"""Data-parallel training over MPI: every process holds the whole model and trains on its share of each batch.

``CNN.fit(..., comm=comm)`` uses :class:`DataParallel` when given an ``mpi4py``
communicator: the global minibatch is split across the processes
(:meth:`DataParallel.share`), the gradients are summed with one all-reduce per
step, and every process applies the same update, so all processes keep the same
weights as one process training on the whole batch. How arrays travel (MPI,
NCCL between GPUs, host staging) is decided in :mod:`backends.distributed`.

    mpiexec -n 4 python train.py        # train.py calls cnn.fit(X, t, comm=distributed.world())

:func:`world` returns ``MPI.COMM_WORLD`` when the script was started that way
and ``None`` otherwise, so the same script runs alone or under ``mpiexec``.
"""

from __future__ import annotations

import os
import sys
import time

from backends import get_backend
from backends.distributed import Collectives

#: Environment variables through which MPI launchers tell a process how many processes they started:
#: MPICH/Hydra and Intel MPI (``PMI_SIZE``), Open MPI, MVAPICH2, and MPICH's per-node count.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
#: ... and its rank among the processes on its own node (to pick one GPU per process).
LAUNCHER_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                                 "SLURM_LOCALID")
#: The methods a communicator must have (mpi4py's names).
COMMUNICATOR_METHODS = ("Get_rank", "Get_size", "Bcast", "bcast", "Allreduce", "allreduce", "Barrier", "Abort")
#: Seconds a failing process waits before aborting, so the launcher forwards its message first.
ABORT_GRACE_SECONDS = 0.3

_abort_hook_installed = False


def launched_size() -> int:
    """How many processes the MPI launcher started (1 when not started by one); mpi4py is not imported."""
    sizes = []
    for name in LAUNCHER_SIZE_VARIABLES:
        try:
            sizes.append(int(os.environ.get(name, "1")))
        except ValueError:
            continue
    return max(sizes, default=1)


def local_rank() -> int:
    """This process's rank among those on its node (0 when not started by an MPI launcher).

    Give each process its own GPU with ``backend=get_backend("cupy", local_rank() % gpus_per_node)``.
    """
    for name in LAUNCHER_LOCAL_RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def world():
    """``mpi4py.MPI.COMM_WORLD`` when started by ``mpiexec``/``mpirun`` with several processes, else ``None``.

    The launcher is detected from the environment (:data:`LAUNCHER_SIZE_VARIABLES`)
    without importing mpi4py, so a plain ``python script.py`` never loads MPI.
    Under a launcher, an exception that nothing catches on one process aborts
    all of them (as ``python -m mpi4py`` does) instead of leaving the others
    waiting in a collective call forever.

    Raises
    ------
    ImportError
        Started by a launcher, but mpi4py is not installed.
    RuntimeError
        mpi4py's MPI sees one process while the launcher started several: the
        launcher and mpi4py belong to different MPI installations.
    """
    size = launched_size()
    if size <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"this process is one of {size} started by an MPI launcher, but mpi4py is not installed; "
                          'install it with `pip install mpi4py mpich`, or `pip install ".[mpi]"` from a clone of nncore') from exc
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        raise RuntimeError(f"the MPI launcher started {size} processes but mpi4py's MPI sees only this one: mpiexec "
                           "and mpi4py come from different MPI installations (use the mpiexec of the MPI that mpi4py "
                           "was built with, e.g. the one `pip install mpich` put next to python)")
    _abort_on_uncaught_exception(comm)
    return comm


def root_prints_only(comm):
    """True on rank 0 or without a communicator; elsewhere False, with standard output sent to /dev/null.

    So that a script run under ``mpiexec -n N`` prints its report once::

        comm = distributed.world()
        is_root = distributed.root_prints_only(comm)   # guard files only rank 0 should write
    """
    if comm is None or comm.Get_rank() == 0:
        return True
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (kept open for the life of the process)
    return False


def _abort_on_uncaught_exception(comm):
    global _abort_hook_installed
    if _abort_hook_installed:
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)  # the traceback first, then bring the other processes down
        _abort(comm, f"uncaught {kind.__name__}; stopping all {comm.Get_size()} processes")

    sys.excepthook = hook
    _abort_hook_installed = True


def _abort(comm, message):
    print(f"nncore rank {comm.Get_rank()}: {message}", file=sys.stderr, flush=True)
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(1)
    raise SystemExit(1)  # only reached with a communicator whose Abort returns


class DataParallel:
    """One process's view of data-parallel training over an MPI communicator.

    Every method except :meth:`share` is collective: all processes call it in
    the same order.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The processes that train together (or an object with the same methods,
        :data:`COMMUNICATOR_METHODS`).
    backend : Backend or str
        Where the model's arrays live.

    Attributes
    ----------
    rank, size : int
        This process's number and the number of processes.
    is_root : bool
        ``rank == 0``: the process that prints, saves and whose initial state wins.

    Examples
    --------
    >>> parallel = DataParallel(MPI.COMM_WORLD, cnn.backend)  # doctest: +SKIP
    >>> lo, hi = parallel.share(0, 129)       # rank 0 of 2: (0, 65); rank 1: (65, 129)  # doctest: +SKIP
    >>> gradient = parallel.allreduce(gradient)  # doctest: +SKIP
    """

    def __init__(self, comm, backend):
        missing = [name for name in COMMUNICATOR_METHODS if not callable(getattr(comm, name, None))]
        if missing:
            raise TypeError(f"DataParallel: comm must be an mpi4py communicator such as MPI.COMM_WORLD, got "
                            f"{type(comm).__name__} (no {', '.join(missing)})")
        self.comm = comm
        self.backend = get_backend(backend)
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self.is_root = self.rank == 0
        self._moves = Collectives(comm, self.backend)

    @property
    def transport(self) -> str:
        """``"mpi"``, ``"mpi-host-staged"`` or ``"nccl"``: how the arrays travel (collective on first use)."""
        return self._moves.transport

    def share(self, start, stop) -> tuple[int, int]:
        """This process's contiguous part ``(lo, hi)`` of the global minibatch ``[start, stop)``.

        Shares differ by at most one sample, earlier ranks taking the extra ones;
        a share is empty (``lo == hi``) when the batch has fewer samples than
        there are processes.
        """
        start, stop = int(start), int(stop)
        if stop < start:
            raise ValueError(f"DataParallel.share: stop={stop} is before start={start}")
        base, extra = divmod(stop - start, self.size)
        lo = start + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (self.rank < extra)

    def broadcast(self, array):
        """Rank 0's ``array`` (a device array of the backend) on every process; returns it.

        Same namespace, device, shape and dtype; filled in place where the
        transport allows, so use the returned array.
        """
        return self._moves.broadcast(array, root=0)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (a small picklable host object, e.g. an RNG state) on every process."""
        return self.comm.bcast(obj, root=0)

    def allreduce(self, array):
        """Elementwise sum over all processes of the flat 1-D device ``array``; use the returned array.

        In place for NumPy (MPI) and CuPy with NCCL; through host memory otherwise.
        """
        return self._moves.allreduce_sum(array)

    def sum_floats(self, values) -> list[float]:
        """The global sums of a few host numbers (e.g. ``[loss_sum, hits]``), in one call."""
        return [float(total) for total in self._moves.sum_host(values)]

    def agree(self, flag) -> bool:
        """True on every process if any process passed a true ``flag`` (e.g. a Ctrl-C it caught)."""
        return self.comm.allreduce(int(bool(flag))) > 0

    def abort(self, message):
        """Print ``nncore rank R: message`` to stderr and end every process (exit status 1); never returns.

        For a failure on one process: the others would otherwise wait for it in
        the next collective call forever.
        """
        _abort(self.comm, message)

    def barrier(self):
        """Wait until every process gets here."""
        self.comm.Barrier()

    def __reduce__(self):
        raise TypeError("DataParallel holds an MPI communicator and cannot be pickled or copied; make a new one "
                        "in each process")

    def __repr__(self):
        return f"DataParallel(rank={self.rank}, size={self.size}, backend={self.backend.name!r})"


__all__ = ["DataParallel", "launched_size", "local_rank", "root_prints_only", "world"]
