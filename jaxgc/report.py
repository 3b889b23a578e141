"""What a compressed generator's outputs lost: per-setting metrics, tables and sample grids."""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
from PIL import Image
from PIL import ImageDraw

from jaxgc._fileio import give_default_mode


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


def _fmt(v, spec: str) -> str:
  if v is None:
    return "inf" if spec == "psnr" else "-"
  if spec == "psnr":
    return f"{v:.2f}"
  return format(v, spec)


def markdown(report: dict) -> str:
  """``report.md`` text: model, inputs, and one table row per setting."""
  m, inp = report["model"], report["inputs"]
  lines = [
      f"# jaxgc compress: {m['arch']}",
      "",
      f"- checkpoint: `{m['checkpoint']}`",
      f"- params: {m['params']:,}; MACs per sample: {m['macs'] / 1e9:.3f} G "
      "(torchprofile convention)",
      f"- inputs: {inp['kind']} {inp.get('names', '')} shape {inp['shape']}",
      "- PSNR, SSIM and max abs error compare each setting's outputs with the FP32 model's "
      "outputs on the same inputs (images in [0, 1] for PSNR/SSIM, [-1, 1] for the error). "
      "Sizes are the bytes of the stored checkpoint (int8, or int4 packed two per byte, plus "
      "scales and zero points; unselected leaves stay float32).",
      "",
      "| setting | weight bits | clip | granularity | bytes on disk | size ratio | PSNR (dB) "
      "| SSIM | max abs error |",
      "|---|---:|---|---|---:|---:|---:|---:|---:|",
  ]
  for r in report["rows"]:
    lines.append(
        f"| {r['setting']} | {r['weight_bits']} | {r['clip'] or 'none'} | "
        f"{r['granularity'] or '-'} | {r['bytes_on_disk']:,} | {r['size_ratio']:.3f} | "
        f"{_fmt(r['psnr_db'], 'psnr')} | {r['ssim']:.4f} | {r['max_abs_error']:.4f} |")
  if report["rows"] and "fid" in report["rows"][0]:
    lines += ["", "Distribution metrics against the FP32 model's samples "
              f"({report.get('metrics', {}).get('extractor', '')} features, "
              f"n = {report.get('metrics', {}).get('num_samples', '')}):", "",
              "| setting | FID | KID x 1e3 | precision | recall | density | coverage | LSH P | "
              "LSH R | LSH+kNN P | LSH+kNN R |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
      lines.append(
          f"| {r['setting']} | {r['fid']:.3f} | {1e3 * r['kid_mean']:.3f} | "
          f"{r['precision']:.4f} | {r['recall']:.4f} | {r['density']:.4f} | "
          f"{r['coverage']:.4f} | {r['lsh_precision']:.4f} | {r['lsh_recall']:.4f} | "
          f"{r['lsh_knn_precision']:.4f} | {r['lsh_knn_recall']:.4f} |")
  lines += ["", "![samples](samples.png)", ""]
  return "\n".join(lines)


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
  return None if x is None or not math.isfinite(x) else x
