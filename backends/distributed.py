"""Collective operations on the arrays of one backend, across the processes of an MPI communicator.

This is the one place that knows how arrays travel between processes:

* NumPy arrays go through MPI directly, in place (``Bcast``, ``Allreduce``).
* CuPy arrays go through NCCL (``cupy.cuda.nccl``) when every process has it:
  the NCCL communicator is created on first use, its unique id broadcast over
  MPI. Without NCCL (or with ``NNCORE_NCCL=0``) they are staged through host
  memory and MPI.
* Any other backend (array_api_strict) is staged through host memory and MPI.

``comm`` is an ``mpi4py`` communicator, or any object with the same methods
(``Get_rank``, ``Get_size``, ``Bcast``, ``bcast``, ``Allreduce``,
``allreduce``): mpi4py itself is never imported here.

>>> from mpi4py import MPI                       # doctest: +SKIP
>>> moves = Collectives(MPI.COMM_WORLD, get_backend("numpy"))  # doctest: +SKIP
>>> moves.allreduce_sum(gradient)               # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref

import numpy as np

from .core import get_backend

#: The transports :attr:`Collectives.transport` reports.
TRANSPORTS = ("mpi", "mpi-host-staged", "nccl")


class Collectives:
    """Broadcast and sum-all-reduce of ``backend`` arrays over ``comm``.

    Every method is collective: all processes of ``comm`` call it, in the same
    order, with arrays of the same shape and dtype.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or a look-alike
    backend : Backend or str
    """

    def __init__(self, comm, backend):
        self.comm = comm
        self.backend = get_backend(backend)
        self._in_place = _mpi_in_place(comm)
        self._nccl = None  # the NCCL communicator once created; False when NCCL is not used

    @property
    def transport(self) -> str:
        """How device arrays travel: ``"mpi"``, ``"mpi-host-staged"`` or ``"nccl"``.

        Collective on first call for CuPy (it decides, with every process, whether NCCL is used).
        """
        if self.backend.name == "numpy":
            return "mpi"
        return "nccl" if self._nccl_comm() else "mpi-host-staged"

    # ---- device arrays -----------------------------------------------------------------

    def broadcast(self, array, root=0):
        """``array`` of process ``root`` on every process: same shape, dtype and device.

        NumPy's C-contiguous writeable arrays are filled in place and returned;
        other arrays come back as a new array.
        """
        if self.backend.name == "numpy":
            host = np.require(array, requirements=("C", "W"))
            self.comm.Bcast(host, root=root)
            return host
        nccl = self._nccl_comm()
        if nccl:
            out = _contiguous_cupy(array)
            nccl.bcast(out.data.ptr, out.size, _nccl_type(out.dtype), root, _cupy_stream())
            return out
        host = self._host_copy(array)
        self.comm.Bcast(host, root=root)
        return self.backend.asarray(host)

    def allreduce_sum(self, array):
        """The elementwise sum over all processes of the flat 1-D ``array``.

        In place (and ``array`` returned) for NumPy and for CuPy with NCCL; a new
        array on the same device otherwise.
        """
        if getattr(array, "ndim", None) != 1:
            raise ValueError(f"allreduce: expected a flat 1-D array, got shape {tuple(getattr(array, 'shape', ()))}")
        if self.backend.name == "numpy":
            host = np.require(array, requirements=("C", "W"))
            self._allreduce_host(host)
            return host
        nccl = self._nccl_comm()
        if nccl:
            out = _contiguous_cupy(array)
            ptr = out.data.ptr
            nccl.allReduce(ptr, ptr, out.size, _nccl_type(out.dtype), _nccl_module().NCCL_SUM, _cupy_stream())
            return out
        host = self._host_copy(array)
        self._allreduce_host(host)
        return self.backend.asarray(host)

    # ---- host values -------------------------------------------------------------------

    def sum_host(self, values) -> np.ndarray:
        """Elementwise sums over all processes of a few numbers, as a float64 NumPy array (one call)."""
        host = np.array([float(value) for value in values], dtype=np.float64)
        self._allreduce_host(host)
        return host

    def _allreduce_host(self, host):
        """Sum ``host`` (a contiguous NumPy array) over all processes, in place."""
        if self._in_place is not None:
            self.comm.Allreduce(self._in_place, host)
        else:  # a communicator without mpi4py's IN_PLACE sentinel
            total = np.empty_like(host)
            self.comm.Allreduce(host, total)
            host[...] = total

    def _host_copy(self, array) -> np.ndarray:
        # Always a private copy: a view could alias the device array's own buffer (array_api_strict on the CPU).
        return np.array(self.backend.to_numpy(array), order="C", copy=True)

    # ---- NCCL --------------------------------------------------------------------------

    def _nccl_comm(self):
        """The NCCL communicator, created on first use when every process can use NCCL; else ``False``.

        One per (MPI communicator, GPU) for the life of the communicator: ``fit`` makes a new
        :class:`Collectives` per call, and starting NCCL costs far more than a training step.
        """
        if self._nccl is None:
            if self.backend.name != "cupy":
                self._nccl = False
            else:
                self._nccl = _cached_nccl(self.comm, self.backend.device.id)
                if self._nccl is None:
                    self._nccl = self._create_nccl()
                    _NCCL_CACHE.append((weakref.ref(self.comm), self.backend.device.id, self._nccl))
        return self._nccl

    def _create_nccl(self):
        nccl = _nccl_module()
        usable_here = nccl is not None and os.environ.get("NNCORE_NCCL", "1").strip() not in ("0", "false", "no")
        # Decide together: a process that creates an NCCL communicator alone would wait for the others forever.
        if self.comm.allreduce(int(usable_here)) < self.comm.Get_size():
            return False
        unique_id = nccl.get_unique_id() if self.comm.Get_rank() == 0 else None
        unique_id = self.comm.bcast(unique_id, root=0)
        failure = None
        try:
            with self.backend.device:
                communicator = nccl.NcclCommunicator(self.comm.Get_size(), unique_id, self.comm.Get_rank())
        except Exception as exc:  # NcclError, e.g. two processes on one GPU
            failure, communicator = exc, False
        if self.comm.allreduce(int(failure is not None)):
            if self.comm.Get_rank() == 0 or failure is not None:
                warnings.warn(f"NCCL could not start ({failure or 'on another process'}); the gradients go through "
                              "host memory and MPI instead. Give every process its own GPU, e.g. "
                              "backend=get_backend('cupy', local_rank % gpus_per_node)", stacklevel=2)
            return False
        return communicator


# (weak reference to an MPI communicator, GPU number, NCCL communicator or False); mpi4py's
# communicators cannot be dictionary keys (unhashable), and a weak reference lets a freed one go.
_NCCL_CACHE = []


def _cached_nccl(comm, device_id):
    """The NCCL communicator (or False) made before for ``comm`` on GPU ``device_id``; None if none."""
    _NCCL_CACHE[:] = [entry for entry in _NCCL_CACHE if entry[0]() is not None]
    for ref, device, nccl in _NCCL_CACHE:
        if ref() is comm and device == device_id:
            return nccl
    return None


def _mpi_in_place(comm):
    """mpi4py's ``IN_PLACE`` sentinel when ``comm`` is an mpi4py communicator (mpi4py is not imported here)."""
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi.IN_PLACE if mpi is not None and isinstance(comm, mpi.Comm) else None


def _nccl_module():
    """``cupy.cuda.nccl`` when CuPy was built with NCCL, else ``None``."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return None
    return nccl if getattr(nccl, "available", False) else None


def _nccl_type(dtype):
    nccl = _nccl_module()
    name = np.dtype(dtype).name
    types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}
    if name not in types:
        raise ValueError(f"NCCL transfers float32 or float64 arrays here, got {name}")
    return types[name]


def _contiguous_cupy(array):
    import cupy

    return cupy.ascontiguousarray(array)


def _cupy_stream():
    import cupy

    return cupy.cuda.get_current_stream().ptr


__all__ = ["TRANSPORTS", "Collectives"]
