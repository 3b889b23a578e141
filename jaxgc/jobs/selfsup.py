"""``jaxgc selfsup`` (old name ``jaxgc train``): prune a generator and recover it by self-supervised compression.

For every pruning granularity x sparsity of the config, the original (teacher) generator is
pruned once (magnitude scores by default) and the pruned student is trained with the
self-supervised compression loss of Yu and Pool 2020 (arXiv 2007.01491, METHODS.md section 3):
distillation to the teacher's outputs on the same latents or photos, plus the adversarial loss of
the original trained discriminator, frozen (:mod:`jaxgc.train.selfsup_step`). Masks are kept by the
optimizer (:func:`jaxgc.compress.prune.keep_masks`, or :func:`jaxgc.compress.prune.pruning` for
the iterative and polynomial schedules). Channel pruning of a supported architecture is *physical*:
the student is the slimmed module (:func:`jaxgc.compress.slim.slim`), so it trains and runs
faster; unstructured and N:M sparsity keep the dense shapes (the zeros are still computed; the
report says so).

Outputs in the workdir:

* ``train_config.json``: the resolved config (a rerun must agree on every training key);
* ``runs/<granularity>_s<sparsity>/``: per setting, ``checkpoints/<step>/`` (orbax; a rerun
  resumes a killed setting from its latest checkpoint and skips finished ones),
  ``metrics.jsonl`` and ``tensorboard/`` (loss terms per step), ``samples/step_<n>.png``
  (teacher vs student every ``sample_every`` steps), ``model/`` (the final student,
  ``jaxgc.checkpoint`` format, slimmed for channel pruning) and ``result.json``;
* ``report.json`` / ``report.md``: per setting, MACs and params of the model that runs,
  nonzero params, bytes, CPU latency, PSNR/SSIM against the teacher on held-out inputs before and
  after training, and, where the config asks, FID / precision / recall / density / coverage of
  the student's samples against the teacher's; ``tradeoff.png``: quality against sparsity, one
  line per granularity; ``samples.png``: teacher and every student on the held-out inputs.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgc import _fileio
from jaxgc import _signals
from jaxgc import compress
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc import train as train_lib
from jaxgc.checkpoint import check_writable_dir
from jaxgc.checkpoint import load_any_model
from jaxgc.checkpoint import save_model
from jaxgc.compress import prune
from jaxgc.compress import slim as slim_lib
from jaxgc.data import inputs as inputs_lib
from jaxgc.eval import scoring as eval_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs

CONFIG_FILE = "train_config.json"
RESULT_FILE = "result.json"
SETTING_KEY = "name"   # what names a setting in the report's rows
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
GRANULARITIES = ("unstructured", "n:m", "channel")
SCHEDULES = ("one_shot", "iterative", "polynomial")
EXTRACTORS = ("none", "lenet5", "inception", "pixels")
# Keys a rerun may change; every other key must match the run that wrote the checkpoints.
RESUMABLE_KEYS = ("checkpoint_every", "max_to_keep", "sample_every", "tensorboard",
                  "latency_repeats")
# Held-out latents: numpy's generator seeded with (seed, _EVAL_STREAM); training batches come
# from jax.random.key(seed) (latents) or numpy (seed, step) (photo crops).
_EVAL_STREAM = 1


# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = (CONFIG_FILE, "runs", REPORT_JSON, REPORT_MD, "samples.png", "tradeoff.png")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc selfsup`` understands, with its default. Configs override these."""
  c = ml_collections.ConfigDict()
  c.generator = ""            # teacher: .pth/.ckpt (absolute or relative to $JAXGC_ASSETS) or a
                              # `jaxgc convert` directory
  c.discriminator = ""        # its trained discriminator, frozen; "" for none (adv_weight 0)
  c.adv_loss = "non_saturating_prob"  # | "non_saturating_logits" | "lsgan": match D's output
  c.distill = "mse"           # "mse" | "l1": distance to the teacher's outputs
  c.distill_weight = 1.0
  c.adv_weight = 0.0
  c.granularities = ("unstructured", "n:m", "channel")
  c.sparsities = (0.5, 0.75, 0.9)   # each in [0, 1)
  c.nm_group = 8              # N:M group size m; n = round((1 - sparsity) * m), at least 1
  c.score = "magnitude"       # "magnitude" | "random" (unstructured / N:M / generic channel)
  c.channel_criterion = "l1"  # "l1" | "l2" | "norm_scale": filter scores of channel pruning
  c.distribution = "uniform"  # "uniform" | "erk" (unstructured)
  c.include = prune.DEFAULT_INCLUDE   # regex on parameter paths: what is pruned
  c.exclude = ""              # regex of paths never pruned; "" for none
  c.channel_exclude = ""      # also never channel-pruned (masked channel pruning only): the
                              # layers whose output units are the image, e.g. "dense_2"
  c.schedule = "one_shot"     # | "iterative" | "polynomial" (Zhu and Gupta 2017)
  c.schedule_end = 0.5        # iterative / polynomial: fraction of `steps` to reach the target
  c.schedule_frequency = 10   # steps between mask updates (iterative / polynomial)
  c.learning_rate = 1e-4      # Adam
  c.steps = 300               # optimizer steps per setting
  c.batch_size = 64           # latents or photo crops per step; a multiple of the device count
  c.crop_size = 128           # image-to-image: training crops of the scikit-image photos
  c.train_photos = inputs_lib.TRAIN_PHOTOS
  c.eval_photos = inputs_lib.SKIMAGE_PHOTOS   # held out, at 256 x 256
  c.eval_samples = 1000       # unconditional: held-out latents
  c.checkpoint_every = 100
  c.max_to_keep = 2
  c.sample_every = 100        # teacher vs student grid every this many steps (0: never)
  c.latency_batch = 8
  c.latency_repeats = 10
  c.seed = 0
  c.tensorboard = True
  # Distribution metrics of the student's samples against the teacher's (unconditional only).
  c.metrics = ml_collections.ConfigDict()
  c.metrics.extractor = "none"        # none | lenet5 | inception | pixels
  c.metrics.num_samples = 1000
  c.metrics.resize = "clean"
  c.metrics.nearest_k = 5
  return c


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user`` (strictly), validated before anything is read or written.

  Raises:
    ValueError: an unknown key or a wrongly typed value; an empty generator; an unknown
      granularity, schedule, score, criterion or extractor; a sparsity outside [0, 1); bad loss
      weights; ``adv_weight > 0`` without a discriminator; a bad regex; non-positive sizes.
  """
  cfg = config_lib.merge(default_config(), user)
  if not cfg.generator:
    raise ValueError("config.generator is empty: name the teacher generator checkpoint")
  train_lib.SelfSupConfig(cfg.distill, float(cfg.distill_weight), float(cfg.adv_weight),
                          cfg.adv_loss)
  if cfg.adv_weight > 0 and not cfg.discriminator:
    raise ValueError(f"adv_weight is {cfg.adv_weight} but config.discriminator is empty: name "
                     "the trained discriminator or set adv_weight=0")
  for g in cfg.granularities:
    if g not in GRANULARITIES:
      raise ValueError(f"unknown granularity {g!r}; expected one of {GRANULARITIES}")
  if not cfg.granularities or not cfg.sparsities:
    raise ValueError("config.granularities and config.sparsities must not be empty")
  for s in cfg.sparsities:
    if not 0.0 <= float(s) < 1.0:
      raise ValueError(f"sparsity must be in [0, 1), got {s}")
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"unknown schedule {cfg.schedule!r}; expected one of {SCHEDULES}")
  if cfg.metrics.extractor not in EXTRACTORS:
    raise ValueError(f"unknown metrics.extractor {cfg.metrics.extractor!r}; expected one of "
                     f"{EXTRACTORS}")
  for key in ("include", "exclude", "channel_exclude"):
    compress.compile_pattern(cfg[key], key)
  if not cfg.learning_rate > 0 or not math.isfinite(cfg.learning_rate):
    raise ValueError(f"learning_rate must be a positive number, got {cfg.learning_rate}")
  for key in ("batch_size", "checkpoint_every", "max_to_keep", "eval_samples", "nm_group",
              "crop_size", "latency_batch", "latency_repeats", "schedule_frequency"):
    if cfg[key] < 1:
      raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
  if cfg.steps < 0 or cfg.sample_every < 0:
    raise ValueError(f"steps and sample_every must be >= 0, got {cfg.steps}, {cfg.sample_every}")
  return cfg


def settings(cfg) -> list[dict[str, Any]]:
  """The (granularity, sparsity) grid, with N:M's ``n`` and the sparsity it really gives."""
  rows = []
  for g in cfg.granularities:
    for s in cfg.sparsities:
      row = {"granularity": g, "target_sparsity": float(s)}
      if g == "n:m":
        m = int(cfg.nm_group)
        n = max(1, int(round((1.0 - float(s)) * m)))
        row.update(n=n, m=m, sparsity=1.0 - n / m, name=f"{n}of{m}_s{float(s):.2f}")
      else:
        row.update(sparsity=float(s), name=f"{g}_s{float(s):.2f}")
      rows.append(row)
  return rows


