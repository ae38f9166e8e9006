"""Data-parallel training: the collectives in one process, then real runs under ``mpiexec -n 2``.

The first part needs no launcher: ``MPI.COMM_SELF`` (a real communicator of one
process) and a pretend communicator whose other processes' contributions are
given up front. The second part starts ``mpiexec`` on the scripts in
``tests/mpi_scripts/`` and compares what the processes wrote with one process
training alone; it skips when mpi4py or mpiexec is missing.
"""

import json
import os
import select
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
TIMEOUT = 60  # seconds for one mpiexec run; the scripts take a few seconds

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
    return pytest.importorskip("mpi4py.MPI", reason="mpi4py is not installed (pip install 'nncore-cnn[mpi]')")


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


def test_nccl_communicators_are_kept_per_communicator_and_gpu(monkeypatch):
    """One NCCL communicator per (MPI communicator, GPU), forgotten with the MPI communicator."""
    import gc
    import weakref

    from backends import distributed as moves

    monkeypatch.setattr(moves, "_NCCL_CACHE", [])
    first, second = FakeComm(), FakeComm()
    moves._NCCL_CACHE.append((weakref.ref(first), 0, "nccl of first on GPU 0"))
    assert moves._cached_nccl(first, 0) == "nccl of first on GPU 0"
    assert moves._cached_nccl(first, 1) is None and moves._cached_nccl(second, 0) is None
    del first
    gc.collect()
    assert moves._cached_nccl(second, 0) is None and moves._NCCL_CACHE == []


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


class FakeNccl:
    """Stands in for ``cupy.cuda.nccl``: records the communicators made and the calls on them."""

    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
    available = True

    def __init__(self):
        self.made, self.calls = [], []
        fake = self

        class NcclCommunicator:
            def __init__(self, size, unique_id, rank):
                fake.made.append((size, unique_id, rank))

            def allReduce(self, send, recv, count, datatype, op, stream):
                fake.calls.append(("allReduce", send, recv, count, datatype, op, stream))

            def bcast(self, buff, count, datatype, root, stream):
                fake.calls.append(("bcast", buff, count, datatype, root, stream))

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        return ("unique", "id")


class FakeDeviceArray:
    """A GPU array as the NCCL path sees it: ``data.ptr``, ``size``, ``dtype``, ``ndim``."""

    def __init__(self, ptr, size, dtype):
        self.data = type("Memory", (), {"ptr": ptr})()
        self.size, self.dtype, self.ndim = size, np.dtype(dtype), 1


def test_the_nccl_path_without_a_gpu(monkeypatch):
    """backends/distributed.py's NCCL calls with a stand-in for cupy.cuda.nccl: the unique id from rank 0
    over MPI, one NCCL communicator per MPI communicator and GPU (kept across DataParallel objects, as
    across fit calls), in-place all-reduce and broadcast of the whole buffer on the current stream."""
    import contextlib

    from backends import Backend
    from backends import distributed as moves

    nccl = FakeNccl()
    monkeypatch.setattr(moves, "_NCCL_CACHE", [])
    monkeypatch.setattr(moves, "_nccl_module", lambda: nccl)
    monkeypatch.setattr(moves, "_contiguous_cupy", lambda array: array)
    monkeypatch.setattr(moves, "_cupy_stream", lambda: 1234)
    monkeypatch.delenv("NNCORE_NCCL", raising=False)
    device = type("Device", (contextlib.nullcontext,), {"id": 3})()
    gpu = Backend("cupy", None, device)
    comm = FakeComm(rank=1, size=2, others=[1, 0], from_root=[("unique", "id")])  # the other process has NCCL too
    first = DataParallel(comm, gpu)
    gradient = FakeDeviceArray(ptr=4096, size=11, dtype="float64")
    assert first.allreduce(gradient) is gradient
    assert nccl.made == [(2, ("unique", "id"), 1)]
    assert nccl.calls == [("allReduce", 4096, 4096, 11, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, 1234)]
    assert comm.calls == ["allreduce", "bcast", "allreduce"]  # agree, unique id, agree nothing failed
    second = DataParallel(comm, gpu)  # a later fit on the same communicator and GPU
    weights = FakeDeviceArray(ptr=8192, size=5, dtype="float32")
    assert second.broadcast(weights) is weights and second.transport == "nccl"
    assert nccl.calls[-1] == ("bcast", 8192, 5, nccl.NCCL_FLOAT32, 0, 1234)
    assert len(nccl.made) == 1 and comm.calls == ["allreduce", "bcast", "allreduce"]  # no second NCCL start


