"""Classic image filtering: 2-D convolution three ways, standard kernels, and
convolution as a matrix product.

Everything here computes on the array namespace of its input (NumPy, CuPy or
any array-API library via :mod:`backends`), so the same code filters an image
on the CPU or on a GPU. The functions mirror the course notes: convolution as
a (doubly block) Toeplitz matrix, the Gaussian and Sobel filters, separable
kernels and convolution by FFT.

All convolutions are *true* convolutions (the kernel is flipped), matching
:func:`scipy.signal.convolve2d`; the CNN layers in :mod:`nncore.layers` use
cross-correlation instead, as deep-learning libraries do.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from backends import backend_of, get_backend, to_numpy

__all__ = ["convolve2d", "gaussian_kernel", "sobel_kernels", "convolution_matrix"]

MODES = ("full", "same", "valid")
METHODS = ("direct", "separable", "fft")


def convolve2d(image, kernel, mode="same", method="direct"):
    """Convolve a 2-D image with a 2-D kernel (true convolution, kernel flipped).

    ``Y[i, j] = sum_{m, n} kernel[m, n] * image[i - m, j - n]``, with zeros
    outside the image. The result equals
    ``scipy.signal.convolve2d(image, kernel, mode)`` (zero fill), up to
    rounding.

    Parameters
    ----------
    image : array of shape (H, W)
        An array of any supported backend, or an array-like (then NumPy). The
        computation runs on the namespace and device of ``image``.
    kernel : array of shape (kh, kw)
        Moved to the backend of ``image`` and cast to its floating dtype.
    mode : {"same", "full", "valid"}, default="same"
        ``"full"``: every overlap, shape ``(H + kh - 1, W + kw - 1)``.
        ``"same"``: shape ``(H, W)``, the part of the full result that starts
        at ``((kh - 1) // 2, (kw - 1) // 2)`` (SciPy's centring, also for
        even-sized kernels). ``"valid"``: only positions that need no zero
        fill, shape ``(|H - kh| + 1, |W - kw| + 1)``; as in SciPy, one of
        ``image`` and ``kernel`` must be at least as large as the other in
        both dimensions (convolution is commutative, so either may be larger).
    method : {"direct", "separable", "fft"}, default="direct"
        ``"direct"``: one shifted slice of the zero-padded image per kernel
        entry, accumulated (``kh * kw`` array operations; the readable
        version). ``"separable"``: for rank-1 kernels ``kernel = outer(col,
        row)``, convolve with the column and then with the row
        (``kh + kw`` operations instead of ``kh * kw``). ``"fft"``: multiply
        the zero-padded discrete Fourier transforms (best for large kernels;
        results differ from the others by rounding only).

    Returns
    -------
    out : array of shape given by ``mode``
        In the namespace and on the device of ``image``, with the image's
        floating dtype (float64 for integer or boolean images): float32 stays
        float32.

    Raises
    ------
    ValueError
        ``image`` or ``kernel`` not 2-D or empty; unknown ``mode`` or
        ``method``; ``"valid"`` with neither array at least as large as the
        other; ``"separable"`` with a kernel of rank > 1.
    TypeError
        Complex or non-numeric data.

    Examples
    --------
    >>> import numpy as np
    >>> from nncore.filters import convolve2d
    >>> convolve2d(np.eye(3), np.array([[1.0, 2.0]]), mode="full")
    array([[1., 2., 0., 0.],
           [0., 1., 2., 0.],
           [0., 0., 1., 2.]])
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes are {', '.join(map(repr, MODES))}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(map(repr, METHODS))}")
    backend = backend_of(image)
    x = _as_float_2d(backend, image, "image")
    k = _as_float_2d(backend, kernel, "kernel", dtype=x.dtype)
    _check_valid_sizes(x.shape, k.shape, mode)
    (r0, oh), (c0, ow) = (_window(n, m, mode) for n, m in zip(x.shape, k.shape))

    if method == "direct":
        return _direct(x, k, (r0, c0), (oh, ow))
    if method == "separable":
        col, row = _rank1_factors(k)
        # The column only mixes rows and the row only mixes columns, so each
        # pass crops its own axis to the requested window.
        rows_done = _direct(x, col, (r0, 0), (oh, x.shape[1]))
        return _direct(rows_done, row, (0, c0), (oh, ow))
    return _fft(backend, x, k, (r0, c0), (oh, ow))


