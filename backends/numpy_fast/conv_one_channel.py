"""Convolutions of one input channel at stride 1 (the first layer of an image network).

With one or two output maps a product with the columns does few flops per value
it reads, so the im2col route is bound by building the columns. These routes
work on the flat padded images instead (:class:`FlatImages`), where the input
under each kernel offset is one contiguous slice: shifted sums for one map
(:func:`direct_forward`, no columns at all), long contiguous copies for two
(:func:`wide_forward`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import threads
from .activation import activate_into
from .buffers import fresh, scratch


class FlatImages:
    """Padded one-channel images stored flat, for the stride-1 routes of one input channel.

    Each padded ``(hp, wp)`` image is a row of ``length = hp*wp + kw - 1`` values
    (the ``kw - 1`` trailing zeros keep the last window inside the row). In this
    layout the input under kernel offset ``(i, j)`` for ALL outputs of an image is
    ONE contiguous slice starting at ``i*wp + j`` of length ``span = oh*wp``: "wide"
    output rows of ``wp`` values, of which the first ``ow`` are real.
    """

    def __init__(self, g, dtype, training):
        (top, bottom), (left, right) = g.padding
        self.g, self.hp, self.wp = g, g.h + top + bottom, g.w + left + right
        self.length, self.span = self.hp * self.wp + g.kw - 1, g.oh * self.wp
        # Training keeps every padded image for the backward pass; inference pads into scratch.
        self.storage = fresh((g.n, self.length), dtype) if training else None

    def fill(self, x, start, stop):
        """The ``(stop - start, length)`` flat padded images of samples ``start:stop`` of ``x``."""
        size = stop - start
        if self.storage is not None:
            flat = self.storage[start:stop]
        else:
            flat = scratch("flat", (size, self.length), x.dtype)
        (top, _), (left, _) = self.g.padding
        # Zeroing it all and copying the inside is faster than zeroing the border's short runs.
        flat.fill(0)
        images = flat[:, : self.hp * self.wp].reshape(size, self.hp, self.wp)
        images[:, top : top + self.g.h, left : left + self.g.w] = x[start:stop, 0]
        return flat

    def real(self, wide, size, per_image):
        """The ``(size, oh, ow)`` real outputs of ``wide`` values, ``per_image`` apart."""
        item = wide.itemsize
        return as_strided(wide, (size, self.g.oh, self.g.ow), (per_image * item, self.wp * item, item))

    def padded(self):
        """The kept padded input as a ``(n, hp, wp, 1)`` view (the backward pass's ``xpad``), or ``None``."""
        if self.storage is None:
            return None
        return self.storage[:, : self.hp * self.wp].reshape(self.g.n, self.hp, self.wp, 1)


def direct_forward(x, kernel, bias, out, g, act, slope, training):
    """Forward pass for one input channel, one output map and stride 1, as shifted sums.

    With one output map a product with the columns does two flops per value it
    reads, so the im2col routes are bound by building the columns. Here the
    columns are never built: on the flat padded images of a chunk, laid end to
    end (:class:`FlatImages`), the input under kernel offset ``(i, j)`` is one
    contiguous slice, and the wide output is ``sum_ij w_ij * slice_ij`` (the values
    between images are computed and dropped). Each term after the first is one
    BLAS ``axpy`` pass (SciPy's; NumPy needs a product and a sum), then the real
    outputs are kept and get the bias and the activation.
    SciPy's BLAS is held to one thread meanwhile (:func:`.threads.single_threaded_blas`:
    a threaded axpy was slower inside a network, its idle workers spinning
    against NumPy's). SciPy's axpy keeps the GIL, so ``NNCORE_NUM_THREADS`` > 1
    parallelises only the padding, copies and activation of this route.
    Returns the padded input for the backward pass when training, else ``None``.
    """
    flat = FlatImages(g, out.dtype, training)
    taps = [(i * flat.wp + j, kernel[0, 0, i, j]) for i, j, _, _ in g.offsets()]
    axpy = threads.axpy_for(out.dtype)
    step = threads.chunk(g.n, 2 * flat.length * out.dtype.itemsize)  # the images and the sum

    def work(lo, hi):
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            size = stop - start
            images = flat.fill(x, start, stop).reshape(-1)
            count = (size - 1) * flat.length + flat.span  # to the last real output of the chunk
            total = scratch("sum", count, out.dtype)
            offset, weight = taps[0]
            np.multiply(images[offset : offset + count], weight, out=total)
            for offset, weight in taps[1:]:
                if axpy is not None and weight != 0:  # BLAS skips a zero weight: 0 * inf would vanish
                    total = axpy(images, total, n=count, a=weight, offx=offset)  # in place here
                else:
                    total += images[offset : offset + count] * weight
            # Keep the real outputs, then add the bias last (as the generic op: the same
            # inf/NaN when a sum overflows) and activate, in contiguous loops (ufuncs over
            # strided rows of ow values are slow).
            z = out[start:stop, :, :, 0]
            np.copyto(z, flat.real(total, size, flat.length))
            np.add(z, bias[0], out=z)
            activate_into(z, act, slope, z)

    with threads.single_threaded_blas(threads.axpy_libraries if axpy is not None else []):
        threads.run(work, threads.ranges(g.n, step, elements=out.size + x.size))
    return flat.padded()


def wide_forward(x, weights, out, g, act, slope, training):
    """Forward pass for one input channel, two output maps and stride 1, on "wide" rows.

    The columns are the ``kh*kw`` slices of the flat padded images
    (:class:`FlatImages`): long copies instead of ``kh*kw*oh`` short ones. The
    product then computes ``wp`` instead of ``ow`` values per output row; only
    the ``ow`` real ones are copied into ``out``.
    Returns the padded input as a ``(n, hp, wp, 1)`` view (for the backward pass)
    when training, else ``None``.
    """
    flat = FlatImages(g, out.dtype, training)
    wp, span = flat.wp, flat.span
    dtype = out.dtype
    step = threads.chunk(g.n, span * (g.k + 1 + 2 * g.f) * dtype.itemsize)

    def work(lo, hi):
        m = min(step, hi - lo)
        taps = scratch("cols", (g.k + 1) * m * span, dtype)
        wide = scratch("wide", m * span * g.f, dtype)
        for start in range(lo, hi, step):
            stop = min(start + step, hi)
            size = stop - start
            images = flat.fill(x, start, stop)
            cols = taps[: (g.k + 1) * size * span].reshape(g.k + 1, size, span)
            cols[g.k] = 1
            for i, j, _, _ in g.offsets():
                offset = i * wp + j
                cols[i * g.kw + j] = images[:, offset : offset + span]
            z = wide[: size * span * g.f].reshape(size * span, g.f)
            np.matmul(cols.reshape(g.k + 1, size * span).T, weights, out=z)
            # The activation runs on the contiguous wide rows (long loops; the extra columns
            # are discarded), then one copy keeps the ow real columns of each row.
            activate_into(z, act, slope, z)
            np.copyto(out[start:stop], z.reshape(size, g.oh, wp, g.f)[:, :, : g.ow, :])

    threads.run(work, threads.ranges(g.n, step, elements=out.size + x.size))
    return flat.padded()