def test_without_nccl_on_every_process_cupy_arrays_go_through_the_host(monkeypatch):
    """One process lacks NCCL (or sets NNCORE_NCCL=0): all of them use host-staged MPI, none starts NCCL."""
    from backends import Backend
    from backends import distributed as moves

    nccl = FakeNccl()
    monkeypatch.setattr(moves, "_NCCL_CACHE", [])
    monkeypatch.setattr(moves, "_nccl_module", lambda: nccl)
    monkeypatch.setenv("NNCORE_NCCL", "0")
    comm = FakeComm(rank=0, size=2, others=[1])  # the other process would have it
    gpu = Backend("cupy", None, type("Device", (), {"id": 0})())
    assert DataParallel(comm, gpu).transport == "mpi-host-staged"
    assert nccl.made == [] and comm.calls == ["allreduce"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_arrays_go_through_nccl_when_cupy_has_it(dtype):
    """A group of one process (a pretend communicator: no mpi4py needed on the GPU machine): NCCL's
    all-reduce and broadcast run on the GPU, in place, and hand back the same numbers."""
    from backends import available

    if "cupy" not in available():
        pytest.skip("needs CuPy and a CUDA GPU")
    from backends.distributed import _nccl_module

    nccl = _nccl_module() is not None
    # The agreement on NCCL (and, without it, the host-staged sum) are the communicator's reductions.
    comm = FakeComm(rank=0, size=1, others=[0, 0] if nccl else [0, np.zeros(3, dtype=dtype)])
    be = get_backend("cupy")
    parallel = DataParallel(comm, be)
    gradient = be.asarray(np.array([1.0, 2.0, -3.0]), dtype=dtype)
    out = parallel.allreduce(gradient)
    assert parallel.transport == ("nccl" if nccl else "mpi-host-staged")
    assert be.owns(out) and out.dtype == be.dtype(dtype)
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


# ---- real processes under mpiexec ------------------------------------------------------------------


def mpiexec():
    """The mpiexec of the MPI that mpi4py uses (pip's MPICH puts it next to python), else the one on PATH."""
    pytest.importorskip("mpi4py.MPI", reason="mpi4py is not installed (pip install 'nncore-cnn[mpi]')")
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpiexec is not installed (pip install 'nncore-cnn[mpi]' brings MPICH's)")
    return found


def python_command(processes, *args):
    """``python *args`` alone (``processes=1``) or under ``mpiexec -n processes``."""
    command = [sys.executable, *map(str, args)]
    return [mpiexec(), "-n", str(processes), *command] if processes > 1 else command


@pytest.fixture
def launcher():
    """mpiexec (skips the test early where there is none)."""
    return mpiexec()


def script_command(script, processes, *args):
    return python_command(processes, SCRIPTS / script, *args)


def script_env():
    # One BLAS thread per process: N processes share this machine's cores.
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_SIZE_VARIABLES}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_script(script, processes, *args):
    """Start ``script`` alone (``processes=1``) or under mpiexec, in its own session; returns the Popen."""
    return subprocess.Popen(script_command(script, processes, *args), cwd=ROOT, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process, timeout=TIMEOUT):
    """``(returncode, stdout, stderr)``; a run past ``timeout`` is stopped and fails the test as a hang."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()  # SIGTERM lets mpiexec take its processes down with it
        try:
            out, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        pytest.fail(f"{' '.join(process.args[-4:])} still ran after {timeout} s (a hang?)\n{out}\n{err}")
    return process.returncode, out, err


def run_script(script, processes, out, *args, ok=True):
    code, stdout, stderr = finish(start_script(script, processes, out, *args))
    if ok:
        assert code == 0, f"{script} on {processes} process(es) exited with {code}:\n{stdout}\n{stderr}"
    return code, stdout, stderr


def rank_files(out, processes, suffix=".npz"):
    if suffix == ".npz":
        return [dict(np.load(out / f"rank{r}.npz")) for r in range(processes)]
    return [json.loads((out / f"rank{r}{suffix}").read_text()) for r in range(processes)]


@pytest.mark.slow
def test_an_uncaught_exception_on_one_process_ends_all_of_them(tmp_path, launcher):
    """distributed.world()'s exception hook: rank 0 would otherwise wait at a barrier forever."""
    started = time.monotonic()
    code, _, stderr = run_script("uncaught.py", 2, tmp_path, ok=False)
    assert code != 0 and time.monotonic() - started < 60
    assert "RuntimeError: uncaught on rank 1" in stderr
    assert "nncore rank 1: uncaught RuntimeError; stopping all 2 processes" in stderr


@pytest.mark.slow
@pytest.mark.parametrize("processes,batch_size", [(2, 7), (3, 7), (3, 2)])
def test_processes_train_the_same_weights_as_one_process(tmp_path, launcher, processes, batch_size):
    """40 samples in batches of 7 (odd; the last has 5) or 2 (one process of three gets none): the
    same weights and scores as one process after 3 epochs, and identical weights on every process
    after every epoch (bitwise: every process applies the same summed gradient)."""
    run_script("train.py", 1, tmp_path / "one", batch_size)
    run_script("train.py", processes, tmp_path / "many", batch_size)
    (alone,), ranks = rank_files(tmp_path / "one", 1), rank_files(tmp_path / "many", processes)
    for key, expected in alone.items():
        np.testing.assert_allclose(ranks[0][key], expected, rtol=1e-10, atol=1e-13, err_msg=key)
        for rank, results in enumerate(ranks[1:], start=1):
            np.testing.assert_array_equal(results[key], ranks[0][key], err_msg=f"rank {rank}: {key}")
    assert np.isfinite(alone["scores:val_acc"]).all() and len(alone["scores:train_error"]) == 3
    assert not np.array_equal(alone["epoch0:0.kernel"], alone["epoch2:0.kernel"])  # it did train


@pytest.mark.slow
def test_a_failure_on_one_process_ends_every_process_with_a_clear_error(tmp_path, launcher):
    started = time.monotonic()
    code, stdout, stderr = run_script("fail.py", 2, tmp_path, ok=False)
    assert code != 0 and time.monotonic() - started < 60
    assert "nncore rank 1:" in stderr and "injected failure on rank 1" in stderr
    assert "fit returned" not in stdout


@pytest.mark.slow
@pytest.mark.parametrize("errors,eta,epoch", [
    ("ignore", 1.2, 2), ("ignore", 1e3, 1), ("raise", 1e3, 1), ("inject", 0.1, 1), ("ignore", 1.4, 1)])
def test_divergence_stops_every_process_in_the_same_epoch(tmp_path, launcher, errors, eta, epoch):
    """As in one process: TrainingDivergedError in the same epoch, with the weights of the epoch before,
    on every process; whether the loss grows absurdly (eta 1.2: measured against the first minibatch's
    loss, as in one process), becomes NaN, NumPy raises FloatingPointError, or one process alone raises
    it (inject) while the others go on to the all-reduce."""
    run_script("diverge.py", 1, tmp_path / "one", errors, eta)
    run_script("diverge.py", 2, tmp_path / "two", errors, eta)
    (alone,), ranks = rank_files(tmp_path / "one", 1), rank_files(tmp_path / "two", 2)
    assert int(alone["epoch"]) == epoch
    for results in ranks:
        assert int(results["epoch"]) == epoch
        for key, expected in alone.items():
            np.testing.assert_allclose(results[key], expected, rtol=1e-10, err_msg=key)


@pytest.mark.slow
def test_save_writes_on_rank_0_and_the_file_loads_anywhere(tmp_path, launcher):
    from nncore import CNN

    run_script("save_load.py", 2, tmp_path)
    ranks = rank_files(tmp_path, 2, ".json")
    assert ranks[0]["writes"] and not ranks[1]["writes"], [r["writes"] for r in ranks]  # files opened/renamed
    assert all(r["written"] and r["loaded_predicts_the_same"] for r in ranks)
    assert ranks[0]["path"] == ranks[1]["path"] == str(tmp_path / "model.npz")
    X = np.random.default_rng(0).random((40, 1, 6, 6))  # _common.image_data's X
    proba = CNN.load(tmp_path / "model.npz").predict_proba(X)
    np.testing.assert_array_equal(proba, np.load(tmp_path / "proba0.npy"))
    np.testing.assert_array_equal(proba, np.load(tmp_path / "proba1.npy"))


@pytest.mark.slow
def test_rank_0s_scheduler_state_wins_too(tmp_path, launcher):
    """Rank 0 one epoch ahead (weights, Adam moments and step count): after two distributed epochs every
    process holds what one process gets from one epoch and then two more."""
    run_script("resume.py", 1, tmp_path / "one")
    run_script("resume.py", 2, tmp_path / "two")
    (alone,), ranks = rank_files(tmp_path / "one", 1), rank_files(tmp_path / "two", 2)
    for key, expected in alone.items():
        np.testing.assert_array_equal(ranks[1][key], ranks[0][key], err_msg=key)
        np.testing.assert_allclose(ranks[0][key], expected, rtol=1e-10, atol=1e-13, err_msg=key)


@pytest.mark.slow
def test_a_save_that_fails_on_rank_0_fails_everywhere(tmp_path, launcher):
    run_script("save_fail.py", 2, tmp_path)
    errors = [r["error"] for r in rank_files(tmp_path, 2, ".json")]
    assert errors[0] is not None and errors[1] is not None, errors
    assert errors[1].split(":")[0] == errors[0].split(":")[0]  # the same exception type


def interrupted_run(tmp_path, target):
    """Run interrupt.py on 2 processes, send SIGINT a few steps in; returns both processes' reports."""
    process = start_script("interrupt.py", 2, tmp_path)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)  # rank 0 prints "training" a few steps in
        line = process.stdout.readline() if ready else "(nothing within 60 s)"
        assert line.strip() == "training", line
        if target == "mpiexec":
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(int((tmp_path / "pid1").read_text()), signal.SIGINT)
    finally:
        code, stdout, stderr = finish(process, timeout=60)
    assert code == 0, stdout + stderr
    return rank_files(tmp_path, 2)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["mpiexec", "rank 1 only"])
