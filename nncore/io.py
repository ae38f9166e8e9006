"""The nncore model file: a ``.npz`` (zip) container of JSON metadata and named arrays, no pickle.

It knows nothing of networks: :func:`write` stores a metadata dict and named
NumPy arrays, :func:`read` checks a file and hands them back through an
:class:`Archive`; :mod:`nncore.network` turns a model into both and back.

Format (``FORMAT_VERSION = 1``): what ``numpy.savez`` writes, so
``numpy.load(path, allow_pickle=False)`` reads it too. ``nncore_metadata.npy``
holds the UTF-8 bytes of one JSON object (1-D ``uint8``) that starts with
``{"format": "nncore.CNN", "format_version": 1, ...}``; every other member
``<name>.npy`` holds one numeric array (bool, int, uint or float).

Reading checks before it allocates, so a small file cannot make a big load:
only stored or deflated members, no encryption, no duplicate names, sizes
consistent with the file; every ``.npy`` header parsed (bounded) and matching
its member's declared size; the metadata bounded (:data:`MAX_METADATA_BYTES`,
nesting :data:`MAX_JSON_DEPTH`) and free of duplicate keys, NaN and
infinities; array data read only by :meth:`Archive.array`, against the dtype
and shape the caller expects, never past the declared size. Every problem is
a :class:`ModelFileError` naming the file and the member or field; the time is
linear in the file's size.

Writing is atomic: the archive goes to ``.<name>.nncore-tmp`` beside the
target (locked while written: concurrent saves of one target take turns), is
fsynced and ``os.replace``-d over the target. A killed save leaves at most
that one file, which the next save of the target removes; an exception
(``KeyboardInterrupt`` too) leaves none.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import math
import os
import re
import signal
import struct
import zipfile
import zlib
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so concurrent saves of one target must be avoided there
    fcntl = None

FORMAT = "nncore.CNN"
FORMAT_VERSION = 1
METADATA_KEY = "nncore_metadata"
MAX_METADATA_BYTES = 16 * 2**20  # of JSON
MAX_JSON_DEPTH = 64  # nested objects and lists
MAX_INT_DIGITS = 100  # per number (a PCG64 state has 39)
MAX_MEMBERS = 2**18
MAX_NPY_HEADER = 10_000  # bytes; NumPy's own limit for untrusted files

_KINDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats"}
_METHODS = {12: "bzip2", 14: "lzma", 9: "deflate64", 93: "zstandard", 95: "xz", 98: "ppmd"}
_DEFLATE_MAX_RATIO = 1032  # no deflate stream inflates more (RFC 1951: 258 bytes from 2 bits)
_CHUNK = 2**20
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, struct.error)


class ModelFileError(ValueError):
    """A model file that cannot be read; the message names the file and the member or field."""


# ---- write -------------------------------------------------------------------------------------


def write(path, metadata, arrays):
    """Write ``metadata`` (dict) and ``arrays`` (name -> ``numpy.ndarray``) to ``path``, atomically.

    ``.npz`` is appended when missing; the path written is returned. The
    metadata may hold dicts with string keys, lists, tuples, strings,
    booleans, None, integers of at most :data:`MAX_INT_DIGITS` digits and
    finite floats; ``"format"``/``"format_version"`` are added. Arrays must be
    numeric and finite. An existing target keeps its permission bits; a new one
    gets ``0o666`` less the umask.

    Raises ``ValueError``/``TypeError`` naming the key path (e.g.
    ``metadata['layers'][2]['config']['eta']``) or the array, before anything
    is written, and ``OSError`` (same type and ``errno``) naming the target if
    writing fails; the old target is then left as it was.
    """
    target = _npz_path(path)
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    for key, value in (("format", FORMAT), ("format_version", FORMAT_VERSION)):
        if metadata.get(key, value) != value:
            raise ValueError(f"metadata[{key!r}] is {metadata[key]!r}; this nncore writes {value!r}")
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, **_plain(metadata, "metadata", 0)}
    text = json.dumps(document, allow_nan=False).encode("utf-8")
    if len(text) > MAX_METADATA_BYTES:
        raise ValueError(f"the metadata is {len(text)} bytes of JSON, more than the {MAX_METADATA_BYTES} a file "
                         "may hold; store large data as arrays")
    members = {METADATA_KEY: np.frombuffer(text, dtype=np.uint8), **_checked_arrays(arrays)}
    try:
        _atomic_write(target, members)
    except OSError as exc:
        message = f"cannot write the model file '{target}': {exc.strerror or exc}"
        named = OSError(exc.errno, message) if exc.errno else OSError(message)  # the errno picks the subclass
        named.filename = str(target)
        raise named from exc
    return target


def _npz_path(path):
    path = Path(os.fspath(path))
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _plain(value, where, depth):
    """``value`` as plain JSON types, checked as :func:`read` will check it."""
    if isinstance(value, (Mapping, list, tuple)) and depth >= MAX_JSON_DEPTH:
        raise ValueError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        if len(str(abs(int(value)))) > MAX_INT_DIGITS:
            raise ValueError(f"{where} is an integer of more than {MAX_INT_DIGITS} digits")
        return int(value)
    if isinstance(value, Real):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {float(value)}; only finite numbers can be saved")
        return float(value)
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}; metadata keys must be strings")
        return {key: _plain(item, f"{where}[{key!r}]", depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}; metadata holds only dicts, lists, strings, numbers, "
                    "booleans and None")


def _checked_arrays(arrays):
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not 0 < len(name) <= 200 or "\0" in name or name == METADATA_KEY:
            raise ValueError(f"array name {name!r}: 1 to 200 characters, no NUL, not {METADATA_KEY!r}")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"array {name!r} is a {type(value).__name__}, expected a numpy.ndarray on the host")
        if value.dtype.kind not in _KINDS or value.dtype.fields is not None:
            raise ValueError(f"array {name!r} has dtype {value.dtype}; only numeric arrays can be saved")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"array {name!r} holds {np.count_nonzero(~np.isfinite(value))} NaN or infinite "
                             "value(s); nncore saves finite numbers only")
        checked[name] = value if value.dtype.isnative else value.astype(value.dtype.newbyteorder("="))
    return checked


def _atomic_write(target, members):
    mode = None
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(target).st_mode & 0o7777
    with _claimed(target.parent / _temp_name(target.name)) as (fd, tmp):
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as handle:
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, value in members.items():
                    with archive.open(name + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, value, allow_pickle=False)
            handle.flush()
            os.fsync(fd)
        os.replace(tmp, target)
    with contextlib.suppress(OSError):  # make the rename durable too, where folders can be fsynced
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _temp_name(name):
    """``.<name>.nncore-tmp``, the same for every save of ``name``; hashed where it would pass 255 bytes."""
    candidate = f".{name}.nncore-tmp"
    if len(os.fsencode(candidate)) <= 255:
        return candidate
    return f".{name[:40]}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}.nncore-tmp"


@contextlib.contextmanager
def _claimed(tmp):
    """Yield ``(fd, tmp)``: a fresh file at ``tmp`` that this process alone has locked.

    Only the holder of the lock on the file at ``tmp`` removes or renames it,
    so a concurrent save of the same target waits rather than clobbering. A
    killed save's leftover (its lock died with it) is removed first. Any
    exception (``KeyboardInterrupt`` too) removes the file unless the body has
    already renamed it.
    """
    opened, owned = [], False  # opened = [fd, created], set while SIGINT is held off so no fd gets lost
    try:
        while True:
            with _sigint_held():
                opened[:] = _open_temp(tmp)
            _lock(opened[0], blocking=True)
            if _is_at(opened[0], tmp):
                if opened[1]:
                    break
                os.unlink(tmp)  # a leftover: start afresh, with the default mode
            fd = opened[0]
            opened.clear()
            os.close(fd)
        owned = True
        yield opened[0], tmp
        owned = False  # renamed over the target: no longer ours to remove
    except BaseException:
        if opened and (owned or (opened[1] and _lock(opened[0], blocking=False) and _is_at(opened[0], tmp))):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        if opened:
            os.close(opened[0])


def _open_temp(tmp):
    """``[fd, created]``: ``tmp`` created afresh, or else the file already there (never through a symlink)."""
    flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        try:
            return [os.open(tmp, flags | os.O_CREAT | os.O_EXCL, 0o666), True]  # the umask decides the mode
        except FileExistsError:
            pass
        try:
            return [os.open(tmp, flags | getattr(os, "O_NOFOLLOW", 0)), False]
        except FileNotFoundError:
            continue
        except OSError:
            if not os.path.islink(tmp):
                raise
            os.unlink(tmp)  # never write through a symlink planted at the temporary name


@contextlib.contextmanager
def _sigint_held():
    """Delay SIGINT (delivered on exit) where a ``KeyboardInterrupt`` would lose a file descriptor."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _lock(fd, blocking):
    """Lock ``fd`` exclusively; ``False`` when not ``blocking`` and another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
    return True


def _is_at(fd, path):
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


# ---- read --------------------------------------------------------------------------------------


def read(path):
    """Open and check the model file ``path`` (tried with ``.npz`` appended too); returns an :class:`Archive`.

    Use it as a context manager (``with io.read(path) as archive:``) or call
    :meth:`Archive.close`. Raises ``FileNotFoundError`` or
    :class:`ModelFileError`; nothing in the file is executed or unpickled.
    """
    path = Path(os.fspath(path))
    if not path.exists() and path.suffix != ".npz" and _npz_path(path).exists():
        path = _npz_path(path)
    handle = open(path, "rb")
    try:
        return Archive(path, handle)
    except BaseException:
        handle.close()
        raise


class Archive:
    """A checked model file (made by :func:`read`): ``path``, ``metadata`` (the parsed JSON) and its arrays."""

    def __init__(self, path, handle):
        self.path, self._handle, self._label = path, handle, f"'{path}'"
        _check_magic(handle.read(64), self._label)
        try:
            handle.seek(0)
            self._zip = zipfile.ZipFile(handle)
        except _ZIP_ERRORS as exc:
            raise ModelFileError(f"{self._label} is truncated or corrupt: it starts like an .npz (zip) archive but "
                                 f"cannot be opened ({type(exc).__name__}: {_shown(str(exc), False)})") from None
        infos = self._zip.infolist()
        self._check_directory(infos, os.fstat(handle.fileno()).st_size)
        names = {info.filename[:-4] if info.filename.endswith(".npy") else info.filename: info for info in infos}
        if len(names) != len(infos):
            raise self._fail("it holds two members of one name (one with .npy, one without)")
        if METADATA_KEY not in names or not names[METADATA_KEY].filename.endswith(".npy"):
            shown = ", ".join(repr(name) for name in list(names)[:8]) + (", ..." if len(names) > 8 else "")
            raise ModelFileError(f"{self._label} is an .npz archive but not an nncore model: it has no "
                                 f"{METADATA_KEY!r} entry (it holds {len(names)} "
                                 f"{'entry' if len(names) == 1 else 'entries'}: {shown or 'none'})")
        for name, info in names.items():
            if not info.filename.endswith(".npy"):
                raise self._fail(f"its entry {name!r} is not a NumPy array (.npy); it was left unread")
        self._headers = {}  # name -> (zip info, shape, dtype, fortran order, header bytes)
        self.metadata = self._read_metadata(names.pop(METADATA_KEY))
        for name, info in names.items():
            dtype = self._read_header(name, info)[2]
            if dtype.kind not in _KINDS or dtype.fields is not None:
                raise self._fail(f"its entry {name!r} has dtype {dtype}; nncore files hold numeric arrays only")

    def names(self):
        """The array members' names (without ``.npy``; not the metadata)."""
        return frozenset(self._headers)

    def expect_members(self, names):
        """Check that the arrays are exactly ``names``: an iterable, or a mapping ``name -> field`` for messages."""
        fields = names if isinstance(names, Mapping) else dict.fromkeys(names)
        for name, field in fields.items():
            if name not in self._headers:
                raise self.error(field, f"the array {name!r} is missing")
        extra = sorted(set(self._headers) - set(fields))
        if extra:
            shown = ", ".join(repr(name) for name in extra[:5]) + (", ..." if len(extra) > 5 else "")
            raise self.error(None, f"it holds {len(extra)} unexpected array(s): {shown}")

    def array(self, name, shape, dtype, *, finite=True, field=None):
        """The array ``name`` as a writable ``numpy.ndarray`` of exactly ``dtype`` and ``shape``.

        The header is checked first; then at most the declared bytes are read.
        ``finite=True`` refuses NaN and infinities; ``field`` (e.g. ``"layer 4
        (FullyConnectedLayer) parameter 'weights'"``) goes into the messages.
        """
        if name not in self._headers:
            raise self.error(field, f"the array {name!r} is missing")
        info, found_shape, found_dtype, fortran, header_size = self._headers[name]
        dtype, shape = np.dtype(dtype), tuple(int(s) for s in shape)
        if found_dtype != dtype:
            raise self.error(field, f"the array {name!r} has dtype {found_dtype}, expected "
                                    f"{_KINDS.get(dtype.kind, 'values')} ({dtype})")
        if found_shape != shape:
            raise self.error(field, f"the array {name!r} has shape {found_shape}, expected {shape}")
        data = np.empty(info.file_size - header_size, dtype=np.uint8)
        with self._member(name, info) as stream:
            _read_into(stream, memoryview(bytearray(header_size)))
            _read_into(stream, memoryview(data))
            stream.read(1)  # at the declared end: makes zipfile check the CRC
        values = data.view(dtype).reshape(shape, order="F" if fortran else "C")
        if finite and dtype.kind == "f" and not np.isfinite(values).all():
            bad = ~np.isfinite(values)
            first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), shape))
            raise self.error(field, f"the array {name!r} holds {np.count_nonzero(bad)} NaN or infinite value(s) "
                                    f"(the first at index {first}); nncore files hold finite numbers only")
        return values

    def error(self, field, message):
        """A :class:`ModelFileError` naming this file and ``field`` (when given), for the caller to raise."""
        return self._fail(f"{field}: {message}" if field else message)

    def integer(self, field, value, lo, hi):
        """``value`` if it is an int (not a bool) in ``[lo, hi]``; else raises :meth:`error`."""
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(field, f"expected an integer in [{lo}, {hi}], got {_shown(value)}")
        return value

    def real(self, field, value, lo=-math.inf, hi=math.inf):
        """``float(value)`` if it is a finite number (not a bool) in ``[lo, hi]``; else raises :meth:`error`."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and lo <= value <= hi):
            raise self.error(field, f"expected a finite number in [{lo}, {hi}], got {_shown(value)}")
        return float(value)

    def boolean(self, field, value):
        """``value`` if it is JSON ``true``/``false`` (not ``"false"``, not 0); else raises :meth:`error`."""
        if not isinstance(value, bool):
            raise self.error(field, f"expected true or false, got {_shown(value)}")
        return value

    def close(self):
        self._zip.close()
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _fail(self, message):
        return ModelFileError(f"{self._label} is not a valid nncore model file: {message}")

    def _check_directory(self, infos, file_size):
        """Refuse, from the zip directory alone, what could make reading costly or ambiguous."""
        if len(infos) > MAX_MEMBERS:
            raise self._fail(f"it has {len(infos)} members (at most {MAX_MEMBERS})")
        seen, compressed = set(), 0
        for info in infos:
            name, method = info.filename, info.compress_type
            if name in seen:
                raise self._fail(f"it holds the member {name!r} twice; nncore files hold each member once")
            seen.add(name)
            if info.flag_bits & 0x61:  # encrypted, patched data, strong encryption
                raise self._fail(f"its member {name!r} is encrypted; nncore files never are")
            if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self._fail(f"its member {name!r} is compressed with {_METHODS.get(method, f'method {method}')}"
                                 "; nncore reads only stored or deflated members")
            limit = info.compress_size * (1 if method == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO) + 64
            if info.file_size > limit:
                raise self._fail(f"its member {name!r} claims {info.file_size} bytes from {info.compress_size} "
                                 "stored bytes, more than its compression can produce")
            compressed += info.compress_size
        if compressed > file_size:  # members overlap: reading each could cost the whole file
            raise self._fail(f"its members claim {compressed} bytes, more than the file's {file_size}")

    @contextlib.contextmanager
    def _member(self, name, info):
        try:
            with self._zip.open(info) as stream:
                yield stream
        except _ZIP_ERRORS as exc:
            raise self._fail(f"its entry {name!r} is truncated or corrupt ({type(exc).__name__}: "
                             f"{_shown(str(exc), False)})") from None

    def _read_header(self, name, info):
        """Parse ``name``'s ``.npy`` header (at most :data:`MAX_NPY_HEADER` bytes); its size must fit the member."""
        with self._member(name, info) as stream:
            magic = stream.read(10)
            if len(magic) < 10 or magic[:6] != b"\x93NUMPY" or magic[6:8] not in (b"\1\0", b"\2\0", b"\3\0"):
                raise self._fail(f"its entry {name!r} is not a NumPy array (.npy) of a known version")
            if magic[6] > 1:
                magic += stream.read(2)
            size_format = "<H" if magic[6] == 1 else "<I"
            (length,) = struct.unpack(size_format, magic[8:])
            if length > MAX_NPY_HEADER:
                raise self._fail(f"its entry {name!r} has a .npy header of {length} bytes (at most {MAX_NPY_HEADER})")
            header = _io.BytesIO(magic[8:] + stream.read(length))
        parse = np.lib.format.read_array_header_1_0 if magic[6] == 1 else np.lib.format.read_array_header_2_0
        try:
            shape, fortran, dtype = parse(header, max_header_size=MAX_NPY_HEADER)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
            raise self._fail(f"its entry {name!r} has a malformed .npy header ({_shown(str(exc), False)})") from None
        if dtype.hasobject:
            raise self._fail(f"its entry {name!r} holds pickled Python objects (an object array); nncore files "
                             "never contain pickle, so it refuses to read it (nothing was unpickled)")
        if not all(type(s) is int and s >= 0 for s in shape):
            raise self._fail(f"its entry {name!r} has the invalid shape {_shown(shape)}")
        header_size, data_size = len(magic) + length, math.prod(shape) * dtype.itemsize
        if header_size + data_size != info.file_size:
            raise self._fail(f"its entry {name!r} claims shape {_shown(shape)} of {dtype} ({data_size} bytes) but "
                             f"holds {info.file_size - header_size} bytes of data")
        self._headers[name] = (info, tuple(shape), dtype, fortran, header_size)
        return self._headers[name]

    def _read_metadata(self, info):
        if info.file_size > MAX_METADATA_BYTES + MAX_NPY_HEADER + 12:
            raise self._fail(f"its metadata member claims {info.file_size} bytes, more than the "
                             f"{MAX_METADATA_BYTES} bytes of JSON nncore reads")
        _, shape, dtype, _, _ = self._read_header(METADATA_KEY, info)
        if dtype != np.uint8 or len(shape) != 1:
            raise self._fail(f"{METADATA_KEY!r} should be UTF-8 JSON bytes (1-D uint8), got dtype {dtype} and "
                             f"shape {shape}")
        metadata = _parse_json(self.array(METADATA_KEY, shape, np.uint8).tobytes(), self._fail)
        del self._headers[METADATA_KEY]
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            raise ModelFileError(f"{self._label} is not an nncore model file: its metadata says format "
                                 f"{_shown(found)}, expected {FORMAT!r}")
        version = metadata.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self._fail(f"bad format_version {_shown(version)}")
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"{self._label} was written by a newer nncore (file format version {version}, saved by nncore "
                f"{_shown(metadata.get('nncore_version', '?'), False)}); this nncore reads format versions up to "
                f"{FORMAT_VERSION}. Upgrade nncore to load it")
        return metadata


