"""The nncore model file: a ``.npz`` of JSON metadata and named arrays; no pickle, no network.

``nncore_metadata.npy`` holds one JSON object (UTF-8, 1-D ``uint8``), ``{"format": "nncore.CNN",
"format_version": 1, ...}``; each other ``<name>.npy`` one numeric array. :func:`read` checks the zip
directory, every ``.npy`` header and the metadata before it allocates; arrays are read only when asked, against
the caller's dtype and shape. A hostile file gets a :class:`ModelFileError` naming the file and the member or
field, in time linear in its size. :func:`write` is atomic; a killed save leaves one ``.<name>.nncore-tmp``,
which the next save of the target removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import math
import os
import signal
import struct
import threading
import zipfile
import zlib
from collections.abc import Mapping
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
MAX_JSON_DEPTH = 64  # nested objects and lists that write() accepts (read() accepts what json can parse)
MAX_JSON_VALUES = 2**20  # keys and values in the metadata
MAX_NPY_HEADER = 10_000  # bytes; NumPy's own limit for untrusted files

_KINDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats"}
_METHODS = {12: "bzip2", 14: "lzma", 9: "deflate64", 93: "zstandard", 95: "xz", 98: "ppmd"}
_DEFLATE_MAX_RATIO = 1032  # no deflate stream inflates more (RFC 1951: 258 bytes from 2 bits)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, struct.error)


class ModelFileError(ValueError):
    """A model file that cannot be read; the message names the file and the member or field."""


def write(path, metadata, arrays):
    """Write ``metadata`` (JSON-able dict) and ``arrays`` (name -> numeric, finite ``numpy.ndarray``) to ``path``.

    Atomic; ``.npz`` appended when missing; returns the path; an existing target keeps its permission bits.
    Raises ``ValueError``/``TypeError`` naming the key path (``metadata['layers'][2]['config']['eta']``) or
    array before writing anything, ``OSError`` (same type and errno) naming the target if writing fails.
    """
    target = npz_path(path)
    _check_finite(metadata, "metadata")
    text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}, allow_nan=False).encode()
    values = _json_values(text)
    if len(text) > MAX_METADATA_BYTES or values > MAX_JSON_VALUES:
        raise ValueError(f"the metadata is {len(text)} bytes of JSON with about {values} keys and values (at most "
                         f"{MAX_METADATA_BYTES} and {MAX_JSON_VALUES}); store large data as arrays")
    members = {METADATA_KEY: np.frombuffer(text, dtype=np.uint8), **_checked_arrays(arrays)}
    try:
        _atomic_write(target, members)
    except OSError as exc:
        message = f"cannot write the model file '{target}': {exc.strerror or exc}"
        raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from exc  # errno picks the subclass
    return target


def npz_path(path):
    """``path`` as a :class:`pathlib.Path`, with ``.npz`` appended when it has another suffix or none."""
    path = Path(os.fspath(path))
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _check_finite(value, where, depth=0):
    """Refuse non-finite floats and nesting that :func:`read` would refuse, naming the key path."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}; only finite numbers can be saved")
    if isinstance(value, (Mapping, list, tuple)) and depth >= MAX_JSON_DEPTH:
        raise ValueError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
    nested = isinstance(value, (list, tuple))
    for key, item in value.items() if isinstance(value, Mapping) else enumerate(value) if nested else ():
        _check_finite(item, f"{where}[{key!r}]", depth + 1)


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
    short = f".{name[:40]}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}.nncore-tmp"
    return candidate if len(os.fsencode(candidate)) <= 255 else short


@contextlib.contextmanager
def _claimed(tmp):
    """Yield ``(fd, tmp)``: a fresh file at ``tmp``, locked by this process, removed on any exception. Only the
    lock holder removes or renames it (a concurrent save waits); a leftover (its lock died with it) goes first."""
    fd, created, owned = None, False, False
    try:
        while not owned:
            with _ctrl_c_held():  # no KeyboardInterrupt between open() and the assignment
                fd, created = _open_temp(tmp)
            owned = _own(fd, tmp, blocking=True)
            if owned and not created:
                os.unlink(tmp)  # a leftover: start afresh, with the default mode
            if not (owned and created):
                owned, (fd, old) = False, (None, fd)
                os.close(old)
        yield fd, tmp
        owned = False  # renamed over the target: no longer ours to remove
    except BaseException:
        if fd is not None and (owned or created and _own(fd, tmp, blocking=False)):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def _open_temp(tmp):
    """``(fd, created)``: ``tmp`` created afresh, or else the file already there (never through a symlink)."""
    flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        with contextlib.suppress(FileExistsError):
            return os.open(tmp, flags | os.O_CREAT | os.O_EXCL, 0o666), True  # the umask decides the mode
        if os.path.islink(tmp):
            os.unlink(tmp)  # a symlink planted at the temporary name is removed, never written through
            continue
        with contextlib.suppress(FileNotFoundError):
            return os.open(tmp, flags | getattr(os, "O_NOFOLLOW", 0)), False


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold a Ctrl-C back until the block is done (a signal mask would not do: a BLAS thread takes the signal
    and Python raises in the main thread, the only one ever to get a ``KeyboardInterrupt``)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(*caught[0])  # now: the caller's clean-up handles it


