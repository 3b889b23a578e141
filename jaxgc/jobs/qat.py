"""``jaxgc qat``: quantization-aware training of a GAN generator from its PTQ starting point.

The generator's kernels are fake-quantized (``weight_bits``, per channel or per tensor, straight-
through gradient) and the float shadow weights are fine-tuned to match the FP32 generator's
outputs on random latents (``distill``), optionally pushed by the frozen trained discriminator
(``adv_weight``): METHODS.md sections 3 and 4 (Yu and Pool 2020, arXiv 2007.01491; Andreev et al.
2021, arXiv 2108.13996). See :mod:`jaxgc.train.qat_step` for the loss and the step.

Outputs in the workdir:

* ``checkpoints/<step>/``: orbax checkpoints of the train state every ``checkpoint_every`` steps
  (at the end, and at step 1 of a fresh run); a later run with the same workdir resumes
  from the latest one;
* ``qat_config.json``: the resolved config (a resumed run must agree on every training key);
* ``metrics.jsonl``: one JSON line per step, ``{"step", "loss", "distill", "adv", "grad_norm"}``,
  and the same scalars as TensorBoard event files in ``tensorboard/``;
* ``qat_report.md`` / ``qat_report.json``: output PSNR/SSIM vs the FP32 teacher on held-out
  latents before (PTQ) and after QAT, and the discriminator's mean score;
* ``model/``: the QAT'd generator with fake-quantized float32 weights (``jaxgc.checkpoint``);
* ``quantized/``: the same weights stored for real (``spec.json`` + ``weights.npz``, int4 packed
  two per byte or int8), loadable with ``jaxgc.checkpoint.load_model``.

Image-to-image generators (CycleGAN / pix2pix ResNet and U-Net generators) train on random
``inputs.crop_size`` crops of the scikit-image photos ``inputs.photos`` and are evaluated on
crops of ``inputs.eval_photos``. Released without their discriminator, they get, with
``online_discriminator=True`` and ``adv_weight > 0``, a PatchGAN trained online on the FP32
teacher's outputs (real) vs the quantized student's (fake), as ``jaxgc distill`` does
(:func:`jaxgc.train.crd_step.make_distill_step` with ``disc_real="teacher"``, CRD off); its
state is checkpointed with the student's.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgc import _fileio
from jaxgc import compress
from jaxgc import models
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc import stats
from jaxgc import train as train_lib
from jaxgc.checkpoint import QUANTIZED_FILE
from jaxgc.checkpoint import check_writable_dir
from jaxgc.checkpoint import save_model
from jaxgc.data import inputs as inputs_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs
from jaxgc.models import layers
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.train import crd_step
from jaxgc.train import recipe_qat

CONFIG_FILE = "qat_config.json"
METRICS_FILE = "metrics.jsonl"
REPORT_MD = "qat_report.md"
REPORT_JSON = "qat_report.json"
CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
QUANTIZED_DIR = "quantized"
# Keys a resumed run may change; every other key must match the run that wrote the checkpoints.
RESUMABLE_KEYS = ("steps", "checkpoint_every", "max_to_keep", "eval_samples", "tensorboard")
# Held-out latents come from numpy's generator seeded with (seed, _EVAL_STREAM); the training
# latents come from jax.random.key(seed), so the two never coincide.
_EVAL_STREAM = 1


# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = (CONFIG_FILE, METRICS_FILE, REPORT_MD, REPORT_JSON, CHECKPOINT_DIR, MODEL_DIR,
           QUANTIZED_DIR, "tensorboard")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc qat`` understands, with its default. Configs override these."""
  c = ml_collections.ConfigDict()
  c.generator = ""            # FP32 generator: .pth/.ckpt (absolute or relative to
                              # $JAXGC_ASSETS) or a `jaxgc convert` directory. Teacher and start.
  c.discriminator = ""        # its trained discriminator, frozen; "" for none (adv_weight 0).
  c.weight_bits = 4           # 2..8
  c.symmetric = True          # signed range, zero point 0; False: unsigned affine
  c.granularity = "per_channel"                # or "per_tensor"
  c.include = compress.DEFAULT_INCLUDE         # regex on variable paths: what is quantized
  c.exclude = ""                               # regex of paths kept in FP32; "" for none
  c.learning_rate = 1e-4      # Adam
  c.steps = 300               # total optimizer steps (a resumed run continues up to this)
  c.batch_size = 64           # latents per step; a multiple of the number of devices
  c.distill = "mse"           # "mse" | "l1": distance to the FP32 teacher's outputs
  c.distill_weight = 1.0
  c.adv_weight = 0.0          # weight of -log D(G_q(z)); 0 disables
  c.checkpoint_every = 100    # steps between orbax checkpoints
  c.max_to_keep = 3           # checkpoints kept
  c.seed = 0                  # training latents: jax.random.key(seed) folded with the step
  c.eval_samples = 1000       # held-out latents for the before/after report
  c.tensorboard = True        # also write TensorBoard event files to <workdir>/tensorboard
  # Image-to-image generators: photo crops, and the online PatchGAN of adv_weight > 0 when no
  # discriminator is given.
  c.inputs = ml_collections.ConfigDict()
  c.inputs.photos = inputs_lib.TRAIN_PHOTOS      # training crops
  c.inputs.eval_photos = inputs_lib.SKIMAGE_PHOTOS   # held-out crops (eval_samples of them)
  c.inputs.crop_size = 64                        # a multiple of 4
  c.online_discriminator = False               # adv_weight under a PatchGAN trained online
  c.disc_ndf = 64                                # its width and depth (70x70 patches)
  c.disc_layers = 3
  return c


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user`` (strictly: unknown keys fail), validated before anything is
  read or written.

  Raises:
    ValueError: an unknown key or a value of the wrong type; bits outside 2..8; an unknown
      granularity or distill loss; a negative loss weight (or both zero); ``adv_weight > 0``
      with neither a discriminator nor ``online_discriminator``; a bad regex; a crop size that
      is not a positive multiple of 4; a non-positive learning rate, batch size, checkpoint
      interval or eval sample count; negative steps.
  """
  cfg = config_lib.merge(default_config(), user)
  if not cfg.generator:
    raise ValueError("config.generator is empty: name the FP32 generator checkpoint")
  loss_config(cfg)
  if cfg.adv_weight > 0 and not cfg.discriminator and not cfg.online_discriminator:
    raise ValueError(f"adv_weight is {cfg.adv_weight} but config.discriminator is empty: name "
                     "the trained discriminator, set online_discriminator=True (image-to-image "
                     "generators) or set adv_weight=0")
  if cfg.online_discriminator and cfg.discriminator:
    raise ValueError(f"online_discriminator=True and config.discriminator="
                     f"{cfg.discriminator!r}: choose one")
  if cfg.inputs.crop_size < 4 or cfg.inputs.crop_size % 4:
    raise ValueError(f"inputs.crop_size must be a positive multiple of 4, got "
                     f"{cfg.inputs.crop_size}")
  for key in ("include", "exclude"):
    compress.compile_pattern(cfg[key], key)
  if not cfg.learning_rate > 0 or not math.isfinite(cfg.learning_rate):
    raise ValueError(f"learning_rate must be a positive number, got {cfg.learning_rate}")
  for key in ("batch_size", "checkpoint_every", "max_to_keep", "eval_samples"):
    if cfg[key] < 1:
      raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
  if cfg.steps < 0:
    raise ValueError(f"steps must be >= 0, got {cfg.steps}")
  return cfg


def loss_config(cfg: ml_collections.ConfigDict) -> train_lib.QATConfig:
  """The static :class:`~jaxgc.train.QATConfig` of a resolved config.

  Raises:
    ValueError: bad bits, granularity, distill loss or weights.
  """
  quant = compress.QuantConfig(int(cfg.weight_bits), bool(cfg.symmetric), cfg.granularity)
  return train_lib.QATConfig(quant, cfg.include, cfg.exclude or None, cfg.distill,
                             float(cfg.distill_weight), float(cfg.adv_weight))


def _disc_score(disc, disc_vars, images: np.ndarray, batch_size: int = 500) -> float | None:
  if disc is None:
    return None
  apply = jax.jit(disc.apply)
  scores = [np.asarray(apply(disc_vars, images[i:i + batch_size]))
            for i in range(0, len(images), batch_size)]
  return float(np.mean(np.concatenate(scores)))


def _evaluate(generator, disc, disc_vars, teacher_vars, student_vars, latents) -> dict:
  reference = parallel.generate(generator, teacher_vars, latents)
  out = parallel.generate(generator, student_vars, latents)
  return {**report_lib.image_metrics(reference, out),
          "disc_score": _disc_score(disc, disc_vars, out)}


def _markdown(report: dict) -> str:
  m, c = report["model"], report["config"]
  i2i = m["kind"] == "image_to_image"
  online = i2i and not m["discriminator"] and c["online_discriminator"] and c["adv_weight"] > 0
  q = f"W{c['weight_bits']} {c['granularity']} {'symmetric' if c['symmetric'] else 'asymmetric'}"
  lines = [
      f"# jaxgc qat: {m['arch']} ({q})",
      "",
      f"- generator: `{m['generator']}` ({m['params']:,} params)",
      f"- discriminator: `{m['discriminator'] or 'none'}`",
      f"- quantized leaves: {', '.join(report['quantized_paths'])}",
      f"- loss: {c['distill_weight']} * {c['distill']}(G_q(x), G_fp32(x)) + {c['adv_weight']} * "
      + (f"LSGAN loss under a PatchGAN (ndf {c['disc_ndf']}, {c['disc_layers']} layers) trained "
         f"online on FP32 (real) vs quantized (fake) outputs, on {c['inputs']['crop_size']}px "
         f"crops of {', '.join(c['inputs']['photos'])}" if online else
         f"-log D(G_q(x)) on {c['inputs']['crop_size']}px crops of "
         f"{', '.join(c['inputs']['photos'])}" if i2i else "-log D(G_q(z)) on N(0, 1) latents z")
      + f"; Adam lr {c['learning_rate']}, batch {c['batch_size']}, "
      f"{report['steps']} steps ({report['train_seconds']:.1f} s this run, resumed from step "
      f"{report['resumed_from']})",
      f"- evaluation: {c['eval_samples']} held-out "
      + (f"{c['inputs']['crop_size']}px crops of {', '.join(c['inputs']['eval_photos'])}"
         if i2i else "N(0, 1) latents")
      + "; PSNR/SSIM of the outputs vs the FP32 teacher's (images in [0, 1]); D score: mean "
      "D(G(z)), the frozen discriminator's probability of \"real\"",
      f"- stored size: {report['bytes_on_disk']:,} bytes "
      f"({report['size_ratio']:.3f} of FP32)",
      "",
      "| model | PSNR (dB) | SSIM | max abs error | D score |",
      "|---|---:|---:|---:|---:|",
  ]

  def fmt(v, spec):
    return "-" if v is None else format(v, spec)

  for name, row in report["rows"].items():
    psnr = "inf" if row["psnr_db"] is None else f"{row['psnr_db']:.2f}"
    lines.append(f"| {name} | {psnr} | {fmt(row['ssim'], '.4f')} | "
                 f"{fmt(row['max_abs_error'], '.4f')} | {fmt(row['disc_score'], '.4f')} |")
  return "\n".join(lines) + "\n"


@runs.locked_workdir("qat", OUTPUTS, signature=(CONFIG_FILE,))
def train(config: Any, workdir: str | os.PathLike, progress: bool = False
          ) -> tuple[train_lib.TrainState, dict[str, Any]]:
  """Runs (or resumes) QAT of ``config`` in ``workdir`` and writes every output.

  Training latents of step ``s`` are ``sample_latents(jax.random.key(seed), s, ...)``, so a run
  resumed from the latest checkpoint ends with the same weights as an uninterrupted one. The
  batch is sharded over all devices (``'data'`` axis), the state replicated.

  Args:
    config: a ConfigDict or dict overriding ``default_config()``.
    workdir: output folder; created if needed. Its checkpoints, if any, are resumed.
    progress: show a tqdm bar over the steps.

  Returns:
    ``(state, report)``: the final train state (float shadow weights at step ``steps``) and the
    report as written to ``qat_report.json``.

  Raises:
    ValueError: bad config; a batch size that is not a multiple of the device count; a workdir
      whose checkpoints were written under a different config or are past ``steps``.
    FileNotFoundError: a missing checkpoint file.
    CheckpointError: an unreadable or mismatched PyTorch checkpoint.
    PermissionError: workdir not writable.
    FloatingPointError: the loss became NaN or Inf (naming the step).
  """
  cfg = resolve_config(config)
  qcfg = loss_config(cfg)
  workdir = check_writable_dir(workdir)
  generator, teacher_vars, g_path, disc, disc_vars, d_path = load_models(cfg)
  quantized_paths = compress.selected_paths(teacher_vars, qcfg.include, qcfg.exclude)
  state, start, train_seconds = train_loop(cfg, qcfg, generator, teacher_vars, disc, disc_vars,
                                           workdir, progress)
  if _online(cfg, generator, disc):
    student = jax.device_get(crd_step.student_variables(state))
  else:
    student = {"params": jax.device_get(state.params), **jax.device_get(state.frozen)}
  rows = measure(cfg, qcfg, generator, teacher_vars, student, disc, disc_vars)
  compression = {"method": "qat", "weight_bits": int(cfg.weight_bits),
                 "symmetric": bool(cfg.symmetric), "granularity": cfg.granularity,
                 "include": cfg.include, "exclude": cfg.exclude, "steps": int(cfg.steps)}
  nbytes = save_outputs(qcfg, generator, student, g_path, compression, workdir)
  fp32 = sum(np.asarray(x).nbytes for x in jax.tree.leaves(teacher_vars))
  report = {
      "model": {**models.model_spec(generator), "generator": g_path, "discriminator": d_path,
                "params": stats.count_params(teacher_vars)},
      "config": cfg.to_dict(),
      "quantized_paths": quantized_paths,
      "steps": int(cfg.steps),
      "resumed_from": start,
      "train_seconds": train_seconds,
      "bytes_on_disk": int(nbytes),
      "size_ratio": nbytes / fp32,
      "rows": rows,
  }
  runs.write_json(os.path.join(workdir, REPORT_JSON), report)
  _fileio.atomic_write_text(os.path.join(workdir, REPORT_MD), _markdown(report))
  return state, report


def load_models(cfg):
  """Stage 1: ``(generator, variables, path, discriminator or None, its variables, path)``.

  Raises:
    ValueError: as :func:`jaxgc.jobs.runs.load_generator_and_discriminator`;
      ``online_discriminator`` for an unconditional generator.
  """
  out = runs.load_generator_and_discriminator(cfg.generator, cfg.discriminator, "qat",
                                              ("unconditional", "image_to_image"),
                                              ("discriminator",))
  if cfg.online_discriminator and out[0].kind != "image_to_image":
    raise ValueError(f"online_discriminator=True needs an image-to-image generator; "
                     f"{out[2]} is {out[0].kind}")
  return out


def _online(cfg, generator, disc) -> bool:
  """Image-to-image QAT trains through the distillation step (online PatchGAN when asked)."""
  return generator.kind == "image_to_image" and disc is None


def _student(qcfg, teacher_vars, generator) -> recipe_qat.QuantizedGenerator:
  """The generator with ``qcfg``'s kernels fake-quantized, as a distillation student."""
  paths = compress.selected_paths(teacher_vars, qcfg.include, qcfg.exclude)
  return recipe_qat.QuantizedGenerator(generator, {p: qcfg.quant.bits for p in paths},
                                       qcfg.quant.symmetric, qcfg.quant.granularity)


