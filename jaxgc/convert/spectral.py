"""Spectral normalisation folded into the weights at conversion (SAGAN).

A spectrally normalised layer stores an unnormalised weight ``W`` and two vectors ``u``, ``v``;
its forward divides ``W`` by ``sigma = u . (W v)``, an estimate of the largest singular value of
``W`` viewed as a matrix, after ``power_iterations`` steps ``v = normalize(W^T u)``,
``u = normalize(W v)`` on the stored vectors (Miyato et al. 2018, Algorithm 1). The layouts
(``jaxgc.convert.mapping.SPECTRAL_LAYOUTS``) say how many steps the first forward after loading
runs, how the weight becomes a matrix and how ``normalize`` guards against zero.
"""

from __future__ import annotations

import numpy as np

from jaxgc.convert.mapping import SpectralLayout
from jaxgc.convert.torch_io import CheckpointError


def weight_matrix(w: np.ndarray, transpose: bool, layout: SpectralLayout) -> np.ndarray:
  """The matrix a PyTorch weight is normalised as.

  Args:
    w: PyTorch weight: ``Conv2d`` ``[out, in, kh, kw]``, ``ConvTranspose2d`` ``[in, out, kh,
      kw]``.
    transpose: ``w`` belongs to a ``ConvTranspose2d``.
    layout: its ``SPECTRAL_LAYOUTS`` row.

  Returns:
    ``[rows, columns]``: the rows run along ``out`` for a ``Conv2d``, along
    ``layout.transpose_rows`` for a ``ConvTranspose2d``; columns in PyTorch's memory order.
  """
  if transpose and layout.transpose_rows == "out":
    w = np.swapaxes(w, 0, 1)
  return w.reshape(w.shape[0], -1)


def _normalize(x: np.ndarray, layout: SpectralLayout) -> np.ndarray:
  norm = np.linalg.norm(x)
  return x / (norm + layout.eps if layout.eps_mode == "add" else max(norm, layout.eps))


def power_iteration(mat: np.ndarray, u: np.ndarray, v: np.ndarray, layout: SpectralLayout,
                    iterations: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
  """The vectors and ``sigma`` of the first forward call after loading.

  Args:
    mat: ``[rows, columns]`` (``weight_matrix``), float.
    u: ``[rows]`` stored vector.
    v: ``[columns]`` stored vector.
    layout: the ``SPECTRAL_LAYOUTS`` row (epsilon and its use, default iteration count).
    iterations: power iterations (>= 0); None: ``layout.power_iterations``.

  Returns:
    ``(u, v, sigma)``: updated vectors (float64) and ``sigma = u . (mat v)`` (float).
  """
  mat = np.asarray(mat, np.float64)
  u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
  for _ in range(layout.power_iterations if iterations is None else iterations):
    v = _normalize(mat.T @ u, layout)
    u = _normalize(mat @ v, layout)
  return u, v, float(u @ (mat @ v))


def fold(sd: dict[str, np.ndarray], layers: list[tuple[str, str, bool]],
         layout: SpectralLayout, source: str = "state_dict"
         ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Replaces each spectrally normalised layer's weight by ``weight / sigma`` and its vectors
  by those after the first forward call.

  Args:
    sd: the state_dict (keys and shapes already checked), numpy arrays.
    layers: ``(name, module prefix, transposed)`` per layer
      (``mapping.sagan_spectral_layers``).
    layout: the ``SPECTRAL_LAYOUTS`` row of ``sd``'s keys.
    source: how to name ``sd`` in errors.

  Returns:
    ``(new state_dict, {name: sigma})``: same keys and shapes, float32; ``sd`` is not changed.

  Raises:
    CheckpointError: a ``sigma`` that is not finite and positive (a zero or degenerate weight),
      naming the key.
  """
  out = dict(sd)
  sigmas = {}
  for name, m, transpose in layers:
    wk, uk, vk = f"{m}.{layout.weight}", f"{m}.{layout.u}", f"{m}.{layout.v}"
    w = np.asarray(sd[wk], np.float64)
    u, v, sigma = power_iteration(weight_matrix(w, transpose, layout), sd[uk], sd[vk], layout)
    if not np.isfinite(sigma) or sigma <= 0:
      raise CheckpointError(f"{source}: spectral norm estimate of {wk} is {sigma!r}, not a "
                            "positive number: cannot fold it into the weight")
    out[wk] = (w / sigma).astype(np.float32)
    out[uk], out[vk] = u.astype(np.float32), v.astype(np.float32)
    sigmas[name] = sigma
  return out, sigmas
