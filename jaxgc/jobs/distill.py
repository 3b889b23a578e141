"""``jaxgc distill``: distill a narrow image-to-image generator from a pretrained one with CRD.

The teacher is a pretrained ResNet / mobile / sub-mobile CycleGAN generator (by default the
horse->zebra generator of ``$JAXGC_ASSETS``); the student is the same architecture at a fraction
``student.width`` of every layer's channels (about ``width**2`` of the MACs; ``width`` 0.45 gives
4.2x fewer for the horse->zebra teacher), initialised from the teacher's strongest channels (``init="slim"``, GAN
Compression's weight inheritance) or at random (``"scratch"``, CycleGAN's N(0, 0.02)), or a ``ResnetGenerator`` of
``student.ngf``. It is trained with content relationship distillation, optional pixel and
feature terms, and an online PatchGAN discriminator (:mod:`jaxgc.train.crd_step`; You et al.
2022, arXiv 2212.11091).

Inputs come from a grain pipeline (:mod:`jaxgc.data.pipeline`): CycleGAN ``trainA/trainB``
folders, pix2pix ``AB`` folders, or, on a machine without data sets, random crops of natural
photos that ship with scikit-image (the training photos are disjoint from the held-out ones).

Outputs in the workdir:

* ``distill_config.json`` (a rerun must agree on every training key; ``steps`` may grow),
  ``checkpoints/<step>/`` (orbax; a rerun resumes from the latest), ``metrics.jsonl`` and
  ``tensorboard/`` (every loss term per step), ``samples/step_<n>.png`` (input, teacher, student
  on the held-out photos every ``sample_every`` steps), ``curves.png`` (loss terms vs step);
* ``student/`` (the trained student, ``jaxgc.checkpoint`` format, loadable by every job);
* ``report.json`` / ``report.md``: teacher and student MACs, params, bytes, CPU latency; the
  student's PSNR / SSIM against the teacher on the held-out photos and FID / KID of its
  translations of held-out crops against the teacher's, before and after training;
  ``samples.png`` (input / teacher / student before / student after).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgc import _fileio
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc import train as train_lib
from jaxgc.checkpoint import check_writable_dir
from jaxgc.checkpoint import load_any_model
from jaxgc.checkpoint import save_model
from jaxgc.compress import slim as slim_lib
from jaxgc.data import inputs as inputs_lib
from jaxgc.data import pipeline
from jaxgc.eval import extractors
from jaxgc.eval import metrics
from jaxgc.eval.fid_inception import load_inception
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs
from jaxgc.models import layers
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.models.resnet import MobileResnetGenerator
from jaxgc.models.resnet import ResnetGenerator
from jaxgc.models.resnet import SubMobileResnetGenerator
from jaxgc.parallel import generate
from jaxgc.train import crd_step as distill_lib
from jaxgc.train import feature_nets as features_lib

CONFIG_FILE = "distill_config.json"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
STUDENT_DIR = "student"
SOURCES = ("photos", "unpaired", "paired")
INITS = ("slim", "scratch")
STUDENT_ARCHS = ("same", "resnet_generator")
# Keys a rerun may change; every other key must match the run that wrote the checkpoints.
# ``steps`` may grow: the learning rate is constant, so a longer run continues exactly.
RESUMABLE_KEYS = ("steps", "checkpoint_every", "max_to_keep", "sample_every", "tensorboard",
                  "eval", "latency_repeats")
_GENERATORS = (ResnetGenerator, MobileResnetGenerator, SubMobileResnetGenerator)


# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = (CONFIG_FILE, REPORT_MD, REPORT_JSON, STUDENT_DIR, "checkpoints", "samples",
           "samples.png", "curves.png", "metrics.jsonl", "tensorboard")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc distill`` understands, with its default. Configs override these."""
  c = ml_collections.ConfigDict()
  c.teacher = "cyclegan-h2z-gancompression/latest_net_G.pth"  # .pth (relative to
                              # $JAXGC_ASSETS or absolute) or a `jaxgc convert` directory
  c.student = ml_collections.ConfigDict()
  c.student.arch = "same"     # "same": the teacher's class, narrower | "resnet_generator"
  c.student.width = 0.45      # "same": fraction of the teacher's channels in every layer (0.45:
                              # about 4x fewer MACs for the h2z generator)
  c.student.ngf = 16          # "resnet_generator": base width (n_blocks 9)
  c.student.init = "slim"     # "slim": the teacher's strongest channels (L1) | "scratch"
  c.disc = ml_collections.ConfigDict()
  c.disc.ndf = 64             # PatchGAN (70x70 with n_layers 3), instance norm as CycleGAN's
  c.disc.n_layers = 3
  c.loss = ml_collections.ConfigDict()
  c.loss.crd_weight = 1.0
  c.loss.patch_size = 32
  c.loss.distance_weight = 1.0
  c.loss.angle_weight = 2.0
  c.loss.slicing_weights = (25.0, 25.0, 25.0)   # row, column, patch
  c.loss.num_anchors = 0      # 0: exact angle term; else vertices drawn per sample and slicing
  c.loss.recon = "l1"
  c.loss.recon_weight = 0.0
  c.loss.feature_net = "teacher_encoder"   # "teacher_encoder" | "inception" | "none"
  c.loss.inception_taps = features_lib.DEFAULT_INCEPTION_TAPS
  c.loss.perceptual_weight = 0.0
  c.loss.style_weight = 0.0
  c.loss.adv_weight = 1.0     # 0: no discriminator
  c.loss.gan_loss = "lsgan"   # | "vanilla"
  c.loss.disc_real = "teacher"  # "teacher": D learns teacher (real) vs student (fake);
                              # "target": real target-domain images B vs teacher outputs
  c.data = ml_collections.ConfigDict()
  c.data.source = "photos"    # "photos" (scikit-image) | "unpaired" (root/trainA, trainB) |
                              # "paired" (root/train/*.jpg, AB side by side)
  c.data.root = ""
  c.data.direction = "AtoB"   # paired: which half is the input
  c.data.photos = inputs_lib.TRAIN_PHOTOS
  c.data.preprocess = ""      # "" = the source's default (folders: resize_and_crop)
  c.data.load_size = 286
  c.data.crop_size = 128
  c.data.flip = True
  c.learning_rate = 2e-4      # Adam(b1=0.5, b2=0.999), CycleGAN's
  c.d_learning_rate = 2e-4
  c.beta1 = 0.5
  c.steps = 300
  c.batch_size = 4            # global batch; a multiple of the device count (and processes)
  c.checkpoint_every = 100
  c.max_to_keep = 2
  c.sample_every = 100        # input / teacher / student grid every this many steps (0: never)
  c.eval = ml_collections.ConfigDict()
  c.eval.photos = inputs_lib.SKIMAGE_PHOTOS  # held out, at eval.size, for PSNR/SSIM and grids
  c.eval.size = 256
  c.eval.fid_images = 100     # held-out crops (eval.size) whose translations FID compares;
                              # 0: no FID
  c.eval.fid_batch = 25
  c.latency_repeats = 10
  c.seed = 0
  c.tensorboard = True
  return c


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user`` (strictly), validated before anything is read or written.

  Raises:
    ValueError: an unknown key or a wrongly typed value; bad loss weights or names; an unknown
      student arch, init, data source or feature net; a width outside (0, 1]; a patch size that
      does not divide the crop; ``disc_real="target"`` without target images; a folder source
      without ``data.root``; non-positive sizes.
  """
  cfg = config_lib.merge(default_config(), user)
  if not cfg.teacher:
    raise ValueError("config.teacher is empty: name the teacher generator checkpoint")
  loss_config(cfg)
  s = cfg.student
  if s.arch not in STUDENT_ARCHS:
    raise ValueError(f"unknown student.arch {s.arch!r}; expected one of {STUDENT_ARCHS}")
  if s.init not in INITS:
    raise ValueError(f"unknown student.init {s.init!r}; expected one of {INITS}")
  if s.arch == "same" and not 0.0 < float(s.width) <= 1.0:
    raise ValueError(f"student.width must be in (0, 1], got {s.width}")
  if s.arch == "resnet_generator" and s.init == "slim":
    raise ValueError("student.init='slim' needs student.arch='same' (channels are inherited "
                     "from the teacher); use init='scratch'")
  if cfg.loss.feature_net not in features_lib.FEATURE_NETS:
    raise ValueError(f"unknown loss.feature_net {cfg.loss.feature_net!r}; expected one of "
                     f"{features_lib.FEATURE_NETS}")
  if (cfg.loss.perceptual_weight > 0 or cfg.loss.style_weight > 0) \
      and cfg.loss.feature_net == "none":
    raise ValueError("loss.perceptual_weight / style_weight > 0 need a loss.feature_net")
  d = cfg.data
  if d.source not in SOURCES:
    raise ValueError(f"unknown data.source {d.source!r}; expected one of {SOURCES}")
  if d.source != "photos" and not d.root:
    raise ValueError(f"data.source={d.source!r} needs data.root, the dataset folder")
  if cfg.loss.disc_real == "target" and d.source == "photos":
    raise ValueError("loss.disc_real='target' needs target-domain images; data.source "
                     "'photos' has none (use 'unpaired' or 'paired', or disc_real='teacher')")
  for key, value in (("batch_size", cfg.batch_size), ("checkpoint_every", cfg.checkpoint_every),
                     ("max_to_keep", cfg.max_to_keep), ("data.crop_size", d.crop_size),
                     ("data.load_size", d.load_size), ("eval.size", cfg.eval.size),
                     ("eval.fid_batch", cfg.eval.fid_batch), ("disc.ndf", cfg.disc.ndf),
                     ("disc.n_layers", cfg.disc.n_layers),
                     ("latency_repeats", cfg.latency_repeats)):
    if value < 1:
      raise ValueError(f"{key} must be >= 1, got {value}")
  if cfg.steps < 0 or cfg.sample_every < 0 or cfg.eval.fid_images < 0:
    raise ValueError(f"steps, sample_every and eval.fid_images must be >= 0, got {cfg.steps}, "
                     f"{cfg.sample_every}, {cfg.eval.fid_images}")
  if cfg.eval.fid_images == 1:
    raise ValueError("eval.fid_images must be 0 (no FID) or >= 2 (a covariance needs two)")
  for key in ("learning_rate", "d_learning_rate"):
    if not cfg[key] > 0 or not math.isfinite(cfg[key]):
      raise ValueError(f"{key} must be a positive number, got {cfg[key]}")
  if not 0.0 <= cfg.beta1 < 1.0:
    raise ValueError(f"beta1 must be in [0, 1), got {cfg.beta1}")
  if d.crop_size % 4 or cfg.eval.size % 4:
    raise ValueError(f"data.crop_size and eval.size must be multiples of 4 (two stride-2 "
                     f"layers), got {d.crop_size} and {cfg.eval.size}")
  distill_lib.check_crop(loss_config(cfg), int(d.crop_size), int(d.crop_size))
  return cfg


def loss_config(cfg) -> distill_lib.DistillConfig:
  """The :class:`~jaxgc.train.crd_step.DistillConfig` of a resolved config (ValueError)."""
  l = cfg.loss
  feature = l.feature_net != "none"
  return distill_lib.DistillConfig(
      crd_weight=float(l.crd_weight), patch_size=int(l.patch_size),
      distance_weight=float(l.distance_weight), angle_weight=float(l.angle_weight),
      slicing_weights=tuple(float(w) for w in l.slicing_weights),
      num_anchors=int(l.num_anchors) or None, recon=l.recon,
      recon_weight=float(l.recon_weight),
      perceptual_weight=float(l.perceptual_weight) if feature else 0.0,
      style_weight=float(l.style_weight) if feature else 0.0,
      adv_weight=float(l.adv_weight), gan_loss=l.gan_loss, disc_real=l.disc_real,
      seed=int(cfg.seed))


def _scaled(c: int, width: float) -> int:
  return max(1, int(round(c * width)))


def build_student(cfg, teacher: Any, teacher_vars: dict, example: jax.Array
                  ) -> tuple[Any, dict, str]:
  """``(student module, initial variables, how)`` for the config's student.

  Raises:
    ValueError: the teacher is not a ResNet / mobile / sub-mobile generator of the zoo.
  """
  s = cfg.student
  if s.arch == "resnet_generator":
    student = ResnetGenerator(ngf=int(s.ngf), n_blocks=9, norm="instance")
    return (student, layers.normal_init(student, example, int(cfg.seed)),
            f"ResnetGenerator(ngf={s.ngf}), random N(0, 0.02) init")
  if not isinstance(teacher, _GENERATORS):
    raise ValueError(f"distill needs a ResNet, mobile or sub-mobile generator teacher, got "
                     f"{type(teacher).__name__}")
  width = float(s.width)
  if s.init == "slim":
    masks = slim_lib.channel_masks(teacher, teacher_vars, 1.0 - width, criterion="l1")
    student, student_vars = slim_lib.slim(teacher, teacher_vars, masks)
    return student, student_vars, (f"{type(teacher).__name__} at width {width:g}: the "
                                   "teacher's channels with the largest L1 norms")
  if isinstance(teacher, SubMobileResnetGenerator):
    student = teacher.clone(stem=_scaled(teacher.stem, width),
                            down=tuple(_scaled(c, width) for c in teacher.down),
                            hidden=tuple(_scaled(c, width) for c in teacher.hidden),
                            up=tuple(_scaled(c, width) for c in teacher.up), parent=None)
  else:
    student = teacher.clone(ngf=_scaled(teacher.ngf, width), parent=None)
  return student, layers.normal_init(student, example, int(cfg.seed)), (
      f"{type(teacher).__name__} at width {width:g}, random N(0, 0.02) init")


def _source(cfg, phase: str = "train"):
  d = cfg.data
  if d.source == "photos":
    names = tuple(d.photos if phase == "train" else cfg.eval.photos)
    return pipeline.PhotoCrops(names)
  root = runs.resolve_path(d.root) if not os.path.isdir(d.root) else os.path.abspath(d.root)
  if d.source == "unpaired":
    return pipeline.UnpairedFolders(root, phase)
  return pipeline.PairedFolder(root, phase, direction=d.direction)


def _dataset(cfg, source, batch: int, seed: int, crop: int, train: bool, **shard):
  d = cfg.data
  preprocess = d.preprocess or None
  if not train and d.source != "photos":
    preprocess, load = "resize_and_crop", crop   # a deterministic resize, no crop or flip
  else:
    load = int(d.load_size)
  return pipeline.make_dataset(source, batch_size=batch, seed=seed, preprocess=preprocess,
                               load_size=load, crop_size=crop, flip=bool(d.flip) and train,
                               **shard)


def _test_inputs(cfg):
  """The test source of a folder data set, each input image once (unpaired records repeat A
  images when ``testB`` is the larger folder)."""
  src = _source(cfg, "test")
  if cfg.data.source == "unpaired":
    return [{"A": pipeline.load_rgb(p)} for p in src.A_paths]
  return src


def _eval_inputs(cfg) -> tuple[np.ndarray, np.ndarray | None, str]:
  """``(photos for PSNR and grids, crops for FID or None, description)``, all held out."""
  size = int(cfg.eval.size)
  if cfg.data.source == "photos":
    photos = inputs_lib.photo_batch(tuple(cfg.eval.photos), size)
    desc = (f"scikit-image photos {list(cfg.eval.photos)} at {size} x {size} (training crops "
            f"come from {list(cfg.data.photos)})")
  else:
    src = _test_inputs(cfg)
    n = min(len(src), 8)
    photos = _dataset(cfg, src, n, 0, size, False, shard_index=0, shard_count=1)[0]["A"]
    desc = f"the first {n} shuffled test images of {cfg.data.root} at {size} x {size}"
  crops = None
  n = int(cfg.eval.fid_images)
  if n:
    src = _test_inputs(cfg)
    if cfg.data.source == "photos":
      src = pipeline.PhotoCrops(tuple(cfg.eval.photos), copies=-(-n // len(cfg.eval.photos)))
      crops = _dataset(cfg, src, n, int(cfg.seed) + 1, size, True, shard_index=0,
                       shard_count=1)[0]["A"]
      desc += (f"; FID: {n} random {size} x {size} crops of the held-out photos (random "
               f"scale and flip, seed {int(cfg.seed) + 1})")
    else:
      n = min(n, len(src))
      crops = _dataset(cfg, src, n, 0, size, False, shard_index=0, shard_count=1)[0]["A"]
      desc += f"; FID: {n} test images"
  return photos, crops, desc


def _target_images(cfg) -> np.ndarray | None:
  """Real target-domain test images (``testB`` / the B halves of ``test``), uint8 ``[n, size,
  size, 3]`` (bicubic resize), the reference of the published FID protocol; None for photos."""
  if cfg.data.source == "photos" or not cfg.eval.fid_images:
    return None
  from PIL import Image  # pylint: disable=import-outside-toplevel
  src = _source(cfg, "test")
  if cfg.data.source == "unpaired":
    imgs = [pipeline.load_rgb(p) for p in src.B_paths]
  else:
    imgs = [src[i]["B"] for i in range(len(src))]
  size = int(cfg.eval.size)
  return np.stack([np.asarray(Image.fromarray(np.asarray(i)).resize(
      (size, size), Image.Resampling.BICUBIC)) for i in imgs])


def _features(images: np.ndarray, cfg, progress: bool) -> np.ndarray:
  if images.dtype != np.uint8:
    images = inputs_lib.to_uint8(images)
  return extractors.extract_features(images, "inception", batch_size=int(cfg.eval.fid_batch),
                                     progress=progress)


def _fid(reference: np.ndarray, feats: np.ndarray, cfg) -> dict:
  """FID and KID (subsets of ``min(1000, n)``) of ``feats`` against ``reference`` features."""
  k = metrics.kid(reference, feats, num_subsets=100,
                  subset_size=min(1000, len(feats), len(reference)), seed=int(cfg.seed))
  return {"fid": float(metrics.fid(reference, feats)), "kid_mean": float(k["kid_mean"]),
          "kid_std": float(k["kid_std"])}


def _plot_curves(metrics_path: str, path: str) -> None:
  rows = []
  with open(metrics_path) as f:
    for line in f:
      rows.append(json.loads(line))
  if not rows:
    return
  keys = [k for k in ("loss", "crd", "recon", "perceptual", "style", "adv", "d_loss")
          if any(r.get(k, 0) for r in rows)]
  plt = report_lib.pyplot()
  fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
  steps = [r["step"] for r in rows]
  for ax, k in zip(axes[0], keys):
    ax.plot(steps, [r[k] for r in rows], lw=0.8)
    ax.set_title(k)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  report_lib.save_figure(fig, path)


@dataclasses.dataclass
class _Models:
  """Everything :func:`run` trains or trains against, built from the config."""
  teacher_path: str
  teacher: Any
  teacher_vars: dict
  student: Any
  student_vars: dict        # the student before training (inherited channels or from scratch)
  how: str                  # how the student was made, for the report
  loss: distill_lib.DistillConfig
  disc: Any = None
  disc_vars: dict | None = None
  feature_net: Any = None


@dataclasses.dataclass
class _Samples:
  """Held-out inputs and the teacher's outputs on them (evaluation and sample grids)."""
  eval_x: np.ndarray
  fid_x: np.ndarray | None
  desc: str
  teacher_eval: np.ndarray
  grid_x: np.ndarray
  input_grid: np.ndarray
  teacher_grid: np.ndarray


