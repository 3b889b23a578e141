"""``jaxgc gan``: train a GAN teacher from scratch, deterministically, with FID along the way.

Architectures (``config.arch``): ``"dcgan"`` (Radford et al. 2016; the DCGAN tutorial
layout of :mod:`jaxgc.models.dcgan`, BatchNorm on the batch's statistics in training, running
statistics kept for inference; non-saturating loss on D's sigmoid; Adam 2e-4, beta1 0.5).
``"pix2pix"`` (Isola et al. 2017: :class:`~jaxgc.models.unet.UnetGenerator` with
``num_downs`` levels, BatchNorm, no dropout, and the 70x70-style
:class:`~jaxgc.models.patchgan.PatchGANDiscriminator` on ``concat(A, B)``; vanilla GAN loss on
logits plus ``l1_weight`` (100) * L1; Adam 2e-4, beta1 0.5, as ``models/pix2pix_model.py``).
``"stylegan2"`` (Karras et al. 2020, the NVlabs layout of :mod:`jaxgc.models.stylegan2`, small:
``g_width`` / ``d_width`` channels at every resolution (64 at most in the shipped config), the
unfused modulated convolution, ``n_mlp`` mapping layers; the non-saturating logistic loss on
logits, lazy R1 (``r1_gamma``, every ``r1_every`` steps) and an EMA generator (``ema_decay``,
``ema_rampup``);
weights from the model's own equalized-learning-rate initialisation (N(0, 1), seeded); the
noise inputs are the stored constant noise maps (``noise_mode="const"``) in training too, not
fresh noise per step, and Adam's betas are not adjusted for the lazy interval).
``"sagan"`` (Zhang et al. 2019, heykeetae/Self-Attention-GAN, :mod:`jaxgc.models.sagan`, at
32x32 jaxgc's own generalisation of upstream's 64x64 model (where its attention layers sit: that
module's docstring); ``g_width`` / ``d_width`` are upstream's ``g_conv_dim`` / ``d_conv_dim``;
spectral normalisation in every forward (one power iteration, the vectors kept in the
``spectral`` collection and updated by the step like BatchNorm's statistics); hinge loss and
two learning rates (TTUR: G 1e-4, D 4e-4, Adam betas (0, 0.9), upstream's defaults in the
shipped config); weights N(0, 0.02) as DCGAN (upstream keeps PyTorch's default init), ``u`` and
``v`` start as constant unit vectors (upstream: random); the saved networks are folded
(:func:`jaxgc.models.sagan.fold_spectral`: kernels ``W / sigma``, as a converted SAGAN).
Data (``config.data.source``): ``"fashion_mnist"``, ``"mnist"`` or an image folder
(:mod:`jaxgc.data.gan_images`: 28x28 padded to 32x32, ``channels`` 1 or 3); for pix2pix an AB
folder root with ``train/`` and ``test/`` (``scripts/make_edges.py`` makes edges ->
Fashion-MNIST).

Every run is a function of its config: weights from ``numpy`` draws seeded by ``seed``
(:func:`jaxgc.models.layers.normal_init`, N(0, 0.02) as the DCGAN paper), real batches from
``(seed, step)``, latents from ``fold_in(key(seed), step)``; so on one machine a rerun gives the
same weights bit for bit, and a killed run resumed from its checkpoint ends where an
uninterrupted one does.

Quality during training: FID every ``fid.every`` steps (and at the last) of ``fid.num_samples``
samples of fixed latents (pix2pix: the outputs for the first held-out inputs A) against
``fid.reference`` images of the held-out split (pix2pix: held-out targets B), on the feature
network ``fid.extractor``: ``"domain"`` (a LeNet-5 trained here on the training split's labels,
:mod:`jaxgc.train.classifier`, cached in the user cache folder: cheap, the default),
``"inception"`` (the FID Inception, ~6 images/s on a 2-core CPU), ``"lenet5"`` (the MNIST
LeNet-5 of the assets) or ``"pixels"``.

Outputs in the workdir:

* ``gan_config.json``: the resolved config (a rerun must agree on every training key);
* ``checkpoints/<step>/`` (orbax: both networks, both optimizers, running statistics, EMA),
  ``metrics.jsonl`` and ``tensorboard/`` (losses per step), ``fid.jsonl`` (FID per measurement);
* ``samples/step_<n>.png`` every ``sample_every`` steps (fixed latents);
* ``generator/``, ``discriminator/``: the trained networks (``jaxgc.checkpoint`` folders:
  ``jaxgc.checkpoint.load_model`` reads them, every jaxgc job takes them as a teacher);
* ``report.json`` / ``report.md``, ``fid.png`` (the FID curve), ``samples.png``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from jaxgc import _fileio
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc.checkpoint import check_writable_dir
from jaxgc.checkpoint import load_model
from jaxgc.checkpoint import save_model
from jaxgc.data import gan_images
from jaxgc.data import inputs as inputs_lib
from jaxgc.eval import extractors as extractors_lib
from jaxgc.eval import metrics as metrics_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs
from jaxgc.models import layers
from jaxgc.models.dcgan import DCGANDiscriminator
from jaxgc.models.dcgan import DCGANGenerator
from jaxgc.models import sagan
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.models.stylegan2 import StyleGAN2Discriminator
from jaxgc.models.stylegan2 import StyleGAN2Generator
from jaxgc.models.unet import UnetGenerator
from jaxgc.train import checkpoint_manager
from jaxgc.train import classifier as classifier_lib
from jaxgc.train import gan_step

CONFIG_FILE = "gan_config.json"
FID_FILE = "fid.jsonl"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
ARCHS = ("dcgan", "pix2pix", "stylegan2", "sagan")
EXTRACTORS = ("domain", "inception", "lenet5", "pixels")
# Keys a rerun may change; every other key must match the run that wrote the checkpoints.
RESUMABLE_KEYS = ("steps", "checkpoint_every", "max_to_keep", "sample_every", "tensorboard")
# Streams of numpy's generator seeded with (seed, stream): FID latents, grid latents, the
# held-out reference subset.
_FID_STREAM, _GRID_STREAM, _REF_STREAM = 1, 2, 3
_GRID = 16

# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = (CONFIG_FILE, runs.CHECKPOINT_DIR, runs.METRICS_FILE, runs.TENSORBOARD_DIR, FID_FILE,
           "samples", "generator", "discriminator", REPORT_JSON, REPORT_MD, "fid.png",
           "samples.png")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc gan`` understands, with its default. Configs override these."""
  c = ml_collections.ConfigDict()
  c.arch = "dcgan"
  c.data = ml_collections.ConfigDict()
  c.data.source = "fashion_mnist"   # | "mnist" | a folder of images
  c.data.resolution = 32
  c.data.channels = 1
  c.model = ml_collections.ConfigDict()
  c.model.z_dim = 100
  c.model.g_width = 64        # G's last hidden width; doubled towards the latent
  c.model.d_width = 64        # D's first width; doubled towards the output
  c.model.num_downs = 5       # pix2pix: U-Net levels (the resolution a multiple of 2**num_downs)
  c.model.n_layers = 3        # pix2pix: PatchGAN stride-2 convolutions
  c.model.n_mlp = 2           # stylegan2: mapping layers (w_dim = z_dim)
  c.data.input_channels = 1   # pix2pix: channels of the inputs A
  c.loss = "non_saturating_prob"   # see jaxgc.train.gan_losses.TRAINING_LOSSES
  c.g_learning_rate = 2e-4
  c.d_learning_rate = 2e-4
  c.beta1 = 0.5
  c.beta2 = 0.999
  c.ema_decay = 0.0
  c.ema_rampup = 0.0          # StyleGAN2-ADA's EMA ramp-up (0.05 for small data), 0: none
  c.r1_gamma = 0.0
  c.r1_every = 16
  c.l1_weight = 100.0         # pix2pix's lambda_L1
  c.batch_size = 64           # a multiple of the device count
  c.steps = 2000
  c.seed = 0
  c.checkpoint_every = 250
  c.max_to_keep = 2
  c.sample_every = 250        # 0: never
  c.tensorboard = True
  c.fid = ml_collections.ConfigDict()
  c.fid.every = 500           # 0: only at the end
  c.fid.num_samples = 500
  c.fid.reference = 2000      # held-out images
  c.fid.extractor = "domain"
  c.fid.classifier_steps = 600   # training steps of the "domain" classifier
  c.fid.classifier_data = ""  # "" (the training split's labels) | "fashion_mnist" | "mnist"
  return c


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user`` (strictly), validated before anything is read or written.

  Raises:
    ValueError: an unknown key or a wrongly typed value; an unknown arch, loss or extractor; a
      resolution the architecture cannot produce; channels other than 1 or 3; non-positive
      sizes or learning rates.
  """
  cfg = config_lib.merge(default_config(), user)
  if cfg.arch not in ARCHS:
    raise ValueError(f"unknown arch {cfg.arch!r}; expected one of {ARCHS}")
  if cfg.fid.extractor not in EXTRACTORS:
    raise ValueError(f"unknown fid.extractor {cfg.fid.extractor!r}; expected one of "
                     f"{EXTRACTORS}")
  for key in ("channels", "input_channels"):
    if cfg.data[key] not in (1, 3):
      raise ValueError(f"data.{key} must be 1 or 3, got {cfg.data[key]}")
  if cfg.fid.classifier_data not in ("",) + gan_images.SOURCES:
    raise ValueError(f"fid.classifier_data must be '' or one of {gan_images.SOURCES}, got "
                     f"{cfg.fid.classifier_data!r}")
  for key in ("g_learning_rate", "d_learning_rate"):
    if not cfg[key] > 0 or not math.isfinite(cfg[key]):
      raise ValueError(f"{key} must be a positive number, got {cfg[key]}")
  for key in ("batch_size", "checkpoint_every", "max_to_keep", "r1_every"):
    if cfg[key] < 1:
      raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
  for key in ("z_dim", "g_width", "d_width", "n_layers", "n_mlp"):
    if cfg.model[key] < 1:
      raise ValueError(f"model.{key} must be >= 1, got {cfg.model[key]}")
  for key in ("num_samples", "reference"):
    if cfg.fid[key] < 2:
      raise ValueError(f"fid.{key} must be >= 2 (FID needs a covariance), got {cfg.fid[key]}")
  if cfg.steps < 0 or cfg.sample_every < 0 or cfg.fid.every < 0:
    raise ValueError(f"steps, sample_every and fid.every must be >= 0, got {cfg.steps}, "
                     f"{cfg.sample_every}, {cfg.fid.every}")
  _objective(cfg)   # loss, EMA and R1 ranges
  build_models(cfg)   # the resolution check
  return cfg


def _objective(cfg) -> gan_step.GANConfig:
  return gan_step.GANConfig(
      loss=cfg.loss, z_dim=int(cfg.model.z_dim), conditional=cfg.arch == "pix2pix",
      l1_weight=float(cfg.l1_weight), r1_gamma=float(cfg.r1_gamma), r1_every=int(cfg.r1_every),
      ema_decay=float(cfg.ema_decay), ema_rampup=float(cfg.ema_rampup))


def _doublings(resolution: int, arch: str, base: int = 4) -> int:
  k = math.log2(resolution / base) if resolution >= base else -1
  if k < 1 or k != int(k):
    raise ValueError(f"config.data.resolution {resolution} cannot be produced by {arch}: its "
                     f"generator doubles a {base}x{base} map, so it makes {base} * 2**k pixels "
                     f"(8, 16, 32, 64, ...)")
  return int(k)


def build_models(cfg):
  """``(generator, discriminator)`` of ``cfg.arch`` at ``cfg.data.resolution``.

  DCGAN at ``2**(k + 2)`` pixels: G ``ConvT`` widths ``(g_width * 2**(k-1), ..., g_width,
  channels)`` (``k + 1`` layers, 4x4 up to the resolution); D widths ``(d_width, ...,
  d_width * 2**(k-1))`` and a last stride-2 convolution (a 2x2 map of probabilities at 32x32).

  StyleGAN2 (``r`` a power of 2 >= 8): ``g_width`` / ``d_width`` channels at every
  resolution, NVlabs layout, ``w_dim = z_dim``.

  pix2pix: ``UnetGenerator(input_channels, channels, num_downs, ngf=g_width)`` (BatchNorm, no
  dropout) and ``PatchGANDiscriminator(input_channels + channels, ndf=d_width, n_layers)``.

  SAGAN (32 or 64 pixels): ``SAGANGenerator(z_dim, conv_dim=g_width)`` and
  ``SAGANDiscriminator(conv_dim=d_width)`` in training mode (``spectral_training=True``).

  Raises:
    ValueError: a resolution the architecture cannot produce.
  """
  r, ch, m = int(cfg.data.resolution), int(cfg.data.channels), cfg.model
  if cfg.arch == "pix2pix":
    side = 2**int(m.num_downs)
    if m.num_downs < 5 or r % side:
      raise ValueError(f"config.data.resolution {r} cannot be produced by pix2pix with "
                       f"model.num_downs {m.num_downs}: the U-Net needs num_downs >= 5 and a "
                       f"multiple of 2**num_downs = {side}")
    if r < 3 * 2**int(m.n_layers):
      raise ValueError(f"config.data.resolution {r} is too small for a PatchGAN with "
                       f"model.n_layers {m.n_layers} (at least {3 * 2**int(m.n_layers)})")
    a_ch = int(cfg.data.input_channels)
    return (UnetGenerator(input_nc=a_ch, output_nc=ch, num_downs=int(m.num_downs),
                          ngf=int(m.g_width)),
            PatchGANDiscriminator(input_nc=a_ch + ch, ndf=int(m.d_width),
                                  n_layers=int(m.n_layers), image_size=r))
  if cfg.arch == "sagan":
    if r not in sagan.IMAGE_SIZES:
      raise ValueError(f"config.data.resolution {r} cannot be produced by sagan: it makes "
                       f"{sagan.IMAGE_SIZES[0]}x{sagan.IMAGE_SIZES[0]} (jaxgc's generalisation) or "
                       f"{sagan.IMAGE_SIZES[1]}x{sagan.IMAGE_SIZES[1]} (upstream) images")
    for key in ("g_width", "d_width"):
      if m[key] < 8:
        raise ValueError(f"model.{key} must be >= 8 for sagan (its attention layers need 8 "
                         f"channels), got {m[key]}")
    return (sagan.SAGANGenerator(z_dim=int(m.z_dim), conv_dim=int(m.g_width), image_size=r,
                                 channels=ch, spectral_training=True),
            sagan.SAGANDiscriminator(conv_dim=int(m.d_width), image_size=r, input_nc=ch,
                                     spectral_training=True))
  k = _doublings(r, cfg.arch)
  if cfg.arch == "stylegan2":
    n_res = k + 1   # 4, 8, ..., r
    g = StyleGAN2Generator(size=r, channels=(int(m.g_width),) * n_res, z_dim=int(m.z_dim),
                           w_dim=int(m.z_dim), n_mlp=int(m.n_mlp), img_channels=ch,
                           layout="nvlabs")
    d = StyleGAN2Discriminator(image_size=r, channels=(int(m.d_width),) * n_res, input_nc=ch,
                               layout="nvlabs")
    return g, d
  g = DCGANGenerator(features=tuple(int(m.g_width) * 2**(k - 1 - i) for i in range(k)) + (ch,),
                     z_dim=int(m.z_dim))
  d = DCGANDiscriminator(features=tuple(int(m.d_width) * 2**i for i in range(k)), input_nc=ch,
                         image_size=r)
  return g, d


def _init(cfg, g, d) -> tuple[dict, dict]:
  r, ch = int(cfg.data.resolution), int(cfg.data.channels)
  seed = int(cfg.seed)
  if cfg.arch == "pix2pix":
    a_ch = int(cfg.data.input_channels)
    g_in, d_ch = (1, r, r, a_ch), a_ch + ch
  else:
    g_in, d_ch = (1, int(cfg.model.z_dim)), ch
  if cfg.arch == "stylegan2":   # equalized learning rate: the model's own N(0, 1) init
    g_vars = g.init(jax.random.key(seed), np.zeros(g_in, np.float32))
    d_vars = d.init(jax.random.key(seed + 1), np.zeros((1, r, r, d_ch), np.float32))
    return jax.tree.map(np.asarray, g_vars), jax.tree.map(np.asarray, d_vars)
  g_vars = layers.normal_init(g, jax.ShapeDtypeStruct(g_in, np.float32), seed=seed)
  d_vars = layers.normal_init(d, jax.ShapeDtypeStruct((1, r, r, d_ch), np.float32),
                              seed=seed + 1)
  if cfg.arch == "sagan":   # the power-iteration state as the module initialises it
    for v in (g_vars, d_vars):
      v[sagan.SPECTRAL] = jax.tree.map(
          lambda x: np.full(x.shape, x.size**-0.5 if x.ndim else 1.0, np.float32),
          v[sagan.SPECTRAL])
  return g_vars, d_vars


def _optimizers(cfg):
  return (optax.adam(float(cfg.g_learning_rate), float(cfg.beta1), float(cfg.beta2)),
          optax.adam(float(cfg.d_learning_rate), float(cfg.beta1), float(cfg.beta2)))


def _latents(cfg, n: int, stream: int) -> np.ndarray:
  return np.random.default_rng((int(cfg.seed), stream)).standard_normal(
      (n, int(cfg.model.z_dim))).astype(np.float32)


def _domain_classifier(cfg, train_x, train_labels, source_desc: str, progress: bool):
  """The cached LeNet-5 domain classifier of this training set (or of
  ``fid.classifier_data``'s), trained on first use."""
  if cfg.fid.classifier_data:
    train_x, _, train_labels, source_desc = gan_images.load_split(
        cfg.fid.classifier_data, int(cfg.data.resolution), int(cfg.data.channels),
        int(cfg.seed))
  if train_labels is None:
    raise ValueError(f"fid.extractor 'domain' trains a classifier on class labels, and "
                     f"{cfg.data.source!r} has none; set fid.classifier_data to a labelled set "
                     "of the same domain, or use fid.extractor 'inception' or 'pixels'")
  h = hashlib.sha256(np.ascontiguousarray(train_x).data)
  h.update(np.ascontiguousarray(train_labels).data)
  h.update(repr((int(cfg.fid.classifier_steps), int(cfg.seed))).encode())
  path = os.path.join(_fileio.cache_root(), "domain_classifiers", h.hexdigest()[:24])
  if os.path.isdir(path):
    module, variables = load_model(path)
    with open(os.path.join(path, "spec.json")) as f:
      accuracy = json.load(f).get("train_accuracy")
    return module, variables, accuracy
  if progress:
    print(f"jaxgc: note: training the domain classifier for FID ({cfg.fid.classifier_steps} "
          f"steps on {source_desc}; cached in {path})", file=sys.stderr, flush=True)
  module, variables, accuracy = classifier_lib.train_classifier(
      train_x, train_labels, steps=int(cfg.fid.classifier_steps), seed=int(cfg.seed))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  save_model(path, module, variables, extra={"train_accuracy": accuracy,
                                             "trained_on": source_desc})
  return module, variables, accuracy


def feature_extractor(cfg, train_x, train_labels, source_desc: str, progress: bool):
  """``(images uint8 [n, h, w, c] -> features [n, d], description)`` of ``cfg.fid.extractor``."""
  name = cfg.fid.extractor
  if name != "domain":
    desc = {"inception": "the FID Inception (pool3, 2048-d)",
            "lenet5": "the MNIST LeNet-5 of the assets (f6, 84-d)",
            "pixels": "raw pixels"}[name]
    return (lambda x: extractors_lib.extract_features(x, name, progress=False)), desc
  module, variables, accuracy = _domain_classifier(cfg, train_x, train_labels, source_desc,
                                                   progress)
  fn = lambda x: parallel.batched_apply(  # noqa: E731
      lambda v, b: module.apply(v, b, method=module.features), classifier_lib.preprocess(x),
      500, None, False, "features", variables=variables)
  acc = "" if accuracy is None else f", {accuracy:.1%} training accuracy"
  steps = int(cfg.fid.classifier_steps)
  on = cfg.fid.classifier_data or "this run's"
  return fn, (f"a LeNet-5 domain classifier trained here on {on} training split ({steps} Adam "
              f"steps{acc}; f6, 84-d)")


@runs.locked_workdir("gan", OUTPUTS, signature=(CONFIG_FILE,))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the GAN of ``config`` in ``workdir`` and writes the report.

  Args:
    config: a ConfigDict or dict overriding ``default_config()``.
    workdir: output folder; created if needed; a killed run resumes from its last checkpoint.
    progress: tqdm bar over the steps, and notes when a classifier is trained.

  Returns:
    The report as written to ``report.json``.

  Raises:
    ValueError: bad config (see :func:`resolve_config`); a batch size that is not a multiple
      of the device count; a folder of mixed image sizes; a workdir whose checkpoints were
      written under another config.
    FileNotFoundError: a missing data asset or folder.
    FloatingPointError: the loss became NaN or Inf (naming the step).
    PermissionError: workdir not writable.
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  mesh = runs.batch_mesh(int(cfg.batch_size))
  g, d = build_models(cfg)
  data = load_data(cfg)
  features, feature_desc = feature_extractor(cfg, data["targets"], data["labels"],
                                             data["desc"], progress)
  os.makedirs(workdir, exist_ok=True)
  runs.check_resume(os.path.join(workdir, CONFIG_FILE), cfg.to_dict(), RESUMABLE_KEYS,
                    runs.holds_progress(workdir),
                    defaults=default_config().to_dict())
  state, seconds, start = train(cfg, g, d, data, features, mesh, workdir, progress)
  report = measure_and_save(cfg, g, d, state, workdir, data, feature_desc, seconds, start)
  write_report(report, workdir)
  return report


def load_data(cfg) -> dict[str, Any]:
  """Stage 1: the data, uint8 images ``[n, h, w, c]``.

  Returns:
    ``{"train": what batches are drawn from (pix2pix: A and B concatenated on channels),
    "targets": the training images (B), "held": held-out images (B), "held_a": held-out inputs
    A (pix2pix) or None, "labels": the training images' labels or None, "desc": a
    description}``.
  """
  r, ch = int(cfg.data.resolution), int(cfg.data.channels)
  if cfg.arch == "pix2pix":
    ta, tb, ha, hb, desc = gan_images.load_pairs(cfg.data.source, r,
                                                 int(cfg.data.input_channels), ch)
    return {"train": np.concatenate([ta, tb], axis=-1), "targets": tb, "held": hb,
            "held_a": ha, "labels": None, "desc": desc}
  train_x, held_x, labels, desc = gan_images.load_split(cfg.data.source, r, ch, int(cfg.seed))
  return {"train": train_x, "targets": train_x, "held": held_x, "held_a": None,
          "labels": labels, "desc": desc}


def _inputs(cfg, data, n: int, stream: int) -> np.ndarray:
  """``n`` fixed generator inputs: latents of ``stream``, or the first held-out inputs A."""
  if data["held_a"] is None:
    return _latents(cfg, n, stream)
  return gan_images.to_float(data["held_a"][:n])


def _grid_rows(cfg, g, g_vars, data, label: str) -> list[tuple[str, np.ndarray]]:
  out = inputs_lib.to_uint8(parallel.generate(g, g_vars, _inputs(cfg, data, _GRID,
                                                                 _GRID_STREAM)))
  if data["held_a"] is None:
    return [(label, out)]
  return [("input A", data["held_a"][:_GRID]), (label, out), ("target B", data["held"][:_GRID])]


def train(cfg, g, d, data, features, mesh, workdir, progress):
  """Stage 2: the resumable training loop with sample grids and FID; ``(state, seconds,
  start step)``."""
  train_x, held_x = data["train"], data["held"]
  g_tx, d_tx = _optimizers(cfg)
  g_vars, d_vars = _init(cfg, g, d)
  state = parallel.replicate(gan_step.create_gan_state(g_vars, d_vars, g_tx, d_tx,
                                                       ema=cfg.ema_decay > 0), mesh)
  step_fn = gan_step.make_gan_step(g, d, _objective(cfg), g_tx, d_tx, mesh)
  key = parallel.replicate(jax.random.key(int(cfg.seed)), mesh)
  seed, batch_size = int(cfg.seed), int(cfg.batch_size)
  a_ch = int(cfg.data.input_channels)

  def batch(s):
    x = gan_images.real_batch(train_x, batch_size, seed, s)
    if data["held_a"] is not None:
      x = {"a": x[..., :a_ch], "b": x[..., a_ch:]}
    return parallel.shard_batch(x, mesh)

  ref_idx = np.sort(np.random.default_rng((seed, _REF_STREAM)).choice(
      len(held_x), size=min(int(cfg.fid.reference), len(held_x)), replace=False))
  ref_features = features(held_x[ref_idx])
  fid_z = _inputs(cfg, data, int(cfg.fid.num_samples), _FID_STREAM)
  steps = int(cfg.steps)
  fid_path = os.path.join(workdir, FID_FILE)
  os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)

  def on_step(step, st):
    grid = cfg.sample_every and step % int(cfg.sample_every) == 0
    fid = step == steps or (cfg.fid.every and step % int(cfg.fid.every) == 0)
    if not (grid or fid):
      return
    v = jax.device_get(gan_step.generator_variables(st))
    if grid:
      report_lib.sample_grid(_grid_rows(cfg, g, v, data, f"step {step}"),
                             os.path.join(workdir, "samples", f"step_{step:06d}.png"), cell=64)
    if fid:
      fake = inputs_lib.to_uint8(parallel.generate(g, v, fid_z))
      value = metrics_lib.fid(ref_features, features(fake))
      with open(fid_path, "a") as f:
        f.write(json.dumps({"step": step, "fid": report_lib.finite_or_none(value)}) + "\n")

  manager = checkpoint_manager(os.path.join(workdir, runs.CHECKPOINT_DIR),
                               int(cfg.checkpoint_every), int(cfg.max_to_keep))
  try:
    state, start = runs.restore(manager, state, steps, workdir)
    runs.rewind_metrics(fid_path, start)
    state, seconds = runs.run_steps(
        step_fn, state, batch, (key,), manager=manager, run_dir=workdir, start=start,
        steps=steps, desc=f"gan {cfg.arch}", progress=progress,
        tensorboard=bool(cfg.tensorboard), on_step=on_step)
  finally:
    manager.close()
  return state, seconds, start


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def measure_and_save(cfg, g, d, state, workdir, data, feature_desc, seconds, start):
  """Stage 3: the trained networks saved as model folders, and the report's facts."""
  data_desc = data["desc"]
  g_vars = jax.tree.map(np.asarray, jax.device_get(gan_step.generator_variables(state)))
  d_vars = jax.tree.map(np.asarray, jax.device_get(gan_step.discriminator_variables(state)))
  if cfg.arch == "sagan":   # saved as inference models: spectral normalisation folded
    g, g_vars = sagan.fold_spectral(g, g_vars)
    d, d_vars = sagan.fold_spectral(d, d_vars)
  extra = {"trained_by": "jaxgc gan", "config": cfg.to_dict(), "data": data_desc}
  save_model(os.path.join(workdir, "generator"), g, g_vars, extra=extra)
  save_model(os.path.join(workdir, "discriminator"), d, d_vars, extra=extra)
  curve = _read_jsonl(os.path.join(workdir, FID_FILE))
  losses = _read_jsonl(os.path.join(workdir, runs.METRICS_FILE))
  held_out = None
  if data["held_a"] is None:
    images = inputs_lib.to_uint8(parallel.generate(g, g_vars, _latents(cfg, 4 * _GRID,
                                                                       _GRID_STREAM)))
    rows = [(f"samples {i + 1}", images[i * _GRID:(i + 1) * _GRID]) for i in range(4)]
    example = np.zeros((8, int(cfg.model.z_dim)), np.float32)
  else:
    rows = _grid_rows(cfg, g, g_vars, data, "output")
    example = gan_images.to_float(data["held_a"][:8])
    a = gan_images.to_float(data["held_a"])
    out = parallel.generate(g, g_vars, a)
    b = gan_images.to_float(data["held"])
    held_out = {"pairs": len(a), "l1": float(np.mean(np.abs(out - b))),
                **report_lib.image_metrics(b, out)}
  report_lib.sample_grid(rows, os.path.join(workdir, "samples.png"), cell=64)
  last = losses[-1] if losses else {}
  return {
      "config": cfg.to_dict(), "data": data_desc, "feature_net": feature_desc,
      "generator": report_lib.model_facts(g, g_vars, example, None), "held_out": held_out,
      "discriminator": {"params": int(sum(np.size(x) for x in jax.tree.leaves(d_vars["params"])))},
      "steps": int(jax.device_get(state.step)), "resumed_from": start,
      "train_seconds_this_run": seconds, "fid_curve": curve,
      "final_fid": curve[-1]["fid"] if curve else None,
      "final_losses": {k: v for k, v in last.items() if k != "step"},
      "devices": jax.device_count(), "platform": jax.default_backend()}


