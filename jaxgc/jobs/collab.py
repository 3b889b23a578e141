"""``jaxgc collab``: collaborative generator/discriminator pruning that preserves the local
density structure of the teacher's outputs, against baselines at the same MACs budget.

Ganjdanesh et al., "Compressing Image-to-Image Translation GANs Using Local Density Structures
on Their Learned Manifold", AAAI 2024 (arXiv 2312.14776), METHODS.md section 2. No public code
exists; the objective, the agents and the schedule are our reconstruction
(:mod:`jaxgc.train.density`, :mod:`jaxgc.train.agents`, :mod:`jaxgc.train.collab_step`).

For every method x G budget (a fraction of the teacher's MACs) of the config:

* collaborative methods (``collab`` and its ablations ``no_density`` (c), ``no_peer`` (d),
  ``g_only`` (e)): ``search_steps`` collaborative steps (agents gate a full-width copy of the
  teacher G and of the trained D, both trained), the agents' decisions hardened onto the budgets
  (within 2%), G and D physically slimmed (:func:`jaxgc.compress.slim.slim`), then
  ``finetune_steps`` steps of the same objective on the slimmed pair (every gate open);
* ``magnitude_l1`` (baseline (a)): G slimmed to the budget by L1 filter magnitude
  (:func:`jaxgc.compress.slim.slim_to_macs`), then L1 distillation to the teacher, D unpruned;
* ``selfsup`` (baseline (b)): the same slimmed G trained by self-supervised compression (MSE
  to the teacher + the frozen D's adversarial loss, :mod:`jaxgc.train.selfsup_step`);
* ``crd`` (baseline (f), image generators only): the same slimmed G trained by content
  relationship distillation with an online D (:mod:`jaxgc.train.crd_step`, ``jaxgc distill``'s
  step and loss defaults);

baselines train ``search_steps + finetune_steps`` steps, as many as the collaborative methods.

Two kinds of G/D pair:

* an unconditional generator and its trained discriminator (the MNIST MLP pair): inputs are
  seeded latents, perturbed by ``z + sigma * eps``; phi is the loaded D's copy;
* an image-to-image generator (ResNet / U-Net) with a PatchGAN: either a fresh one trained
  online (``discriminator = "online"``, CycleGAN's instance-norm PatchGAN of ``disc.ndf`` /
  ``disc.n_layers``) or a trained one (pix2pix's conditional PatchGAN, which reads input and
  output concatenated). Inputs are random crops of scikit-image photos (``data.source =
  "photos"``; D's real samples are the teacher's outputs) or the pairs of a pix2pix AB folder
  (``"paired"``; D's real samples are the real target images B). Perturbed copies are shifts of
  up to ``max_shift`` pixels plus noise of std ``sigma``. First ``d_warmup_steps`` steps train D
  alone (:func:`jaxgc.train.collab_step.make_d_warmup_step`, in ``runs/d_warmup/``); that D is
  where every collaborative search starts, its frozen copy is phi, and baseline (b) trains
  against it. Quality: PSNR to the teacher on held-out inputs, and the sample metrics of the
  student's translations of them against the teacher's (``metrics.extractor``, e.g.
  ``"inception"``).

Outputs in the workdir:

* ``collab_config.json``: the resolved config (a rerun must agree on every training key);
* ``runs/<method>_b<budget>/``: ``search/`` and ``finetune/`` phases (orbax ``checkpoints/``,
  ``metrics.jsonl``, ``tensorboard/``; a rerun resumes a killed phase and skips finished
  settings), ``model_g/`` and ``model_d/`` (the slimmed pair, ``jaxgc.checkpoint`` format) and
  ``result.json``;
* ``report.json`` (``"rows"``: one per method and budget with MACs, params, latency, PSNR /
  SSIM to the teacher on held-out inputs and FID / KID / precision / recall / density /
  coverage of the student's samples against the teacher's; ``"dynamics"``: per setting the
  per-step D real/fake accuracy, G and D losses and each agent's per-group keep ratios;
  ``"stability"``: the standard deviation of D's accuracy and the steps where D's fake
  accuracy sits at 0 or 1), ``report.md``, ``dynamics.png``, ``keep_ratios.png``,
  ``widths.png`` and ``samples.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgc import _fileio
from jaxgc import _signals
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc import stats
from jaxgc import train as train_lib
from jaxgc.checkpoint import check_writable_dir
from jaxgc.checkpoint import load_any_model
from jaxgc.checkpoint import save_model
from jaxgc.compress import slim as slim_lib
from jaxgc.data import gan_images
from jaxgc.data import inputs as inputs_lib
from jaxgc.eval import scoring as eval_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs
from jaxgc.models import layers
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.train import agents as agents_lib
from jaxgc.train import collab_step as collab_lib
from jaxgc.train import crd_step
from jaxgc.train import density as density_lib

CONFIG_FILE = "collab_config.json"
RESULT_FILE = "result.json"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
SETTING_KEY = "name"
# collaborative methods: their CollabConfig overrides; baselines: None
METHODS = {"collab": {}, "no_density": {"density_weight": 0.0, "pair_weight": 0.0},
           "no_peer": {"use_peer": False}, "g_only": {"prune_d": False},
           "magnitude_l1": None, "selfsup": None, "crd": None}
EXTRACTORS = ("none", "lenet5", "inception", "pixels")
DATA_SOURCES = ("photos", "paired")
ONLINE = "online"   # config.discriminator: a fresh PatchGAN trained online
WARMUP_DIR = "d_warmup"
RESUMABLE_KEYS = ("checkpoint_every", "max_to_keep", "tensorboard", "latency_repeats")
DYNAMICS_KEYS = ("loss", "g_loss", "d_loss", "d_acc_real", "d_acc_fake", "density", "g_ratio",
                 "d_ratio")
_EVAL_STREAM = 1

OUTPUTS = (CONFIG_FILE, "runs", REPORT_JSON, REPORT_MD, "samples.png", "dynamics.png",
           "keep_ratios.png", "widths.png")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc collab`` understands, with its default. Configs override these."""
  c = ml_collections.ConfigDict()
  c.generator = ""            # teacher G (unconditional or image-to-image; .ckpt/.pth or a
                              # jaxgc model folder)
  c.discriminator = ""        # its trained D (required: the D-agent prunes it), or "online": a
                              # fresh PatchGAN (disc.*) trained online from a D warm-up
  c.disc = ml_collections.ConfigDict()
  c.disc.ndf = 64             # discriminator "online": the PatchGAN's width and depth (instance
  c.disc.n_layers = 3         # norm, N(0, 0.02) init, as CycleGAN's)
  c.d_warmup_steps = 0        # D alone before the search (phi is its copy after them)
  c.data = ml_collections.ConfigDict()   # image-to-image generators only
  c.data.source = "photos"    # "photos": random crops of scikit-image photos | "paired": a
                              # pix2pix AB folder (data.root), its B images D's real samples
  c.data.root = ""
  c.data.photos = inputs_lib.TRAIN_PHOTOS       # training crops
  c.data.eval_photos = inputs_lib.SKIMAGE_PHOTOS   # held-out crops (PSNR, FID, ...)
  c.data.size = 64            # crop side (photos) or resolution (paired)
  c.methods = ("collab", "no_density", "no_peer", "g_only", "magnitude_l1", "selfsup")
  c.budgets = (0.5, 0.25, 0.1)   # G's MACs budget, fractions of the teacher's, in (0, 1]
  c.d_budget = 0.0            # D's budget; 0 for the same fraction as G's
  c.search_steps = 300
  c.finetune_steps = 200
  c.batch_size = 64
  c.k = 4                     # in-batch neighbours per centre
  c.m = 2                     # perturbed copies per latent
  c.sigma = 0.3               # latent perturbation (images: the perturbed copies' noise std)
  c.max_shift = 2             # images: the perturbed copies' largest shift in pixels
  c.density_weight = 1.0
  c.lam = 1.0                 # weight of the log-KDE term inside the density loss
  c.pair_weight = 0.1
  c.recon_weight = 1.0
  c.adv_weight = 0.05
  c.budget_weight = 2.0
  c.temperature = agents_lib.TEMPERATURE
  c.d_outputs = "prob"        # "prob" (D ends in a sigmoid) | "logits"
  c.feature_layer = "dense_2"   # phi = the input of this layer of the frozen D copy
                              # ("conv_4" for a 3-layer PatchGAN)
  c.features = "discriminator"   # phi: "discriminator" | "pixels" ("inception": refused)
  c.pixel_size = 16           # "pixels": outputs resized to this side
  c.learning_rate = 3e-4      # Adam (b1 0.5) for G, D and the pair discriminator
  c.agent_learning_rate = 1e-2
  c.agent_dim = 32
  c.selfsup_adv_weight = 0.01   # baseline (b)
  c.crd_patch_size = 16       # baseline (f), image generators: CRD's patch side (divides
                              # data.size); its online D is the warmed-up one, LSGAN, weight 1
  c.eval_samples = 1000
  c.checkpoint_every = 100
  c.max_to_keep = 2
  c.latency_batch = 8
  c.latency_repeats = 10
  c.seed = 0
  c.tensorboard = True
  c.metrics = ml_collections.ConfigDict()
  c.metrics.extractor = "lenet5"
  c.metrics.num_samples = 1000
  c.metrics.nearest_k = 5
  return c