def _read_into(stream, view):
    """Fill ``view`` from ``stream`` in bounded chunks (``EOFError`` if the stream ends first)."""
    filled = 0
    while filled < len(view):
        chunk = stream.read(min(len(view) - filled, _CHUNK))
        if not chunk:
            raise EOFError("the member ends before its declared size")
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)


def _shown(value, quote=True):
    """``repr(value)`` (or ``str``), cut short: a hostile file must not make a megabyte message."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_magic(head, name):
    def refuse(what, kind="an"):
        return ModelFileError(f"{name} is not {kind} nncore model file: {what}")

    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    if not head:
        raise refuse("the file is empty (0 bytes)")
    if head.startswith(b"\x93NUMPY"):
        raise refuse("it is a single NumPy .npy array, not an .npz archive written by CNN.save")
    if head[:1] == b"\x80":
        raise refuse("it is a Python pickle; nncore never unpickles anything, so it refuses to read it")
    if head.startswith(b"PK"):
        raise refuse("it starts like a zip archive but the header is damaged", "a valid")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut in two at the end of the 64 bytes is still text
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 and exc.start > 0 else None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        raise refuse(f"it is a text file (it starts with {text[:30]!r}), not an .npz archive written by CNN.save")
    raise refuse(f"it is not an .npz (zip) archive (it starts with the bytes {head[:8]!r})")


# ---- the metadata's JSON -----------------------------------------------------------------------

# A JSON string from its opening quote to its closing one (or the end of the text): possessive, so linear.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_LONG_NUMBER = re.compile(rb"[0-9]{%d}" % (MAX_INT_DIGITS + 1))


class _JSONProblem(Exception):
    pass


def _parse_json(raw, fail):
    """The metadata, after a linear pre-scan (strings removed) for nesting depth and overlong numbers."""
    structure = _JSON_STRING.sub(b"", raw)
    depth = _deepest(structure)
    if depth > MAX_JSON_DEPTH:
        raise fail(f"its metadata is nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    if _LONG_NUMBER.search(structure):
        raise fail(f"its metadata holds a number of more than {MAX_INT_DIGITS} digits")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except _JSONProblem as exc:
        raise fail(f"its metadata {exc}") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise fail(f"its metadata is not valid JSON ({_shown(str(exc), False)})") from None


def _deepest(structure):
    """The deepest nesting of ``[``/``{`` in JSON text without strings, counted in vector chunks."""
    codes = np.frombuffer(structure, dtype=np.uint8)
    level = deepest = 0
    for start in range(0, codes.size, _CHUNK):
        chunk = codes[start:start + _CHUNK]
        steps = ((chunk == ord("[")) | (chunk == ord("{"))).astype(np.int64)
        steps -= (chunk == ord("]")) | (chunk == ord("}"))
        levels = np.cumsum(steps) + level
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def _unique_keys(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _JSONProblem(f"has the key {_shown(duplicate)} twice in one object")
    return result


def _no_constant(name):
    raise _JSONProblem(f"holds {name}; nncore files hold finite numbers only")


def _finite_float(text):
    if not math.isfinite(float(text)):
        raise _JSONProblem(f"holds the number {_shown(text, False)}, which overflows to infinity")
    return float(text)


# ---- legacy: a CNN as metadata + arrays --------------------------------------------------------
# Kept so that CNN.save / CNN.load work until nncore.network turns a CNN into metadata and arrays itself
# (issue 10, item 3); then everything below goes. Imports are local so that this module imports nothing
# of nncore at import time.

_CONFIG_KEYS = {
    "Convolution2DLayer": ("input_channels", "feature_maps", "kernel_height", "kernel_width", "v_stride",
                           "h_stride", "pad", "act_func", "optimized"),
    "Pooling2DLayer": ("kernel_height", "kernel_width", "v_stride", "h_stride", "pooling"),
    "FlattenLayer": (),
    "FullyConnectedLayer": ("nodes", "act_func"),
    "OutputLayer": ("nodes", "output_func"),
}


class _Corrupt(ValueError):
    """A problem found in a file's contents; ``load`` adds the file name."""


def _layer_types():
    from . import layers

    return {name: getattr(layers, name) for name in _CONFIG_KEYS}


def _name_in(registry, func, what, where, registry_name):
    for name, value in registry.items():
        if value is func:
            return name
    label = getattr(func, "__name__", repr(func))
    raise ValueError(
        f"save: {where} uses the {what} {label!r}, which is not in {registry_name}; nncore saves functions by "
        f"name only (no pickle), so register it first (e.g. {registry_name}[{label.lower()!r}] = {label}) and do "
        "the same before loading"
    )


def _scheduler_json(scheduler, where):
    from . import schedulers

    cls = type(scheduler)
    if schedulers.SCHEDULERS.get(cls.__name__) is not cls:
        raise ValueError(
            f"save: {where} uses the scheduler {cls.__name__}, which is not in nncore.schedulers.SCHEDULERS; "
            "nncore saves schedulers by name only (no pickle), so register the class first "
            f"(nncore.schedulers.SCHEDULERS[{cls.__name__!r}] = {cls.__name__}) and do the same before loading"
        )
    config = {}
    for key, value in scheduler.get_config().items():
        config[key] = _json_number(value, f"{where}: scheduler {cls.__name__} setting {key!r}")
    return {"name": cls.__name__, "config": config}


def _json_number(value, what):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real) and math.isfinite(float(value)):
        return float(value)
    raise ValueError(f"save: {what} is {value!r}; only finite numbers, booleans and None can be saved")


def _scheduler_from_json(spec, where):
    from . import schedulers

    _expect(isinstance(spec, dict) and set(spec) >= {"name", "config"}, f"{where}: malformed scheduler entry")
    name, config = spec["name"], spec["config"]
    cls = schedulers.SCHEDULERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise _Corrupt(f"{where}: unknown scheduler {name!r}; known: {sorted(schedulers.SCHEDULERS)}")
    _expect(isinstance(config, dict) and all(isinstance(k, str) and (v is None or isinstance(v, (int, float)))
                                             for k, v in config.items()), f"{where}: malformed scheduler config")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise _Corrupt(f"{where}: cannot create {name}(**{config}): {exc}") from None


# ---- save -------------------------------------------------------------------------------------


def save(model, path):
    """Write ``model`` (a :class:`~nncore.CNN`) to ``path`` (``.npz`` appended if missing), atomically.

    Returns the :class:`pathlib.Path` written. Raises ``ValueError`` when the
    model uses a function or scheduler that is not registered by name.
    """
    metadata, arrays = _serialise(model)
    return write(path, metadata, arrays)


def _serialise(model):
    from backends import dtype_name, to_numpy

    from . import __version__, costs

    cost = _name_in(costs.COSTS, model.cost_func, "cost function", "the CNN", "nncore.costs.COSTS")
    seed = model.seed
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        seed = int(seed)
    elif isinstance(seed, (list, tuple)) and all(isinstance(s, Integral) for s in seed):
        seed = [int(s) for s in seed]
    else:
        seed = None  # a SeedSequence or Generator: the saved RNG states carry everything needed
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nncore_version": __version__,
        "saved_from_backend": model.backend.name,
        "dtype": dtype_name(model.dtype),
        "seed": seed,
        "cost_func": cost,
        "scheduler": _scheduler_json(model.scheduler, "the CNN"),
        "input_shape": None if model.input_shape is None else [int(s) for s in model.input_shape],
        "rng": {"init": _rng_json(model._init_rng), "shuffle": _rng_json(model._shuffle_rng)},
        "layers": [],
    }
    arrays = {}
    for index, layer in enumerate(model.layers):
        where = f"layer {index} ({type(layer).__name__})"
        kind = type(layer).__name__
        if _layer_types().get(kind) is not type(layer):
            raise ValueError(f"save: {where} is a custom layer class; only nncore's own layers can be saved")
        entry = {"type": kind, "config": _layer_config(layer, where)}
        if layer.params:
            entry["scheduler"] = (None if layer.scheduler is model.scheduler
                                  else _scheduler_json(layer.scheduler, where))
        if layer.params and model.input_shape is not None:
            entry["params"], entry["optimizer"] = {}, {}
            for name in layer.params:
                key = f"param.{index}.{name}"
                arrays[key] = to_numpy(getattr(layer, name))
                entry["params"][name] = key
                sched = layer.schedulers[name]
                spec = _scheduler_json(sched, f"{where} parameter {name!r}")
                state = {}
                for attr in sched._state:
                    value = getattr(sched, attr, None)
                    if value is None or isinstance(value, (bool, Integral, Real)):
                        state[attr] = _json_number(value, f"{where}: scheduler state {attr!r}")
                    else:
                        skey = f"state.{index}.{name}.{attr}"
                        arrays[skey] = to_numpy(value)
                        state[attr] = {"array": skey}
                spec["state"] = state
                entry["optimizer"][name] = spec
        metadata["layers"].append(entry)
    for key, value in arrays.items():
        if value.dtype.kind not in "fiub":
            raise ValueError(f"save: array {key!r} has dtype {value.dtype}; only numeric arrays can be saved")
    return metadata, arrays


