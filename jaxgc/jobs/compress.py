"""``jaxgc compress``: convert a PyTorch GAN, sweep post-training compression, report the cost.

The sweep (METHODS.md sections 1 and 4; Mordido et al. 2021, Andreev et al. 2021): FP32, then
for every weight bit width x clipping (off / on) x granularity (per tensor / per channel), the
weights are clipped, fake-quantized (round to nearest, straight-through estimator) and stored
for real (int8, or int4 packed two per byte). Each setting's outputs are compared with the FP32
outputs on the same inputs.

Outputs in the workdir: ``report.json``, ``report.md``, ``samples.png``, and
``checkpoints/<setting>/{spec.json, weights.npz}``. Everything is written to a staging folder
inside the workdir and moved into place only when the whole job has succeeded, so a failure
leaves the workdir as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jaxgc import _signals
from jaxgc import compress
from jaxgc import convert
from jaxgc import models
from jaxgc import ownership
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc import stats
from jaxgc.checkpoint import check_replaceable
from jaxgc.checkpoint import check_writable_dir
from jaxgc.data import inputs as inputs_lib
from jaxgc.eval import scoring as eval_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs

GRANULARITIES = ("per_tensor", "per_channel")


# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = ("checkpoints", "report.json", "report.md", "samples.png")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc compress`` understands, with its default. Configs override these."""
  c = ml_collections.ConfigDict()
  c.checkpoint = ""           # .pth file: absolute, or relative to $JAXGC_ASSETS.
  c.arch = ""                 # a jaxgc.models.ARCHS name; "" infers it from the keys.
  c.inputs = ml_collections.ConfigDict()
  c.inputs.names = inputs_lib.SKIMAGE_PHOTOS   # image-to-image: scikit-image photos,
  c.inputs.size = 256                          # resized to size x size;
  c.inputs.num_samples = 8                     # unconditional: this many latents
  c.inputs.seed = 0                            # drawn from N(0, 1) with this seed.
  c.sweep = ml_collections.ConfigDict()
  c.sweep.weight_bits = (8, 6, 4, 3, 2)        # each in 2..8
  c.sweep.granularities = GRANULARITIES
  c.sweep.clip = (False, True)                 # without and with clipping
  c.sweep.symmetric = True                     # symmetric (zero point 0) or asymmetric
  # Mixed-precision recipes, one row each after the sweep: shipped names (w8a8, w4a8, w4a4;
  # jaxgc.compress.known_recipes()) or .py files. Weights and calibrated activations get the
  # bits of the recipe's rules (first match wins; '@first'/'@last' = the first/last layer).
  c.sweep.recipes = ()
  c.clip = ml_collections.ConfigDict()
  c.clip.mode = "percentile"                   # absolute | percentile | std
  c.clip.value = 99.9
  c.include = compress.DEFAULT_INCLUDE         # regex on parameter paths: what is compressed
  c.exclude = ""                               # regex of paths to leave alone; "" for none
  # Calibrated activation fake quantization of every conv/dense input (0 bits: off; the
  # distribution metrics above judge the weight quantization only). Each
  # setting calibrates static ranges on its own quantized weights, over the job's inputs
  # (image-to-image) or `calibration_samples` latents from seed inputs.seed + 2, and stores
  # them as checkpoints/<setting>/calibration.json (jaxgc.compress.load_calibration).
  c.activations = ml_collections.ConfigDict()
  c.activations.bits = 0
  c.activations.method = "percentile"          # minmax | percentile | mse | ema
  c.activations.percentile = 99.99
  c.activations.symmetric = False
  c.activations.calibration_samples = 64
  c.batch_size = 4
  c.sample_cell = 128                          # thumbnail side in samples.png
  # Optional distribution metrics per row (jaxgc.eval.compare): FID, KID, precision, recall,
  # density, coverage, LSH precision/recall of each setting's samples against samples of the
  # FP32 model (unconditional: latents from metrics.seed vs metrics.reference_seed;
  # image-to-image: outputs on the same inputs, so it needs > nearest_k inputs).
  c.metrics = ml_collections.ConfigDict()
  c.metrics.enabled = False
  c.metrics.extractor = "inception"            # inception | lenet5 | pixels
  c.metrics.resize = "clean"
  c.metrics.num_samples = 1000
  c.metrics.seed = 0
  c.metrics.reference_seed = 1
  c.metrics.nearest_k = 5
  c.metrics.batch_size = 50
  return c


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user``, validated before anything is read or written.

  Raises:
    ValueError: an unknown key, bits outside 2..8, an unknown granularity or clip setting, or
      no checkpoint.
  """
  cfg = config_lib.merge(default_config(), user)
  if not cfg.checkpoint:
    raise ValueError("config.checkpoint is empty: name a PyTorch checkpoint")
  with config_lib.checking("sweep.weight_bits"):
    for bits in cfg.sweep.weight_bits:
      compress.QuantConfig(int(bits), bool(cfg.sweep.symmetric), "per_channel")
      if bits != int(bits):
        raise ValueError(f"weight bits must be integers in 2..8, got {bits!r}")
  with config_lib.checking("sweep.granularities"):
    for g in cfg.sweep.granularities:
      compress.QuantConfig(8, True, g)
  if True in tuple(cfg.sweep.clip):
    with config_lib.checking("clip"):
      compress.ClipConfig(cfg.clip.mode, float(cfg.clip.value), "per_tensor")
  with config_lib.checking("sweep.recipes"):
    for recipe in cfg.sweep.recipes:
      compress.load_recipe(recipe)
  if cfg.inputs.num_samples < 1 or cfg.inputs.size < 4 or cfg.inputs.size % 4:
    raise ValueError(f"inputs need num_samples >= 1 and a size that is a positive multiple of 4, "
                     f"got num_samples={cfg.inputs.num_samples}, size={cfg.inputs.size}")
  if not cfg.inputs.names:
    raise ValueError("inputs.names is empty: name at least one scikit-image photo")
  if cfg.metrics.enabled and cfg.metrics.extractor not in ("inception", "lenet5", "pixels"):
    raise ValueError(f"unknown metrics.extractor {cfg.metrics.extractor!r}; expected "
                     "inception, lenet5 or pixels")
  if cfg.activations.bits:
    with config_lib.checking("activations.bits"):
      compress.ActQuantConfig(int(cfg.activations.bits), bool(cfg.activations.symmetric))
  if int(cfg.batch_size) < 1:
    raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
  if cfg.arch and cfg.arch not in models.ARCHS:
    raise ValueError(f"unknown arch {cfg.arch!r}; expected one of {', '.join(models.ARCHS)}")
  return cfg


def settings(cfg) -> list[dict[str, Any]]:
  """The sweep's rows: FP32 first, then bits x clip x granularity."""
  rows = [{"setting": "fp32", "weight_bits": 32, "act_bits": 32, "clip": None,
           "granularity": None}]
  for bits in cfg.sweep.weight_bits:
    for clip in cfg.sweep.clip:
      for g in cfg.sweep.granularities:
        clip_desc = f"{cfg.clip.mode}:{cfg.clip.value:g}" if clip else None
        abits = int(cfg.activations.bits) or 32
        name = (f"w{int(bits)}_{g}" + ("_clip" if clip else "")
                + (f"_a{abits}" if abits != 32 else ""))
        rows.append({"setting": name, "weight_bits": int(bits), "act_bits": abits,
                     "clip": clip_desc,
                     "granularity": g})
  for path_or_name in cfg.sweep.recipes:
    r = compress.load_recipe(path_or_name)
    rows.append({"setting": f"recipe_{r.name}", "weight_bits": r.default_weight_bits or 32,
                 "act_bits": r.default_act_bits or 32, "clip": None,
                 "granularity": r.weight_granularity, "recipe": str(path_or_name)})
  return rows


