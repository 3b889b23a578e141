"""One jitted, data-parallel step of GAN training from scratch: D update, then G update.

Unconditional GANs (``conditional=False``): latents ``z ~ N(0, I)`` drawn inside the step from
``fold_in(key, step)``; D sees a real batch and ``G(z)`` (its gradient stopped); then G is
updated on the *same* ``z`` against the updated D, as the PyTorch DCGAN tutorial
(``errD_real + errD_fake``, then ``errG`` on the same fakes) and heykeetae's SAGAN
``trainer.py`` do. Image-to-image (pix2pix, ``conditional=True``, Isola et al. 2017 eq. 4):
the batch is ``{"a": inputs, "b": targets}``, D sees ``concat(a, b)`` and
``concat(a, G(a))`` (``models/pix2pix_model.py`` of pytorch-CycleGAN-and-pix2pix, whose
``loss_D`` is ``0.5 * (real + fake)``), and G minimises the GAN loss plus ``l1_weight *
|G(a) - b|_1``.

Regularisers (StyleGAN2, Karras et al. 2020, section 3.2 "lazy regularization";
NVlabs/stylegan2-ada-pytorch ``training/loss.py``): R1 ``gamma / 2 * E|grad_x D(x)|^2`` on
real images, every ``r1_every`` steps and then multiplied by ``r1_every``. An exponential moving
average of G's weights (``ema_decay`` > 0) is kept for sampling, with StyleGAN2-ADA's ramp-up
(``training/training_loop.py``: the averaging horizon at most ``ema_rampup`` times the images
seen so far, so the average forgets the initial weights early in training).

The state is one :class:`~jaxgc.train.state.TrainState` (so the orbax checkpoints and the
job's step loop are the ones every jaxgc trainer uses) holding both networks:
``params = {"g": ..., "d": ...}``, ``opt_state = {"g": ..., "d": ...}`` (two optax
transformations, so two learning rates: TTUR, Heusel et al. 2017), and in ``frozen`` the
non-trained collections ``{"g": {...}, "d": {...}}`` plus ``"ema"`` (G's averaged params, or
``{}``). Unlike compression fine-tuning, the step *does* update ``frozen``: BatchNorm running
statistics (``apply(..., mutable=["batch_stats"])``), the spectral-norm vectors ``u``, ``v``
of a training-mode SAGAN (``mutable=["spectral"]``: one power iteration per forward, each
network's vectors kept from its first forward of the step: G's from the G update, D's from its
real batch) and the EMA. ``state.tx`` is
``optax.identity()``, a placeholder; the step applies its own two transformations.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgc import parallel
from jaxgc.train import gan_losses
from jaxgc.train.state import TrainState
from jaxgc.train.state import create_train_state


@dataclasses.dataclass(frozen=True)
class GANConfig:
  """The terms of the GAN objective. Hashable (static under jit).

  Attributes:
    loss: one of :data:`jaxgc.train.gan_losses.TRAINING_LOSSES`.
    z_dim: latent size of an unconditional generator (ignored when ``conditional``).
    conditional: image-to-image (pix2pix) instead of unconditional.
    l1_weight: float >= 0, pix2pix's ``lambda_L1`` (100 upstream).
    r1_gamma: float >= 0, R1 weight gamma; 0 disables it.
    r1_every: int >= 1, lazy R1 interval (16 in StyleGAN2).
    ema_decay: float in [0, 1), EMA of G's weights per step; 0 keeps none.
    ema_rampup: float >= 0; > 0: the decay at step ``t`` (``n = t * batch`` images seen) is
      ``min(ema_decay, 0.5 ** (batch / (n * ema_rampup)))`` (0 at the first step);
      0: ``ema_decay`` throughout.

  Raises:
    ValueError: an unknown loss or an out-of-range value.
  """

  loss: str = "non_saturating_prob"
  z_dim: int = 100
  conditional: bool = False
  l1_weight: float = 100.0
  r1_gamma: float = 0.0
  r1_every: int = 16
  ema_decay: float = 0.0
  ema_rampup: float = 0.0

  def __post_init__(self):
    if self.loss not in gan_losses.TRAINING_LOSSES:
      raise ValueError(f"the GAN training loss must be one of {gan_losses.TRAINING_LOSSES}, "
                       f"got {self.loss!r}")
    if self.l1_weight < 0 or self.r1_gamma < 0:
      raise ValueError(f"l1_weight and r1_gamma must be >= 0, got {self.l1_weight}, "
                       f"{self.r1_gamma}")
    if self.r1_every < 1:
      raise ValueError(f"r1_every must be >= 1, got {self.r1_every}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
    if self.ema_rampup < 0:
      raise ValueError(f"ema_rampup must be >= 0, got {self.ema_rampup}")


def create_gan_state(g_variables: dict[str, Any], d_variables: dict[str, Any],
                     g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                     ema: bool = False) -> TrainState:
  """The state of both networks at step 0 (see the module docstring for its layout).

  Args:
    g_variables, d_variables: the networks' initial variables (``params`` plus other
      collections such as ``batch_stats`` or ``spectral``).
    g_tx, d_tx: their optimizers.
    ema: keep an EMA copy of G's params in ``frozen["ema"]``.
  """
  params = {"g": g_variables["params"], "d": d_variables["params"]}
  frozen = {"g": {k: v for k, v in g_variables.items() if k != "params"},
            "d": {k: v for k, v in d_variables.items() if k != "params"},
            "ema": g_variables["params"] if ema else {}}
  state = create_train_state(params, optax.identity(), frozen)
  return state.replace(opt_state={"g": g_tx.init(state.params["g"]),
                                  "d": d_tx.init(state.params["d"])})


def generator_variables(state: TrainState, ema: bool = True) -> dict[str, Any]:
  """G's variables for sampling: the EMA params when kept (and ``ema``), else the trained ones,
  with G's other collections (BatchNorm running statistics)."""
  params = state.frozen["ema"] if ema and state.frozen["ema"] else state.params["g"]
  return {"params": params, **state.frozen["g"]}