def _layer_config(layer, where):
    from . import activations
    from .layers import Convolution2DLayer, FullyConnectedLayer, OutputLayer, Pooling2DLayer

    def act(func):
        return _name_in(activations.ACTIVATIONS, func, "activation", where, "nncore.activations.ACTIVATIONS")

    if isinstance(layer, Convolution2DLayer):
        pad = layer.pad
        if not isinstance(pad, str):
            pad = int(pad) if isinstance(pad, Integral) else [int(p) for p in pad]
        return {"input_channels": int(layer.input_channels), "feature_maps": int(layer.feature_maps),
                "kernel_height": int(layer.kernel_hw[0]), "kernel_width": int(layer.kernel_hw[1]),
                "v_stride": int(layer.stride[0]), "h_stride": int(layer.stride[1]), "pad": pad,
                "act_func": act(layer.act_func), "optimized": bool(layer.optimized)}
    if isinstance(layer, Pooling2DLayer):
        return {"kernel_height": int(layer.kernel_hw[0]), "kernel_width": int(layer.kernel_hw[1]),
                "v_stride": int(layer.stride[0]), "h_stride": int(layer.stride[1]), "pooling": layer.pooling}
    if isinstance(layer, OutputLayer):
        return {"nodes": int(layer.nodes), "output_func": act(layer.act_func)}
    if isinstance(layer, FullyConnectedLayer):
        return {"nodes": int(layer.nodes), "act_func": act(layer.act_func)}
    return {}