def _collab_config(cfg, method: str, budget: float, search: bool = True,
                   conditional: bool = False) -> collab_lib.CollabConfig:
  return collab_lib.CollabConfig(**{
      "features": cfg.features, "pixel_size": int(cfg.pixel_size),
      "max_shift": int(cfg.max_shift), "conditional": conditional,
      "g_budget": float(budget), "d_budget": float(cfg.d_budget) or None, "k": int(cfg.k),
      "m": int(cfg.m), "sigma": float(cfg.sigma), "density_weight": float(cfg.density_weight),
      "lam": float(cfg.lam), "pair_weight": float(cfg.pair_weight),
      "recon_weight": float(cfg.recon_weight), "adv_weight": float(cfg.adv_weight),
      "budget_weight": float(cfg.budget_weight), "temperature": float(cfg.temperature),
      "d_outputs": cfg.d_outputs, "feature_layer": cfg.feature_layer, "search": search,
      **(METHODS[method] or {})})


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user`` (strictly), validated before anything is read or written.

  Raises:
    ValueError: an unknown key or a wrongly typed value; no generator or no discriminator; an
      unknown method or extractor; a budget outside (0, 1]; ``k`` or ``m`` not smaller than
      the batch; non-positive sizes or learning rates (one line, naming the value).
  """
  cfg = config_lib.merge(default_config(), user)
  if not cfg.generator:
    raise ValueError("config.generator is empty: name the teacher generator checkpoint")
  if not cfg.discriminator:
    raise ValueError("config.discriminator is empty: collaborative pruning needs the trained "
                     "discriminator")
  if not cfg.methods or not cfg.budgets:
    raise ValueError("config.methods and config.budgets must not be empty")
  for m in cfg.methods:
    if m not in METHODS:
      raise ValueError(f"unknown method {m!r}; expected one of {tuple(METHODS)}")
  for b in cfg.budgets:
    agents_lib.check_budget(b, "budget")
  if cfg.d_budget:
    agents_lib.check_budget(cfg.d_budget, "d_budget")
  if cfg.data.source not in DATA_SOURCES:
    raise ValueError(f"unknown data.source {cfg.data.source!r}; expected one of {DATA_SOURCES}")
  if cfg.data.source == "paired" and not cfg.data.root:
    raise ValueError("data.source='paired' needs data.root, a pix2pix AB folder")
  if cfg.d_warmup_steps < 0:
    raise ValueError(f"d_warmup_steps must be >= 0, got {cfg.d_warmup_steps}")
  if cfg.metrics.extractor not in EXTRACTORS:
    raise ValueError(f"unknown metrics.extractor {cfg.metrics.extractor!r}; expected one of "
                     f"{EXTRACTORS}")
  for key in ("batch_size", "checkpoint_every", "max_to_keep", "eval_samples", "latency_batch",
              "latency_repeats", "agent_dim", "search_steps", "disc.ndf", "disc.n_layers",
              "data.size"):
    value = functools.reduce(getattr, key.split("."), cfg)
    if value < 1:
      raise ValueError(f"{key} must be >= 1, got {value}")
  if cfg.finetune_steps < 0:
    raise ValueError(f"finetune_steps must be >= 0, got {cfg.finetune_steps}")
  for key in ("learning_rate", "agent_learning_rate"):
    if not cfg[key] > 0 or not math.isfinite(cfg[key]):
      raise ValueError(f"{key} must be a positive number, got {cfg[key]}")
  density_lib.check_neighbourhood(int(cfg.batch_size), cfg.k, cfg.m)
  for m in cfg.methods:
    if METHODS[m] is not None:
      _collab_config(cfg, m, cfg.budgets[0])
  return cfg


def settings(cfg) -> list[dict[str, Any]]:
  """The (method, budget) grid."""
  return [{"method": m, "budget": float(b), "name": f"{m}_b{float(b):.2f}"}
          for m in cfg.methods for b in cfg.budgets]


@dataclasses.dataclass
class _Pair:
  """The teacher G, the D the search starts from, and the inputs of one run.

  Attributes:
    g, g_vars, g_path: the teacher generator, its variables (numpy) and where it came from.
    d, d_vars, d_path: the discriminator and its variables: the loaded D, or the online
      PatchGAN after its warm-up (:func:`_warm_up_d`); its copy is the feature space ``phi``.
    conditional: D reads input and output concatenated (pix2pix).
    train: ``step -> batch`` of the collaborative step (:func:`collab_step.split_batch`).
    train_inputs: ``step -> inputs`` alone (the baselines).
    eval_x: held-out inputs, float32 ``[n, ...]``; eval_desc: what they are.
  """

  g: Any
  g_vars: dict
  g_path: str
  d: Any
  d_vars: dict
  d_path: str
  conditional: bool
  train: Callable[[int], Any]
  train_inputs: Callable[[int], np.ndarray]
  eval_x: np.ndarray
  eval_desc: str

  @property
  def images(self) -> bool:
    """Whether G translates images (else it maps latents)."""
    return self.g.kind == "image_to_image"

  def d_example(self, x: np.ndarray) -> jax.Array:
    """D's input for G's inputs ``x``: the teacher's outputs (after ``x`` when conditional)."""
    y = parallel.generate(self.g, self.g_vars, x)
    return jnp.asarray(np.concatenate([x, y], -1) if self.conditional else y)