def _prune_config(cfg, row: dict[str, Any]) -> prune.PruneConfig:
  end = int(round(float(cfg.schedule_end) * int(cfg.steps)))
  freq = int(cfg.schedule_frequency)
  end -= end % freq
  scheduled = cfg.schedule != "one_shot" and row["granularity"] != "n:m"
  exclude = [p for p in (cfg.exclude, cfg.channel_exclude if row["granularity"] == "channel"
                         else "") if p]
  return prune.PruneConfig(
      sparsity=row["sparsity"], granularity=row["granularity"], n=row.get("n", 2),
      m=row.get("m", 4), score=cfg.score,
      distribution=cfg.distribution if row["granularity"] == "unstructured" else "uniform",
      norm=cfg.channel_criterion if cfg.channel_criterion in ("l1", "l2") else "l1",
      include=cfg.include, exclude="|".join(f"(?:{p})" for p in exclude) or None,
      schedule=cfg.schedule if scheduled else "one_shot",
      end_step=end if scheduled else 0, frequency=freq if scheduled else 1)


def _student(cfg, row, module, teacher_vars, key):
  """``(student module, student variables, tx, how)`` for one setting."""
  pcfg = _prune_config(cfg, row)
  adam = optax.adam(float(cfg.learning_rate))
  if row["granularity"] == "channel" and slim_lib.is_supported(module):
    masks = slim_lib.channel_masks(module, teacher_vars, row["sparsity"],
                                   criterion=cfg.channel_criterion)
    small, small_vars = slim_lib.slim(module, teacher_vars, masks)
    return small, small_vars, adam, "slimmed (channels removed)"
  if pcfg.schedule != "one_shot":
    tx = optax.chain(adam, prune.pruning(pcfg, key=key))
    return module, teacher_vars, tx, f"masked, {pcfg.schedule} schedule"
  masks = prune.compute_masks(teacher_vars["params"], pcfg, key=key)
  params = prune.apply_masks(teacher_vars["params"], masks)
  tx = optax.chain(adam, prune.keep_masks(masks))
  return module, {**teacher_vars, "params": params}, tx, "masked (dense shapes)"