def recipe_setting(module, variables, recipe, x: np.ndarray, calib_batches, batch_size: int):
  """One recipe's row: weights fake-quantized and stored at the bits of the recipe's rules,
  activations calibrated on ``calib_batches`` and quantized per the rules.

  Returns:
    ``(fake-quantized variables, stored tree, outputs on x, calibration)``.
  """
  first_last = compress.first_last_layers(module, variables, x[:1])
  bits = compress.resolve_rules(variables, recipe.rules, recipe.default_weight_bits,
                                recipe.default_act_bits, first_last)
  assignment = {f"params/{layer}/kernel": wb for layer, (wb, _) in bits.items() if wb is not None}
  fq = compress.apply_allocation(variables, assignment, recipe.weight_symmetric,
                                 recipe.weight_granularity)
  stored = compress.quantize_allocation(variables, assignment, recipe.weight_symmetric,
                                        recipe.weight_granularity)
  act_cfg = recipe.act_config()
  calibration = compress.calibrate(module, fq, calib_batches, act_cfg,
                                   method=recipe.calibration_method)
  act_rules = compress.act_rules(recipe.rules, recipe.default_act_bits)
  out = _run_model(lambda v, b: compress.apply_quantized(module, v, b, act_cfg, calibration,
                                                         rules=act_rules), fq, x, batch_size)
  return fq, stored, out, calibration