def test_ctrl_c_stops_every_process_after_the_same_step(tmp_path, launcher, target):
    """SIGINT to mpiexec's process group (mpiexec forwards it to every process, as a terminal's
    Ctrl-C would), or to one process only: every process finishes the same step, keeps the same
    weights, exits 0, and fit gives the SIGINT handler back."""
    ranks = interrupted_run(tmp_path, target)
    steps = [int(r["steps"]) for r in ranks]
    assert steps[0] == steps[1] and 3 <= steps[0] < 1000 * int(ranks[0]["steps_per_epoch"])
    assert all(bool(r["handler_restored"]) for r in ranks)
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[1][key], ranks[0][key], err_msg=key)


@pytest.mark.slow
def test_ctrl_c_keeps_the_scores_of_completed_epochs_only(tmp_path, launcher):
    """As in one process: scores for the completed epochs, NaN for the one cut short."""
    ranks = interrupted_run(tmp_path, "mpiexec")
    completed = int(ranks[0]["steps"]) // int(ranks[0]["steps_per_epoch"])
    assert [int(r["epochs_done"]) for r in ranks] == [completed, completed]


@pytest.mark.slow
def test_python_m_nncore_under_mpiexec_prints_once_and_learns_as_much(tmp_path, launcher):
    """``mpiexec -n 2 python -m nncore`` runs unchanged: one report, the accuracy of one process (up to
    one of the 360 test images: float32 sums of two shares round differently from one sum)."""
    accuracies = []
    for processes in (1, 2):
        command = python_command(processes, "-m", "nncore", "--epochs", "2", "--quiet")
        result = subprocess.run(command, cwd=ROOT, env=script_env(), capture_output=True, text=True,
                                timeout=TIMEOUT)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if line.startswith("test accuracy: ")]
        assert len(lines) == 1, result.stdout  # printed once, by rank 0
        accuracies.append(float(lines[0].split()[-1]))
    assert abs(accuracies[1] - accuracies[0]) <= 1 / 360 + 1e-9 and accuracies[0] > 0.5