def _inputs(cfg, g) -> tuple[Callable[[int], Any], Callable[[int], np.ndarray], np.ndarray,
                             str]:
  """``(train, train_inputs, eval_x, description)`` of :class:`_Pair` for generator ``g``:
  seeded latents; random crops of scikit-image photos (training photos disjoint from the
  held-out ones); or the pairs of a pix2pix AB folder, whose B images are D's real samples.
  Every batch is a function of ``(seed, step)`` only (resume-exact)."""
  seed, batch, n_eval = int(cfg.seed), int(cfg.batch_size), int(cfg.eval_samples)
  if g.kind == "unconditional":
    def latents(s):
      return train_lib.sample_latents(jax.random.key(seed), s, batch, int(g.z_dim))
    eval_x = np.random.default_rng((seed, _EVAL_STREAM)).standard_normal(
        (n_eval, int(g.z_dim))).astype(np.float32)
    return (latents, latents, eval_x,
            f"{n_eval} N(0, 1) latents (seed {seed}, stream {_EVAL_STREAM})")
  size = int(cfg.data.size)
  if cfg.data.source == "photos":
    def crops(s):
      return inputs_lib.photo_crops(tuple(cfg.data.photos), batch, size, seed, s)
    eval_x = inputs_lib.photo_crops(tuple(cfg.data.eval_photos), n_eval, size,
                                    seed + _EVAL_STREAM, 0)
    return (crops, crops, eval_x,
            f"{n_eval} random {size} x {size} crops (random scale and flip) of the held-out "
            f"scikit-image photos {list(cfg.data.eval_photos)}; training crops come from "
            f"{list(cfg.data.photos)}")
  root = runs.resolve_path(cfg.data.root) if not os.path.isdir(cfg.data.root) else \
      os.path.abspath(cfg.data.root)
  ta, tb, ha, _, desc = gan_images.load_pairs(root, size, int(g.input_nc), int(g.output_nc))
  ab = np.concatenate([ta, tb], axis=-1)
  c = int(g.input_nc)

  def pairs(s):
    x = gan_images.real_batch(ab, batch, seed, s)
    return {"input": x[..., :c], "real": x[..., c:]}

  eval_x = gan_images.to_float(ha[:n_eval])
  return (pairs, lambda s: pairs(s)["input"], eval_x,
          f"the first {len(eval_x)} held-out inputs of {desc}")


def _adam(lr: float) -> optax.GradientTransformation:
  return optax.adam(lr, b1=0.5, b2=0.999)


def _phase(step_fn, state, cfg, batch_fn, args, run_dir, steps, desc, mesh, progress):
  """Runs (or resumes) ``steps`` steps of one phase in ``run_dir``; ``(state, seconds)``."""
  os.makedirs(run_dir, exist_ok=True)
  manager = train_lib.checkpoint_manager(os.path.join(run_dir, runs.CHECKPOINT_DIR),
                                         int(cfg.checkpoint_every), int(cfg.max_to_keep))
  try:
    state, start = runs.restore(manager, state, steps, run_dir)
    if start == steps:
      return state, 0.0
    return runs.run_steps(step_fn, state,
                          lambda s: parallel.shard_global_batch(batch_fn(s), mesh),
                          args, manager=manager, run_dir=run_dir, start=start, steps=steps,
                          desc=desc, progress=progress, tensorboard=bool(cfg.tensorboard))
  finally:
    manager.close()


def _pair_vars(state) -> tuple[dict, dict]:
  g = jax.tree.map(np.asarray, jax.device_get({"params": state.g.params, **state.g.frozen}))
  d = jax.tree.map(np.asarray, jax.device_get({"params": state.d.params, **state.d.frozen}))
  return g, d


def _feature_dim(models, ccfg, g_vars, d_vars, z0) -> int:
  """Width of the feature space ``phi`` (the pair discriminator's input)."""
  y = jax.eval_shape(models.teacher.apply, g_vars, z0)
  f = jax.eval_shape(collab_lib.feature_fn(models, ccfg), d_vars, z0, y)
  return int(f.shape[-1])