def gaussian_kernel(sigma, size=None, dtype="float64", backend=None):
    """A normalised 2-D Gaussian kernel (a blur filter).

    ``G[i, j] = exp(-((i - c)**2 + (j - c)**2) / (2 * sigma**2)) / Z`` with
    centre ``c = (size - 1) / 2`` and ``Z`` chosen so that the kernel sums to
    1 (so blurring keeps the mean brightness). The kernel is the outer product
    of two 1-D Gaussians, so it is separable (rank 1).

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, > 0.
    size : int, optional
        Side length; default ``2 * ceil(3 * sigma) + 1`` (odd, covers
        +-3 sigma). An even size puts the centre between two pixels.
    dtype : {"float64", "float32"}, default="float64"
    backend : str or Backend, optional
        Where to create the kernel; default NumPy.

    Returns
    -------
    kernel : array of shape (size, size)
    """
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma must be a real number, got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if size is None:
        size = 2 * math.ceil(3 * sigma) + 1
    elif isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    be = get_backend("numpy" if backend is None else backend)
    xp = be.xp
    r = xp.arange(int(size), dtype=be.dtype(dtype), device=be.device) - (size - 1) / 2
    g = xp.exp(-(r**2) / (2 * float(sigma) ** 2))
    g = g / xp.sum(g)
    return g[:, None] * g[None, :]


def sobel_kernels(dtype="float64", backend=None):
    """The 3x3 Sobel derivative kernels ``(gx, gy)``, for :func:`convolve2d`.

    ::

        gx = [[1, 0, -1],        gy = [[ 1,  2,  1],
              [2, 0, -2],              [ 0,  0,  0],
              [1, 0, -1]]              [-1, -2, -1]]

    With true convolution (kernel flipped), ``convolve2d(image, gx)`` is
    positive where the intensity grows with the column index (left to right):
    ``gx`` measures horizontal change, so it detects *vertical* edges.
    ``convolve2d(image, gy)`` is positive where the intensity grows with the
    row index (top to bottom) and detects horizontal edges. On a ramp
    ``image[i, j] = j`` the response to ``gx`` is 8 and to ``gy`` is 0 away
    from the border; the gradient magnitude is ``sqrt(Gx**2 + Gy**2)``.

    Parameters
    ----------
    dtype : {"float64", "float32"}, default="float64"
    backend : str or Backend, optional
        Where to create the kernels; default NumPy.

    Returns
    -------
    gx, gy : arrays of shape (3, 3)
    """
    be = get_backend("numpy" if backend is None else backend)
    gx = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]
    gy = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]
    return be.asarray(gx, dtype=dtype), be.asarray(gy, dtype=dtype)