def _rng_json(rng):
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"save: only PCG64 generators can be saved, got {state.get('bit_generator')!r}")
    return {"bit_generator": "PCG64", "state": {"state": int(state["state"]["state"]),
                                               "inc": int(state["state"]["inc"])},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


# ---- load -------------------------------------------------------------------------------------


def load(path, backend=None, *, device=None):
    """Read a model written by :func:`save`; see :meth:`nncore.CNN.load`.

    Raises ``FileNotFoundError`` (no such file) or :class:`ModelFileError`
    naming the file and the problem; nothing in the file is executed.
    """
    from backends import get_backend

    backend = get_backend(backend, device)  # a bad backend name is the caller's error, not the file's
    with read(path) as archive:
        try:
            return _deserialise(archive, backend)
        except _Corrupt as exc:
            raise archive.error(None, str(exc)) from None


def _expect(condition, message):
    if not condition:
        raise _Corrupt(message)


def _deserialise(archive, backend):
    from . import costs
    from .network import CNN

    meta, used = archive.metadata, {}

    required = ("dtype", "cost_func", "scheduler", "input_shape", "layers", "rng", "seed")
    missing = [key for key in required if key not in meta]
    _expect(not missing, f"the metadata lacks {missing}")
    _expect(meta["dtype"] in ("float32", "float64"), f"unsupported dtype {meta['dtype']!r}")
    cost = costs.COSTS.get(meta["cost_func"]) if isinstance(meta["cost_func"], str) else None
    _expect(cost is not None, f"unknown cost function {meta['cost_func']!r}; known: {sorted(costs.COSTS)}")
    scheduler = _scheduler_from_json(meta["scheduler"], "the CNN")
    seed = meta["seed"]
    _expect(seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0)
            or (isinstance(seed, list) and all(isinstance(s, int) and s >= 0 for s in seed)), f"bad seed {seed!r}")
    try:
        model = CNN(cost_func=cost, scheduler=scheduler, seed=seed, backend=backend, dtype=meta["dtype"])
    except (TypeError, ValueError) as exc:
        raise _Corrupt(f"cannot create the CNN: {exc}") from None

    layers = meta["layers"]
    _expect(isinstance(layers, list), "'layers' is not a list")
    for index, entry in enumerate(layers):
        where = f"layer {index}"
        _expect(isinstance(entry, dict) and isinstance(entry.get("type"), str)
                and isinstance(entry.get("config"), dict), f"{where}: malformed entry")
        kind, config = entry["type"], dict(entry["config"])
        _expect(kind in _CONFIG_KEYS, f"{where}: unknown layer type {kind!r}; known: {sorted(_CONFIG_KEYS)}")
        _expect(set(config) == set(_CONFIG_KEYS[kind]),
                f"{where} ({kind}): config keys {sorted(config)}, expected {sorted(_CONFIG_KEYS[kind])}")
        own = entry.get("scheduler")
        own = None if own is None else _scheduler_from_json(own, f"{where} ({kind})")
        try:
            if kind == "Convolution2DLayer":
                if isinstance(config["pad"], list):
                    config["pad"] = tuple(config["pad"])
                model.add_Convolution2DLayer(**config)
            elif kind == "Pooling2DLayer":
                model.add_PoolingLayer(**config)
            elif kind == "FlattenLayer":
                model.add_FlattenLayer()
            elif kind == "FullyConnectedLayer":
                model.add_FullyConnectedLayer(config["nodes"], config["act_func"], scheduler=own)
            else:
                model.add_OutputLayer(config["nodes"], config["output_func"], scheduler=own)
        except (TypeError, ValueError) as exc:
            raise _Corrupt(f"{where} ({kind}) cannot be rebuilt: {exc}") from None
        if own is not None:
            model.layers[-1].scheduler = own

    shape = meta["input_shape"]
    if shape is not None:
        _expect(isinstance(shape, list) and shape and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                          for s in shape), f"bad input_shape {shape!r}")
        try:
            model._build(tuple(shape), "load")
        except (TypeError, ValueError) as exc:
            raise _Corrupt(f"the layers cannot be built for input shape {tuple(shape)}: {exc}") from None
        for index, (layer, entry) in enumerate(zip(model.layers, layers)):
            _load_layer_state(model, layer, index, entry, archive, used)
    archive.expect_members(used)
    _set_rng(model._init_rng, meta["rng"], "init")
    _set_rng(model._shuffle_rng, meta["rng"], "shuffle")
    return model


