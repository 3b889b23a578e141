"""``jaxgc study``: the precision/recall trade-off of post-training quantization.

Sweeps weight bits x activation bits x clipping (METHODS.md sections 1 and 4; Mordido et al.
2021, Andreev et al. 2021) on one generator. Every setting clips the weights, fake-quantizes
them per output channel, calibrates static activation ranges on its own quantized model
(percentile by default) and fake-quantizes the inputs of every convolution and dense layer;
its samples are judged with ``jaxgc.eval.compare`` against samples of the FP32 model (other
latents) and, when ``real_reference.path`` is set, against real images. Writes ``report.json``,
``report.md`` and ``tradeoff.png`` (precision and recall against weight bits, one line per
clipping level, one panel per activation width) into the workdir, atomically.

A second grid, the seed study's (Andreev, Fritzler and Vetrov 2021, arXiv 2108.13996), crosses
mixed-precision recipes (``recipes``: W8A8, W4A8 with the first and last layers at 8 bits, W4A4;
:mod:`jaxgc.compress.recipes`) with activation calibrations (``calibrations``: min-max,
percentile, MSE, EMA) and post-training quantization vs quantization-aware training (``modes``:
``ptq``, ``qat``; :mod:`jaxgc.train.recipe_qat`). The family's own sensitive layers keep W8A8
(``family_rules``; :data:`jaxgc.compress.FAMILY_RULES`). Its rows get a table of FID, KID,
precision, recall, density and coverage, ``recipes.png`` and one verdict sentence: do W8A8 and
W4A8 keep the FP32 model's quality?

Generators: unconditional ones (latents) and image-to-image ones, run on ``inputs.num_crops``
random crops of scikit-image photos (``inputs``): their reference is the FP32 outputs on the
same crops, their calibration set other crops of the same photos and their QAT data crops of
other photos. The generator comes from the ``model`` block (:mod:`jaxgc.jobs.model_source`: a
checkpoint, a random-init registry model, or a ``jaxgc gan`` teacher) or, as before, from
``checkpoint`` / ``arch``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jaxgc import _signals
from jaxgc import compress
from jaxgc import models
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc import stats
from jaxgc._fileio import atomic_write_text
from jaxgc import train as train_lib
from jaxgc.checkpoint import check_writable_dir
from jaxgc.data import inputs as inputs_lib
from jaxgc.eval import extractors as features_lib
from jaxgc.eval import scoring as eval_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import model_source
from jaxgc.jobs import runs
from jaxgc.train import recipe_qat

FP32_BITS = 32  # "no quantization" in the bits columns


# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = ("report.json", "report.md", "tradeoff.png", "recipes.png")
MODES = ("ptq", "qat")
# A recipe keeps full-precision quality when its precision, recall, density and coverage vs the
# FP32 samples are each at least this fraction of the FP32 row's (FP32 samples of other latents;
# 1.0 for image-to-image, where the FP32 outputs are the reference itself).
KEEP_FRACTION = 0.9


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc study`` understands, with its default."""
  c = ml_collections.ConfigDict()
  c.checkpoint = ""             # generator: .pth, converted or compressed dir (or `model`)
  c.arch = ""
  c.model = model_source.default_config()   # used when `checkpoint` is empty
  # Image-to-image generators: random crops of scikit-image photos (jaxgc.data.inputs).
  c.inputs = ml_collections.ConfigDict()
  c.inputs.photos = inputs_lib.SKIMAGE_PHOTOS       # evaluation and calibration crops
  c.inputs.train_photos = inputs_lib.TRAIN_PHOTOS   # QAT crops (other photos)
  c.inputs.size = 64                                # crop side; a multiple of 4
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
  # The recipe grid (empty: none): recipes x calibrations x modes, after the bits grid above
  # (set weight_bits=() to run the recipe grid alone).
  c.recipes = ()                # w8a8 | w4a8 | w4a4 | a recipe .py file
  c.calibrations = ("",)        # minmax | percentile | mse | ema; "" = the recipe's own
  c.modes = ("ptq",)            # ptq | qat
  c.family_rules = True         # the family's sensitive layers at W8A8 (compress.FAMILY_RULES)
  c.qat = ml_collections.ConfigDict()
  c.qat.steps = 100
  c.qat.batch_size = 8
  c.qat.learning_rate = 1e-4
  c.qat.distill = "l1"          # l1 | mse, to the FP32 outputs
  c.qat.adv_weight = 0.0        # image-to-image: LSGAN weight of an online PatchGAN; 0: none
  c.qat.disc_ndf = 64
  c.qat.disc_layers = 3
  c.real_reference = ml_collections.ConfigDict()
  c.real_reference.path = ""    # e.g. mnist10k/mnist10k_uint8.npz; "" for none
  c.real_reference.limit = 10000
  return c


