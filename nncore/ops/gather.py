"""Sliding windows as ONE gather: the columns of a convolution or pooling, and their adjoint.

:func:`im2col` copies one strided slice per kernel offset (``kh * kw``
operations); here the same columns come from a single ``take`` with a
precomputed index, and the adjoint (col2im) is a gather too: every input pixel
sums the column entries that read it (deterministic, no scatter-add, which the
array API standard lacks). On a GPU each array operation is a kernel launch, so
a 3x3 convolution's columns cost one launch instead of nine.

The indices depend only on the geometry; they are built on the host with NumPy
once per (geometry, backend), moved through ``backends`` and cached (int32 where
they fit; each is about as large as one sample's columns, and the cache keeps
the last 32 geometries).

Columns are ``(n, c * kh * kw, oh * ow)`` with rows ordered ``(c, i, j)``, the
order of ``kernel.reshape(f, c * kh * kw)``. ``padding`` is
``((top, bottom), (left, right))`` of zeros.
"""

import functools

import numpy as np

from backends import backend_of
from backends.geometry import output_hw

from .._array import namespace


def gather_columns(x, kernel_hw, stride_hw, padding, shape=None):
    """Columns of ``x`` ``(n, c, h, w)``, zero padding included, as ``(n, c * kh * kw, oh * ow)``.

    ``shape`` gives another layout of the same values, e.g. ``(n, c, kh * kw, oh * ow)``.
    """
    xp = namespace(x)
    n, c, h, w = x.shape
    index, valid, (oh, ow) = _column_index(backend_of(x), (c, h, w), tuple(kernel_hw), tuple(stride_hw),
                                           _pairs(padding))
    cols = xp.take(xp.reshape(x, (n, c * h * w)), index, axis=1)
    if valid is not None:
        cols = xp.where(valid, cols, 0.0)  # where, not a product: padding stays 0 next to inf or NaN
    return xp.reshape(cols, shape or (n, c * kernel_hw[0] * kernel_hw[1], oh * ow))


def scatter_columns(cols, input_chw, kernel_hw, stride_hw, padding):
    """The adjoint of :func:`gather_columns`: ``(n, c, h, w)`` where each pixel sums the entries that read it."""
    xp = namespace(cols)
    n = cols.shape[0]
    c, h, w = input_chw
    index, valid, readers = _pixel_index(backend_of(cols), tuple(input_chw), tuple(kernel_hw), tuple(stride_hw),
                                         _pairs(padding))
    picked = xp.take(xp.reshape(cols, (n, -1)), index, axis=1)
    if valid is not None:
        picked = xp.where(valid, picked, 0.0)
    return xp.reshape(xp.sum(xp.reshape(picked, (n, c * h * w, readers)), axis=2), (n, c, h, w))


def _pairs(padding):
    return tuple(tuple(int(p) for p in pair) for pair in padding)


@functools.lru_cache(maxsize=32)
def _column_index(backend, chw, kernel_hw, stride_hw, padding):
    """``(index, valid or None, out_hw)``: the flat source pixel of every column entry, on ``backend``."""
    index, valid, out_hw = _host_column_index(chw, kernel_hw, stride_hw, padding)
    return (backend.asarray(_compact(np.where(valid, index, 0))), None if valid.all() else backend.asarray(valid),
            out_hw)


@functools.lru_cache(maxsize=32)
def _pixel_index(backend, chw, kernel_hw, stride_hw, padding):
    """``(index, valid or None, readers)``: for each pixel, the column entries that read it (padded to ``readers``)."""
    source, valid, _ = _host_column_index(chw, kernel_hw, stride_hw, padding)
    entries = np.flatnonzero(valid)  # column entries that read a real pixel ...
    pixels = source[entries]  # ... and the pixel each reads
    order = np.argsort(pixels, kind="stable")  # grouped by pixel, entries in increasing order within a group
    entries, pixels = entries[order], pixels[order]
    count = np.bincount(pixels, minlength=int(np.prod(chw)))
    readers = max(int(count.max(initial=0)), 1)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    table = np.zeros((len(count), readers), dtype=np.int64)
    filled = np.zeros((len(count), readers), dtype=bool)
    slot = np.arange(len(entries)) - first[pixels]
    table[pixels, slot], filled[pixels, slot] = entries, True
    return (backend.asarray(_compact(table.reshape(-1))),
            None if filled.all() else backend.asarray(filled.reshape(-1)), readers)


def _compact(index):
    """``index`` as int32 when its values fit (half the memory of int64 on the device)."""
    return index.astype(np.int32) if index.size and index.max() < 2**31 else index


def _host_column_index(chw, kernel_hw, stride_hw, padding):
    """NumPy ``(source, valid, out_hw)`` with shape ``(c * kh * kw * oh * ow,)`` in column order."""
    c, h, w = chw
    (kh, kw), (sh, sw), ((top, _), (left, _)) = kernel_hw, stride_hw, padding
    oh, ow = output_hw((h, w), kernel_hw, stride_hw, padding)
    rows = np.arange(kh)[:, None] + sh * np.arange(oh)[None, :] - top  # (kh, oh): input row of offset i, output y
    cols = np.arange(kw)[:, None] + sw * np.arange(ow)[None, :] - left  # (kw, ow)
    r = rows[None, :, None, :, None]
    q = cols[None, None, :, None, :]
    channel = np.arange(c)[:, None, None, None, None]
    source = channel * (h * w) + r * w + q  # (c, kh, kw, oh, ow)
    valid = (r >= 0) & (r < h) & (q >= 0) & (q < w) & (channel >= 0)
    return source.reshape(-1), valid.reshape(-1), (oh, ow)