def _build(cfg, pair: _Pair, method: str, budget: float):
  """``(CollabConfig, CollabModels, first inputs)`` of a collaborative setting."""
  z0 = jnp.asarray(pair.train_inputs(0))
  ccfg = _collab_config(cfg, method, budget, conditional=pair.conditional)
  models = collab_lib.build_models(pair.g, pair.g_vars, pair.d, pair.d_vars, z0, ccfg,
                                   int(cfg.agent_dim))
  return ccfg, models, z0


def _warm_up_d(cfg, pair: _Pair, run_dir: str, mesh, progress) -> tuple[dict, float]:
  """``d_warmup_steps`` steps of D alone (:func:`collab_step.make_d_warmup_step`), resumed in
  ``run_dir``; ``(D's variables after them (numpy), seconds)``."""
  ccfg, models, _ = _build(cfg, pair, "collab", cfg.budgets[0])
  frozen = {k: v for k, v in pair.d_vars.items() if k != "params"}
  state = parallel.replicate(train_lib.create_train_state(
      pair.d_vars["params"], _adam(float(cfg.learning_rate)), frozen), mesh)
  step = collab_lib.make_d_warmup_step(models, ccfg, int(cfg.seed), mesh)
  state, seconds = _phase(step, state, cfg, pair.train, (parallel.replicate(pair.g_vars, mesh),),
                          run_dir, int(cfg.d_warmup_steps), "D warm-up", mesh, progress)
  return jax.tree.map(np.asarray, jax.device_get(state.variables)), seconds


def _run_collab(cfg, row, pair: _Pair, run_dir, mesh, progress):
  """Search, harden, slim, fine-tune; ``(g, g_vars, d, d_vars, info)``."""
  g_mod, g_vars, d_mod, d_vars = pair.g, pair.g_vars, pair.d, pair.d_vars
  ccfg, models, z0 = _build(cfg, pair, row["method"], row["budget"])
  feat_dim = _feature_dim(models, ccfg, g_vars, d_vars, z0)
  key = jax.random.fold_in(jax.random.key(int(cfg.seed)), 7)
  lr, alr = float(cfg.learning_rate), float(cfg.agent_learning_rate)
  state = parallel.replicate(collab_lib.create_collab_state(
      models, g_vars, d_vars, key, _adam(lr), _adam(lr), optax.adam(alr), feat_dim), mesh)
  args = (parallel.replicate(g_vars, mesh), parallel.replicate(d_vars, mesh))
  state, t_search = _phase(collab_lib.make_collab_step(models, ccfg, mesh), state, cfg,
                           pair.train, args, os.path.join(run_dir, "search"),
                           int(cfg.search_steps), f"{row['name']} search", mesh, progress)
  gs, ds = _pair_vars(state)
  g_masks, d_masks, g_keep, d_keep = collab_lib.final_masks(models, state, ccfg, gs, ds)
  g_small, g_small_vars = slim_lib.slim(g_mod, gs, g_masks)
  d_small, d_small_vars = slim_lib.slim(d_mod, ds, d_masks)
  fcfg = _collab_config(cfg, row["method"], row["budget"], search=False,
                        conditional=pair.conditional)
  fmodels = collab_lib.build_models(g_small, g_small_vars, d_small, d_small_vars, z0, fcfg,
                                    int(cfg.agent_dim), teacher=g_mod, feature_disc=d_mod)
  fstate = parallel.replicate(collab_lib.create_collab_state(
      fmodels, g_small_vars, d_small_vars, key, _adam(lr), _adam(lr), optax.adam(alr),
      feat_dim), mesh)
  t_fine = 0.0
  if int(cfg.finetune_steps):
    fstate, t_fine = _phase(collab_lib.make_collab_step(fmodels, fcfg, mesh), fstate, cfg,
                            pair.train, args, os.path.join(run_dir, "finetune"),
                            int(cfg.finetune_steps), f"{row['name']} fine-tune", mesh, progress)
  g_fin, d_fin = _pair_vars(fstate)
  info = {"search_seconds": t_search, "finetune_seconds": t_fine,
          "g_keep": [int(np.sum(k)) for k in g_keep], "d_keep": [int(np.sum(k)) for k in d_keep],
          "g_groups": list(models.g_spec.names), "d_groups": list(models.d_spec.names),
          "g_budget_ratio": float(agents_lib.expected_macs(
              models.g_spec, [jnp.asarray(k, jnp.float32) for k in g_keep]))
              / models.g_spec.total_macs,
          "d_budget_ratio": float(agents_lib.expected_macs(
              models.d_spec, [jnp.asarray(k, jnp.float32) for k in d_keep]))
              / models.d_spec.total_macs}
  return g_small, g_fin, d_small, d_fin, info


def _run_baseline(cfg, row, pair: _Pair, run_dir, mesh, progress):
  """Magnitude channel pruning to the budget, then L1 distillation (a) or self-supervised
  compression (b); D unpruned. (b)'s adversarial term reads D on the output alone, so it is
  dropped (MSE only) for a conditional D."""
  g_mod, g_vars, d_mod, d_vars = pair.g, pair.g_vars, pair.d, pair.d_vars
  z0 = jnp.asarray(pair.train_inputs(0))
  small = slim_lib.slim_to_macs(g_mod, g_vars, 1.0 / row["budget"], x=z0[:1])
  if row["method"] == "magnitude_l1" or pair.conditional:
    scfg = train_lib.SelfSupConfig("l1" if row["method"] == "magnitude_l1" else "mse", 1.0, 0.0)
    disc = None
  else:
    scfg = train_lib.SelfSupConfig("mse", 1.0, float(cfg.selfsup_adv_weight),
                                   "non_saturating_prob" if cfg.d_outputs == "prob"
                                   else "non_saturating_logits")
    disc = d_mod
  frozen = {k: v for k, v in small.variables.items() if k != "params"}
  state = parallel.replicate(train_lib.create_train_state(
      small.variables["params"], _adam(float(cfg.learning_rate)), frozen), mesh)
  step = train_lib.make_selfsup_step(small.module, scfg, disc, mesh, teacher=g_mod)
  args = (parallel.replicate(g_vars, mesh),
          None if disc is None else parallel.replicate(d_vars, mesh))
  steps = int(cfg.search_steps) + int(cfg.finetune_steps)
  state, seconds = _phase(step, state, cfg, pair.train_inputs, args,
                          os.path.join(run_dir, "finetune"), steps, row["name"], mesh, progress)
  g_fin = jax.tree.map(np.asarray, jax.device_get(state.variables))
  return small.module, g_fin, d_mod, d_vars, _baseline_info(pair, small, g_fin, z0, seconds)


