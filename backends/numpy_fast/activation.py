"""The activations that the fast convolution fuses (identity, ReLU, leaky ReLU), in place.

``np.where`` is not vectorised (benchmarks/FAST_PATHS.md); ``fmax``, ``maximum``
and products with boolean masks are, and give the generic op's numbers.
"""

from __future__ import annotations

import numpy as np

from .buffers import scratch


def activate_into(z, act, slope, out):
    """``out = act(z)`` (``out`` may be ``z``: in place)."""
    if act == "relu":
        # fmax, like where(z > 0, z, 0), maps NaN to 0.
        np.fmax(z, 0, out=out)
    elif act == "lrelu":
        # max(z, slope*z) == where(z > 0, z, slope*z) for 0 < slope < 1 (NaN stays NaN in both).
        scaled = scratch("scaled", z.shape, z.dtype)
        np.multiply(z, z.dtype.type(slope), out=scaled)
        np.maximum(z, scaled, out=out)
    elif out is not z:
        np.copyto(out, z)


def activation_grad(delta, out, act, slope, dz):
    """``dL/dz`` into the ``(m, oh, ow, f)`` array ``dz`` from ``delta`` (``(m, f, oh, ow)``).

    The same numbers as the generic ``delta * derivative`` for finite ``delta``.
    """
    d = delta.transpose(0, 2, 3, 1)
    if act == "relu":
        np.multiply(d, out > 0, out=dz)  # d * (z > 0): the generic d * leaky_relu_derivative(out, 0)
    elif act == "lrelu":
        # where(out > 0, d, d*slope) without where() (slow): d*mask + (d*slope)*(not mask);
        # adding the zero and multiplying by one are exact, so the numbers are the generic ones.
        mask = out > 0
        np.multiply(d, mask, out=dz)
        rest = d * dz.dtype.type(slope)
        rest *= ~mask
        dz += rest
    else:
        np.copyto(dz, d)
    return dz
