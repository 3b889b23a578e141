"""``jaxgc study``: the precision/recall trade-off of post-training quantization.

Sweeps weight bits x activation bits x clipping (METHODS.md sections 1 and 4; Mordido et al.
2021, Andreev et al. 2021) on one generator. Every setting clips the weights, fake-quantizes
them per output channel, calibrates static activation ranges on its own quantized model
(percentile by default) and fake-quantizes the inputs of every convolution and dense layer;
its samples are judged with ``jaxgc.eval.compare`` against samples of the FP32 model (other
latents) and, when ``real_reference.path`` is set, against real images. Writes ``report.json``,
``report.md`` and ``tradeoff.png`` (precision and recall against weight bits, one line per
clipping level, one panel per activation width) into the workdir, atomically.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from tqdm.auto import tqdm

from jaxgc import _signals
from jaxgc import compress
from jaxgc import models
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc._fileio import atomic_write_text
from jaxgc.checkpoint import check_writable_dir
from jaxgc.checkpoint import load_any_model
from jaxgc.data import inputs as inputs_lib
from jaxgc.eval import extractors as features_lib
from jaxgc.eval import scoring as eval_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs

FP32_BITS = 32  # "no quantization" in the bits columns


# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = ("report.json", "report.md", "tradeoff.png")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc study`` understands, with its default."""
  c = ml_collections.ConfigDict()
  c.checkpoint = ""             # unconditional generator: .pth, converted or compressed dir
  c.arch = ""
  c.weight_bits = (8, 6, 4, 3, 2)
  c.act_bits = (FP32_BITS, 8)   # 32: activations left in float32
  c.clips = ("none", "percentile:99.9", "std:3")   # mode:value, per output channel
  c.symmetric = True
  c.act_calibration = "percentile"                 # minmax | percentile | mse | ema
  c.act_percentile = 99.99
  c.calibration_batches = 4
  c.num_samples = 1000
  c.seed = 0                    # latents of every evaluated setting
  c.reference_seed = 1          # latents of the FP32 reference samples
  c.calibration_seed = 2        # latents of the calibration set
  c.extractor = "inception"
  c.resize = "clean"
  c.nearest_k = 5
  c.batch_size = 100
  # Automatic per-layer bit allocation at this average weight-bit budget (0 disables): one
  # more row, "auto", with float32 activations, to compare with uniform bits of that budget.
  c.allocation_budget = 4.0
  c.allocation_bits = (2, 3, 4, 5, 6, 8)
  c.real_reference = ml_collections.ConfigDict()
  c.real_reference.path = ""    # e.g. mnist10k/mnist10k_uint8.npz; "" for none
  c.real_reference.limit = 10000
  return c