def _baseline_info(pair: _Pair, small: slim_lib.Slimmed, g_fin: dict, z0: jax.Array,
                   seconds: float) -> dict[str, Any]:
  """A baseline's widths and budget (its D is the unpruned one)."""
  d_groups = slim_lib.channel_groups(pair.d, pair.d_vars)
  return {"search_seconds": 0.0, "finetune_seconds": seconds,
          "g_keep": [g.size for g in slim_lib.channel_groups(small.module, g_fin)],
          "d_keep": [g.size for g in d_groups],
          "g_groups": [g.name for g in slim_lib.channel_groups(pair.g, pair.g_vars)],
          "d_groups": [g.name for g in d_groups],
          "g_budget_ratio": small.macs / stats.count_macs(pair.g, pair.g_vars, z0[:1]),
          "d_budget_ratio": 1.0}


def _crd_config(cfg, pair: _Pair) -> crd_step.DistillConfig:
  """Baseline (f)'s loss: ``jaxgc distill``'s defaults (CRD, weight 1, + an LSGAN term under an
  online D trained on teacher (real) vs student (fake) outputs, weight 1); without the
  adversarial term for a conditional D or one with BatchNorm."""
  online_d = not pair.conditional and not pair.d_vars.get("batch_stats")
  return crd_step.DistillConfig(crd_weight=1.0, patch_size=int(cfg.crd_patch_size),
                                adv_weight=1.0 if online_d else 0.0, gan_loss="lsgan",
                                disc_real="teacher", seed=int(cfg.seed))


def _run_crd(cfg, row, pair: _Pair, run_dir, mesh, progress):
  """Baseline (f): the G slimmed to the budget by L1 magnitude, then trained by content
  relationship distillation (:mod:`jaxgc.train.crd_step`, the step of ``jaxgc distill``; You
  et al. 2022) for as many steps as the other methods; D (the warmed-up one) unpruned."""
  g_mod, g_vars = pair.g, pair.g_vars
  z0 = jnp.asarray(pair.train_inputs(0))
  small = slim_lib.slim_to_macs(g_mod, g_vars, 1.0 / row["budget"], x=z0[:1])
  dcfg = _crd_config(cfg, pair)
  disc = pair.d if dcfg.uses_discriminator else None
  lr = float(cfg.learning_rate)
  state = parallel.replicate(crd_step.create_distill_state(
      small.variables, pair.d_vars if disc is not None else None, _adam(lr), _adam(lr)), mesh)
  step = crd_step.make_distill_step(small.module, g_mod, dcfg, disc, None, mesh)
  steps = int(cfg.search_steps) + int(cfg.finetune_steps)
  state, seconds = _phase(step, state, cfg, lambda s: {"A": pair.train_inputs(s)},
                          (parallel.replicate(g_vars, mesh), None),
                          os.path.join(run_dir, "finetune"), steps, row["name"], mesh, progress)
  g_fin = jax.tree.map(np.asarray, jax.device_get(crd_step.student_variables(state)))
  return small.module, g_fin, pair.d, pair.d_vars, _baseline_info(pair, small, g_fin, z0,
                                                                  seconds)


def _run_setting(cfg, row, pair: _Pair, run_dir, mesh, progress):
  """Trains (or resumes, or skips when finished) one setting; returns ``(result dict, slimmed
  G, its variables)``. In a multi-process run every process trains and measures; process 0
  decides whether the setting is finished and writes its files."""
  result_path = os.path.join(run_dir, RESULT_FILE)
  if bool(parallel.primary_value(np.bool_(os.path.isfile(result_path)))):
    with open(result_path) as f:
      result = json.load(f)
    return (result,) + tuple(load_any_model(os.path.join(run_dir, "model_g")))
  runner = (_run_collab if METHODS[row["method"]] is not None
            else _run_crd if row["method"] == "crd" else _run_baseline)
  g, gv, d, dv, info = runner(cfg, row, pair, run_dir, mesh, progress)
  if parallel.is_primary():
    save_model(os.path.join(run_dir, "model_g"), g, gv,
               extra={"source": cfg.generator, "compression": {"method": "collab", **row}})
    save_model(os.path.join(run_dir, "model_d"), d, dv,
               extra={"source": cfg.discriminator, "compression": {"method": "collab", **row}})
  eval_x = pair.eval_x
  lat_x = np.resize(eval_x, (int(cfg.latency_batch),) + eval_x.shape[1:])
  facts = report_lib.model_facts(g, gv, lat_x, int(cfg.latency_repeats))
  quality = report_lib.image_metrics(parallel.generate(pair.g, pair.g_vars, eval_x),
                                     parallel.generate(g, gv, eval_x))
  result = {**row, **info, "g_macs": facts["macs"], "g_params": facts["params"],
            "d_macs": stats.count_macs(d, dv, pair.d_example(eval_x[:1])),
            "d_params": stats.count_params(dv), "latency_ms": facts["latency_s"] * 1e3,
            "psnr": quality["psnr_db"], "ssim": quality["ssim"]}
  if parallel.is_primary():
    runs.write_json(result_path, result)
  return result, g, gv


def _dynamics(run_dir: str, method: str | None) -> dict[str, list]:
  """Per-step logged scalars of the search phase (the only phase of a baseline; the D warm-up's
  folder itself when ``method`` is None); empty on the processes other than 0 of a
  multi-process run, which keep no logs."""
  phase = ("" if method is None else "search" if METHODS[method] is not None else "finetune")
  path = os.path.join(run_dir, phase, runs.METRICS_FILE)
  out: dict[str, list] = {"step": []}
  if not parallel.is_primary() or not os.path.isfile(path):   # process 0 keeps the logs
    return out
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      out["step"].append(rec["step"])
      for k, v in rec.items():
        if k in DYNAMICS_KEYS or "_keep/" in k:
          out.setdefault(k, []).append(v)
  return out