def load_models(cfg) -> _Models:
  """Stage 1: the teacher (ResNet family), the student, the online discriminator, the feature
  network of the perceptual / style terms."""
  t_path = runs.resolve_path(cfg.teacher)
  teacher, teacher_vars = load_any_model(t_path)
  if not isinstance(teacher, _GENERATORS):
    raise ValueError(f"distill needs a ResNet, mobile or sub-mobile generator teacher; {t_path} "
                     f"holds a {type(teacher).__name__}")
  teacher_vars = jax.tree.map(np.asarray, teacher_vars)
  crop = int(cfg.data.crop_size)
  example = jnp.zeros((1, crop, crop, 3), jnp.float32)
  student, student_vars, how = build_student(cfg, teacher, teacher_vars, example)
  m = _Models(t_path, teacher, teacher_vars, student, jax.tree.map(np.asarray, student_vars),
              how, loss_config(cfg))
  if m.loss.uses_discriminator:
    m.disc = PatchGANDiscriminator(ndf=int(cfg.disc.ndf), n_layers=int(cfg.disc.n_layers),
                                   norm="instance", image_size=crop)
    m.disc_vars = layers.normal_init(m.disc, example, seed=int(cfg.seed) + 2)
  if m.loss.uses_features:
    if cfg.loss.feature_net == "inception":
      m.feature_net = features_lib.inception(load_inception(), tuple(cfg.loss.inception_taps))
    else:
      m.feature_net = features_lib.teacher_encoder(teacher, teacher_vars)
  return m