def _clip_config(spec: str) -> compress.ClipConfig | None:
  if spec == "none":
    return None
  mode, sep, value = spec.partition(":")
  if not sep:
    raise ValueError(f"clip must be 'none' or 'mode:value' (e.g. 'percentile:99.9'), got {spec!r}")
  return compress.ClipConfig(mode, float(value), "per_channel")


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user``, validated (bits, clips, sizes) before any work."""
  cfg = config_lib.merge(default_config(), user)
  if not cfg.checkpoint:
    raise ValueError("config.checkpoint is empty: name an unconditional generator")
  for b in cfg.weight_bits:
    compress.QuantConfig(int(b))
  for b in cfg.act_bits:
    if b != FP32_BITS:
      compress.ActQuantConfig(int(b))
  for spec in cfg.clips:
    _clip_config(spec)
  if cfg.num_samples <= cfg.nearest_k or cfg.calibration_batches < 1:
    raise ValueError(f"need num_samples > nearest_k and calibration_batches >= 1, got "
                     f"{cfg.num_samples}, {cfg.calibration_batches}")
  return cfg


def _plot(rows: list[dict], path: str, title: str) -> None:
  rows = [r for r in rows if r["weight_bits"] != "auto" and r.get("status") != runs.FAILED]
  plt = report_lib.pyplot()
  acts = sorted({r["act_bits"] for r in rows if r["weight_bits"] != FP32_BITS},
                reverse=True) or [FP32_BITS]
  clips = list(dict.fromkeys(r["clip"] for r in rows if r["weight_bits"] != FP32_BITS))
  fp32 = next((r for r in rows if r["weight_bits"] == FP32_BITS), None)
  fig, axes = plt.subplots(1, len(acts), figsize=(5.5 * len(acts), 4.2), squeeze=False)
  for ax, a in zip(axes[0], acts):
    for i, clip in enumerate(clips):
      sel = sorted((r for r in rows if r["act_bits"] == a and r["clip"] == clip
                    and r["weight_bits"] != FP32_BITS), key=lambda r: r["weight_bits"])
      bits = [r["weight_bits"] for r in sel]
      color = f"C{i}"
      ax.plot(bits, [r["precision"] for r in sel], "-o", color=color, label=f"precision, {clip}")
      ax.plot(bits, [r["recall"] for r in sel], "--s", color=color, label=f"recall, {clip}")
    if fp32 is not None:
      ax.axhline(fp32["precision"], color="gray", lw=0.8, ls=":",
                 label="FP32 precision/recall")
      ax.axhline(fp32["recall"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel("weight bits")
    ax.set_ylabel("k-NN precision / recall vs FP32 samples")
    ax.set_title(f"activations: {'float32' if a == FP32_BITS else f'{a} bits'}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="lower right")
  fig.suptitle(title)
  fig.tight_layout()
  report_lib.save_figure(fig, path)


def markdown(report: dict) -> str:
  """``report.md``: protocol, then one row per setting."""
  real = any("real_fid" in r for r in report["rows"])
  lines = [f"# jaxgc study: {report['model']['arch']}", "",
           f"- checkpoint: `{report['model']['checkpoint']}`",
           f"- {report['num_samples']} samples per setting (seed {report['seed']}) against "
           f"{report['num_samples']} FP32 samples (seed {report['reference_seed']}); "
           f"{report['extractor']} features; k = {report['nearest_k']}",
           "- weights: clipped, then fake-quantized per output channel (symmetric); "
           f"activations: inputs of every conv/dense, static ranges ({report['calibration']})",
           ""]
  head = ("| weight bits | act bits | clip | FID | precision | recall | LSH P | LSH R |"
          + (" real FID | real P | real R |" if real else ""))
  lines += [head, "|" + "---:|" * (head.count("|") - 1)]
  failed = [r for r in report["rows"] if r.get("status") == runs.FAILED]
  for r in report["rows"]:
    if r in failed:
      lines.append(f"| {r['weight_bits']} | {r['act_bits']} | {r['clip']} | failed |"
                   + " - |" * (head.count("|") - 5))
      continue
    lines.append(
        f"| {r['weight_bits']} | {r['act_bits']} | {r['clip']} | {r['fid']:.3f} | "
        f"{r['precision']:.4f} | {r['recall']:.4f} | {r['lsh_precision']:.4f} | "
        f"{r['lsh_recall']:.4f} |" + (f" {r['real_fid']:.3f} | {r['real_precision']:.4f} | "
                                      f"{r['real_recall']:.4f} |" if real else ""))
  if failed:
    lines += ["", "Failed settings (not measured):", ""]
    lines += [f"- `{r['setting']}`: {r['reason']}" for r in failed]
  lines += ["", "![trade-off](tradeoff.png)", ""]
  return "\n".join(lines)


@runs.locked_workdir("study", OUTPUTS, signature=("report.json", "tradeoff.png"))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Runs the sweep of ``config``; writes report.json, report.md and tradeoff.png.

  Raises:
    ValueError, FileNotFoundError, CheckpointError, PermissionError: bad config, checkpoint or
      workdir; nothing is written then.
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  module, variables, ckpt = load_generator(cfg)
  ref_feats, real_feats = reference_features(cfg, module, variables)
  calib_z = inputs_lib.latents(int(cfg.batch_size) * int(cfg.calibration_batches), module.z_dim,
                               int(cfg.calibration_seed))
  allocation = allocate(cfg, module, variables, calib_z) if cfg.allocation_budget else None
  rows = measure_settings(cfg, module, variables, calib_z, ref_feats, real_feats,
                          None if allocation is None else allocation[0], progress)
  return write_report(cfg, module, variables, ckpt, rows, allocation, workdir)


def load_generator(cfg):
  """Stage 1: ``(module, variables, checkpoint path)`` of an unconditional generator."""
  ckpt = inputs_lib.resolve_asset(cfg.checkpoint) if not os.path.isdir(cfg.checkpoint) \
      else cfg.checkpoint
  module, variables = load_any_model(ckpt, cfg.arch or None)
  if module.kind != "unconditional":
    raise ValueError(f"the study samples latents: it needs an unconditional generator, got "
                     f"{type(module).__name__}")
  return module, variables, ckpt


def _features_of(cfg, images):
  return features_lib.extract_features(images, cfg.extractor, cfg.resize,
                                       batch_size=int(cfg.batch_size), progress=False)


def reference_features(cfg, module, variables):
  """Stage 2: features of the FP32 model's samples, and of real images when configured."""
  ref = eval_lib.generate_images(module, variables, num_samples=int(cfg.num_samples),
                                 seed=int(cfg.reference_seed), batch_size=int(cfg.batch_size),
                                 progress=False)
  real_feats = None
  if cfg.real_reference.path:
    real_feats = features_lib.reference_features(
        inputs_lib.resolve_asset(cfg.real_reference.path), cfg.extractor, cfg.resize,
        limit=int(cfg.real_reference.limit), batch_size=int(cfg.batch_size), progress=False)
  return _features_of(cfg, ref), real_feats