def _scorer(cfg, module, teacher_vars):
  """``(variables, module) -> metrics`` of samples vs the teacher's, or None."""
  mcfg = cfg.metrics
  if mcfg.extractor == "none" or module.kind != "unconditional":
    return None
  return eval_lib.sample_scorer(
      module, teacher_vars, extractor=mcfg.extractor, resize=mcfg.resize,
      num_samples=int(mcfg.num_samples), seed=int(cfg.seed), reference_seed=int(cfg.seed) + 1,
      nearest_k=int(mcfg.nearest_k))


def _train_setting(cfg, row, module, teacher_vars, disc, disc_vars, eval_x, run_dir, mesh,
                   progress):
  """Trains (or resumes, or skips when finished) one setting; returns its result dict."""
  result_path = os.path.join(run_dir, RESULT_FILE)
  if os.path.isfile(result_path):
    with open(result_path) as f:
      return json.load(f)
  os.makedirs(run_dir, exist_ok=True)
  key = jax.random.key(int(cfg.seed))
  student, student_vars, tx, how = _student(cfg, row, module, teacher_vars,
                                               jax.random.fold_in(key, 1))
  frozen = {k: v for k, v in student_vars.items() if k != "params"}
  state = parallel.replicate(
      train_lib.create_train_state(student_vars["params"], tx, frozen), mesh)
  teacher_dev = parallel.replicate(teacher_vars, mesh)
  disc_dev = None if disc is None else parallel.replicate(disc_vars, mesh)
  loss_cfg = train_lib.SelfSupConfig(cfg.distill, float(cfg.distill_weight),
                                     float(cfg.adv_weight), cfg.adv_loss)
  step_fn = train_lib.make_selfsup_step(student, loss_cfg, disc, mesh, teacher=module)

  if module.kind == "unconditional":
    batch = lambda s: parallel.shard_batch(
        train_lib.sample_latents(key, s, int(cfg.batch_size), int(module.z_dim)), mesh)
  else:
    batch = lambda s: parallel.shard_batch(inputs_lib.photo_crops(
        tuple(cfg.train_photos), int(cfg.batch_size), int(cfg.crop_size), int(cfg.seed), s),
        mesh)
  grid_x = eval_x[:8]
  teacher_grid = inputs_lib.to_uint8(parallel.generate(module, teacher_vars, grid_x))
  os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)

  def on_step(step, st):
    if cfg.sample_every and step % int(cfg.sample_every) == 0:
      v = {"params": jax.device_get(st.params), **jax.device_get(st.frozen)}
      report_lib.sample_grid(
          [("teacher", teacher_grid),
           (f"student\nstep {step}", inputs_lib.to_uint8(parallel.generate(student, v, grid_x)))],
          os.path.join(run_dir, "samples", f"step_{step:06d}.png"))

  before = report_lib.image_metrics(parallel.generate(module, teacher_vars, eval_x),
                                    parallel.generate(student, student_vars, eval_x))
  manager = train_lib.checkpoint_manager(os.path.join(run_dir, runs.CHECKPOINT_DIR),
                                         int(cfg.checkpoint_every), int(cfg.max_to_keep))
  try:
    state, start = runs.restore(manager, state, int(cfg.steps), run_dir)
    state, seconds = runs.run_steps(
        step_fn, state, batch, (teacher_dev, disc_dev), manager=manager, run_dir=run_dir,
        start=start, steps=int(cfg.steps), desc=row["name"], progress=progress,
        tensorboard=bool(cfg.tensorboard), on_step=on_step)
  finally:
    manager.close()
  final = {"params": jax.device_get(state.params), **jax.device_get(state.frozen)}
  final = jax.tree.map(np.asarray, final)
  save_model(os.path.join(run_dir, "model"), student, final,
             extra={"source": cfg.generator, "compression": {"method": "prune+selfsup", **row}})
  after = report_lib.image_metrics(parallel.generate(module, teacher_vars, eval_x),
                                   parallel.generate(student, final, eval_x))
  facts = report_lib.model_facts(student, final, _latency_inputs(cfg, eval_x),
                                 int(cfg.latency_repeats))
  zeros = sum(int(np.size(x)) for x in jax.tree.leaves(final["params"])) - facts["nonzero_params"]
  result = {**row, "how": how, "resumed_from": start, "train_seconds": seconds,
            **facts, "zero_params": zeros, "before": before, "after": after}
  runs.write_json(result_path, result)
  return result