def _stability(dyn: dict[str, list]) -> dict[str, Any]:
  """D's accuracy statistics over the search: std of the mean real/fake accuracy, and the
  steps where D's fake accuracy is 0 or 1 (one side wins outright)."""
  if "d_acc_real" not in dyn:
    return {"d_acc_std": None, "saturated_steps": None}
  acc = 0.5 * (np.asarray(dyn["d_acc_real"]) + np.asarray(dyn["d_acc_fake"]))
  fake = np.asarray(dyn["d_acc_fake"])
  return {"d_acc_mean": float(acc.mean()), "d_acc_std": float(acc.std()),
          "saturated_steps": int(np.sum((fake <= 0.0) | (fake >= 1.0)))}


@runs.locked_workdir("collab", OUTPUTS, signature=(CONFIG_FILE,))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Runs (or resumes) every (method, budget) setting of ``config`` and writes the report.

  Args:
    config: a ConfigDict or dict overriding ``default_config()``.
    workdir: output folder; finished settings are kept, a killed one resumes.
    progress: tqdm bars over settings and steps.

  Returns:
    The report as written to ``report.json``.

  In a multi-process run (``jaxgc collab --distributed``, after ``jax.distributed.initialize``;
  the workdir on a file system every process sees) every process builds each global batch from
  ``(seed, step)`` and feeds its devices' rows (:func:`jaxgc.parallel.shard_global_batch`), so
  the run trains on the batches of a single-process one; process 0 alone writes the logs,
  models, results and report (the orbax checkpoints are written collectively), and the other
  processes return the report without the per-step ``"dynamics"``. Stop every process
  together: a process that stops alone (Ctrl-C, a full disk on process 0) leaves the others
  waiting in the next collective until JAX's coordination service gives up on it.

  Raises:
    ValueError: a bad config (see :func:`resolve_config`), a generator that is neither
      unconditional nor image-to-image, an architecture that cannot be gated, a PatchGAN with
      ``d_outputs`` other than ``"logits"`` or a ``feature_layer`` D does not have (one line,
      before anything is written); a workdir written under another config.
    FileNotFoundError, CheckpointError: unreadable checkpoints or data.
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  progress = progress and parallel.is_primary()
  pair = load_models(cfg)
  mesh = runs.batch_mesh(int(cfg.batch_size))
  _build(cfg, pair, "collab", cfg.budgets[0])   # gateable? k, m < batch?
  if "crd" in cfg.methods:
    if not pair.images:
      raise ValueError(f"method 'crd' (CRD distillation) needs an image-to-image generator; "
                       f"{pair.g_path} is {pair.g.kind}")
    crd_step.check_crop(_crd_config(cfg, pair), int(cfg.data.size), int(cfg.data.size))
  os.makedirs(workdir, exist_ok=True)
  runs.check_resume(os.path.join(workdir, CONFIG_FILE), cfg.to_dict(), RESUMABLE_KEYS,
                    runs.holds_progress(os.path.join(workdir, "runs")),
                    defaults=default_config().to_dict())
  warmup = None
  if int(cfg.d_warmup_steps):
    warm_dir = os.path.join(workdir, "runs", WARMUP_DIR)
    d_warm, seconds = _warm_up_d(cfg, pair, warm_dir, mesh, progress)
    pair = dataclasses.replace(pair, d_vars=d_warm)
    dyn = _dynamics(warm_dir, None)
    warmup = {"steps": int(cfg.d_warmup_steps), "seconds": seconds, **{
        k: dyn[k][-1] for k in ("d_loss", "d_acc_real", "d_acc_fake") if dyn.get(k)}}
  eval_x = pair.eval_x
  lat_x = np.resize(eval_x, (int(cfg.latency_batch),) + eval_x.shape[1:])
  teacher = {**report_lib.model_facts(pair.g, pair.g_vars, lat_x, int(cfg.latency_repeats)),
             "d_macs": stats.count_macs(pair.d, pair.d_vars, pair.d_example(eval_x[:1])),
             "d_params": stats.count_params(pair.d_vars), "generator": pair.g_path,
             "discriminator": pair.d_path}
  scorer = None
  if cfg.metrics.extractor != "none":
    scorer = eval_lib.sample_scorer(
        pair.g, pair.g_vars, extractor=cfg.metrics.extractor,
        num_samples=int(cfg.metrics.num_samples), seed=int(cfg.seed),
        reference_seed=int(cfg.seed) + 1, nearest_k=int(cfg.metrics.nearest_k),
        inputs=eval_x if pair.images else None)
  grid = [("input", inputs_lib.to_uint8(eval_x[:8]))] if pair.images else []
  grid.append(("teacher", inputs_lib.to_uint8(parallel.generate(pair.g, pair.g_vars,
                                                                eval_x[:8]))))
  rows, dynamics = [], {}
  for row in tqdm(settings(cfg), desc="settings", disable=not progress):
    _signals.check()
    run_dir = os.path.join(workdir, "runs", row["name"])
    try:
      result, g, gv = _run_setting(cfg, row, pair, run_dir, mesh, progress)
    except FloatingPointError as e:
      rows.append(runs.failed_row(row, e))
      continue
    q = {k: None for k in ("fid", "kid", "precision", "recall", "density", "coverage")}
    if scorer is not None:
      s = scorer(gv, g)
      q = {"fid": s["fid"], "kid": s["kid_mean"], "precision": s["precision"],
           "recall": s["recall"], "density": s["density"], "coverage": s["coverage"]}
    dyn = _dynamics(run_dir, row["method"])
    dynamics[row["name"]] = dyn
    rows.append({**result, **q, **_stability(dyn)})
    grid.append((f"{row['name']}\nPSNR {report_lib.fmt(result['psnr'], '.1f')} dB",
                 inputs_lib.to_uint8(parallel.generate(g, gv, eval_x[:8]))))
  teacher_quality = scorer(pair.g_vars) if scorer is not None else {}
  report = {"teacher": teacher, "teacher_quality": teacher_quality, "config": cfg.to_dict(),
            "eval_inputs": pair.eval_desc, "image_to_image": pair.images, "d_warmup": warmup,
            "rows": rows,
            "dynamics": dynamics}
  if parallel.is_primary():
    write_report(report, grid, workdir)
  return report