def allocate(cfg, module, variables, calib_z):
  """Stage 3 (optional): the budgeted per-layer bit allocation and its markdown report."""
  apply_fn = jax.jit(module.apply)
  sens = compress.layer_sensitivity(apply_fn, variables, calib_z, tuple(cfg.allocation_bits),
                                    symmetric=bool(cfg.symmetric), progress=False)
  assignment = compress.allocate_bits(sens, compress.layer_param_counts(variables),
                                      float(cfg.allocation_budget), tuple(cfg.allocation_bits))
  allocation_md = compress.allocation_report(
      apply_fn, variables, calib_z, sens, assignment, symmetric=bool(cfg.symmetric),
      budget_bits=float(cfg.allocation_budget))
  return assignment, allocation_md


def _samples(cfg, module, v, act_bits, calibration):
  z = inputs_lib.latents(int(cfg.num_samples), module.z_dim, int(cfg.seed))
  if act_bits == FP32_BITS:
    fn = lambda vv, b: module.apply(vv, b)  # noqa: E731
  else:
    acfg = compress.ActQuantConfig(int(act_bits))
    fn = lambda vv, b: compress.apply_quantized(module, vv, b, acfg, calibration)  # noqa: E731
  out = parallel.batched_apply(fn, z, int(cfg.batch_size), progress=False, variables=v)
  return inputs_lib.to_uint8(out)