def train_batches(cfg, m: _Models, mesh):
  """Stage 2: ``(source, step -> sharded batch)`` from the grain pipeline (this process's
  share)."""
  source = _source(cfg, "train")
  ds = _dataset(cfg, source, int(cfg.batch_size) // jax.process_count(), int(cfg.seed),
                int(cfg.data.crop_size), True)
  get = pipeline.batch_fn(ds)
  keys = ("A", "B") if m.loss.disc_real == "target" else ("A",)
  return source, lambda s: parallel.shard_batch({k: get(s)[k] for k in keys}, mesh)


def held_out_samples(cfg, m: _Models) -> _Samples:
  """Stage 3: held-out inputs and the teacher's outputs on them."""
  eval_x, fid_x, desc = _eval_inputs(cfg)
  teacher_eval = generate(m.teacher, m.teacher_vars, eval_x, batch_size=4)
  grid_x = eval_x[:8]
  return _Samples(eval_x, fid_x, desc, teacher_eval, grid_x, inputs_lib.to_uint8(grid_x),
                  inputs_lib.to_uint8(teacher_eval[:8]))


def train(cfg, m: _Models, batch, samples: _Samples, mesh, workdir: str, progress: bool):
  """Stage 4: the jitted, data-parallel distillation loop, resumed from the workdir's
  checkpoints (whose config :func:`run` has checked); sample grids every ``sample_every``
  steps.

  Returns:
    ``(final student variables (numpy), first step run, seconds)``.
  """
  ckpt_dir = os.path.join(workdir, runs.CHECKPOINT_DIR)
  os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)

  def on_step(step, state):
    if cfg.sample_every and step % int(cfg.sample_every) == 0 and parallel.is_primary():
      v = jax.device_get(distill_lib.student_variables(state))
      report_lib.sample_grid(
          [("input", samples.input_grid), ("teacher", samples.teacher_grid),
           (f"student\nstep {step}",
            inputs_lib.to_uint8(generate(m.student, v, samples.grid_x, 4)))],
          os.path.join(workdir, "samples", f"step_{step:06d}.png"))

  g_tx = optax.adam(float(cfg.learning_rate), b1=float(cfg.beta1), b2=0.999)
  d_tx = optax.adam(float(cfg.d_learning_rate), b1=float(cfg.beta1), b2=0.999)
  state = parallel.replicate(
      distill_lib.create_distill_state(m.student_vars, m.disc_vars, g_tx, d_tx), mesh)
  step_fn = distill_lib.make_distill_step(m.student, m.teacher, m.loss, m.disc, m.feature_net,
                                          mesh)
  teacher_dev = parallel.replicate(m.teacher_vars, mesh)
  feature_dev = (None if m.feature_net is None
                 else parallel.replicate(m.feature_net.variables, mesh))
  manager = train_lib.checkpoint_manager(ckpt_dir, int(cfg.checkpoint_every),
                                         int(cfg.max_to_keep))
  try:
    state, start = runs.restore(manager, state, int(cfg.steps), workdir)
    state, seconds = runs.run_steps(
        step_fn, state, batch, (teacher_dev, feature_dev), manager=manager, run_dir=workdir,
        start=start, steps=int(cfg.steps), desc="distill", progress=progress,
        tensorboard=bool(cfg.tensorboard), on_step=on_step)
  finally:
    manager.close()
  final = jax.tree.map(np.asarray, jax.device_get(distill_lib.student_variables(state)))
  return final, start, seconds


