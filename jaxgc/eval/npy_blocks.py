"""Feature arrays given as ``.npy`` paths, read in row blocks (bounded host memory).

A million 512-d float32 features are 2 GB: loading them whole, then copying them to the device,
holds two copies. Here the file is read block by block with plain ``readinto`` (no memory map,
whose resident pages would count against the process), each block checked (finite) and written
into a preallocated device array by a jitted, donated ``dynamic_update_slice``: peak host memory
is the device array plus a block or two.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["is_path", "npy_shape", "iter_npy_rows", "npy_to_device"]

_BLOCK_ROWS = 8192


def is_path(x: Any) -> bool:
  """True for a ``str`` or ``os.PathLike`` (a feature file), False for an array."""
  return isinstance(x, (str, os.PathLike))


def _header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
  """``(shape, dtype, data offset)`` of a C-order ``.npy`` file (one-line ValueErrors)."""
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = read(f)
      offset = f.tell()
  except FileNotFoundError:
    raise ValueError(f"feature file {path!r} does not exist") from None
  except (OSError, ValueError) as e:
    raise ValueError(f"feature file {path!r} is not a readable .npy file: {e}") from None
  if fortran and len(shape) > 1:
    raise ValueError(f"feature file {path!r} is Fortran-ordered; save it C-ordered")
  if dtype.hasobject:
    raise ValueError(f"feature file {path!r} holds Python objects, not numbers")
  return tuple(shape), dtype, offset


def npy_shape(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
  """``(shape, dtype)`` of a ``.npy`` file, from its header only.

  Raises:
    ValueError: the file is missing, not a ``.npy`` file, Fortran-ordered or holds objects.
  """
  shape, dtype, _ = _header(os.fspath(path))
  return shape, dtype


def iter_npy_rows(path: str | os.PathLike, rows: int = _BLOCK_ROWS
                  ) -> Iterator[tuple[int, np.ndarray]]:
  """Yields ``(start, block)``: consecutive ``[<= rows, d]`` row blocks of a 2-D ``.npy`` file.

  Every block is a new array: JAX may use a host array without copying it (CPU) and runs
  asynchronously, so a reused buffer could be overwritten before a dispatched copy has read it.

  Raises:
    ValueError: as :func:`npy_shape`; the file is not 2-D or is shorter than its header says.
  """
  path = os.fspath(path)
  shape, dtype, offset = _header(path)
  if len(shape) != 2:
    raise ValueError(f"feature file {path!r} must hold a 2-D array [n, d], got shape {shape}")
  n, d = shape
  with open(path, "rb") as f:
    f.seek(offset)
    for start in range(0, n, rows):
      view = np.empty((min(rows, n - start), d), dtype)
      if f.readinto(memoryview(view).cast("B")) != view.nbytes:
        raise ValueError(f"feature file {path!r} is truncated (header says shape {shape})")
      yield start, view


@functools.lru_cache(maxsize=None)
def _writer():
  return jax.jit(lambda buf, blk, start: jax.lax.dynamic_update_slice_in_dim(buf, blk, start, 0),
                 donate_argnums=0)


def npy_to_device(path: str | os.PathLike, n_pad: int, dtype: Any, name: str,
                  rows: int = _BLOCK_ROWS) -> jax.Array:
  """A 2-D ``.npy`` file as one device array ``[n_pad, d]`` of ``dtype``, zero rows appended.

  Args:
    path: the ``.npy`` file, ``[n, d]`` real numbers.
    n_pad: rows of the result, ``>= n``.
    dtype: the result's dtype (the file's values are cast block by block).
    name: the argument name, for the error messages.
    rows: rows per block read.

  Returns:
    ``[n_pad, d]`` ``jax.Array`` on the default device.

  Raises:
    ValueError: as :func:`iter_npy_rows`; a non-numeric dtype; NaN/Inf entries (naming ``name``).
  """
  shape, file_dtype = npy_shape(path)
  if not (np.issubdtype(file_dtype, np.floating) or np.issubdtype(file_dtype, np.integer)):
    raise ValueError(f"{name} must have a real numeric dtype, got {file_dtype}")
  d = shape[1] if len(shape) == 2 else 0
  out = jnp.zeros((n_pad, d), dtype)
  block = jnp.zeros((min(rows, max(shape[0], 1)), d), dtype) if shape and shape[0] else None
  write = _writer()
  for start, blk in iter_npy_rows(path, rows):
    if not np.all(np.isfinite(blk)):
      bad = int(blk.size - np.count_nonzero(np.isfinite(blk)))
      raise ValueError(f"{name} contains {bad} NaN or Inf values (rows from {start})")
    m = blk.shape[0]
    if m == block.shape[0]:
      out = write(out, jnp.asarray(blk, dtype), start)
    else:  # the last, short block: written at its end, overlapping rows already written
      s = max(0, start + m - block.shape[0])
      tail = np.concatenate([np.asarray(out[s:start]), blk.astype(dtype)]) if s < start else blk
      out = write(out, jnp.asarray(tail, dtype), s)
  return out