def _float_array(archive, used, key, shape, where, model):
    from backends import dtype_name

    _expect(isinstance(key, str), f"{where}: the array {key!r} is missing")
    used[key] = where
    return model.backend.asarray(archive.array(key, shape, dtype_name(model.dtype), field=where), dtype=model.dtype)


def _load_layer_state(model, layer, index, entry, archive, used):
    where = f"layer {index} ({type(layer).__name__})"
    if not layer.params:
        return
    params, optim = entry.get("params"), entry.get("optimizer")
    _expect(isinstance(params, dict) and set(params) == set(layer.params),
            f"{where}: expected parameters {list(layer.params)}, the file has {params!r}")
    _expect(isinstance(optim, dict) and set(optim) == set(layer.params),
            f"{where}: expected scheduler state for {list(layer.params)}, the file has {optim!r}")
    for name in layer.params:
        shape = tuple(getattr(layer, name).shape)
        setattr(layer, name, _float_array(archive, used, params[name], shape, f"{where} parameter {name!r}",
                                          model))
        spec = optim[name]
        sched = _scheduler_from_json(spec, f"{where} parameter {name!r}")
        state = spec.get("state")
        _expect(isinstance(state, dict) and set(state) == set(sched._state),
                f"{where} parameter {name!r}: scheduler state {state!r}, expected the keys {list(sched._state)}")
        for attr, value in state.items():
            what = f"{where} parameter {name!r} scheduler state {attr!r}"
            if isinstance(value, dict):
                _expect(set(value) == {"array"}, f"{what}: malformed entry {value!r}")
                value = _float_array(archive, used, value["array"], shape, what, model)
            elif attr == "t":
                _expect(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                        f"{what}: the step count must be an int >= 0, got {value!r}")
            else:
                _expect(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)),
                        f"{what}: unexpected value {value!r}")
            setattr(sched, attr, value)
        layer.schedulers[name] = sched


def _set_rng(rng, spec, which):
    _expect(isinstance(spec, dict) and isinstance(spec.get(which), dict), f"rng state {which!r} is missing")
    state = spec[which]
    _expect(state.get("bit_generator") == "PCG64", f"rng {which!r}: unsupported bit generator "
            f"{state.get('bit_generator')!r} (only PCG64)")
    inner = state.get("state")
    _expect(isinstance(inner, dict) and all(isinstance(inner.get(k), int) and inner[k] >= 0 for k in ("state", "inc"))
            and isinstance(state.get("has_uint32"), int) and isinstance(state.get("uinteger"), int),
            f"rng {which!r}: malformed state")
    try:
        rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": inner["state"], "inc": inner["inc"]},
                                   "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Corrupt(f"rng {which!r}: cannot restore the state: {exc}") from None