def measure(cfg, m: _Models, final: dict, samples: _Samples, progress: bool) -> dict:
  """Stage 5: PSNR / SSIM of the student before and after training against the teacher, and
  FID / KID against the teacher's translations (and the real target images when the data
  has them)."""
  before_eval = generate(m.student, m.student_vars, samples.eval_x, batch_size=4)
  after_eval = generate(m.student, final, samples.eval_x, batch_size=4)
  quality = {"before": report_lib.image_metrics(samples.teacher_eval, before_eval),
             "after": report_lib.image_metrics(samples.teacher_eval, after_eval),
             "_outputs": {"before": before_eval, "after": after_eval}}
  if samples.fid_x is None:
    return quality
  fid_x = samples.fid_x
  t_feats = _features(generate(m.teacher, m.teacher_vars, fid_x, 4), cfg, progress)
  feats = {"before": _features(generate(m.student, m.student_vars, fid_x, 4), cfg, progress),
           "after": _features(generate(m.student, final, fid_x, 4), cfg, progress)}
  target = _target_images(cfg)
  b_feats = None if target is None else _features(target, cfg, progress)
  if b_feats is not None:
    quality["teacher"] = {f"{k}_vs_real": v for k, v in _fid(b_feats, t_feats, cfg).items()}
  for when, f in feats.items():
    quality[when].update(_fid(t_feats, f, cfg))
    if b_feats is not None:
      quality[when].update({f"{k}_vs_real": v for k, v in _fid(b_feats, f, cfg).items()})
  return quality