def _online_setup(cfg, qcfg, generator, teacher_vars, tx):
  """``(state, step_fn)`` of image-to-image QAT: L1/MSE to the teacher plus, with
  ``adv_weight > 0``, the LSGAN loss of a PatchGAN trained online on teacher vs student."""
  crop = int(cfg.inputs.crop_size)
  dcfg = crd_step.DistillConfig(crd_weight=0.0, recon=cfg.distill,
                                recon_weight=float(cfg.distill_weight),
                                adv_weight=float(cfg.adv_weight) if cfg.online_discriminator
                                else 0.0, disc_real="teacher",
                                seed=int(cfg.seed))
  disc = disc_vars = None
  if dcfg.uses_discriminator:
    disc = PatchGANDiscriminator(ndf=int(cfg.disc_ndf), n_layers=int(cfg.disc_layers),
                                 norm="instance", image_size=crop)
    disc_vars = layers.normal_init(disc, jnp.zeros((1, crop, crop, 3), jnp.float32),
                                   seed=int(cfg.seed) + 2)
  state = crd_step.create_distill_state(teacher_vars, disc_vars, tx)
  return state, (lambda mesh: crd_step.make_distill_step(
      _student(qcfg, teacher_vars, generator), generator, dcfg, disc, mesh))


def _batch_fn(cfg, generator, mesh, online: bool):
  bs, seed = int(cfg.batch_size), int(cfg.seed)
  if generator.kind == "image_to_image":
    crops = lambda s: inputs_lib.photo_crops(  # noqa: E731
        tuple(cfg.inputs.photos), bs, int(cfg.inputs.crop_size), seed, s)
    return (lambda s: parallel.shard_batch({"A": crops(s)}, mesh)) if online else \
        (lambda s: parallel.shard_batch(crops(s), mesh))
  key = jax.random.key(seed)
  return lambda s: parallel.shard_batch(
      train_lib.sample_latents(key, s, bs, int(generator.z_dim)), mesh)


