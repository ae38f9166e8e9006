"""Hostile model files (issue 13): each is refused with a ModelFileError naming the file, cheaply.

The files are small and built here by hand (a raw zip writer below), but claim
gigabytes: zip bombs, huge ``.npy`` shapes, 100000-deep JSON, 50 MB of
metadata, bzip2/lzma/encrypted members, duplicate names... They are all loaded
in one subprocess whose address space is capped at 1 GiB above its baseline
(``resource.setrlimit(RLIMIT_AS)``), within a time bound that no slow machine
misses by accident: a load that decompressed a bomb, allocated a claimed shape
or recursed into the JSON would fail with ``MemoryError``, ``RecursionError``
or a timeout instead.
"""

import bz2
import json
import shutil
import lzma
import struct
import subprocess
import sys
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest


resource = pytest.importorskip("resource")

MIB = 2**20
GIB = 2**30


# ---- a raw zip writer: members exactly as given, lies included ------------------------------------


def member(name, data, method=zipfile.ZIP_STORED, size=None, crc=None, flags=0):
    """A zip member: ``data`` as stored in the file; ``size``/``crc`` default to those of ``data``."""
    return {"name": name.encode(), "data": data, "method": method, "flags": flags,
            "size": len(data) if size is None else size, "crc": zlib.crc32(data) if crc is None else crc}


def zip_bytes(members, aliases=()):
    """The zip file of ``members``; ``aliases`` = ``[(new name, index)]``: more directory entries for member
    ``index``'s data (overlapping members)."""
    out, central, offsets = bytearray(), [], []
    for m in members:
        offsets.append(len(out))
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, m["flags"], m["method"], 0, 0x21, m["crc"],
                           len(m["data"]), m["size"], len(m["name"]), 0) + m["name"] + m["data"]
    entries = [(m, offset, m["name"]) for m, offset in zip(members, offsets)]
    entries += [(members[index], offsets[index], name.encode()) for name, index in aliases]
    for m, offset, name in entries:
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, m["flags"], m["method"], 0, 0x21,
                                   m["crc"], len(m["data"]), m["size"], len(name), 0, 0, 0, 0, 0, offset) + name)
    directory = b"".join(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(out), 0)
    return bytes(out) + directory + end