def write_report(cfg, m: _Models, final: dict, samples: _Samples, quality: dict, training: dict,
                 workdir: str) -> dict:
  """Stage 6: ``report.json``, ``report.md`` and ``samples.png`` (written by process 0 of a
  multi-process run; every process returns the report)."""
  outputs = quality.pop("_outputs")
  lat_x = samples.eval_x[:1]
  repeats = int(cfg.latency_repeats)
  t_facts = report_lib.model_facts(m.teacher, m.teacher_vars, lat_x, repeats)
  s_facts = report_lib.model_facts(m.student, final, lat_x, repeats)
  report = {
      "teacher": {**t_facts, "checkpoint": m.teacher_path},
      "student": {**s_facts, "how": m.how},
      "ratios": {"macs": t_facts["macs"] / s_facts["macs"],
                 "params": t_facts["params"] / s_facts["params"],
                 "latency": t_facts["latency_s"] / s_facts["latency_s"]},
      "quality": quality, "eval_inputs": samples.desc, "training": training,
      "config": cfg.to_dict(),
  }
  if not parallel.is_primary():   # a multi-process run: process 0 writes the report
    return report
  runs.write_json(os.path.join(workdir, REPORT_JSON), report)
  report_lib.sample_grid(
      [("input", samples.input_grid), ("teacher", samples.teacher_grid),
       ("student\nbefore training", inputs_lib.to_uint8(outputs["before"][:8])),
       (f"student\nafter {cfg.steps} steps", inputs_lib.to_uint8(outputs["after"][:8]))],
      os.path.join(workdir, "samples.png"))
  _fileio.atomic_write_text(os.path.join(workdir, REPORT_MD), markdown(report))
  return report