def _plot_fid(curve: list[dict], feature_desc: str, path: str) -> None:
  plt = report_lib.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  pts = [(c["step"], c["fid"]) for c in curve if c["fid"] is not None]
  if pts:
    ax.plot(*zip(*pts), marker="o")
  ax.set_xlabel("training step")
  ax.set_ylabel("FID (lower is better)")
  ax.set_title(f"FID on {feature_desc.split(' (')[0]}", fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  report_lib.save_figure(fig, path, dpi=120)


def _markdown(report: dict) -> str:
  c, gm = report["config"], report["generator"]
  rows = [(r["step"], report_lib.fmt(r["fid"], ".2f")) for r in report["fid_curve"]]
  table = report_lib.table(["step", "FID"], rows, "rr") if rows else ["(no FID measured)"]
  lines = [
      f"# jaxgc gan: {c['arch']} on {c['data']['source']}, "
      f"{c['data']['resolution']}x{c['data']['resolution']}x{c['data']['channels']}",
      "",
      f"- data: {report['data']}",
      f"- generator: {gm['arch']}, {gm['params']:,} params, {gm['macs'] / 1e6:,.2f} M MACs per "
      f"sample; discriminator: {report['discriminator']['params']:,} params",
      f"- loss {c['loss']}; Adam G {c['g_learning_rate']}, D {c['d_learning_rate']}, betas "
      f"({c['beta1']}, {c['beta2']}); batch {c['batch_size']}; EMA {c['ema_decay']} (ramp-up {c['ema_rampup']}); R1 gamma "
      f"{c['r1_gamma']} every {c['r1_every']}"
      f"{'; L1 weight ' + str(c['l1_weight']) if c['arch'] == 'pix2pix' else ''}; seed "
      f"{c['seed']}",
      f"- {report['steps']} steps; this invocation trained from step {report['resumed_from']} in "
      f"{report['train_seconds_this_run']:.0f} s on {report['devices']} "
      f"{report['platform']} device(s)",
      f"- FID: {c['fid']['num_samples']} "
      f"{'outputs for held-out inputs' if report.get('held_out') else 'samples (fixed latents)'}"
      f" against {c['fid']['reference']} held-out images, features of {report['feature_net']}; "
      "comparable only with FIDs measured the same way",
      f"- final FID: **{report_lib.fmt(report['final_fid'], '.2f')}**",
      *([] if not report.get("held_out") else [
          f"- held-out pairs ({report['held_out']['pairs']}): L1 "
          f"{report['held_out']['l1']:.4f} (in [-1, 1] units), PSNR "
          f"{report_lib.fmt(report['held_out']['psnr_db'], '.2f')} dB, SSIM "
          f"{report['held_out']['ssim']:.4f} against the targets B"]),
      "",
      *table,
      "",
      "![FID during training](fid.png)",
      "",
      "![samples](samples.png)",
      "",
  ]
  return "\n".join(lines)


def write_report(report: dict, workdir: str) -> None:
  """Stage 4: ``report.json``, ``fid.png`` and ``report.md``."""
  runs.write_json(os.path.join(workdir, REPORT_JSON), report)
  _plot_fid(report["fid_curve"], report["feature_net"], os.path.join(workdir, "fid.png"))
  _fileio.atomic_write_text(os.path.join(workdir, REPORT_MD), _markdown(report))