def npy(array):
    buffer = BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_header(shape, descr="<f8", version=1, length=None):
    """A ``.npy`` header claiming ``shape`` (``length``: a header length field that lies)."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    fixed = 10 if version == 1 else 12
    text += b" " * ((64 - (fixed + len(text) + 1) % 64) % 64) + b"\n"
    size = struct.pack("<H" if version == 1 else "<I", len(text) if length is None else length)
    return b"\x93NUMPY" + bytes([version, 0]) + size + text


def deflated(prefix, fill, mib):
    """``(raw deflate data, size, crc)`` of ``prefix`` followed by ``mib`` MiB of the byte ``fill``; fast, since
    after a full flush every MiB compresses to the same bytes."""
    block = bytes([fill]) * MIB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH) == body
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    return head + body * mib + compressor.flush(), len(prefix) + mib * MIB, crc


# ---- the hostile files ----------------------------------------------------------------------------


GOOD = Path(__file__).resolve().parent / "fixtures" / "model_v1_lenet.npz"


def good_model(path):
    """A valid model file (the format-v1 fixture: conv, pool, flatten, dense, output; Adam and Momentum)."""
    shutil.copyfile(GOOD, path)
    return path


def hostile_files(folder):
    """``[(name, path, expected message fragment)]``: every class of hostile file, built in ``folder``."""
    good = good_model(folder / "good.npz")
    with zipfile.ZipFile(good) as archive:
        parts = {info.filename: archive.read(info) for info in archive.infolist()}
    meta = json.loads(np.load(BytesIO(parts["nncore_metadata.npy"])).tobytes())
    files = []

    def add(name, contents, expected):
        path = folder / f"{name}.npz"
        path.write_bytes(contents if isinstance(contents, bytes) else zip_bytes(contents))
        files.append((name, path, expected))

    def model(replace=None, extra=(), drop=()):
        members = [member(n, (replace or {}).get(n, d)) for n, d in parts.items() if n not in drop]
        return members + list(extra)

    def metadata_text(text):
        return model({"nncore_metadata.npy": npy(np.frombuffer(text.encode(), np.uint8))})

    def edited(change):
        edited_meta = json.loads(json.dumps(meta))
        change(edited_meta)
        return json.dumps(edited_meta)

    kernel = "param.0.kernel.npy"
    bomb, size, crc = deflated(npy_header((2 * GIB // 8,)), 0, 2048)
    add("deflate-bomb-extra-member", model(extra=[member("bomb.npy", bomb, zipfile.ZIP_DEFLATED, size, crc)]),
        "unexpected array(s): 'bomb'")
    bomb, size, crc = deflated(npy_header((2 * GIB,), "|u1"), ord(" "), 2048)
    add("deflate-bomb-metadata", model(drop=["nncore_metadata.npy"], extra=[
        member("nncore_metadata.npy", bomb, zipfile.ZIP_DEFLATED, size, crc)]), "its metadata member claims")
    text = json.dumps(meta)[:-1]
    spaces, size, crc = deflated(npy_header((len(text) + 50 * MIB,), "|u1") + text.encode(), ord(" "), 50)
    add("metadata-50MB", model(drop=["nncore_metadata.npy"], extra=[
        member("nncore_metadata.npy", spaces, zipfile.ZIP_DEFLATED, size, crc)]), "its metadata member claims")
    zeros = npy(np.zeros(MIB // 8))
    add("bzip2-member", model(extra=[member("extra.npy", bz2.compress(zeros), zipfile.ZIP_BZIP2, len(zeros),
                                            zlib.crc32(zeros))]), "compressed with bzip2")
    add("lzma-member", model(extra=[member("extra.npy", lzma.compress(zeros), zipfile.ZIP_LZMA, len(zeros),
                                           zlib.crc32(zeros))]), "compressed with lzma")
    add("unknown-method", model(extra=[member("extra.npy", zeros, 99)]), "compressed with method 99")
    add("encrypted-flag", [dict(m, flags=1) if m["name"] == kernel.encode() else m for m in model()],
        f"member {kernel!r} is encrypted")
    add("duplicate-member", model(extra=[member(kernel, npy(np.zeros((2, 1, 3, 3))))]),
        f"the member {kernel!r} twice")
    sigmoid = edited(lambda m: m["layers"][4]["config"].update(output_func="sigmoid"))
    add("duplicate-metadata", model(extra=[member("nncore_metadata.npy", npy(np.frombuffer(sigmoid.encode(),
                                                                                          np.uint8)))]),
        "the member 'nncore_metadata.npy' twice")
    add("npy-shape-1e12", model({kernel: npy_header((10**12,)) + parts[kernel][128:]}),
        "claims shape (1000000000000,)")
    add("npy-header-length-4GB", model({kernel: npy_header((2, 1, 3, 3), version=2, length=2**32 - 1)}),
        "has a .npy header of 4294967295 bytes")
    add("npy-header-nested", model({kernel: npy_header(()).replace(b"()", b"(" * 3000 + b")" * 3000)}),
        "has a malformed .npy header")
    add("npy-object-array", model(extra=[member("extra.npy", b"\x93NUMPY\x01\x00" + npy_header((2,), "|O")[8:])]),
        "holds pickled Python objects")
    add("json-nested-100000", metadata_text("[" * 100_000 + "]" * 100_000), "nested too deeply")
    add("json-nested-in-object", metadata_text(edited(lambda m: m.update(x=0))[:-1] + ', "y": '
                                               + "{\"a\": " * 100_000 + "1" + "}" * 100_001),
        "nested too deeply")
    add("json-1M-values", metadata_text(edited(lambda m: m.update(x=0))[:-1] + ', "y": [' + "{}," * 2**19 + "{}]}"),
        "keys and values (at most 1048576)")
    add("json-duplicate-key", metadata_text(json.dumps(meta)[:-1] + ', "cost_func": "CostOLS"}'),
        "has the key 'cost_func' twice in one object")
    add("json-nan", metadata_text(edited(lambda m: m["scheduler"]["config"].update(eta=float("nan")))),
        "holds the number NaN, which is not finite")
    add("json-infinity", metadata_text(edited(lambda m: m["scheduler"]["config"].update(eta=1.0))
                                       .replace('"eta": 1.0', '"eta": 1e999')),
        "holds the number 1e999, which is not finite")
    add("json-int-5000-digits", metadata_text(edited(lambda m: m.update(seed=0)).replace(
        '"seed": 0', '"seed": 1' + "0" * 5000)), "not valid JSON")
    add("json-not-utf8", model({"nncore_metadata.npy": npy(np.frombuffer(b'{"format": "\xff\xfe"}', np.uint8))}),
        "not valid JSON")
    nan_kernel = np.load(BytesIO(parts[kernel]))
    nan_kernel[0, 0, 1, 1] = np.nan
    add("nan-weights", model({kernel: npy(nan_kernel)}), "holds 1 NaN or infinite value(s)")
    flipped = bytearray(parts[kernel])
    flipped[-1] ^= 0xFF
    add("crc-mismatch", [dict(m, crc=zlib.crc32(parts[kernel])) if m["name"] == kernel.encode() else m
                         for m in model({kernel: bytes(flipped)})], "Bad CRC-32")
    add("stored-size-lie", [dict(m, size=GIB) if m["name"] == kernel.encode() else m for m in model()],
        "more than its compression can produce")
    members = model(extra=[member("big.npy", npy(np.zeros(MIB // 8)))])
    add("overlapping-members", zip_bytes(members, aliases=[(f"copy{i}.npy", len(members) - 1) for i in range(50)]),
        "more than the file's")
    add("not-npy-member", model(extra=[member("evil.pkl", b"\x80\x04K\x01.")]), "'evil.pkl' is not a NumPy array")
    data = good.read_bytes()
    add("truncated", data[: len(data) // 2], "truncated or corrupt")
    add("truncated-directory", data[:-30], "truncated or corrupt")
    add("wrong-magic", b"\x7fELF" + data[4:], "not an .npz (zip) archive")
    add("empty", b"", "the file is empty")
    return files


# ---- loading them, under a memory cap --------------------------------------------------------------

LOADER = r"""
import json, resource, sys, time
from nncore import CNN, io