def _latency_inputs(cfg, eval_x: np.ndarray) -> np.ndarray:
  """A batch of ``latency_batch`` held-out inputs (repeated when there are fewer)."""
  return np.resize(eval_x, (int(cfg.latency_batch),) + eval_x.shape[1:])


def _plot(rows: list[dict], teacher: dict, metric: str, label: str, path: str) -> None:
  rows = [r for r in rows if r.get("status") != runs.FAILED]
  plt = report_lib.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for g in dict.fromkeys(r["granularity"] for r in rows):
    pts = sorted((r["sparsity"], r["quality"][metric]) for r in rows
                 if r["granularity"] == g and r["quality"].get(metric) is not None)
    if pts:
      ax.plot(*zip(*pts), marker="o", label=g)
  if teacher.get(metric) is not None:
    ax.axhline(teacher[metric], color="gray", ls="--", label="teacher")
  ax.set_xlabel("sparsity (fraction of pruned weights)")
  ax.set_ylabel(label)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  report_lib.save_figure(fig, path, dpi=120)


def _markdown(report: dict) -> str:
  m, c = report["teacher"], report["config"]
  failed = [r for r in report["rows"] if r.get("status") == runs.FAILED]
  rows = [r for r in report["rows"] if r not in failed]
  has_fid = any(r["quality"].get("fid") is not None for r in rows)
  lines = [
      f"# jaxgc selfsup: {m['arch']}, pruned and recovered by self-supervised compression",
      "",
      f"- teacher: `{m['generator']}`: {m['params']:,} params, {m['macs'] / 1e6:,.2f} M MACs "
      f"per sample, {m['latency_s'] * 1e3:.2f} ms per batch of {c['latency_batch']} (CPU, "
      "jitted, median)",
      f"- discriminator (frozen): `{m['discriminator'] or 'none'}`",
      f"- loss: {c['distill_weight']} * {c['distill']}(G_s(x), G_t(x)) + {c['adv_weight']} * "
      f"{c['adv_loss']}(D(G_s(x))); Adam lr {c['learning_rate']}, batch {c['batch_size']}, "
      f"{c['steps']} steps per setting; pruning scores: {c['score']} (channels: "
      f"{c['channel_criterion']}), schedule {c['schedule']}",
      f"- held-out inputs: {report['eval_inputs']}; PSNR/SSIM compare the student's outputs "
      "with the teacher's (images in [0, 1]), before training (pruned only) and after",
      "- MACs, params and latency are those of the model that runs: channel pruning removes "
      "the channels (a smaller model); unstructured and N:M sparsity keep dense shapes, so "
      "their zeros are still multiplied (`nonzero` counts what a sparse kernel would keep)",
  ]
  if has_fid:
    lines.append(f"- FID / precision / recall: {c['metrics']['num_samples']} samples of the "
                 f"student vs the teacher's, {c['metrics']['extractor']} features, k = "
                 f"{c['metrics']['nearest_k']}")
  head = ("| setting | sparsity | params | nonzero | MACs (M) | bytes | latency (ms) | "
          "PSNR before | PSNR after | SSIM after |")
  sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  if has_fid:
    head += " FID | precision | recall |"
    sep += "---:|---:|---:|"
  lines += ["", head, sep]
  t, tq = report["teacher"], report["teacher_quality"]
  if has_fid:  # the teacher against itself (other latents): the floor of the sample metrics
    lines.append(f"| teacher (other seed) | 0 | {t['params']:,} | {t['params']:,} | "
                 f"{t['macs'] / 1e6:,.2f} | {t['bytes']:,} | {t['latency_s'] * 1e3:.2f} | - | - "
                 f"| - | {report_lib.fmt(tq.get('fid'), '.2f')} | {report_lib.fmt(tq.get('precision'), '.3f')} | "
                 f"{report_lib.fmt(tq.get('recall'), '.3f')} |")
  for r in rows:
    q = r["quality"]
    line = (f"| {r['name']} | {r['sparsity']:.3f} | {r['params']:,} | {r['nonzero_params']:,} "
            f"| {r['macs'] / 1e6:,.2f} | {r['bytes']:,} | {r['latency_s'] * 1e3:.2f} | "
            f"{report_lib.fmt(r['before']['psnr_db'], '.2f')} | {report_lib.fmt(q['psnr_db'], '.2f')} | "
            f"{report_lib.fmt(q['ssim'], '.4f')} |")
    if has_fid:
      line += (f" {report_lib.fmt(q.get('fid'), '.2f')} | {report_lib.fmt(q.get('precision'), '.3f')} | "
               f"{report_lib.fmt(q.get('recall'), '.3f')} |")
    lines.append(line)
  if failed:
    lines += ["", "Failed settings (training diverged; not measured):", ""]
    lines += [f"- `{r['name']}`: {r['reason']}" for r in failed]
  lines += ["", "![quality vs sparsity](tradeoff.png)", "", "![samples](samples.png)", ""]
  return "\n".join(lines)