@pytest.mark.slow
def test_the_mnist_example_under_mpiexec_prints_once(tmp_path, launcher):
    """--quick without data: rank 0 writes the synthetic IDX files, every process reads them."""
    command = python_command(2, ROOT / "examples" / "mnist.py", "--quick", "--out", tmp_path / "out")
    result = subprocess.run(command, cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("test accuracy: ") for line in lines) == 1, result.stdout
    assert sum("Total params" in line for line in lines) == 1, result.stdout
    assert (tmp_path / "out" / "mnist_accuracy.png").is_file() and (tmp_path / "out" / "mnist_model.npz").is_file()


# ---- hyper-parameter search over processes ----------------------------------------------------------


@pytest.mark.slow
def test_grid_search_on_two_processes_gives_the_same_results_as_on_one():
    """GridSearchCV(n_jobs=2) fits the candidates in joblib's worker processes; every fit is seeded,
    so the scores are exactly those of n_jobs=1."""
    from sklearn.model_selection import GridSearchCV

    from nncore.datasets import load_digits
    from nncore.estimator import CNNClassifier

    X, t = load_digits()
    X, y = X[:160], t[:160].argmax(axis=1)
    estimator = CNNClassifier(layers=[("conv", {"feature_maps": 4, "act_func": "relu"}), ("dense", {"nodes": 16})],
                              epochs=3, batch_size=32, dtype="float64")
    seed = "random_state" if "random_state" in estimator.get_params() else "seed"  # being renamed to random_state
    estimator.set_params(**{seed: 0})
    grid = {"eta": [1e-3, 3e-2], "lam": [0.0, 1e-2]}
    results = [GridSearchCV(estimator, grid, cv=2, n_jobs=jobs, return_train_score=True).fit(X, y)
               for jobs in (1, 2)]
    keys = [key for key in results[0].cv_results_ if key.endswith("_score") and "time" not in key]
    assert "split1_test_score" in keys and "mean_train_score" in keys
    for key in keys:
        np.testing.assert_array_equal(results[1].cv_results_[key], results[0].cv_results_[key], err_msg=key)
    assert results[1].best_params_ == results[0].best_params_
    assert len(set(results[0].cv_results_["mean_test_score"])) > 1  # the grid matters: not a constant score