def _online_patchgan(cfg, g) -> tuple[PatchGANDiscriminator, dict]:
  """A fresh PatchGAN for ``g``'s outputs (instance norm, N(0, 0.02) init as CycleGAN's)."""
  size = int(cfg.data.size)
  d = PatchGANDiscriminator(input_nc=int(g.output_nc), ndf=int(cfg.disc.ndf),
                            n_layers=int(cfg.disc.n_layers), norm="instance", image_size=size)
  example = jnp.zeros((1, size, size, int(g.output_nc)), jnp.float32)
  return d, layers.normal_init(d, example, seed=int(cfg.seed) + 2)


def load_models(cfg) -> _Pair:
  """The teacher G, its D (loaded, or a fresh online PatchGAN) and the inputs, all checked.

  Raises:
    ValueError: a G of another kind, a D that is not a discriminator; a PatchGAN with
      ``d_outputs`` other than ``"logits"``; a ``feature_layer`` D does not have.
  """
  online = cfg.discriminator == ONLINE
  g, g_vars, g_path, d, d_vars, d_path = runs.load_generator_and_discriminator(
      cfg.generator, "" if online else cfg.discriminator, "collab",
      ("unconditional", "image_to_image"), ("discriminator", "patch_discriminator"))
  if online:
    if g.kind != "image_to_image":
      raise ValueError("config.discriminator='online' builds a PatchGAN for an image-to-image "
                       f"generator; {g_path} is {g.kind}")
    d, d_vars = _online_patchgan(cfg, g)
    d_path = (f"online PatchGAN (ndf {cfg.disc.ndf}, {cfg.disc.n_layers} layers, instance "
              "norm)")
  d_vars = jax.tree.map(np.asarray, d_vars)
  if d.kind == "patch_discriminator" and cfg.d_outputs != "logits":
    raise ValueError(f"config.d_outputs must be 'logits' for a PatchGAN (it outputs logits), "
                     f"got {cfg.d_outputs!r}")
  if cfg.features == "discriminator" and cfg.feature_layer not in d_vars["params"]:
    raise ValueError(f"config.feature_layer {cfg.feature_layer!r} is not a layer of "
                     f"{type(d).__name__} (its layers: {', '.join(d_vars['params'])})")
  conditional = bool(g.kind == "image_to_image" and d.kind == "patch_discriminator"
                     and d.input_nc == g.input_nc + g.output_nc and d.input_nc != g.output_nc)
  train, train_inputs, eval_x, desc = _inputs(cfg, g)
  return _Pair(g, g_vars, g_path, d, d_vars, d_path, conditional, train, train_inputs, eval_x,
               desc)


def _plots(report: dict, workdir: str) -> None:
  plt = report_lib.pyplot()
  dyn = report["dynamics"]
  collab_names = [n for n, d in dyn.items() if "d_acc_real" in d]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for name in collab_names:
    d = dyn[name]
    acc = 0.5 * (np.asarray(d["d_acc_real"]) + np.asarray(d["d_acc_fake"]))
    axes[0].plot(d["step"], acc, label=name, lw=0.8)
    axes[1].plot(d["step"], d["g_loss"], label=name, lw=0.8)
    axes[2].plot(d["step"], d["d_loss"], label=name, lw=0.8)
  for ax, title in zip(axes, ("D accuracy (real + fake) / 2", "G loss", "D loss")):
    ax.set_title(title)
    ax.set_xlabel("search step")
    ax.grid(alpha=0.3)
  if collab_names:
    axes[0].legend(fontsize=6)
  fig.tight_layout()
  report_lib.save_figure(fig, os.path.join(workdir, "dynamics.png"))

  fig, axes = plt.subplots(max(1, len(collab_names)), 1,
                           figsize=(10, 1.6 * max(1, len(collab_names)) + 0.5), squeeze=False)
  for ax, name in zip(axes[:, 0], collab_names):
    d = dyn[name]
    keys = [k for k in d if "_keep/" in k]
    if keys:
      steps = d["step"]
      ax.imshow(np.asarray([d[k] for k in keys]), aspect="auto", vmin=0, vmax=1, cmap="viridis",
                interpolation="nearest",
                extent=(steps[0] - 0.5, steps[-1] + 0.5, len(keys) - 0.5, -0.5))
      ax.set_yticks(range(len(keys)), keys, fontsize=6)
    ax.set_title(name, fontsize=8)
  axes[-1, 0].set_xlabel("search step (keep ratio per group, 0 to 1)")
  fig.tight_layout()
  report_lib.save_figure(fig, os.path.join(workdir, "keep_ratios.png"))

  rows = [r for r in report["rows"] if r.get("status") != runs.FAILED]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  for r in rows:
    axes[0].plot(r["g_groups"], r["g_keep"], marker="o", label=r["name"], lw=0.8)
    axes[1].plot(r["d_groups"], r["d_keep"], marker="o", label=r["name"], lw=0.8)
  for ax, title in zip(axes, ("G: final width per group", "D: final width per group")):
    ax.set_title(title)
    ax.grid(alpha=0.3)
  if rows:
    axes[0].legend(fontsize=6)
  fig.tight_layout()
  report_lib.save_figure(fig, os.path.join(workdir, "widths.png"))


BASELINES = ("magnitude_l1", "selfsup", "crd")


def _claims(rows: list[dict]) -> list[str]:
  """The paper's two claims, checked on this run's rows (equal MACs budget): collab's quality
  against the baselines (a), (b) and, separately, against its own ablations; the spread of D's
  accuracy during the search against the ablations."""
  lines = []
  key = "fid" if any(r.get("fid") is not None for r in rows) else "psnr"
  better = (lambda a, b: a < b) if key == "fid" else (lambda a, b: a > b)
  pick = min if key == "fid" else max
  for b in sorted({r["budget"] for r in rows}, reverse=True):
    at = {r["method"]: r[key] for r in rows if r["budget"] == b and r.get(key) is not None}
    if "collab" not in at:
      continue
    for label, group in (("baselines", BASELINES),
                         ("ablations", [m for m in METHODS if m not in BASELINES + ("collab",)])):
      others = {m: at[m] for m in group if m in at}
      if not others:
        continue
      best = pick(others, key=others.get)
      verdict = "holds" if better(at["collab"], others[best]) else "does not hold"
      lines.append(f"- budget {b:g}, vs the {label}: collab {key} {at['collab']:.3f}, the best "
                   f"of them ({best}) {others[best]:.3f}: *better quality at equal MACs* "
                   f"{verdict}")
  for b in sorted({r["budget"] for r in rows}, reverse=True):
    at = {r["method"]: r for r in rows if r["budget"] == b and r.get("d_acc_std") is not None}
    if "collab" in at and len(at) > 1:
      stds = ", ".join(f"{m} {r['d_acc_std']:.3f}" for m, r in at.items())
      lowest = min(at, key=lambda m: at[m]["d_acc_std"])
      lines.append(f"- budget {b:g}: std of D's accuracy over the search: {stds}: *more stable "
                   f"G/D dynamics* {'holds' if lowest == 'collab' else 'does not hold'} "
                   f"(lowest: {lowest})")
  return lines or ["- not enough methods in this run to compare"]