@runs.locked_workdir("selfsup", OUTPUTS, signature=(CONFIG_FILE,))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Runs (or resumes) every setting of ``config`` in ``workdir`` and writes the report.

  Args:
    config: a ConfigDict or dict overriding ``default_config()``.
    workdir: output folder; created if needed; finished settings are kept, a killed one resumes.
    progress: tqdm bars over settings and steps.

  Returns:
    The report as written to ``report.json``.

  Raises:
    ValueError: bad config; a batch size that is not a multiple of the device count; a workdir
      whose checkpoints were written under a different config; pruning errors (an N:M group
      that does not divide a layer, every channel of a layer pruned).
    FileNotFoundError: a missing checkpoint file.
    CheckpointError: an unreadable or mismatched PyTorch checkpoint.
    PermissionError: workdir not writable.

  A setting whose loss becomes NaN or Inf is a row with ``"status": "failed"`` and its
  ``"reason"`` (naming the step); the other settings go on.
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  module, teacher_vars, g_path, disc, disc_vars, d_path = load_models(cfg)
  mesh = runs.batch_mesh(int(cfg.batch_size))
  eval_x, eval_desc = held_out_inputs(cfg, module)
  for row in settings(cfg):   # pruning errors (N:M groups, channels) before anything is written
    _student(cfg, row, module, teacher_vars, jax.random.key(int(cfg.seed)))
  os.makedirs(workdir, exist_ok=True)
  runs.check_resume(os.path.join(workdir, CONFIG_FILE), cfg.to_dict(), RESUMABLE_KEYS,
                    runs.holds_progress(os.path.join(workdir, "runs")),
                    defaults=default_config().to_dict())
  teacher = {**report_lib.model_facts(module, teacher_vars, _latency_inputs(cfg, eval_x),
                                      int(cfg.latency_repeats)),
             "generator": g_path, "discriminator": d_path}
  rows, grid, teacher_quality = train_and_measure(cfg, module, teacher_vars, disc, disc_vars,
                                                  eval_x, mesh, workdir, progress)
  report = {"teacher": teacher, "config": cfg.to_dict(), "eval_inputs": eval_desc,
            "teacher_quality": teacher_quality, "rows": rows}
  write_report(report, grid, workdir)
  return report