@pytest.mark.slow
def test_ctrl_c_inside_an_update_step_stops_every_process_after_the_same_step(tmp_path, launcher):
    """The signal reaches one process after the step's all-reduce: it must not leave the loop alone."""
    run_script("interrupt_in_step.py", 2, tmp_path)
    ranks = rank_files(tmp_path, 2)
    assert int(ranks[0]["steps"]) == int(ranks[1]["steps"]) == 4  # the flag travels in step 4's all-reduce
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[1][key], ranks[0][key], err_msg=key)


@pytest.mark.slow
def test_scheduler_state_of_every_group_comes_from_rank_0(tmp_path, launcher):
    run_script("sync_groups.py", 2, tmp_path)
    ranks = rank_files(tmp_path, 2)
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[1][key], ranks[0][key], err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("where,epochs", [("prepare", 0), ("sync", 0), ("last", 1)])
def test_ctrl_c_at_the_edges_of_a_fit_reaches_every_process(tmp_path, launcher, where, epochs):
    """While the data are prepared or the start synchronised, or in the last step (after its all-reduce):
    no process is left waiting, and all agree on the weights and on the epochs recorded."""
    run_script("interrupt_early_late.py", 2, tmp_path, where)
    ranks = rank_files(tmp_path, 2)
    assert int(ranks[0]["epochs"]) == int(ranks[1]["epochs"]) == epochs
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[1][key], ranks[0][key], err_msg=key)
