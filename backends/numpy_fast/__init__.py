"""CPU fast paths for the generic ops in :mod:`nncore.ops`, for NumPy arrays.

:mod:`backends.fast_paths` hands out :data:`FAST_PATHS` for real
``numpy.ndarray`` arguments only, so array_api_strict and CuPy always run the
generic, standard-only code. Each function takes the same arguments as the
generic op it replaces and gives the same numbers: elementwise results are
identical (NaN/inf included, through exact fallbacks where needed); sums and
matrix products may differ by float rounding, because BLAS blocks them
differently. ``tests/test_fast_paths.py`` checks both against ``op.generic``.

Modules, each with its reasons:

* :mod:`.threads`: chunks of samples, opt-in threads (``NNCORE_NUM_THREADS``;
  the same numbers for any count), BLAS thread control, SciPy's ``axpy``;
* :mod:`.buffers`: per-thread scratch arrays, recycled results, memory orders;
* :mod:`.conv`: convolution + activation through channels-last im2col, one BLAS
  product per chunk; :mod:`.conv_one_channel`: the one-channel routes;
* :mod:`.activation`: the fused activations in place;
* :mod:`.pool`: max and average pooling.

How fast each trick is, and how to measure it again: ``benchmarks/FAST_PATHS.md``.
"""

from .buffers import release_memory
from .conv import col2im, conv2d_act_backward, conv2d_act_forward
from .pool import pool2d_backward, pool2d_forward

#: The op name -> function table registered for ``numpy.ndarray`` (:mod:`backends.fast_paths`).
FAST_PATHS = {
    "col2im": col2im,
    "conv2d_act_forward": conv2d_act_forward,
    "conv2d_act_backward": conv2d_act_backward,
    "pool2d_forward": pool2d_forward,
    "pool2d_backward": pool2d_backward,
}

__all__ = ["FAST_PATHS", "release_memory"]