def train_loop(cfg, qcfg, generator, teacher_vars, disc, disc_vars, workdir, progress):
  """Stage 2: the jitted, data-parallel QAT loop, resumed from the workdir's checkpoints.

  Returns:
    ``(final state, first step run, seconds)``.
  """
  mesh = runs.batch_mesh(int(cfg.batch_size))
  tx = optax.adam(float(cfg.learning_rate))
  online = _online(cfg, generator, disc)
  if online:
    state, make_step = _online_setup(cfg, qcfg, generator, teacher_vars, tx)
  else:
    params = teacher_vars["params"]
    frozen = {k: v for k, v in teacher_vars.items() if k != "params"}
    state = train_lib.create_train_state(params, tx, frozen)
    make_step = lambda m: train_lib.make_train_step(generator, qcfg, disc, m)  # noqa: E731
  state = parallel.replicate(state, mesh)
  teacher = parallel.replicate(teacher_vars, mesh)
  disc_dev = None if disc is None else parallel.replicate(disc_vars, mesh)
  os.makedirs(workdir, exist_ok=True)
  manager = train_lib.checkpoint_manager(os.path.join(workdir, runs.CHECKPOINT_DIR),
                                         int(cfg.checkpoint_every), int(cfg.max_to_keep))
  try:
    runs.check_resume(os.path.join(workdir, CONFIG_FILE), cfg.to_dict(), RESUMABLE_KEYS,
                      manager.latest_step() is not None,
                      defaults=default_config().to_dict())
    state, start = runs.restore(manager, state, int(cfg.steps), workdir)
    step_fn = make_step(mesh)
    batch = _batch_fn(cfg, generator, mesh, online)
    state, train_seconds = runs.run_steps(
        step_fn, state, batch, (teacher, None if online else disc_dev), manager=manager,
        run_dir=workdir,
        start=start, steps=int(cfg.steps), desc="qat", progress=progress,
        tensorboard=bool(cfg.tensorboard))
  finally:
    manager.close()
  return state, start, train_seconds