def discriminator_variables(state: TrainState) -> dict[str, Any]:
  """D's variables ``{"params", ...}``."""
  return {"params": state.params["d"], **state.frozen["d"]}


# Collections a training forward updates: BatchNorm running statistics, and the power-iteration
# vectors of spectrally normalised layers (SAGAN, jaxgc.models.sagan, spectral_training=True).
_UPDATED = ("batch_stats", "spectral")


def _call(module: nn.Module, params, collections: dict, x, update: bool):
  """``module(x)`` in training mode: BatchNorm on the batch's statistics, spectral norm by one
  power iteration (keeping the new running statistics and ``u``, ``v`` when ``update``).
  Returns ``(output, collections)``."""
  variables = {"params": params, **collections}
  mutable = [c for c in _UPDATED if c in collections]
  if not mutable:
    return module.apply(variables, x), collections
  # PatchGAN's flax BatchNorm trains with `train=True`; the zoo's layers.BatchNorm with
  # `batch_statistics=True`. Both update the running statistics only in a mutable call.
  kwargs = {}
  if "batch_stats" in collections:
    takes_train = "train" in inspect.signature(type(module).__call__).parameters
    kwargs = {"train": True} if takes_train else {"batch_statistics": True}
  y, new = module.apply(variables, x, mutable=mutable, **kwargs)
  return y, ({**collections, **new} if update else collections)