@runs.locked_workdir("distill", OUTPUTS, signature=(CONFIG_FILE,))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the student of ``config`` in ``workdir`` and writes the report.

  Args:
    config: a ConfigDict or dict overriding ``default_config()``.
    workdir: output folder; created if needed; a killed run resumes from its checkpoints.
    progress: tqdm bars over steps and evaluation.

  Returns:
    The report as written to ``report.json``.

  Raises:
    ValueError: bad config; a teacher that is not a ResNet-family generator; a batch size not
      a multiple of the device count; a workdir whose checkpoints were written under another
      config.
    FileNotFoundError: a missing checkpoint or data folder.
    CheckpointError: an unreadable or mismatched PyTorch checkpoint.
    PermissionError: workdir not writable.
    FloatingPointError: the loss became NaN or Inf (naming the step).
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  mesh = runs.batch_mesh(int(cfg.batch_size))
  m = load_models(cfg)
  source, batch = train_batches(cfg, m, mesh)
  os.makedirs(workdir, exist_ok=True)
  ckpt_dir = os.path.join(workdir, runs.CHECKPOINT_DIR)
  runs.check_resume(os.path.join(workdir, CONFIG_FILE), cfg.to_dict(), RESUMABLE_KEYS,
                    os.path.isdir(ckpt_dir) and bool(os.listdir(ckpt_dir)),
                    defaults=default_config().to_dict())
  samples = held_out_samples(cfg, m)
  final, start, seconds = train(cfg, m, batch, samples, mesh, workdir, progress)
  if parallel.is_primary():   # a multi-process run: process 0 writes the model and plots
    save_model(os.path.join(workdir, STUDENT_DIR), m.student, final,
               extra={"teacher": m.teacher_path, "compression": {"method": "crd_distill",
                                                                  "how": m.how}})
    _plot_curves(os.path.join(workdir, runs.METRICS_FILE), os.path.join(workdir, "curves.png"))
  quality = measure(cfg, m, final, samples, progress)
  training = {"steps": int(cfg.steps), "resumed_from": start, "seconds": seconds,
              "seconds_per_step": seconds / max(1, int(cfg.steps) - start),
              "devices": mesh.shape["data"], "processes": jax.process_count(),
              "backend": jax.default_backend(), "train_source": repr(source),
              "feature_net": None if m.feature_net is None else m.feature_net.name}
  return write_report(cfg, m, final, samples, quality, training, workdir)