def measure_settings(cfg, module, variables, calib_z, ref_feats, real_feats, assignment,
                     progress) -> list[dict]:
  """Stage 4: every weight x activation bits x clipping setting (and ``auto``) quantized,
  calibrated, sampled and compared with the FP32 samples (and the real images)."""
  bs = int(cfg.batch_size)
  calib_batches = [calib_z[i:i + bs] for i in range(0, len(calib_z), bs)]
  grid = [(FP32_BITS, FP32_BITS, "none")] + [
      (w, a, c) for c in cfg.clips for a in cfg.act_bits for w in cfg.weight_bits]
  if assignment is not None:
    grid.append(("auto", FP32_BITS, "none"))
  rows = []
  for wbits, abits, clip in tqdm(grid, desc="study", disable=not progress, unit="setting"):
    _signals.check()
    try:
      rows.append(_measure_setting(cfg, module, variables, calib_batches, ref_feats, real_feats,
                                   assignment, wbits, abits, clip))
    except FloatingPointError as e:   # broken samples: record the setting as failed, go on
      rows.append(runs.failed_row(
          {"setting": f"w{wbits}a{abits}_{clip}",
           "weight_bits": wbits if wbits == "auto" else int(wbits), "act_bits": int(abits),
           "clip": clip}, e))
  return rows


def _measure_setting(cfg, module, variables, calib_batches, ref_feats, real_feats, assignment,
                     wbits, abits, clip) -> dict:
  """One row of the study: the setting quantized, calibrated, sampled and compared.

  Raises:
    FloatingPointError: its samples hold NaN or Inf.
  """
  v = variables
  if wbits == "auto":
    v = compress.apply_allocation(variables, assignment, bool(cfg.symmetric))
  elif wbits != FP32_BITS:
    cc = _clip_config(clip)
    if cc is not None:
      v = compress.clip_weights(v, cc)
    v = compress.fake_quantize(v, compress.QuantConfig(int(wbits), bool(cfg.symmetric),
                                                       "per_channel"))
  calibration = None
  if abits != FP32_BITS:
    calibration = compress.calibrate(module, v, calib_batches,
                                     compress.ActQuantConfig(int(abits)),
                                     method=cfg.act_calibration,
                                     percentile=float(cfg.act_percentile))
  fake_feats = _features_of(cfg, _samples(cfg, module, v, abits, calibration))
  row = {"weight_bits": wbits if wbits == "auto" else int(wbits), "act_bits": int(abits),
         "clip": clip,
         **eval_lib.compare(ref_feats, fake_feats, nearest_k=int(cfg.nearest_k),
                            seed=int(cfg.seed))}
  if real_feats is not None:
    vs_real = eval_lib.compare(real_feats, fake_feats, nearest_k=int(cfg.nearest_k),
                               seed=int(cfg.seed))
    row.update({f"real_{k}": v for k, v in vs_real.items()})
  return row


def write_report(cfg, module, variables, ckpt, rows, allocation, workdir) -> dict:
  """Stage 5: ``report.json``, ``report.md`` and ``tradeoff.png``."""
  bs = int(cfg.batch_size)
  report = {"model": {**models.model_spec(module), "checkpoint": ckpt},
            "num_samples": int(cfg.num_samples), "seed": int(cfg.seed),
            "reference_seed": int(cfg.reference_seed),
            "extractor": cfg.extractor, "nearest_k": int(cfg.nearest_k),
            "calibration": f"{cfg.act_calibration}, {int(cfg.calibration_batches)} batches of "
                           f"{bs}",
            "rows": rows}
  if allocation is not None:
    assignment, _ = allocation
    report["allocation"] = {"budget_bits": float(cfg.allocation_budget),
                            "bits": {k: int(b) for k, b in assignment.items()},
                            "average_bits": compress.average_bits(
                                assignment, compress.layer_param_counts(variables))}
  os.makedirs(workdir, exist_ok=True)
  for name, text in (("report.json", json.dumps(report, indent=2)),
                     ("report.md", markdown(report))):
    if name == "report.md" and allocation is not None:
      text += "\n## Automatic bit allocation (row `auto` above)\n\n" + allocation[1]
    atomic_write_text(os.path.join(workdir, name), text)
  _plot(rows, os.path.join(workdir, "tradeoff.png"),
        f"{report['model']['arch']}: post-training quantization trade-off")
  return report