def recipe_grid_config(**overrides: Any) -> ml_collections.ConfigDict:
  """A user config of the seed study's grid alone: W8A8 / W4A8 / W4A4 x min-max / percentile /
  MSE / EMA x PTQ and QAT, no bits grid and no bit allocation, FID-Inception features;
  ``overrides`` (top-level keys, groups as dicts) on top. The family configs start from it."""
  c = ml_collections.ConfigDict({
      "weight_bits": (), "act_bits": (FP32_BITS,), "clips": ("none",),
      "allocation_budget": 0.0, "recipes": ("w8a8", "w4a8", "w4a4"),
      "calibrations": ("minmax", "percentile", "mse", "ema"), "modes": MODES,
      "calibration_batches": 2, "extractor": "inception"})
  c.update(overrides)
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
  if cfg.checkpoint:
    with cfg.model.unlocked():
      cfg.model.source, cfg.model.checkpoint, cfg.model.arch = "checkpoint", cfg.checkpoint, \
          cfg.arch
  elif not cfg.model.source and not cfg.model.checkpoint:
    raise ValueError("config.checkpoint is empty: name a generator (or fill the model block)")
  model_source.check(cfg.model)
  for b in cfg.weight_bits:
    compress.QuantConfig(int(b))
  for b in cfg.act_bits:
    if b != FP32_BITS:
      compress.ActQuantConfig(int(b))
  for spec in cfg.clips:
    _clip_config(spec)
  with config_lib.checking("recipes"):
    for recipe in cfg.recipes:
      compress.load_recipe(recipe)
  for method in cfg.calibrations:
    if method and method not in compress.activations.METHODS:
      raise ValueError(f"config key 'calibrations': unknown method {method!r}; expected one of "
                       f"{compress.activations.METHODS} or '' (the recipe's own)")
  for mode in cfg.modes:
    if mode not in MODES:
      raise ValueError(f"config key 'modes': unknown mode {mode!r}; expected one of {MODES}")
  if "qat" in cfg.modes and cfg.recipes:
    qat_settings(cfg)
  if cfg.inputs.size < 4 or cfg.inputs.size % 4:
    raise ValueError(f"inputs.size must be a positive multiple of 4, got {cfg.inputs.size}")
  if cfg.num_samples <= cfg.nearest_k or cfg.calibration_batches < 1:
    raise ValueError(f"need num_samples > nearest_k and calibration_batches >= 1, got "
                     f"{cfg.num_samples}, {cfg.calibration_batches}")
  return cfg


def _plot(rows: list[dict], path: str, title: str) -> None:
  rows = [r for r in rows if r["weight_bits"] != "auto" and r.get("status") != runs.FAILED
          and "recipe" not in r]
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


_RECIPE_METRICS = ("precision", "recall", "density", "coverage")