def measure(cfg, qcfg, generator, teacher_vars, student, disc, disc_vars) -> dict:
  """Stage 3: FP32, PTQ and QAT compared on held-out latents."""
  if generator.kind == "image_to_image":
    latents = inputs_lib.photo_crops(tuple(cfg.inputs.eval_photos), int(cfg.eval_samples),
                                     int(cfg.inputs.crop_size), int(cfg.seed), _EVAL_STREAM)
  else:
    latents = np.random.default_rng((int(cfg.seed), _EVAL_STREAM)).standard_normal(
        (int(cfg.eval_samples), int(generator.z_dim))).astype(np.float32)
  ptq_vars = train_lib.quantized_variables(teacher_vars, qcfg)
  qat_vars = jax.tree.map(np.asarray, train_lib.quantized_variables(student, qcfg))
  return {
      "FP32 teacher": _evaluate(generator, disc, disc_vars, teacher_vars, teacher_vars, latents),
      "PTQ (step 0)": _evaluate(generator, disc, disc_vars, teacher_vars, ptq_vars, latents),
      f"QAT (step {int(cfg.steps)})": _evaluate(generator, disc, disc_vars, teacher_vars,
                                                qat_vars, latents),
  }


def save_outputs(qcfg, generator, student, g_path, compression, workdir) -> int:
  """Stage 4: the fake-quantized model (``model/``) and the real low-bit checkpoint
  (``quantized/``); returns the low-bit checkpoint's bytes."""
  qat_vars = jax.tree.map(np.asarray, train_lib.quantized_variables(student, qcfg))
  spec = models.model_spec(generator)
  save_model(os.path.join(workdir, MODEL_DIR), generator, qat_vars,
             extra={"source": g_path, "compression": compression})
  qdir = os.path.join(workdir, QUANTIZED_DIR)
  os.makedirs(qdir, exist_ok=True)
  stored = compress.quantize_variables(student, qcfg.quant, qcfg.include, qcfg.exclude)
  nbytes = compress.save_quantized(stored, os.path.join(qdir, QUANTIZED_FILE))
  runs.write_json(os.path.join(qdir, "spec.json"), {**spec, "source": g_path,
                                                "compression": compression})
  return nbytes


def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """``jaxgc qat``: :func:`train` with a progress bar; returns the report (``qat_report.json``).

  Raises:
    As :func:`train`.
  """
  _, report = train(config, workdir, progress=progress)
  return report
