"""nncore.io as a container: write/read of metadata + named arrays, the checks, and saves that survive kills."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from nncore import io

POSIX = pytest.mark.skipif(os.name != "posix", reason="signals, umask and file modes are POSIX")


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "w32": rng.standard_normal((3, 4)).astype(np.float32),
        "w64": rng.standard_normal((2, 1, 3, 3)),
        "fortran": np.asfortranarray(rng.standard_normal((4, 3))),
        "ints": np.arange(6, dtype=np.int64).reshape(2, 3),
        "bytes": np.arange(5, dtype=np.uint8),
        "flags": np.array([True, False]),
        "scalar": np.full((), 2.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


METADATA = {"layers": [{"type": "dense", "config": {"nodes": 3, "eta": 1e-3}}], "seed": [1, 2**64],
            "rng": {"state": 2**127 + 5}, "name": "naïve ✓", "none": None, "flag": True}


def test_write_read_roundtrip(tmp_path):
    arrays = sample_arrays()
    path = io.write(tmp_path / "m", METADATA, arrays)
    assert path == tmp_path / "m.npz" and sorted(os.listdir(tmp_path)) == ["m.npz"]
    with io.read(tmp_path / "m") as archive:  # .npz found
        assert archive.path == path
        assert archive.metadata == {"format": "nncore.CNN", "format_version": 1, **METADATA}
        assert list(archive.metadata)[:2] == ["format", "format_version"]
        assert archive.names() == frozenset(arrays)
        archive.expect_members(arrays)
        for name, value in arrays.items():
            got = archive.array(name, value.shape, value.dtype)
            assert got.dtype == value.dtype and got.shape == value.shape, name
            np.testing.assert_array_equal(got, value, err_msg=name)
            assert got.flags.writeable, name
            got[...] = 0  # ours to change (the file is untouched)
        np.testing.assert_array_equal(archive.array("w32", (3, 4), "float32"), arrays["w32"])
    assert archive._handle.closed
    with np.load(path, allow_pickle=False) as plain:  # a standard .npz too
        assert set(plain.files) == set(arrays) | {io.METADATA_KEY}
        assert json.loads(plain[io.METADATA_KEY].tobytes().decode("utf-8"))["name"] == "naïve ✓"
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_compressed_npz_written_by_numpy_is_read(tmp_path):
    path = tmp_path / "c.npz"
    text = json.dumps({"format": "nncore.CNN", "format_version": 1}).encode()
    np.savez_compressed(path, nncore_metadata=np.frombuffer(text, np.uint8), zeros=np.zeros((300, 300)))
    with io.read(path) as archive:
        assert archive.names() == {"zeros"}
        np.testing.assert_array_equal(archive.array("zeros", (300, 300), np.float64), 0)


def test_array_checks_dtype_shape_presence_and_finiteness(tmp_path):
    path = tmp_path / "m.npz"
    text = json.dumps({"format": "nncore.CNN", "format_version": 1}).encode()
    bad = np.ones((2, 3))
    bad[1, 2], bad[0, 1] = np.nan, -np.inf
    np.savez(path, nncore_metadata=np.frombuffer(text, np.uint8), w=np.ones((2, 3)), bad=bad,
             i=np.arange(3, dtype=np.int32))
    with io.read(path) as archive:
        quoted = f"'{path}' is not a valid nncore model file: "
        cases = [
            (("w", (2, 3), "float32"), "layer 1 weights: the array 'w' has dtype float64, expected floats (float32)"),
            (("i", (3,), "int64"), "layer 1 weights: the array 'i' has dtype int32, expected integers (int64)"),
            (("w", (3, 2), "float64"), "layer 1 weights: the array 'w' has shape (2, 3), expected (3, 2)"),
            (("nope", (1,), "float64"), "layer 1 weights: the array 'nope' is missing"),
            (("bad", (2, 3), "float64"), "layer 1 weights: the array 'bad' holds 2 NaN or infinite value(s) (the "
                                         "first at index (0, 1)); nncore files hold finite numbers only"),
        ]
        for args, message in cases:
            with pytest.raises(io.ModelFileError) as info:
                archive.array(*args, field="layer 1 weights")
            assert str(info.value) == quoted + message
        got = archive.array("bad", (2, 3), np.float64, finite=False)
        np.testing.assert_array_equal(got, bad)
        with pytest.raises(io.ModelFileError, match=r"the array 'w' has shape \(2, 3\), expected \(6,\)$"):
            archive.array("w", (6,), "float64")  # no field: no prefix
        assert isinstance(archive.error("seed", "must be >= 0"), ValueError)
        assert str(archive.error("seed", "must be >= 0")) == quoted + "seed: must be >= 0"


def test_expect_members(tmp_path):
    path = io.write(tmp_path / "m.npz", {}, {"a": np.zeros(1), "b": np.zeros(2), "c": np.zeros(3)})
    with io.read(path) as archive:
        archive.expect_members(["a", "b", "c"])
        archive.expect_members({"c": None, "a": "x", "b": "y"})
        with pytest.raises(io.ModelFileError, match=r"layers\[0\] bias: the array 'd' is missing"):
            archive.expect_members({"a": "x", "b": "y", "c": "z", "d": "layers[0] bias"})
        with pytest.raises(io.ModelFileError, match=r"it holds 2 unexpected array\(s\): 'b', 'c'"):
            archive.expect_members(["a"])


def test_foreign_and_newer_formats_are_refused(tmp_path):
    for meta, message in [({"format": "keras"}, "is not an nncore model file: its metadata says format 'keras'"),
                          ([1, 2], "its metadata says format 'list'"),
                          ({"format": "nncore.CNN", "format_version": 7, "nncore_version": "9.1"},
                           "was written by a newer nncore (file format version 7, saved by nncore 9.1)")]:
        path = tmp_path / "f.npz"
        np.savez(path, nncore_metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        with pytest.raises(io.ModelFileError, match=f"'{path}' "):
            io.read(path)
        with pytest.raises(io.ModelFileError) as info:
            io.read(path)
        assert message in str(info.value)


def test_write_refuses_bad_metadata_and_arrays_naming_them(tmp_path):
    deep = []
    for _ in range(io.MAX_JSON_DEPTH):
        deep = [deep]
    cases = [
        ({"layers": [{"config": {"eta": float("nan")}}]}, {}, ValueError,
         "metadata['layers'][0]['config']['eta'] is nan; only finite numbers"),
        ({"rng": (1.0, -float("inf"))}, {}, ValueError, "metadata['rng'][1] is -inf"),
        ({"deep": deep}, {}, ValueError, "nested deeper than 64 levels"),
        ({"f": len}, {}, TypeError, "not JSON serializable"),
        ({}, {"m": np.array([None, 1], dtype=object)}, ValueError, "array 'm' has dtype object; only numeric"),
        ({}, {"c": np.ones(2, dtype=complex)}, ValueError, "array 'c' has dtype complex128"),
        ({}, {"n": np.array([1.0, np.nan, np.inf])}, ValueError, "array 'n' holds 2 NaN or infinite value(s)"),
        ({}, {"l": [1.0, 2.0]}, TypeError, "array 'l' is a list, expected a numpy.ndarray"),
        ({}, {io.METADATA_KEY: np.zeros(1)}, ValueError, "array name 'nncore_metadata'"),
        ({}, {"": np.zeros(1)}, ValueError, "array name ''"),
    ]
    for metadata, arrays, error, message in cases:
        with pytest.raises(error) as info:
            io.write(tmp_path / "m.npz", metadata, arrays)
        assert message in str(info.value), (message, str(info.value))
    assert os.listdir(tmp_path) == []  # nothing written, not even a temporary file


def test_big_endian_arrays_are_stored_native(tmp_path):
    path = io.write(tmp_path / "m.npz", {}, {"b": np.arange(3, dtype=">f8")})
    with io.read(path) as archive:
        np.testing.assert_array_equal(archive.array("b", (3,), np.float64), [0, 1, 2])


# ---- saving: modes, names, errors ------------------------------------------------------------------


@POSIX
def test_modes_new_files_follow_the_umask_existing_files_keep_theirs(tmp_path):
    old = os.umask(0o077)
    try:
        path = io.write(tmp_path / "m.npz", {}, {"a": np.zeros(2)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        os.umask(0o022)
        os.chmod(path, 0o640)
        io.write(path, {}, {"a": np.ones(2)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.chmod(path, 0o600)
        io.write(path, {}, {"a": np.ones(2)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        fresh = io.write(tmp_path / "n.npz", {}, {})
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_long_names_work(tmp_path):
    name = "m" * 246 + ".npz"  # 250 characters, the file system allows 255
    path = io.write(tmp_path / name, {"n": 1}, {"a": np.zeros(2)})
    assert path.name == name and sorted(os.listdir(tmp_path)) == [name]
    with io.read(path) as archive:
        assert archive.metadata["n"] == 1
    assert len(io._temp_name(name).encode()) <= 255 and io._temp_name(name) == io._temp_name(name)
    assert io._temp_name("model.npz") == ".model.npz.nncore-tmp"


def test_os_errors_name_the_file_and_keep_their_type(tmp_path, monkeypatch):
    missing = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(FileNotFoundError, match=f"cannot write the model file '{missing}'") as info:
        io.write(missing, {}, {})
    assert info.value.errno == errno.ENOENT

    path = io.write(tmp_path / "m.npz", {}, {"a": np.zeros(3)})
    before = path.read_bytes()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=f"cannot write the model file '{path}': No space left on device") as info:
        io.write(path, {}, {"a": np.ones(3)})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.npz"]


@POSIX
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_permission_denied_names_the_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=f"cannot write the model file '{folder / 'm.npz'}'"):
            io.write(folder / "m.npz", {}, {})
    finally:
        folder.chmod(0o700)


WRITER = r"""
import os, resource, signal, sys
import numpy as np
from nncore import io
mode, path = sys.argv[1], sys.argv[2]
data = {"big": np.ones(int(sys.argv[3]) // 8)}
if mode == "fsize":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk: write() fails with EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
    try:
        io.write(path, {}, data)
    except OSError as exc:
        print(type(exc).__name__, exc.errno, exc)
    sys.exit(0)
print("ready", flush=True)
while True:
    io.write(path, {"n": 1}, data)
"""


def _writer(mode, path, size):
    return subprocess.Popen([sys.executable, "-c", WRITER, mode, str(path), str(size)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@POSIX
def test_disk_full_names_the_file_and_leaves_nothing(tmp_path):
    path = io.write(tmp_path / "m.npz", {"old": True}, {})
    proc = _writer("fsize", path, 8 * 2**20)
    out, err = proc.communicate(timeout=60)
    assert out.startswith(f"OSError {errno.EFBIG} [Errno {errno.EFBIG}] cannot write the model file '{path}'"), \
        out + err
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    with io.read(path) as archive:
        assert archive.metadata["old"] is True


def _mid_save(path, size, written, timeout=30):
    """A subprocess saving ``size`` bytes to ``path`` over and over, once its temporary file holds ``written``."""
    proc = _writer("loop", path, size)
    assert proc.stdout.readline() == "ready\n"
    tmp = path.with_name(io._temp_name(path.name))
    end = time.monotonic() + timeout
    while not (tmp.exists() and tmp.stat().st_size >= written):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < end, "the writer never got going"
        time.sleep(0.002)
    return proc


@POSIX
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_saves_leave_at_most_one_temporary_file_which_the_next_save_removes(tmp_path, how):
    """Killed mid-write, a save leaves its one temporary file (always the same name); Ctrl-C leaves none."""
    path = tmp_path / "m.npz"
    tmp, killed_mid_write = tmp_path / io._temp_name("m.npz"), 0
    for attempt in range(3):
        proc = _mid_save(path, 48 * 2**20, 2**20 * (1 + 4 * attempt))
        proc.send_signal(how)
        _, err = proc.communicate(timeout=30)
        leftovers = [name for name in os.listdir(tmp_path) if name != "m.npz"]
        if how == signal.SIGINT:
            assert "KeyboardInterrupt" in err and leftovers == []
        else:  # none if the kill came between two saves (a loaded machine may be that slow)
            assert leftovers in ([tmp.name], [])
            killed_mid_write += len(leftovers)
        if path.exists():  # whatever the target holds is a complete file
            with io.read(path) as archive:
                archive.array("big", (6 * 2**20,), np.float64)
    if how == signal.SIGKILL:
        assert killed_mid_write, "no kill landed in the middle of a save: the test did not test anything"
        tmp.chmod(0o777)  # a leftover's mode does not carry over to a new target
    path.unlink(missing_ok=True)
    io.write(path, {"n": 2}, {"small": np.zeros(1)})
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@POSIX
def test_ctrl_c_right_after_the_temporary_file_is_created_removes_it(tmp_path, monkeypatch):
    """SIGINT arriving between ``os.open`` and the assignment of its result: held off, then handled."""
    real_open = os.open

    def open_then_interrupt(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(".nncore-tmp"):
            os.kill(os.getpid(), signal.SIGINT)
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        io.write(tmp_path / "m.npz", {}, {"a": np.zeros(3)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


@POSIX
def test_a_symlink_at_the_temporary_name_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / io._temp_name("m.npz")).symlink_to(victim)
    path = io.write(tmp_path / "m.npz", {}, {"a": np.zeros(2)})
    assert victim.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "victim.txt"] and not path.is_symlink()


CONCURRENT = r"""
import sys
import numpy as np
from nncore import io
path, value = sys.argv[1], float(sys.argv[2])
for _ in range(25):
    io.write(path, {"value": value}, {"w": np.full(50_000, value)})
"""


@POSIX
def test_concurrent_saves_of_one_target_take_turns(tmp_path):
    path = io.write(tmp_path / "m.npz", {"value": 0.0}, {"w": np.zeros(50_000)})
    writers = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(path), str(v)], stderr=subprocess.PIPE,
                                text=True) for v in (1.0, 2.0)]
    loads = 0
    while any(w.poll() is None for w in writers) or loads < 5:
        with io.read(path) as archive:  # always a whole file, its metadata matching its array
            w = archive.array("w", (50_000,), np.float64)
            assert np.all(w == archive.metadata["value"])
        loads += 1
    for w in writers:
        assert w.wait(timeout=60) == 0, w.stderr.read()
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