def _plot_recipes(rows: list[dict], path: str, title: str) -> None:
  """``recipes.png``: precision, recall, density and coverage of every recipe row (bars) and
  FID (dots, right axis), the FP32 row's values as dotted lines."""
  fp32 = next((r for r in rows if r["weight_bits"] == FP32_BITS and "recipe" not in r), None)
  sel = [r for r in rows if "recipe" in r and r.get("status") != runs.FAILED]
  plt = report_lib.pyplot()
  fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(sel) + 2), 4.5))
  width = 0.8 / len(_RECIPE_METRICS)
  xs = np.arange(len(sel))
  for i, key in enumerate(_RECIPE_METRICS):
    ax.bar(xs + (i - 1.5) * width, [min(r[key], 1.5) for r in sel], width, color=f"C{i}",
           label=key)
    if fp32 is not None:
      ax.axhline(fp32[key], color=f"C{i}", lw=0.8, ls=":")
  ax.set_xticks(xs, [r["setting"].replace("_", "\n", 1) for r in sel], fontsize=7)
  ax.set_ylabel("vs FP32 samples (dotted: FP32)")
  ax.set_ylim(0, 1.55)
  ax.legend(fontsize=7, loc="upper left", ncol=4)
  ax2 = ax.twinx()
  ax2.plot(xs, [r["fid"] for r in sel], "kD", label="FID")
  ax2.set_ylabel("FID vs FP32 samples (black diamonds)")
  ax2.set_ylim(bottom=0)
  fig.suptitle(title)
  fig.tight_layout()
  report_lib.save_figure(fig, path)


def _keeps(row: dict, fp32: dict) -> bool:
  return all(row[k] >= KEEP_FRACTION * fp32[k] for k in _RECIPE_METRICS)


def verdict(report: dict) -> str:
  """One sentence: do W8A8 and W4A8 keep the FP32 model's quality (Andreev et al. 2021) here?

  A setting keeps it when its precision, recall, density and coverage vs the FP32 samples are
  each at least :data:`KEEP_FRACTION` of the FP32 row's; the sentence quotes the numbers.
  """
  rows = report["rows"]
  fp32 = next((r for r in rows if r["weight_bits"] == FP32_BITS and "recipe" not in r), None)
  parts = []
  for name in ("w8a8", "w4a8"):
    for r in (r for r in rows if r.get("recipe") == name):
      if r.get("status") == runs.FAILED:
        parts.append(f"{r['setting']} fails ({r['reason']})")
        continue
      keeps = _keeps(r, fp32)
      parts.append(
          f"{name.upper()} {r['mode'].upper()} ({r['calibration']}) "
          f"{'keeps' if keeps else 'does not keep'} it (FID {r['fid']:.2f}, KID "
          f"{r['kid_mean']:.4f}, precision {r['precision']:.3f}, recall {r['recall']:.3f}, "
          f"density {r['density']:.3f}, coverage {r['coverage']:.3f})")
  if not parts:
    return "No W8A8 or W4A8 recipe was run."
  base = (f"FP32 vs FP32: FID {fp32['fid']:.2f}, precision {fp32['precision']:.3f}, recall "
          f"{fp32['recall']:.3f}, density {fp32['density']:.3f}, coverage "
          f"{fp32['coverage']:.3f}")
  ok = [("does not keep" not in p and "fails" not in p) for p in parts]
  seed = ("as the seed study says" if all(ok) else
          "unlike the seed study's claim" if not any(ok) else "partly as the seed study says")
  return (f"{report['model']['arch']}: {'; '.join(parts)}; {seed} (keeping = precision, recall, "
          f"density and coverage each >= {KEEP_FRACTION:g} x FP32's; {base}).")