def _markdown(report: dict) -> str:
  t, c, tq = report["teacher"], report["config"], report["teacher_quality"]
  rows = [r for r in report["rows"] if r.get("status") != runs.FAILED]
  failed = [r for r in report["rows"] if r.get("status") == runs.FAILED]
  f = report_lib.fmt
  lines = [
      f"# jaxgc collab: {t['arch']} G + D, collaborative pruning with a local density "
      "structure objective",
      "",
      f"- teacher G `{t['generator']}`: {t['params']:,} params, {t['macs'] / 1e6:,.3f} M MACs "
      f"per sample; D `{t['discriminator']}`: {t['d_params']:,} params, "
      f"{t['d_macs'] / 1e6:,.3f} M MACs",
      f"- collaborative methods: {c['search_steps']} search steps + {c['finetune_steps']} "
      f"fine-tune steps of the slimmed pair; baselines: {c['search_steps'] + c['finetune_steps']}"
      f" steps; batch {c['batch_size']}, k = {c['k']} neighbours, M = {c['m']} perturbed "
      f"inputs (sigma {c['sigma']}; images also shifted by up to {c['max_shift']} px), "
      f"feature space {c['features']}"
      + (f" ({c['feature_layer']} input of the frozen D)" if c["features"] == "discriminator"
         else f" ({c['pixel_size']} x {c['pixel_size']})")
      + f", density weight {c['density_weight']} (lambda "
      f"{c['lam']}), pair {c['pair_weight']}, L1 {c['recon_weight']}, adversarial "
      f"{c['adv_weight']}, budget weight {c['budget_weight']}; D budget "
      f"{c['d_budget'] or 'same as G'}",
      f"- quality on {report['eval_inputs']}: PSNR / SSIM of the student's images against the "
      "teacher's on the same inputs; FID, KID, precision, recall, density, coverage of "
      + (f"the student's translations of those {c['eval_samples']} inputs against the "
         "teacher's" if report.get("image_to_image") else
         f"{c['metrics']['num_samples']} student samples against the teacher's")
      + f" in {c['metrics']['extractor']} feature space (KID unscaled, in that space's units)",
      "- MACs and params are those of the slimmed networks that run; latency: the G, "
      f"jitted, median over {c['latency_repeats']} calls of a batch of {c['latency_batch']} "
      "on this machine's CPU",
      "- our reconstruction of Ganjdanesh et al. (AAAI 2024): no public code exists",
  ]
  w = report.get("d_warmup")
  if w:
    lines.insert(-1, f"- D warm-up before the search (phi = its frozen copy after it): {w['steps']} "
                 f"steps, {f(w.get('seconds'), '.0f')} s; D's accuracy at its end: real "
                 f"{f(w.get('d_acc_real'), '.2f')}, fake {f(w.get('d_acc_fake'), '.2f')} (fake: "
                 "the teacher with about 12% of its channels randomly gated off)")
  lines += [
      "",
      "| method | budget | G MACs (M) | G params | D MACs (M) | D params | latency (ms) | "
      "PSNR | FID | KID | precision | recall | density | coverage | D acc std | "
      "saturated steps |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      f"| teacher | 1 | {t['macs'] / 1e6:,.3f} | {t['params']:,} | {t['d_macs'] / 1e6:,.3f} | "
      f"{t['d_params']:,} | {t['latency_s'] * 1e3:.2f} | - | {f(tq.get('fid'), '.2f')} | "
      f"{f(tq.get('kid_mean'), '.4f')} | {f(tq.get('precision'), '.3f')} | "
      f"{f(tq.get('recall'), '.3f')} | {f(tq.get('density'), '.3f')} | "
      f"{f(tq.get('coverage'), '.3f')} | - | - |",
  ]
  for r in rows:
    lines.append(
        f"| {r['method']} | {r['budget']:g} | {r['g_macs'] / 1e6:,.3f} | {r['g_params']:,} | "
        f"{r['d_macs'] / 1e6:,.3f} | {r['d_params']:,} | {r['latency_ms']:.2f} | "
        f"{f(r['psnr'], 'psnr')} | {f(r['fid'], '.2f')} | {f(r['kid'], '.4f')} | "
        f"{f(r['precision'], '.3f')} | {f(r['recall'], '.3f')} | {f(r['density'], '.3f')} | "
        f"{f(r['coverage'], '.3f')} | {f(r.get('d_acc_std'), '.3f')} | "
        f"{f(r.get('saturated_steps'), 'd')} |")
  if tq:
    lines.append("")
    lines.append("The teacher row's sample metrics compare the teacher with itself "
                 + ("on the same inputs (identical outputs)." if report.get("image_to_image")
                    else "on other latents: the floor of those metrics."))
  lines += ["", "## The paper's claims on this run", ""] + _claims(rows)
  if failed:
    lines += ["", "Failed settings (training diverged; not measured):", ""]
    lines += [f"- `{r['name']}`: {r['reason']}" for r in failed]
  lines += ["", "![dynamics](dynamics.png)", "", "![keep ratios](keep_ratios.png)", "",
            "![widths](widths.png)", "", "![samples](samples.png)", ""]
  return "\n".join(lines)


def write_report(report: dict, grid: list, workdir: str) -> None:
  """``report.json``, the plots, ``samples.png`` and ``report.md``."""
  runs.write_json(os.path.join(workdir, REPORT_JSON), report)
  report_lib.sample_grid(grid, os.path.join(workdir, "samples.png"))
  _plots(report, workdir)
  _fileio.atomic_write_text(os.path.join(workdir, REPORT_MD), _markdown(report))