def _run_model(apply_fn, variables, x: np.ndarray, batch_size: int) -> np.ndarray:
  return parallel.batched_apply(apply_fn, x, batch_size, progress=False, variables=variables)


def compress_variables(variables, row: dict[str, Any], cfg):
  """Clips (if the row says so) then returns ``(fake-quantized variables, stored tree)``."""
  if row["weight_bits"] == 32:
    return variables, variables
  include, exclude = cfg.include, cfg.exclude or None
  v = variables
  if row["clip"]:
    v = compress.clip_weights(v, compress.ClipConfig(cfg.clip.mode, float(cfg.clip.value),
                                                     row["granularity"]), include, exclude)
  qcfg = compress.QuantConfig(row["weight_bits"], bool(cfg.sweep.symmetric), row["granularity"])
  return (compress.fake_quantize(v, qcfg, include, exclude),
          compress.quantize_variables(v, qcfg, include, exclude))


def _metrics_scorer(module, variables, x, mcfg):
  """``variables -> {metric: value}`` against the FP32 model's samples, or None if disabled."""
  if not mcfg.enabled:
    return None
  return eval_lib.sample_scorer(
      module, variables, extractor=mcfg.extractor, resize=mcfg.resize,
      num_samples=int(mcfg.num_samples), seed=int(mcfg.seed),
      reference_seed=int(mcfg.reference_seed), nearest_k=int(mcfg.nearest_k),
      inputs=x if module.kind == "image_to_image" else None, batch_size=int(mcfg.batch_size))


