"""The parts of a report every job shares: image metrics, model facts, tables, plots, grids.

Each job writes ``report.json``, a readable ``report.md`` and pictures; this module holds what
they have in common, so a number is measured, formatted and drawn the same way everywhere:
:func:`image_metrics` (PSNR / SSIM / max error of outputs against a reference),
:func:`model_facts` (params, MACs, bytes, latency), :func:`fmt` and :func:`table` (markdown),
:func:`pyplot` and :func:`save_figure` (matplotlib, written atomically) and :func:`sample_grid`
(labelled PNG grids of samples).
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageDraw

from jaxgc import stats
from jaxgc._fileio import give_default_mode
from jaxgc.models import registry


def image_metrics(reference: np.ndarray, outputs: np.ndarray) -> dict[str, float | None]:
  """Fidelity of ``outputs`` to ``reference``, both ``[n, h, w, c]`` float in [-1, 1].

  Returns:
    ``psnr_db``: mean over images of the PSNR (dB) with the images mapped to [0, 1], data range
    1; None when the outputs are identical (infinite PSNR). ``ssim``: mean SSIM (Wang et al.
    2004, scikit-image, Gaussian-free 7x7 windows, data range 1, channels averaged).
    ``max_abs_error``: max ``|outputs - reference|`` in the models' [-1, 1] units.
  """
  from skimage.metrics import structural_similarity  # pylint: disable=import-outside-toplevel
  ref = (np.asarray(reference, np.float64) + 1.0) / 2.0
  out = (np.asarray(outputs, np.float64) + 1.0) / 2.0
  mse = np.mean((ref - out) ** 2, axis=(1, 2, 3))
  psnr = None if np.all(mse == 0) else float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-20))))
  win = min(7, ref.shape[1], ref.shape[2])
  win -= 1 - win % 2
  ssim = float(np.mean([structural_similarity(r, o, channel_axis=-1, data_range=1.0,
                                              win_size=win) for r, o in zip(ref, out)]))
  return {"psnr_db": psnr, "ssim": ssim,
          "max_abs_error": float(np.max(np.abs(np.asarray(outputs, np.float64)
                                               - np.asarray(reference, np.float64))))}


def fmt(v: Any, spec: str, none: str = "-") -> str:
  """``format(v, spec)``, or ``none`` for a missing value (``None``).

  ``spec="psnr"`` formats a PSNR in dB with two decimals and writes ``inf`` for ``None`` (the
  outputs were identical).
  """
  if v is None:
    return "inf" if spec == "psnr" else none
  if spec == "psnr":
    return f"{v:.2f}"
  return format(v, spec)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
          ) -> list[str]:
  """Markdown table lines: ``header``, the alignment row, then one line per row.

  Args:
    header: column titles.
    rows: cells (already formatted strings, or anything ``str()`` accepts).
    align: one character per column, ``"l"`` or ``"r"``; default: first column left, the
      others right (numbers).

  Raises:
    ValueError: a row or ``align`` whose length is not the number of columns.
  """
  n = len(header)
  align = align or "l" + "r" * (n - 1)
  if len(align) != n or any(len(r) != n for r in rows):
    raise ValueError(f"a table of {n} columns got align {align!r} and row lengths "
                     f"{sorted({len(r) for r in rows})}")
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return lines


def model_facts(module, variables: Any, example: np.ndarray,
                latency_repeats: int | None = 10) -> dict[str, Any]:
  """The facts a report gives of a model, measured one way for every job.

  Args:
    module: a ``jaxgc.models`` zoo module.
    variables: its variables.
    example: an input batch ``[batch, ...]``; MACs are counted on its first sample, latency is
      timed on the whole batch.
    latency_repeats: jitted forward passes to time (median, at least 1); ``None`` skips the
      latency.

  Returns:
    ``{"arch", "spec", "params", "nonzero_params", "macs", "bytes"[, "latency_s"]}``: the zoo
    name and spec, the number of parameters and of nonzero parameters (``params`` collection),
    the MACs per sample (torchprofile convention, :func:`jaxgc.stats.count_macs`), the bytes of
    every variable in memory, and the median seconds per batch.
  """
  params = variables.get("params", variables)
  facts = {"arch": registry.arch_name(module), "spec": registry.model_spec(module),
           "params": stats.count_params(variables),
           "nonzero_params": int(sum(np.count_nonzero(np.asarray(x))
                                     for x in jax.tree.leaves(params))),
           "macs": stats.count_macs(module, variables, jnp.asarray(example[:1])),
           "bytes": int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(variables)))}
  if latency_repeats is not None:
    facts["latency_s"] = stats.latency(module, variables, example, int(latency_repeats))
  return facts


def pyplot():
  """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed): figures are
  only ever written to files (:func:`save_figure`).

  Raises:
    ImportError: matplotlib is not installed (it is a dependency of jaxgc).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def save_figure(fig, path: str, dpi: int = 110) -> None:
  """Writes a matplotlib figure to ``path`` atomically (temporary file, then rename) and closes
  it; the file gets the user's default permissions."""
  plt = pyplot()
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                             suffix=os.path.splitext(path)[1] or ".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=dpi)
    give_default_mode(tmp)
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.remove(tmp)


def sample_grid(rows: list[tuple[str, np.ndarray]], path: str, cell: int = 128) -> None:
  """Writes a PNG grid: one labelled row per entry, the same inputs in every column.

  Args:
    rows: ``(label, images)`` with images uint8 ``[n, h, w, c]`` (c = 1 or 3).
    path: the PNG to write (atomically: temporary file, then rename).
    cell: the side of each thumbnail in pixels.
  """
  label_w, pad = 210, 2
  n = max(len(imgs) for _, imgs in rows)
  grid = Image.new("RGB", (label_w + n * (cell + pad), len(rows) * (cell + pad)), "white")
  draw = ImageDraw.Draw(grid)
  for i, (label, imgs) in enumerate(rows):
    y = i * (cell + pad)
    for j, line in enumerate(label.split("\n")):
      draw.text((4, y + cell // 2 - 14 + 14 * j), line, fill="black")
    for j, img in enumerate(imgs):
      img = img[..., 0] if img.shape[-1] == 1 else img
      resample = Image.Resampling.NEAREST if img.shape[0] < cell else Image.Resampling.LANCZOS
      thumb = Image.fromarray(img).convert("RGB").resize((cell, cell), resample)
      grid.paste(thumb, (label_w + j * (cell + pad), y))
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".png")
  os.close(fd)
  try:
    grid.save(tmp, format="PNG")
    give_default_mode(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def finite_or_none(x: float) -> float | None:
  """``x``, or ``None`` when it is missing, NaN or infinite (JSON has no NaN)."""
  return None if x is None or not math.isfinite(x) else x