def markdown(report: dict) -> str:
  """``report.md``: models, the loss, and the teacher vs student table."""
  t, s, q, c = report["teacher"], report["student"], report["quality"], report["config"]
  tr, l = report["training"], c["loss"]
  real = "teacher" in q   # FID against real target-domain test images (folder data sets)
  terms = [f"{l['crd_weight']} * CRD (distance {l['distance_weight']}, angle "
           f"{l['angle_weight']}, slicings {list(l['slicing_weights'])}, {l['patch_size']}x"
           f"{l['patch_size']} patches" + (f", {l['num_anchors']} angle anchors" if
                                           l["num_anchors"] else "") + ")"]
  if l["recon_weight"]:
    terms.append(f"{l['recon_weight']} * {l['recon']}")
  if tr["feature_net"]:
    terms.append(f"{l['perceptual_weight']} * perceptual + {l['style_weight']} * style "
                 f"({tr['feature_net']} features; VGG-16 weights are not available)")
  if l["adv_weight"]:
    terms.append(f"{l['adv_weight']} * {l['gan_loss']} GAN loss under the online PatchGAN "
                 f"(ndf {c['disc']['ndf']}, {c['disc']['n_layers']} layers), trained on "
                 + ("teacher (real) vs student (fake) outputs" if l["disc_real"] == "teacher"
                    else "real target images vs teacher outputs"))
  lines = [
      f"# jaxgc distill: {t['arch']} -> {s['arch']}",
      "",
      f"- teacher: `{t['checkpoint']}`",
      f"- student: {s['how']}",
      "- loss: " + " + ".join(terms),
      f"- training: {tr['steps']} steps of {c['batch_size']} {c['data']['crop_size']}x"
      f"{c['data']['crop_size']} crops from {tr['train_source']}; Adam lr "
      f"{c['learning_rate']} (D {c['d_learning_rate']}), b1 {c['beta1']}; {tr['seconds']:.0f} s "
      f"({tr['seconds_per_step']:.2f} s/step) on {tr['devices']} {tr['backend']} device(s)"
      + (f", resumed at step {tr['resumed_from']}" if tr["resumed_from"] else ""),
      f"- held-out inputs: {report['eval_inputs']}",
      "- PSNR / SSIM: the student's outputs against the teacher's (images in [0, 1]). FID / KID: "
      "Inception features of the student's translations against the teacher's on the same "
      "held-out inputs (the teacher's outputs are the reference; 0 = indistinguishable): not "
      "the published protocol (real target-domain images as the reference), so not comparable "
      "with the papers' FIDs; with a few hundred images FID is "
      "biased upwards."
      + (" FID / KID vs real: against the real target-domain test images (the published "
         "protocol's reference, here at the held-out size)." if real else ""),
      "- MACs: torchprofile convention, one image at the held-out size; latency: median of "
      f"jitted forward passes of one image on this machine's {jax.default_backend()}",
      "",
      "| model | params | MACs (G) | bytes | latency (ms) | PSNR (dB) | SSIM | FID | KID |"
      + (" FID vs real | KID vs real |" if real else ""),
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if real else ""),
      f"| teacher | {t['params']:,} | {t['macs'] / 1e9:.3f} | {t['bytes']:,} | "
      f"{t['latency_s'] * 1e3:.2f} | - | 1 | 0 (reference) | 0 |"
      + (f" {report_lib.fmt(q['teacher']['fid_vs_real'], '.2f')} | "
         f"{report_lib.fmt(q['teacher']['kid_mean_vs_real'], '.4f')} |" if real else ""),
  ]
  for label, key in (("student before training", "before"), ("student after training", "after")):
    m = q[key]
    lines.append(f"| {label} | {s['params']:,} | {s['macs'] / 1e9:.3f} | {s['bytes']:,} | "
                 f"{s['latency_s'] * 1e3:.2f} | {report_lib.fmt(m['psnr_db'], '.2f')} | "
                 f"{report_lib.fmt(m['ssim'], '.4f')} | {report_lib.fmt(m.get('fid'), '.2f')} | "
                 f"{report_lib.fmt(m.get('kid_mean'), '.4f')} |"
                 + (f" {report_lib.fmt(m['fid_vs_real'], '.2f')} | {report_lib.fmt(m['kid_mean_vs_real'], '.4f')} |"
                    if real else ""))
  r = report["ratios"]
  lines += ["", f"The student has {r['macs']:.2f}x fewer MACs, {r['params']:.2f}x fewer params "
            f"and runs {r['latency']:.2f}x faster than the teacher here.", "",
            "![samples](samples.png)", "", "![loss curves](curves.png)", ""]
  return "\n".join(lines)