@runs.locked_workdir("compress", OUTPUTS, signature=("report.json", "checkpoints"))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Runs the compression sweep of ``config`` and writes its report into ``workdir``.

  Args:
    config: a ConfigDict or dict overriding ``default_config()``.
    workdir: output folder; created if needed. Existing files of the same names are replaced
      only when the job succeeds.
    progress: show a tqdm bar over the settings.

  Returns:
    The report: ``{"model": ..., "inputs": ..., "rows": [...]}`` as written to report.json. A
    setting whose outputs hold NaN or Inf is a row with ``"status": "failed"`` and its
    ``"reason"`` (no metrics, no checkpoint); the others are measured as usual.

  Raises:
    ValueError: bad config (unknown key, bits outside 2..8, ...).
    FileNotFoundError: missing checkpoint.
    CheckpointError: truncated, unsafe or mismatched checkpoint, NaN/Inf weights.
    PermissionError: workdir not writable.
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  check_outputs_replaceable(workdir)
  runs.remove_stale_staging(workdir)   # left by a killed run; we hold the workdir's lock
  module, variables, x, inputs_desc, ckpt = load_inputs(cfg)
  reference = inputs_lib.check_finite(_run_model(module.apply, variables, x, int(cfg.batch_size)),
                                      f"refusing to compress {ckpt}")
  model_desc = {**models.model_spec(module), "checkpoint": ckpt,
                "params": stats.count_params(variables),
                "macs": stats.count_macs(module, variables, x[:1])}
  # Everything that can fail on bad input (extractor weights, calibration data) before the
  # workdir is touched.
  scorer = _metrics_scorer(module, variables, x, cfg.metrics)
  calib_batches = (_calibration_batches(cfg, module, x)
                   if cfg.activations.bits or cfg.sweep.recipes else None)
  os.makedirs(workdir, exist_ok=True)
  staging = tempfile.mkdtemp(dir=workdir, prefix=".staging-")
  try:
    rows, grid = sweep(cfg, module, variables, x, reference, model_desc, scorer, calib_batches,
                       staging, progress)
    report = {"model": model_desc, "inputs": inputs_desc, "rows": rows}
    if cfg.metrics.enabled:
      report["metrics"] = {k: cfg.metrics[k] for k in cfg.metrics.keys()}
    write_report(report, grid, staging, int(cfg.sample_cell))
    _publish(staging, workdir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return report


def check_outputs_replaceable(workdir: str) -> None:
  """Refuses, before any work, a workdir whose outputs jaxgc would replace but did not write:
  ``checkpoints/`` must hold only model folders, the report names must not be folders.

  Raises:
    FileExistsError: naming the foreign file or folder.
  """
  ck = os.path.join(workdir, "checkpoints")
  if os.path.lexists(ck):
    if os.path.islink(ck) or not os.path.isdir(ck):
      raise FileExistsError(f"{ck} exists and is not a folder of jaxgc checkpoints: refusing "
                            "to replace it; choose another --workdir")
    for entry in sorted(os.listdir(ck)):
      try:
        check_replaceable(os.path.join(ck, entry))
      except FileExistsError:
        raise FileExistsError(f"{ck} holds {entry!r}, which jaxgc did not write: refusing to "
                              "replace checkpoints/; move it or choose another --workdir"
                              ) from None
  for name in ("report.json", "report.md", "samples.png"):
    p = os.path.join(workdir, name)
    if os.path.isdir(p) or os.path.islink(p):
      raise FileExistsError(f"{p} is a folder or link, not a report jaxgc wrote: refusing to "
                            "replace it; choose another --workdir")


def load_inputs(cfg):
  """Stage 1: ``(module, variables, inputs, their description, checkpoint path)``: the PyTorch
  checkpoint converted, and the inputs every setting is run on."""
  ckpt = inputs_lib.resolve_asset(cfg.checkpoint)
  module, variables = convert.load_torch_checkpoint(ckpt, cfg.arch or None)
  compress.selected_paths(variables, cfg.include, cfg.exclude or None)  # fails if none match
  x, inputs_desc = inputs_lib.default_inputs(module, cfg.inputs)
  return module, variables, x, inputs_desc, ckpt


def _calibration_batches(cfg, module, x: np.ndarray) -> list[np.ndarray]:
  calib = x if module.kind == "image_to_image" else inputs_lib.latents(
      int(cfg.activations.calibration_samples), int(module.z_dim), int(cfg.inputs.seed) + 2)
  return [calib[i:i + int(cfg.batch_size)] for i in range(0, len(calib), int(cfg.batch_size))]


def sweep(cfg, module, variables, x: np.ndarray, reference: np.ndarray, model_desc: dict,
          scorer, calib_batches, staging: str, progress: bool) -> tuple[list[dict], list]:
  """Stage 2: every setting compressed, run, stored under ``staging/checkpoints/<setting>`` and
  measured against the FP32 outputs ``reference`` (and by ``scorer``, when given; activation
  ranges are calibrated on ``calib_batches``).

  Returns:
    ``(report rows, sample grid rows)``.
  """
  act_cfg = None
  if cfg.activations.bits:
    act_cfg = compress.ActQuantConfig(int(cfg.activations.bits),
                                      bool(cfg.activations.symmetric))
  spec = models.model_spec(module)
  rows, grid = [], []
  if module.kind == "image_to_image":
    grid.append(("input", inputs_lib.to_uint8(x)))
  fp32_bytes = None
  for row in tqdm(settings(cfg), desc="compress sweep", disable=not progress, unit="setting"):
    _signals.check()
    ckdir = os.path.join(staging, "checkpoints", row["setting"])
    os.makedirs(ckdir)
    try:
      out, fq, nbytes = _compress_setting(cfg, row, module, variables, x, reference, act_cfg,
                                          calib_batches, spec, ckdir)
    except FloatingPointError as e:   # broken outputs: record the setting as failed, go on
      shutil.rmtree(ckdir)
      rows.append(runs.failed_row(row, e))
      continue
    fp32_bytes = fp32_bytes or nbytes
    metrics = report_lib.image_metrics(reference, out)
    if scorer is not None:
      metrics.update(scorer(fq))
    rows.append({**row, "bytes_on_disk": int(nbytes), "size_ratio": nbytes / fp32_bytes,
                 "params": model_desc["params"], "macs": model_desc["macs"], **metrics})
    psnr = "inf" if metrics["psnr_db"] is None else f"{metrics['psnr_db']:.1f} dB"
    grid.append((f"{row['setting']}\nPSNR {psnr}", inputs_lib.to_uint8(out)))
  return rows, grid


def activation_spec(act_cfg, rules=None) -> dict[str, Any]:
  """The ``"activations"`` entry of a checkpoint's ``spec.json``: what ``calibration.json``'s
  ranges are used with (``jaxgc export`` bakes them into the artifact)."""
  return {"bits": act_cfg.bits, "symmetric": act_cfg.symmetric,
          "granularity": act_cfg.granularity, "mode": act_cfg.mode,
          "rules": None if rules is None else [[r.pattern, r.weight_bits, r.act_bits]
                                               for r in rules]}


def _compress_setting(cfg, row, module, variables, x, reference, act_cfg, calib_batches, spec,
                      ckdir):
  """One setting of the sweep: compressed, stored in ``ckdir``, run on ``x``.

  Returns:
    ``(outputs, fake-quantized variables, bytes on disk)``.

  Raises:
    FloatingPointError: the compressed model's outputs hold NaN or Inf (nothing is measured).
  """
  act_desc = None
  if row.get("recipe"):
    recipe = compress.load_recipe(row["recipe"])
    fq, stored, out, calibration = recipe_setting(
        module, variables, recipe, x, calib_batches, int(cfg.batch_size))
    compress.save_calibration(calibration, os.path.join(ckdir, "calibration.json"))
    act_desc = activation_spec(recipe.act_config(),
                               compress.act_rules(recipe.rules, recipe.default_act_bits))
  else:
    fq, stored = compress_variables(variables, row, cfg)
    if row["weight_bits"] == 32:
      out = reference
    elif act_cfg is not None:
      calibration = compress.calibrate(module, fq, calib_batches, act_cfg,
                                       method=cfg.activations.method,
                                       percentile=float(cfg.activations.percentile))
      compress.save_calibration(calibration, os.path.join(ckdir, "calibration.json"))
      act_desc = activation_spec(act_cfg)
      out = _run_model(lambda v, b, c=calibration: compress.apply_quantized(
          module, v, b, act_cfg, c), fq, x, int(cfg.batch_size))
    else:
      out = _run_model(module.apply, fq, x, int(cfg.batch_size))
  inputs_lib.check_finite(out, "the setting is not measured")
  with open(os.path.join(ckdir, "spec.json"), "w") as f:
    json.dump({**spec, "compression": row, **({"activations": act_desc} if act_desc else {})},
              f, indent=2)
  nbytes = compress.save_quantized(stored, os.path.join(ckdir, "weights.npz"))
  ownership.write_folder_manifest(ckdir, "compress")
  return out, fq, nbytes


def write_report(report: dict, grid: list, staging: str, cell: int) -> None:
  """Stage 3: ``report.json``, ``report.md`` and ``samples.png`` into ``staging``."""
  with open(os.path.join(staging, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  with open(os.path.join(staging, "report.md"), "w") as f:
    f.write(markdown(report))
  report_lib.sample_grid(grid, os.path.join(staging, "samples.png"), cell)


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
  ok = [r for r in report["rows"] if r.get("status") != runs.FAILED]
  failed = [r for r in report["rows"] if r.get("status") == runs.FAILED]
  for r in failed:
    lines.append(f"| {r['setting']} | {r['weight_bits']} | {r['clip'] or 'none'} | "
                 f"{r['granularity'] or '-'} | failed | - | - | - | - |")
  for r in ok:
    lines.append(
        f"| {r['setting']} | {r['weight_bits']} | {r['clip'] or 'none'} | "
        f"{r['granularity'] or '-'} | {r['bytes_on_disk']:,} | {r['size_ratio']:.3f} | "
        f"{report_lib.fmt(r['psnr_db'], 'psnr')} | {r['ssim']:.4f} | {r['max_abs_error']:.4f} |")
  if ok and "fid" in ok[0]:
    lines += ["", "Distribution metrics against the FP32 model's samples "
              f"({report.get('metrics', {}).get('extractor', '')} features, "
              f"n = {report.get('metrics', {}).get('num_samples', '')}):", "",
              "| setting | FID | KID x 1e3 | precision | recall | density | coverage | LSH P | "
              "LSH R | LSH+kNN P | LSH+kNN R |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in ok:
      lines.append(
          f"| {r['setting']} | {r['fid']:.3f} | {1e3 * r['kid_mean']:.3f} | "
          f"{r['precision']:.4f} | {r['recall']:.4f} | {r['density']:.4f} | "
          f"{r['coverage']:.4f} | {r['lsh_precision']:.4f} | {r['lsh_recall']:.4f} | "
          f"{r['lsh_knn_precision']:.4f} | {r['lsh_knn_recall']:.4f} |")
  if failed:
    lines += ["", "Failed settings (not measured, no checkpoint kept):", ""]
    lines += [f"- `{r['setting']}`: {r['reason']}" for r in failed]
  lines += ["", "![samples](samples.png)", ""]
  return "\n".join(lines)


def _publish(staging: str, workdir: str) -> None:
  """Moves the finished outputs from ``staging`` into ``workdir`` (rename, replacing)."""
  for name in ("checkpoints", "report.json", "report.md", "samples.png"):
    src, dst = os.path.join(staging, name), os.path.join(workdir, name)
    if os.path.isdir(dst):
      old = tempfile.mkdtemp(dir=workdir, prefix=".old-")
      os.replace(dst, os.path.join(old, name))
      os.replace(src, dst)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(src, dst)
