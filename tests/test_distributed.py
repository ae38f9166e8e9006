"""Data-parallel training: the collectives in one process, then real runs under ``mpiexec -n 2``.

The first part needs no launcher: ``MPI.COMM_SELF`` (a real communicator of one
process) and a pretend communicator whose other processes' contributions are
given up front. The second part starts ``mpiexec`` on the scripts in
``tests/mpi_scripts/`` and compares what the processes wrote with one process
training alone; it skips when mpi4py or mpiexec is missing.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backends import get_backend, to_numpy
from nncore import distributed
from nncore.distributed import DataParallel

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mpi_scripts"
TIMEOUT = 120  # seconds for one mpiexec run; the scripts take a few seconds


# ---- a pretend communicator -----------------------------------------------------------------------


class FakeComm:
    """Process ``rank`` of ``size``: what the other processes add or send is queued up front.

    ``others`` holds, per reduction, the sum of the other processes' contributions
    (arrays for ``Allreduce``, numbers for ``allreduce``); ``from_root`` holds what
    process 0 broadcasts (arrays for ``Bcast``, objects for ``bcast``).
    """

    def __init__(self, rank=1, size=2, others=(), from_root=()):
        self.rank, self.size = rank, size
        self.others, self.from_root = list(others), list(from_root)
        self.calls, self.aborted = [], None

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Allreduce(self, send, recv):
        self.calls.append("Allreduce")
        recv[...] = send + self.others.pop(0)

    def allreduce(self, value):
        self.calls.append("allreduce")
        return value + self.others.pop(0)

    def Bcast(self, buf, root=0):
        self.calls.append("Bcast")
        if self.rank != root:
            buf[...] = self.from_root.pop(0)

    def bcast(self, obj, root=0):
        self.calls.append("bcast")
        return obj if self.rank == root else self.from_root.pop(0)

    def Barrier(self):
        self.calls.append("Barrier")

    def Abort(self, code=0):
        self.aborted = code


@pytest.fixture
def mpi():
    return pytest.importorskip("mpi4py.MPI", reason="mpi4py is not installed (pip install 'nncore[mpi]')")


# ---- shares of a batch ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("start,stop", [(0, 0), (0, 1), (0, 2), (3, 10), (7, 20), (128, 256), (0, 129)])
def test_shares_split_the_batch_like_array_split(size, start, stop):
    """Oracle: numpy.array_split gives the first ``n % size`` parts one sample more."""
    expected = np.array_split(np.arange(start, stop), size)
    shares = [DataParallel(FakeComm(rank, size), "numpy").share(start, stop) for rank in range(size)]
    for (lo, hi), part in zip(shares, expected):
        assert list(range(lo, hi)) == part.tolist()
    assert shares[0][0] == start and shares[-1][1] == stop


def test_share_rejects_a_reversed_range():
    with pytest.raises(ValueError, match="stop=3 is before start=5"):
        DataParallel(FakeComm(0, 2), "numpy").share(5, 3)


@pytest.mark.parametrize("comm", [None, "COMM_WORLD", object(), 2])
def test_a_non_communicator_is_a_type_error(comm):
    with pytest.raises(TypeError, match="comm must be an mpi4py communicator"):
        DataParallel(comm, "numpy")


def test_a_data_parallel_cannot_be_pickled():
    import pickle

    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(DataParallel(FakeComm(), "numpy"))


# ---- with a pretend second process ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_allreduce_sums_in_place_on_numpy(dtype):
    mine = np.arange(5, dtype=dtype)
    theirs = np.linspace(-1, 1, 5).astype(dtype)
    out = DataParallel(FakeComm(others=[theirs]), "numpy").allreduce(mine)
    assert out is mine and out.dtype == dtype
    np.testing.assert_array_equal(out, np.arange(5, dtype=dtype) + theirs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_allreduce_through_the_host_keeps_device_and_dtype(strict_device1, dtype):
    """array_api_strict on "device1" has no buffer MPI could read: the sum goes through a host copy."""
    be = strict_device1
    mine = be.asarray(np.arange(4.0), dtype=dtype)
    theirs = np.array([10.0, 20.0, 30.0, 40.0], dtype=dtype)
    parallel = DataParallel(FakeComm(others=[theirs]), be)
    out = parallel.allreduce(mine)
    assert be.owns(out) and out.dtype == be.dtype(dtype)
    np.testing.assert_array_equal(to_numpy(out), np.arange(4.0, dtype=dtype) + theirs)
    np.testing.assert_array_equal(to_numpy(mine), np.arange(4.0))  # the input is not changed
    assert parallel.transport == "mpi-host-staged"


def test_allreduce_wants_a_flat_array():
    with pytest.raises(ValueError, match=r"flat 1-D array, got shape \(2, 3\)"):
        DataParallel(FakeComm(), "numpy").allreduce(np.zeros((2, 3)))


@pytest.mark.parametrize("backend", ["numpy", "strict"])
def test_broadcast_gives_every_process_the_roots_array(backend, strict_device1):
    be = strict_device1 if backend == "strict" else get_backend("numpy")
    root = np.array([[1.5, -2.0], [3.0, 4.0]], dtype=np.float32)
    follower = DataParallel(FakeComm(rank=1, from_root=[root]), be)
    got = follower.broadcast(be.asarray(np.zeros((2, 2)), dtype="float32"))
    assert be.owns(got) and got.dtype == be.dtype("float32")
    np.testing.assert_array_equal(to_numpy(got), root)
    leader = DataParallel(FakeComm(rank=0), be)
    mine = be.asarray(root)
    np.testing.assert_array_equal(to_numpy(leader.broadcast(mine)), root)


def test_broadcast_of_a_non_contiguous_numpy_array_returns_a_filled_copy():
    view = np.zeros((4, 3))[:, 1]
    got = DataParallel(FakeComm(rank=1, from_root=[np.arange(4.0)]), "numpy").broadcast(view)
    np.testing.assert_array_equal(got, np.arange(4.0))


def test_host_numbers_objects_and_flags():
    comm = FakeComm(rank=1, others=[np.array([0.5, 3.0]), 0, 1], from_root=[{"state": 7}])
    parallel = DataParallel(comm, "numpy")
    assert parallel.sum_floats([1.5, np.float32(2.0)]) == [2.0, 5.0]
    assert parallel.agree(False) is False  # nobody else raised the flag
    assert parallel.agree(False) is True  # another process did
    assert parallel.broadcast_object({"state": 1}) == {"state": 7}
    parallel.barrier()
    assert comm.calls == ["Allreduce", "allreduce", "allreduce", "bcast", "Barrier"]
    assert (parallel.rank, parallel.size, parallel.is_root) == (1, 2, False)


def test_abort_names_the_rank_and_ends_every_process(monkeypatch, capsys):
    monkeypatch.setattr(distributed, "ABORT_GRACE_SECONDS", 0)
    comm = FakeComm(rank=1)
    with pytest.raises(SystemExit):
        DataParallel(comm, "numpy").abort("fit failed: ValueError: bad")
    assert comm.aborted == 1
    assert capsys.readouterr().err == "nncore rank 1: fit failed: ValueError: bad\n"


# ---- with a real communicator of one process ------------------------------------------------------


def test_comm_self_is_a_group_of_one(mpi):
    parallel = DataParallel(mpi.COMM_SELF, "numpy")
    assert (parallel.rank, parallel.size, parallel.is_root, parallel.transport) == (0, 1, True, "mpi")
    assert parallel.share(3, 10) == (3, 10)
    gradient = np.array([1.0, -2.5, 3.25], dtype=np.float32)
    out = parallel.allreduce(gradient)
    assert out is gradient and out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.0, -2.5, 3.25])
    np.testing.assert_array_equal(parallel.broadcast(np.arange(3.0)), [0.0, 1.0, 2.0])
    assert parallel.sum_floats([1.25, 2]) == [1.25, 2.0]
    assert parallel.agree(True) and not parallel.agree(False)
    assert parallel.broadcast_object({"a": 1}) == {"a": 1}
    parallel.barrier()


def test_comm_self_on_another_device(mpi, strict_device1):
    parallel = DataParallel(mpi.COMM_SELF, strict_device1)
    gradient = strict_device1.asarray(np.array([0.5, 1.5]), dtype="float64")
    out = parallel.allreduce(gradient)
    assert strict_device1.owns(out)
    np.testing.assert_array_equal(to_numpy(out), [0.5, 1.5])
    assert to_numpy(parallel.broadcast(gradient)).tolist() == [0.5, 1.5]


@pytest.mark.gpu
def test_comm_self_on_cupy_uses_nccl_when_built_in(mpi):
    from backends import available

    if "cupy" not in available():
        pytest.skip("needs CuPy and a CUDA GPU")
    from backends.distributed import _nccl_module

    be = get_backend("cupy")
    parallel = DataParallel(mpi.COMM_SELF, be)
    assert parallel.transport == ("nccl" if _nccl_module() is not None else "mpi-host-staged")
    gradient = be.asarray(np.array([1.0, 2.0, -3.0]), dtype="float32")
    out = parallel.allreduce(gradient)
    assert be.owns(out) and out.dtype == be.dtype("float32")
    np.testing.assert_array_equal(to_numpy(out), [1.0, 2.0, -3.0])
    np.testing.assert_array_equal(to_numpy(parallel.broadcast(out)), [1.0, 2.0, -3.0])


# ---- finding the launcher ---------------------------------------------------------------------------


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter at the repository root with extra environment ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_SIZE_VARIABLES}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_world_is_none_without_a_launcher_and_does_not_load_mpi():
    result = run_python("import sys; from nncore import distributed as d; print(d.world(), 'mpi4py' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "False"]


def test_world_says_when_mpi4py_is_missing():
    result = run_python("import sys; sys.modules['mpi4py'] = None\nfrom nncore import distributed as d\nd.world()",
                        PMI_SIZE="2")
    assert result.returncode != 0
    assert "one of 2 started by an MPI launcher, but mpi4py is not installed" in result.stderr


def test_world_says_when_launcher_and_mpi4py_disagree(mpi):
    """A launcher that claims 2 processes, while this process is a singleton to mpi4py's MPI."""
    result = run_python("from nncore import distributed as d\nd.world()", PMI_SIZE="2")
    assert result.returncode != 0
    assert "started 2 processes but mpi4py's MPI sees only this one" in result.stderr


def test_launched_size_and_local_rank_from_the_environment(monkeypatch):
    for name in distributed.LAUNCHER_SIZE_VARIABLES + distributed.LAUNCHER_LOCAL_RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert (distributed.launched_size(), distributed.local_rank()) == (1, 0)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3")
    assert (distributed.launched_size(), distributed.local_rank()) == (4, 3)