def _own(fd, path, blocking):
    """Lock ``fd`` exclusively (``False`` if not ``blocking`` and it is held); whether ``path`` is still it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
    with contextlib.suppress(FileNotFoundError):
        here, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
    return False



def read(path):
    """The checked :class:`Archive` of ``path`` (also tried with ``.npz``): a context manager, or :meth:`close` it."""
    path = Path(os.fspath(path))
    if not path.exists() and path.suffix != ".npz" and npz_path(path).exists():
        path = npz_path(path)
    handle = open(path, "rb")
    try:
        return Archive(path, handle)
    except BaseException:
        handle.close()
        raise


class Archive(contextlib.AbstractContextManager):
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
        names = {info.filename.removesuffix(".npy"): info for info in infos}
        if METADATA_KEY not in names or not names[METADATA_KEY].filename.endswith(".npy"):
            shown = ", ".join(repr(name) for name in list(names)[:8]) + (", ..." if len(names) > 8 else "")
            raise ModelFileError(f"{self._label} is an .npz archive but not an nncore model: it has no "
                                 f"{METADATA_KEY!r} entry (it holds {len(names)} "
                                 f"{'entry' if len(names) == 1 else 'entries'}: {shown or 'none'})")
        for name, info in names.items():
            if not info.filename.endswith(".npy"):
                raise self._fail(f"its entry {name!r} is not a NumPy array (.npy); it was left unread")
        self._headers = {}  # name -> (zip info, shape, dtype)
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
            shown = _shown(", ".join(map(repr, extra)), False)
            raise self.error(None, f"it holds {len(extra)} unexpected array(s): {shown}")

    def array(self, name, shape, dtype, *, finite=True, field=None):
        """The array ``name`` as a writable ``numpy.ndarray``, once its header shows exactly ``dtype`` and ``shape``.

        Reads at most the declared bytes; ``finite`` refuses NaN and infinities; ``field`` (e.g. ``"layers[4]
        parameter 'weights'"``) goes into the messages.
        """
        if name not in self._headers:
            raise self.error(field, f"the array {name!r} is missing")
        info, found_shape, found_dtype = self._headers[name]
        dtype, shape = np.dtype(dtype), tuple(int(s) for s in shape)
        if found_dtype != dtype:
            raise self.error(field, f"the array {name!r} has dtype {found_dtype}, expected "
                                    f"{_KINDS.get(dtype.kind, 'values')} ({dtype})")
        if found_shape != shape:
            raise self.error(field, f"the array {name!r} has shape {found_shape}, expected {shape}")
        with self._member(name, info) as stream:  # NumPy reads the (checked) header again, then chunk by chunk
            values = np.lib.format.read_array(stream, allow_pickle=False, max_header_size=MAX_NPY_HEADER)
            stream.read(1)  # at the declared end: zipfile checks the CRC
        if finite and dtype.kind == "f" and not np.isfinite(values).all():
            bad = ~np.isfinite(values)
            first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), shape))
            raise self.error(field, f"the array {name!r} holds {np.count_nonzero(bad)} NaN or infinite value(s) "
                                    f"(the first at index {first}); nncore files hold finite numbers only")
        return values

    def error(self, field, message):
        """A :class:`ModelFileError` naming this file and ``field`` (when given), for the caller to raise."""
        return self._fail(f"{field}: {message}" if field else message)

    def close(self):
        self._zip.close()
        self._handle.close()

    def __exit__(self, *exc_info):
        self.close()

    def _fail(self, message):
        return ModelFileError(f"{self._label} is not a valid nncore model file: {message}")

    def _check_directory(self, infos, file_size):
        """Refuse, from the zip directory alone, what could make reading costly or ambiguous."""
        seen, compressed = set(), 0
        for info in infos:
            name, method = info.filename, info.compress_type
            if name.removesuffix(".npy") in seen:
                raise self._fail(f"it holds the member {name!r} twice; nncore files hold each member once")
            seen.add(name.removesuffix(".npy"))
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
        except ModelFileError:
            raise
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
            (length,) = struct.unpack("<H" if magic[6] == 1 else "<I", magic[8:])
            if length > MAX_NPY_HEADER:
                raise self._fail(f"its entry {name!r} has a .npy header of {length} bytes (at most {MAX_NPY_HEADER})")
            header = _io.BytesIO(magic[8:] + stream.read(length))
        parse = np.lib.format.read_array_header_1_0 if magic[6] == 1 else np.lib.format.read_array_header_2_0
        try:
            shape, _, dtype = parse(header, max_header_size=MAX_NPY_HEADER)
        except Exception as exc:  # NumPy's parser of an untrusted (but bounded) header: any failure is the file's
            raise self._fail(f"its entry {name!r} has a malformed .npy header ({_shown(str(exc), False)})") from None
        if dtype.hasobject:
            raise self._fail(f"its entry {name!r} holds pickled Python objects (an object array); nncore files "
                             "never contain pickle, so it refuses to read it (nothing was unpickled)")
        header_size, data_size = len(magic) + length, math.prod(shape) * dtype.itemsize
        if header_size + data_size != info.file_size:
            raise self._fail(f"its entry {name!r} claims shape {_shown(shape)} of {dtype} ({data_size} bytes) but "
                             f"holds {info.file_size - header_size} bytes of data")
        self._headers[name] = (info, tuple(shape), dtype)
        return self._headers[name]

    def _read_metadata(self, info):
        if info.file_size > MAX_METADATA_BYTES + MAX_NPY_HEADER + 12:
            raise self._fail(f"its metadata member claims {info.file_size} bytes (at most {MAX_METADATA_BYTES})")
        _, shape, dtype = self._read_header(METADATA_KEY, info)
        if dtype != np.uint8 or len(shape) != 1:
            raise self._fail(f"{METADATA_KEY!r} should be UTF-8 JSON bytes (1-D uint8), got dtype {dtype} and "
                             f"shape {shape}")
        metadata = _parse_json(self.array(METADATA_KEY, shape, np.uint8).tobytes(), self._fail)
        del self._headers[METADATA_KEY]
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            raise ModelFileError(f"{self._label} is not an nncore model file: its metadata says format "
                                 f"{_shown(found)}, expected {FORMAT!r}")
        version = metadata.get("format_version")  # the model side checks it further
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ModelFileError(
                f"{self._label} was written by a newer nncore (file format version {version}, saved by nncore "
                f"{_shown(metadata.get('nncore_version', '?'), False)}); this nncore reads format versions up to "
                f"{FORMAT_VERSION}. Upgrade nncore to load it")
        return metadata


def _shown(value, quote=True):
    """``repr(value)`` (or ``str``), cut short: a hostile file must not make a megabyte message."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_magic(head, name):
    """Refuse a file that does not start like a zip archive, saying what it looks like."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut in two at byte 64 is still text
        text = head[:exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""
    kind, what = "an", f"it is not an .npz (zip) archive (it starts with the bytes {head[:8]!r})"
    if not head:
        what = "the file is empty (0 bytes)"
    elif head.startswith(b"\x93NUMPY"):
        what = "it is a single NumPy .npy array, not an .npz archive written by CNN.save"
    elif head[:1] == b"\x80":
        what = "it is a Python pickle; nncore never unpickles anything, so it refuses to read it"
    elif head.startswith(b"PK"):
        kind, what = "a valid", "it starts like a zip archive but the header is damaged"
    elif text and all(c.isprintable() or c.isspace() for c in text):
        what = f"it is a text file (it starts with {text[:30]!r}), not an .npz archive written by CNN.save"
    raise ModelFileError(f"{name} is not {kind} nncore model file: {what}")


def _parse_json(raw, fail):
    """The metadata, once a linear count of its keys and values (some 50-100 bytes each once parsed) allows."""
    values = _json_values(raw)
    if values > MAX_JSON_VALUES:
        raise fail(f"its metadata holds about {values} keys and values (at most {MAX_JSON_VALUES})")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_finite,
                          parse_float=_finite)
    except ModelFileError as exc:  # from the hooks below
        raise fail(f"its metadata {exc}") from None
    except RecursionError:  # json's parser recurses, up to the interpreter's limit, which it checks
        raise fail("its metadata is nested too deeply (more levels than Python's recursion limit)") from None
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise fail(f"its metadata is not valid JSON ({_shown(str(exc), False)})") from None


def _json_values(text):
    """About how many keys and values the JSON ``text`` holds (one ``[{,:`` each; those in strings count too)."""
    return sum(text.count(mark) for mark in b"[{,:")


def _unique_keys(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ModelFileError(f"has the key {_shown(duplicate)} twice in one object")
    return result


def _finite(text):
    """A JSON number (or ``NaN``/``Infinity``, which ``json`` accepts) that must be finite."""
    if not math.isfinite(float(text)):
        raise ModelFileError(f"holds the number {_shown(text, False)}, which is not finite")
    return float(text)