def convolution_matrix(kernel, input_shape, stride=1, *, mode=None):
    """The dense matrix ``W'`` of a convolution: ``conv(x) == W' @ x.ravel()``.

    Convolution is linear in the input, so it is a matrix product. For a 1-D
    kernel ``W'`` is the Toeplitz matrix of the course notes (each descending
    diagonal constant), for a 2-D kernel a doubly block Toeplitz matrix. Row
    ``o`` holds the flipped kernel laid over the input window that output
    pixel ``o`` (C order) sees. The matrix is for understanding and testing;
    :func:`convolve2d` never builds it.

    Conventions (true convolution, consistent with :func:`convolve2d`):

    - 2-D ``kernel`` (kh, kw), ``input_shape=(H, W)``, default
      ``mode="valid"`` (a convolution without padding, as in a CNN layer)::

          W' @ x.ravel() == convolve2d(x, kernel, mode)[::sv, ::sh].ravel()

    - 1-D ``kernel`` (m,), ``input_shape=(n,)``, default ``mode="full"``:
      the polynomial product of the notes, ``(n + m - 1, n)``::

          W' @ b == np.convolve(kernel, b)      # == np.polymul(kernel, b)

      Other modes are those of the 2-D case with a single row.

    Parameters
    ----------
    kernel : array of shape (m,) or (kh, kw)
        Any backend; the matrix is created in the same namespace and device,
        with the kernel's floating dtype (float64 for integer kernels).
    input_shape : tuple of int
        ``(n,)`` or ``(H, W)``, the same length as ``kernel.ndim``.
    stride : int or tuple of int, default=1
        Keep every ``stride``-th output (per axis for a pair), starting with
        the first.
    mode : {"full", "same", "valid"}, optional
        As in :func:`convolve2d`; default ``"full"`` for 1-D and ``"valid"``
        for 2-D kernels.

    Returns
    -------
    W : array of shape (n_outputs, prod(input_shape))
        ``n_outputs`` is the number of strided outputs,
        ``ceil(out_h / sv) * ceil(out_w / sh)``.

    Examples
    --------
    >>> import numpy as np
    >>> from nncore.filters import convolution_matrix
    >>> convolution_matrix(np.array([1.0, 2.0, 3.0]), (2,))
    array([[1., 0.],
           [2., 1.],
           [3., 2.],
           [0., 3.]])
    """
    backend = backend_of(kernel)
    xp = backend.xp
    k = backend.asarray(kernel)
    if k.ndim not in (1, 2):
        raise ValueError(f"kernel must be 1-D or 2-D, got shape {tuple(k.shape)}")
    k = xp.astype(k, _float_dtype(xp, k.dtype, "kernel"), copy=False)
    if math.prod(k.shape) == 0:
        raise ValueError(f"kernel is empty (shape {tuple(k.shape)})")
    input_shape = _int_tuple(input_shape, "input_shape", k.ndim, minimum=1)
    strides = _int_tuple((stride,) * k.ndim if _is_int(stride) else stride, "stride", k.ndim, minimum=1)
    if mode is None:
        mode = "full" if k.ndim == 1 else "valid"
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes are {', '.join(map(repr, MODES))}")
    if k.ndim == 1:  # a 1-D convolution is a 2-D one with a single row
        k, input_shape, strides = xp.reshape(k, (1, -1)), (1, *input_shape), (1, *strides)
    _check_valid_sizes(input_shape, k.shape, mode)

    (H, W), (kh, kw), (sv, sh) = input_shape, k.shape, strides
    (r0, oh), (c0, ow) = (_window(n, m, mode) for n, m in zip(input_shape, k.shape))
    n_rows, n_cols = (oh - 1) // sv + 1, (ow - 1) // sh + 1
    flipped = xp.flip(k)
    # Lay the kernel out in the frame of the image zero-padded for "full"
    # mode, where every window lies inside, then cut the padding columns off.
    frame = xp.zeros((n_rows, n_cols, H + 2 * (kh - 1), W + 2 * (kw - 1)), dtype=k.dtype, device=backend.device)
    for p in range(n_rows):
        for q in range(n_cols):
            # full[a, b] = sum_{u, v} flipped[u, v] * x[a - kh + 1 + u, b - kw + 1 + v],
            # and x[i, j] sits at frame[..., i + kh - 1, j + kw - 1].
            a, b = r0 + p * sv, c0 + q * sh
            frame[p, q, a : a + kh, b : b + kw] = flipped
    frame = frame[:, :, kh - 1 : kh - 1 + H, kw - 1 : kw - 1 + W]
    return xp.reshape(frame, (n_rows * n_cols, H * W))


# --- helpers -----------------------------------------------------------------


def _direct(x, k, start, shape):
    """The window ``start``, ``shape`` of the full convolution of ``x`` and ``k``."""
    xp = backend_of(x).xp
    if math.prod(x.shape) < math.prod(k.shape):
        # Convolution commutes and the window is in full-result coordinates,
        # which are symmetric in x and k: loop over the smaller array.
        x, k = k, x
    (H, W), (kh, kw), (r0, c0), (oh, ow) = x.shape, k.shape, start, shape
    padded = xp.zeros((H + 2 * (kh - 1), W + 2 * (kw - 1)), dtype=x.dtype, device=x.device)
    padded[kh - 1 : kh - 1 + H, kw - 1 : kw - 1 + W] = x
    out = xp.zeros((oh, ow), dtype=x.dtype, device=x.device)
    for m in range(kh):
        for n in range(kw):
            # full[a, b] += k[m, n] * x[a - m, b - n]; x[i, j] is padded[i + kh - 1, j + kw - 1]
            r, c = r0 + kh - 1 - m, c0 + kw - 1 - n
            out += k[m, n] * padded[r : r + oh, c : c + ow]
    return out