def address_space():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))

def container_load(path):  # what the model side does, from the good file's members
    with io.read(path) as archive:
        archive.expect_members(members)
        for name, (shape, dtype) in members.items():
            archive.array(name, shape, dtype)

paths, members = json.loads(sys.argv[1]), json.loads(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (address_space() + 2**30, hard))
results, start = [], time.perf_counter()
for path in paths:
    for load in (CNN.load, container_load):
        try:
            load(path)
            results.append(["no error", ""])
        except Exception as exc:
            results.append([type(exc).__name__ if not isinstance(exc, io.ModelFileError) else "ModelFileError",
                            str(exc)[:2000]])
print(json.dumps({"results": results, "seconds": time.perf_counter() - start}))
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return hostile_files(tmp_path_factory.mktemp("hostile"))


def run_loader(paths, script=LOADER):
    """Load each of ``paths`` with CNN.load and with the container alone, in one capped subprocess."""
    with np.load(GOOD, allow_pickle=False) as good:
        members = {name: [good[name].shape, str(good[name].dtype)] for name in good.files if name != "nncore_metadata"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps([str(p) for p in paths]), json.dumps(members)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    return list(zip(report["results"][::2], report["results"][1::2])), report["seconds"]


def test_hostile_files_are_small(hostile):
    sizes = {name: path.stat().st_size for name, path, _ in hostile}
    assert max(sizes.values()) < 3 * MIB, sizes
    assert len(hostile) >= 25


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_hostile_files_are_refused_cheaply_with_a_named_model_file_error(hostile):
    results, seconds = run_loader([path for _, path, _ in hostile])
    problems = []
    for (name, path, expected), pair in zip(hostile, results):
        for how, (kind, message) in zip(("CNN.load", "container"), pair):
            if kind != "ModelFileError" or f"'{path}'" not in message or expected not in message:
                problems.append(f"{name} ({how}): {kind}: {message[:300]!r} (expected {expected!r})")
    assert not problems, "\n".join(problems)
    assert seconds < 10, seconds


def test_the_good_file_loads_under_the_same_cap(tmp_path):
    script = LOADER.replace("results.append([\"no error\", \"\"])", "results.append([\"loaded\", \"\"])")
    assert run_loader([good_model(tmp_path / "good.npz")], script)[0] == [(["loaded", ""], ["loaded", ""])]