def make_gan_step(generator: nn.Module, discriminator: nn.Module, cfg: GANConfig,
                  g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                  mesh: jax.sharding.Mesh | None = None) -> Callable:
  """The jitted step ``(state, batch, key) -> (state, metrics)``.

  Args:
    generator, discriminator: the modules (static).
    cfg: the objective.
    g_tx, d_tx: the optimizers ``state.opt_state`` was made with.
    mesh: data-parallel mesh: the batch is sharded over ``'data'`` (its leading axis a multiple
      of the device count), the state and ``key`` replicated; BatchNorm statistics and losses
      are over the global batch, so the result equals the single-device step up to float
      summation order.

  The batch: unconditional, float32 ``[batch, h, w, c]`` real images in [-1, 1];
  conditional, ``{"a": [batch, h, w, c_in], "b": [batch, h, w, c_out]}`` in [-1, 1]. ``key``:
  a ``jax.random.key``; the step's latents are ``normal(fold_in(key, state.step))``.

  Returns:
    The step; its metrics (float32 scalars): ``loss`` (= ``d_loss + g_loss``, checked for NaN
    by the job), ``d_loss``, ``d_real``, ``d_fake``, ``g_loss``, ``g_gan``, and ``l1``
    (conditional) and ``r1`` (R1 on).
  """
  g_kind = cfg.loss   # every training loss has a generator side of the same name
  d_scale = 0.5 if cfg.conditional else 1.0

  def step(state: TrainState, batch, key):
    p, f = state.params, state.frozen
    if cfg.conditional:
      g_in, real_img = batch["a"], batch["b"]
      d_real_in = jnp.concatenate([g_in, real_img], axis=-1)
      as_d_input = lambda fake: jnp.concatenate([g_in, fake], axis=-1)  # noqa: E731
    else:
      real_img = batch
      g_in = jax.random.normal(jax.random.fold_in(key, state.step),
                               (batch.shape[0], cfg.z_dim), jnp.float32)
      d_real_in = real_img
      as_d_input = lambda fake: fake  # noqa: E731
    fake, _ = _call(generator, p["g"], f["g"], g_in, False)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(dp):
      real_out, d_coll = _call(discriminator, dp, f["d"], d_real_in, True)
      fake_out, _ = _call(discriminator, dp, f["d"], as_d_input(fake), False)
      loss, r, fk = gan_losses.training_discriminator_loss(real_out, fake_out, cfg.loss)
      loss = d_scale * loss
      aux = {"d_real": r, "d_fake": fk}
      if cfg.r1_gamma > 0:
        def r1():
          g = jax.grad(lambda x: jnp.sum(_call(discriminator, dp, f["d"], x, False)[0]))(
              d_real_in)
          sq = jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=-1)
          return 0.5 * cfg.r1_gamma * jnp.mean(sq) * cfg.r1_every
        pen = jax.lax.cond(state.step % cfg.r1_every == 0, r1, lambda: jnp.float32(0.0))
        loss = loss + pen
        aux["r1"] = pen
      return loss, (d_coll, aux)

    (d_loss, (d_coll, d_aux)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(p["d"])
    d_updates, d_opt = d_tx.update(d_grads, state.opt_state["d"], p["d"])
    new_dp = optax.apply_updates(p["d"], d_updates)

    def g_loss_fn(gp):
      out, g_coll = _call(generator, gp, f["g"], g_in, True)
      d_out, _ = _call(discriminator, new_dp, d_coll, as_d_input(out), False)
      gan = gan_losses.generator_loss(d_out, g_kind)
      aux = {"g_gan": gan}
      loss = gan
      if cfg.conditional and cfg.l1_weight > 0:
        l1 = gan_losses.reconstruction_loss(out, real_img, "l1")
        loss = loss + cfg.l1_weight * l1
        aux["l1"] = l1
      return loss, (g_coll, aux)

    (g_loss, (g_coll, g_aux)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(p["g"])
    g_updates, g_opt = g_tx.update(g_grads, state.opt_state["g"], p["g"])
    new_gp = optax.apply_updates(p["g"], g_updates)
    ema = f["ema"]
    if cfg.ema_decay > 0:
      beta = jnp.float32(cfg.ema_decay)
      if cfg.ema_rampup > 0:
        seen = state.step.astype(jnp.float32) * real_img.shape[0]
        beta = jnp.minimum(beta, 0.5 ** (real_img.shape[0] / jnp.maximum(
            seen * cfg.ema_rampup, 1e-8)))
      ema = jax.tree.map(lambda e, x: beta * e + (1.0 - beta) * x, ema, new_gp)
    new_state = state.replace(step=state.step + 1, params={"g": new_gp, "d": new_dp},
                              opt_state={"g": g_opt, "d": d_opt},
                              frozen={"g": g_coll, "d": d_coll, "ema": ema})
    metrics = {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss, **d_aux, **g_aux}
    return new_state, metrics

  return parallel.jit_step(step, mesh, num_batch_args=1, num_replicated_args=1)