def _rank1_factors(k):
    """Split a rank-1 kernel into a column (kh, 1) and a row (1, kw), k == col * row."""
    host = np.asarray(to_numpy(k), dtype=np.float64)
    singular = np.linalg.svd(host, compute_uv=False)
    # NumPy's matrix_rank tolerance, at the precision the convolution runs in.
    tol = singular[0] * max(host.shape) * backend_of(k).xp.finfo(k.dtype).eps
    rank = int(np.sum(singular > tol))
    if rank > 1:
        raise ValueError(
            f"method='separable' needs a separable (rank-1) kernel, but this "
            f"{host.shape[0]}x{host.shape[1]} kernel is not separable: it has rank {rank}; "
            f"use method='direct' or method='fft'"
        )
    # Pivot on the largest entry: col = k[:, q] and row = k[p, :] / k[p, q]
    # reproduce a rank-1 kernel exactly, without SVD round-off.
    p, q = (int(i) for i in np.unravel_index(np.argmax(np.abs(host)), host.shape))
    col, row = k[:, q : q + 1], k[p : p + 1, :]
    return col, (row / k[p, q] if rank else row)


def _fft(backend, x, k, start, shape):
    xp = backend.xp
    if not hasattr(xp, "fft"):
        raise ValueError(
            f"method='fft' needs the array-API fft extension, which the {backend.name} backend lacks; "
            "use method='direct'"
        )
    full = (x.shape[0] + k.shape[0] - 1, x.shape[1] + k.shape[1] - 1)
    # Zero-padding both to the full size makes the FFT's circular convolution
    # equal to the linear one.
    spectrum = xp.fft.rfftn(x, s=full, axes=(0, 1)) * xp.fft.rfftn(k, s=full, axes=(0, 1))
    y = xp.fft.irfftn(spectrum, s=full, axes=(0, 1))
    (r0, c0), (oh, ow) = start, shape
    return xp.astype(y[r0 : r0 + oh, c0 : c0 + ow], x.dtype, copy=False)


def _window(n, k, mode):
    """``(start, length)`` of the ``mode`` output within the full output, on one axis."""
    if mode == "full":
        return 0, n + k - 1
    if mode == "same":
        return (k - 1) // 2, n
    return min(n, k) - 1, abs(n - k) + 1


def _check_valid_sizes(shape, kshape, mode):
    if mode != "valid":
        return
    if all(n >= k for n, k in zip(shape, kshape)) or all(k >= n for n, k in zip(shape, kshape)):
        return
    raise ValueError(
        f"mode='valid' needs the image {tuple(shape)} or the kernel {tuple(kshape)} to be at least "
        f"as large as the other in every dimension; use mode='same' or 'full'"
    )


def _as_float_2d(backend, a, name, dtype=None):
    xp = backend.xp
    a = backend.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(a.shape)}")
    if math.prod(a.shape) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)})")
    own = _float_dtype(xp, a.dtype, name)
    return xp.astype(a, own if dtype is None else dtype, copy=False)


def _float_dtype(xp, dtype, name):
    """The floating dtype to compute in: the array's own, float64 for integers."""
    if xp.isdtype(dtype, "real floating"):
        return dtype
    if xp.isdtype(dtype, ("integral", "bool")):
        return xp.float64
    raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _int_tuple(values, name, length, minimum):
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {length} integers, got {values!r}") from None
    if len(values) != length or not all(_is_int(v) for v in values):
        raise ValueError(
            f"{name} must be {length} integer(s) to match the kernel's {length} dimension(s), got {values!r}"
        )
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {values!r}")
    return tuple(int(v) for v in values)