def load_models(cfg):
  """Stage 1: ``(generator, variables, path, discriminator or None, its variables, path)``."""
  return runs.load_generator_and_discriminator(
      cfg.generator, cfg.discriminator, "selfsup", ("unconditional", "image_to_image"),
      ("discriminator", "patch_discriminator"))


def held_out_inputs(cfg, module) -> tuple[np.ndarray, str]:
  """Stage 2: the held-out inputs every setting is measured on, and their description."""
  if module.kind == "unconditional":
    eval_x = np.random.default_rng((int(cfg.seed), _EVAL_STREAM)).standard_normal(
        (int(cfg.eval_samples), int(module.z_dim))).astype(np.float32)
    return eval_x, f"{cfg.eval_samples} N(0, 1) latents (seed {cfg.seed}, stream {_EVAL_STREAM})"
  eval_x = inputs_lib.photo_batch(tuple(cfg.eval_photos), 256)
  return eval_x, (f"scikit-image photos {list(cfg.eval_photos)} at 256 x 256 (training crops "
                  f"come from {list(cfg.train_photos)})")


def train_and_measure(cfg, module, teacher_vars, disc, disc_vars, eval_x, mesh, workdir,
                      progress):
  """Stage 3: every setting pruned, recovered (resumable) and measured against the teacher.

  Returns:
    ``(rows, sample grid rows, the teacher's own quality)``.
  """
  scorer = _scorer(cfg, module, teacher_vars)
  teacher_quality = {"psnr_db": None, "ssim": 1.0}
  rows, grid = [], [("teacher", inputs_lib.to_uint8(parallel.generate(module, teacher_vars,
                                                                      eval_x[:8])))]
  for row in tqdm(settings(cfg), desc="settings", disable=not progress):
    _signals.check()
    run_dir = os.path.join(workdir, "runs", row["name"].replace(":", "of"))
    try:
      result = _train_setting(cfg, row, module, teacher_vars, disc, disc_vars, eval_x, run_dir,
                              mesh, progress)
    except FloatingPointError as e:   # diverged: record the setting as failed, go on
      rows.append(runs.failed_row(row, e))
      continue
    student, student_vars = load_any_model(os.path.join(run_dir, "model"))
    quality = dict(result["after"])
    if scorer is not None:
      quality.update(scorer(student_vars, student))
    rows.append({**result, "quality": quality})
    grid.append((f"{row['name']}\nPSNR {report_lib.fmt(quality['psnr_db'], '.1f')} dB",
                 inputs_lib.to_uint8(parallel.generate(student, student_vars, eval_x[:8]))))
  if scorer is not None:
    teacher_quality.update(scorer(teacher_vars))
  return rows, grid, teacher_quality


def write_report(report: dict, grid: list, workdir: str) -> None:
  """Stage 4: ``report.json``, ``samples.png``, ``tradeoff.png`` and ``report.md``."""
  rows, teacher_quality = report["rows"], report["teacher_quality"]
  runs.write_json(os.path.join(workdir, REPORT_JSON), report)
  report_lib.sample_grid(grid, os.path.join(workdir, "samples.png"))
  metric, label = ("fid", "FID vs teacher samples (lower is better)") \
      if any(r.get("quality", {}).get("fid") is not None for r in rows) \
      else ("psnr_db", "PSNR vs teacher (dB, higher is better)")
  _plot(rows, teacher_quality, metric, label, os.path.join(workdir, "tradeoff.png"))
  _fileio.atomic_write_text(os.path.join(workdir, REPORT_MD), _markdown(report))