def markdown(report: dict) -> str:
  """``report.md``: protocol, one row per bits setting, then the recipe table and verdict."""
  real = any("real_fid" in r for r in report["rows"])
  i2i = report.get("inputs")
  if i2i:
    sampled = (f"- {i2i['num_crops']} random {i2i['size']}x{i2i['size']} crops of the "
               f"scikit-image photos {', '.join(i2i['photos'])} (seed {report['seed']}; "
               f"{i2i['macs_per_crop'] / 1e9:.2f} GMACs per crop); every setting's outputs vs "
               "the FP32 outputs on the same crops (the FP32 row is the reference itself); "
               f"{report['extractor']} features; k = {report['nearest_k']}")
  else:
    sampled = (f"- {report['num_samples']} samples per setting (seed {report['seed']}) against "
               f"{report['num_samples']} FP32 samples (seed {report['reference_seed']}); "
               f"{report['extractor']} features; k = {report['nearest_k']}")
  lines = [f"# jaxgc study: {report['model']['arch']}", "",
           f"- checkpoint: `{report['model']['checkpoint']}`", sampled]
  rows = [r for r in report["rows"] if "recipe" not in r]
  if len(rows) == 1 and "recipes" in report:   # the recipe grid alone
    return "\n".join(lines + [""] + _recipe_markdown(report, real))
  lines += ["- weights: clipped, then fake-quantized per output channel (symmetric); "
            f"activations: inputs of every conv/dense, static ranges ({report['calibration']})",
            ""]
  head = ("| weight bits | act bits | clip | FID | precision | recall | LSH P | LSH R |"
          + (" real FID | real P | real R |" if real else ""))
  lines += [head, "|" + "---:|" * (head.count("|") - 1)]
  failed = [r for r in rows if r.get("status") == runs.FAILED]
  for r in rows:
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
  if "recipes" in report:
    lines += _recipe_markdown(report, real)
  return "\n".join(lines)


def _recipe_markdown(report: dict, real: bool) -> list[str]:
  rec = report["recipes"]
  rules = ", ".join(f"`{p}` W{w}A{a}" for p, w, a in rec["family_rules"]) or "none"
  lines = ["## Recipes (Andreev et al. 2021): recipe x calibration x PTQ / QAT", "",
           "- W8A8: every layer; W4A8: 4-bit weights, first and last layers W8A8; W4A4: every "
           "layer. Weights per output channel, symmetric; activations per tensor, asymmetric, "
           "static ranges from the calibration named.",
           f"- family rules (first match wins, before the recipe's): {rules}"]
  if "qat" in rec:
    q = rec["qat"]
    adv = (f" + {q['adv_weight']} x LSGAN under a PatchGAN (ndf {q['disc_ndf']}, "
           f"{q['disc_layers']} layers) trained online on FP32 (real) vs QAT (fake) outputs"
           if q["adv_weight"] > 0 and "train_photos" in q else "")
    data = (f"crops of {', '.join(q['train_photos'])}" if "train_photos" in q
            else "N(0, 1) latents")
    lines.append(f"- QAT: {q['steps']} Adam steps (lr {q['learning_rate']}, batch "
                 f"{q['batch_size']}) from the FP32 weights, {q['distill']}(G_q, G_fp32){adv}, "
                 f"on {data}; activation ranges fixed at the PTQ calibration")
  cols = ["setting", "FID", "KID", "precision", "recall", "density", "coverage"]
  if real:
    cols += ["real FID", "real P", "real R"]
  lines += ["", "| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
  fp32 = next(r for r in report["rows"] if r["weight_bits"] == FP32_BITS and "recipe" not in r)
  for r in [dict(fp32, setting="fp32")] + [r for r in report["rows"] if "recipe" in r]:
    if r.get("status") == runs.FAILED:
      lines.append(f"| {r['setting']} | failed |" + " - |" * (len(cols) - 2))
      continue
    vals = [f"{r['fid']:.3f}", f"{r['kid_mean']:.5f}"] + [f"{r[k]:.4f}" for k in _RECIPE_METRICS]
    if real:
      vals += [f"{r['real_fid']:.3f}", f"{r['real_precision']:.4f}", f"{r['real_recall']:.4f}"]
    lines.append(f"| {r['setting']} | " + " | ".join(vals) + " |")
  lines += ["", f"**Verdict.** {report['verdict']}", "", "![recipes](recipes.png)", ""]
  return lines


@runs.locked_workdir("study", OUTPUTS, signature=("report.json", "tradeoff.png"))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Runs the sweep of ``config``; writes report.json, report.md, tradeoff.png (bits grid) and
  recipes.png (recipe grid).

  Raises:
    ValueError, FileNotFoundError, CheckpointError, PermissionError: bad config, checkpoint or
      workdir; nothing is written then.
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  module, variables, ckpt = load_generator(cfg)
  ref_feats, real_feats = reference_features(cfg, module, variables)
  calib = inputs_of(cfg, module, int(cfg.batch_size) * int(cfg.calibration_batches),
                    int(cfg.calibration_seed))
  allocation = allocate(cfg, module, variables, calib) if cfg.allocation_budget else None
  rows = measure_settings(cfg, module, variables, calib, ref_feats, real_feats,
                          None if allocation is None else allocation[0], progress)
  rows += measure_recipes(cfg, module, variables, calib, ref_feats, real_feats, progress)
  return write_report(cfg, module, variables, ckpt, rows, allocation, workdir)


def load_generator(cfg):
  """Stage 1: ``(module, variables, description)`` of an unconditional or image-to-image
  generator (the ``model`` block)."""
  module, variables, desc = model_source.load(cfg.model)
  if module.kind not in ("unconditional", "image_to_image"):
    raise ValueError(f"the study needs an unconditional or image-to-image generator, got "
                     f"{type(module).__name__}")
  return module, variables, desc


def inputs_of(cfg, module, n: int, seed: int, photos=None) -> np.ndarray:
  """``n`` inputs of ``module`` from ``seed``: N(0, 1) latents ``[n, z_dim]``, or random
  ``inputs.size`` crops ``[n, size, size, 3]`` in [-1, 1] of ``photos`` (``inputs.photos``)."""
  if module.kind == "image_to_image":
    return inputs_lib.photo_crops(tuple(photos or cfg.inputs.photos), n, int(cfg.inputs.size),
                                  seed, 0)
  return inputs_lib.latents(n, int(module.z_dim), seed)


def _eval_inputs(cfg, module, reference: bool) -> np.ndarray:
  """The evaluated inputs; image-to-image references are the FP32 outputs on the same crops."""
  seed = cfg.reference_seed if reference and module.kind == "unconditional" else cfg.seed
  return inputs_of(cfg, module, int(cfg.num_samples), int(seed))


def _features_of(cfg, images):
  return features_lib.extract_features(images, cfg.extractor, cfg.resize,
                                       batch_size=int(cfg.batch_size), progress=False)


def reference_features(cfg, module, variables):
  """Stage 2: features of the FP32 model's samples, and of real images when configured."""
  ref = _samples(cfg, module, variables, module.apply, reference=True)
  real_feats = None
  if cfg.real_reference.path:
    real_feats = features_lib.reference_features(
        inputs_lib.resolve_asset(cfg.real_reference.path), cfg.extractor, cfg.resize,
        limit=int(cfg.real_reference.limit), batch_size=int(cfg.batch_size), progress=False)
  return _features_of(cfg, ref), real_feats


def allocate(cfg, module, variables, calib):
  """Stage 3 (optional): the budgeted per-layer bit allocation and its markdown report."""
  apply_fn = jax.jit(module.apply)
  sens = compress.layer_sensitivity(apply_fn, variables, calib, tuple(cfg.allocation_bits),
                                    symmetric=bool(cfg.symmetric), progress=False)
  assignment = compress.allocate_bits(sens, compress.layer_param_counts(variables),
                                      float(cfg.allocation_budget), tuple(cfg.allocation_bits))
  allocation_md = compress.allocation_report(
      apply_fn, variables, calib, sens, assignment, symmetric=bool(cfg.symmetric),
      budget_bits=float(cfg.allocation_budget))
  return assignment, allocation_md


def _samples(cfg, module, v, fn, reference: bool = False):
  """uint8 samples of ``fn(variables, inputs)`` on the evaluated inputs."""
  x = _eval_inputs(cfg, module, reference)
  out = parallel.batched_apply(fn, x, int(cfg.batch_size), progress=False, variables=v)
  return inputs_lib.to_uint8(out)


def _batches(cfg, x):
  bs = int(cfg.batch_size)
  return [x[i:i + bs] for i in range(0, len(x), bs)]


def measure_settings(cfg, module, variables, calib, ref_feats, real_feats, assignment,
                     progress) -> list[dict]:
  """Stage 4: every weight x activation bits x clipping setting (and ``auto``) quantized,
  calibrated, sampled and compared with the FP32 samples (and the real images)."""
  calib_batches = _batches(cfg, calib)
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


def _compare(cfg, ref_feats, real_feats, fake_feats) -> dict:
  row = eval_lib.compare(ref_feats, fake_feats, nearest_k=int(cfg.nearest_k), seed=int(cfg.seed))
  if real_feats is not None:
    vs_real = eval_lib.compare(real_feats, fake_feats, nearest_k=int(cfg.nearest_k),
                               seed=int(cfg.seed))
    row.update({f"real_{k}": v for k, v in vs_real.items()})
  return row


def _measure_setting(cfg, module, variables, calib_batches, ref_feats, real_feats, assignment,
                     wbits, abits, clip) -> dict:
  """One row of the bits grid: the setting quantized, calibrated, sampled and compared.

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
  fn = module.apply
  if abits != FP32_BITS:
    acfg = compress.ActQuantConfig(int(abits))
    calibration = compress.calibrate(module, v, calib_batches, acfg, method=cfg.act_calibration,
                                     percentile=float(cfg.act_percentile))
    fn = lambda vv, b: compress.apply_quantized(module, vv, b, acfg, calibration)  # noqa: E731
  fake_feats = _features_of(cfg, _samples(cfg, module, v, fn))
  return {"weight_bits": wbits if wbits == "auto" else int(wbits), "act_bits": int(abits),
          "clip": clip, **_compare(cfg, ref_feats, real_feats, fake_feats)}


def qat_settings(cfg) -> recipe_qat.QATSettings:
  """The :class:`~jaxgc.train.recipe_qat.QATSettings` of the ``qat`` block.

  Raises:
    ValueError: a bad value (named by the key ``qat``).
  """
  q = cfg.qat
  with config_lib.checking("qat"):
    return recipe_qat.QATSettings(int(q.steps), int(q.batch_size), float(q.learning_rate),
                                  q.distill, float(q.adv_weight), int(q.disc_ndf),
                                  int(q.disc_layers), int(cfg.seed))


def recipe_student(cfg, module, variables, recipe, calib, method: str
                   ) -> recipe_qat.QuantizedGenerator:
  """The PTQ model of ``recipe`` (family rules first when ``family_rules``): weights at the
  rules' bits, activations calibrated on ``calib`` with ``method`` (the recipe's own for "")."""
  rules = (compress.family_rules(module) if cfg.family_rules else ()) + recipe.rules
  first_last = compress.first_last_layers(module, variables, calib[:1])
  bits = compress.resolve_rules(variables, rules, recipe.default_weight_bits,
                                recipe.default_act_bits, first_last)
  assignment = {f"params/{layer}/kernel": wb for layer, (wb, _) in bits.items() if wb is not None}
  act_rules = compress.rules.expand_markers(
      compress.act_rules(rules, recipe.default_act_bits), first_last)
  student = recipe_qat.QuantizedGenerator(module, assignment, recipe.weight_symmetric,
                                          recipe.weight_granularity, recipe.act_config(),
                                          None, act_rules)
  calibration = compress.calibrate(
      module, student.quantize_weights(variables), _batches(cfg, calib), student.act_config,
      method=method or recipe.calibration_method, percentile=float(cfg.act_percentile))
  return dataclasses.replace(student, calibration=calibration)


def measure_recipes(cfg, module, variables, calib, ref_feats, real_feats, progress
                    ) -> list[dict]:
  """Stage 5: every recipe x calibration x mode (PTQ; QAT fine-tuned from it) sampled and
  compared with the FP32 samples (and the real images)."""
  grid = [(r, c) for r in cfg.recipes for c in cfg.calibrations]
  rows = []
  for name, method in tqdm(grid, desc="recipes", disable=not progress, unit="recipe"):
    _signals.check()
    recipe = compress.load_recipe(name)
    calibration = method or recipe.calibration_method
    base = {"recipe": recipe.name, "calibration": calibration,
            "weight_bits": recipe.default_weight_bits or FP32_BITS,
            "act_bits": recipe.default_act_bits or FP32_BITS, "clip": "none"}
    student = None
    for mode in cfg.modes:
      row = {**base, "mode": mode, "setting": f"{mode}_{recipe.name}_{calibration}"}
      try:
        student = student or recipe_student(cfg, module, variables, recipe, calib, method)
        v = variables
        if mode == "qat":
          v = recipe_qat.train(student, variables, _qat_batches(cfg, module), qat_settings(cfg))
        fake_feats = _features_of(cfg, _samples(cfg, module, v, student.apply))
        rows.append({**row, **_compare(cfg, ref_feats, real_feats, fake_feats)})
      except FloatingPointError as e:
        rows.append(runs.failed_row(row, e))
  return rows


def _qat_batches(cfg, module):
  bs, seed = int(cfg.qat.batch_size), int(cfg.seed)
  if module.kind == "image_to_image":
    return lambda s: inputs_lib.photo_crops(tuple(cfg.inputs.train_photos), bs,
                                            int(cfg.inputs.size), seed, s)
  return lambda s: np.asarray(train_lib.sample_latents(jax.random.key(seed), s, bs,
                                                       int(module.z_dim)))


def write_report(cfg, module, variables, ckpt, rows, allocation, workdir) -> dict:
  """Stage 6: ``report.json``, ``report.md``, ``tradeoff.png`` and ``recipes.png``."""
  bs = int(cfg.batch_size)
  image_to_image = module.kind == "image_to_image"
  report = {"model": {**models.model_spec(module), "checkpoint": ckpt},
            "num_samples": int(cfg.num_samples), "seed": int(cfg.seed),
            "reference_seed": int(cfg.reference_seed),
            "extractor": cfg.extractor, "nearest_k": int(cfg.nearest_k),
            "calibration": f"{cfg.act_calibration}, {int(cfg.calibration_batches)} batches of "
                           f"{bs}",
            "rows": rows}
  if image_to_image:
    report["inputs"] = {"kind": "photo_crops", "photos": list(cfg.inputs.photos),
                        "size": int(cfg.inputs.size), "num_crops": int(cfg.num_samples),
                        "macs_per_crop": stats.count_macs(
                            module, variables, inputs_of(cfg, module, 1, 0))}
  if cfg.recipes:
    report["recipes"] = {"family_rules": [[r.pattern, r.weight_bits, r.act_bits] for r in (
        compress.family_rules(module) if cfg.family_rules else ())]}
    if "qat" in cfg.modes:
      report["recipes"]["qat"] = {k: cfg.qat[k] for k in cfg.qat.keys()}
      if image_to_image:
        report["recipes"]["qat"]["train_photos"] = list(cfg.inputs.train_photos)
    report["verdict"] = verdict(report)
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
  title = report["model"]["arch"]
  _plot(rows, os.path.join(workdir, "tradeoff.png"),
        f"{title}: post-training quantization trade-off")
  if cfg.recipes:
    _plot_recipes(rows, os.path.join(workdir, "recipes.png"), f"{title}: quantization recipes")
  return report
