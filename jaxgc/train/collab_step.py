"""The collaborative G/D pruning step: one jitted, data-parallel step that alternates a gated
generator update and a gated discriminator update, each network's pruning agent trained with
its network's loss plus a MACs budget term.

Source: Ganjdanesh et al., "Compressing Image-to-Image Translation GANs Using Local Density
Structures on Their Learned Manifold", AAAI 2024 (arXiv 2312.14776). No public code exists;
the objective and the schedule below are **our reconstruction** (see :mod:`jaxgc.train.density`
and :mod:`jaxgc.train.agents` for the parts):

1. Both agents emit gates from their peer's summary of the previous step (keep ratios, and D's
   real/fake accuracy for the G-agent, G's adversarial loss for the D-agent; zeros at step 0).
2. **G update** (the student G, a gated copy of the teacher, and the G-agent, jointly)::

     L_G = adv_weight * GAN_G(D_gated(G_gated(z)))
         + density_weight * L_density(phi(T(z)), phi(G_gated(z)); perturbed z + sigma * eps)
         + pair_weight * L_pair_G + recon_weight * |G_gated(z) - T(z)|_1
         + budget_G(gates_G)

   ``phi`` is the penultimate layer of a frozen copy of D made when the search starts; the
   gated D, the pair discriminator and ``phi`` are constants here.
3. **D update** with the updated G (D and the D-agent jointly): ``L_D = GAN_D(D_gated(T(z))
   real, D_gated(G_gated(z)) fake) + budget_D(gates_D)``; the teacher's outputs are the real
   samples. Without D pruning (``prune_d=False``, ablation (e)) D is updated ungated.
4. The pair discriminator's update on teacher (real) and student (fake) neighbourhood pairs,
   from the same forward pass as the G update.

Image-to-image generators (ResNet, U-Net) run the same step on image batches ``[batch, height,
width, channels]`` in [-1, 1]: the perturbed copies are shifts of up to ``max_shift`` pixels plus
noise (:func:`jaxgc.train.density.perturb_images`), D is a PatchGAN whose per-patch logits the
GAN losses average, reading the output alone (CycleGAN) or the input and output concatenated
(``conditional``, pix2pix), and D's real samples are the teacher's outputs or, where the data has
them, the real target images of the batch (``{"input": ..., "real": ...}``). A discriminator
trained online is first warmed up alone (:func:`make_d_warmup_step`) and the frozen copy ``phi``
is taken after that. ``phi`` may also be pixels at reduced size (``features="pixels"``).

Every loss is a mean over the global batch (the neighbourhoods are formed over it too), so one
device and a mesh of several give the same step. The discriminator may output probabilities
(``d_outputs="prob"``, the MNIST MLP) or logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxgc import parallel
from jaxgc.train import agents as agents_lib
from jaxgc.train import density as density_lib
from jaxgc.train import gan_losses
from jaxgc.train.state import TrainState
from jaxgc.train.state import create_train_state

D_OUTPUTS = ("prob", "logits")
FEATURES = ("discriminator", "pixels")
LOSS_STATS = 2   # the G-agent's peer statistics: D's real and fake accuracy


@dataclasses.dataclass(frozen=True)
class CollabConfig:
  """The collaborative objective. Hashable (static under jit).

  Attributes:
    g_budget: G's MACs budget, a fraction in (0, 1].
    d_budget: D's, the same when None.
    k: in-batch neighbours per centre, ``1 <= k < batch``; m: perturbed copies per input,
      ``0 <= m < batch``; sigma: the latent perturbation's standard deviation.
    density_weight, lam: weight of the density loss and of its log-KDE term (0 disables the
      density loss and the pair term: ablation (c)).
    pair_weight: weight of the adversarial neighbourhood term.
    recon_weight: weight of the L1 reconstruction to the teacher.
    adv_weight: weight of G's GAN loss under the gated D.
    budget_weight: weight of each budget term.
    temperature: the gates' Gumbel-sigmoid temperature.
    use_peer: peer feedback on (False: ablation (d)).
    prune_d: a D-agent prunes D (False: ablation (e), G-agent only).
    d_outputs: ``"prob"`` (D ends in a sigmoid) or ``"logits"``.
    feature_layer: the frozen D's layer whose input is ``phi`` (``"dense_2"`` for the MNIST MLP
      discriminator, ``"conv_4"`` for a 3-layer PatchGAN).
    features: the feature space ``phi``: ``"discriminator"`` (the frozen D's ``feature_layer``
      input) or ``"pixels"`` (outputs resized to ``pixel_size`` x ``pixel_size``,
      :func:`jaxgc.train.density.pixel_features`). ``"inception"`` is refused: the FID
      Inception at 299 x 299 on every teacher and student output of every step is far too slow
      on a CPU.
    pixel_size: side of the ``"pixels"`` feature space.
    max_shift: image inputs: the perturbed copies' largest shift in pixels
      (:func:`jaxgc.train.density.perturb_images`; their noise is ``sigma``).
    conditional: D reads the input and the output concatenated on the channel axis (pix2pix's
      conditional PatchGAN) instead of the output alone.
    search: the agents gate G and D and learn (True); False fine-tunes the (slimmed) pair with
      the same objective, every gate open, no budget term, the agents untouched.

  Raises:
    ValueError: a budget outside (0, 1], negative weights, an unknown ``d_outputs`` or
      ``features`` (one line, naming the value).
  """

  g_budget: float = 0.5
  d_budget: float | None = None
  k: int = 4
  m: int = 2
  sigma: float = 0.3
  density_weight: float = 1.0
  lam: float = 1.0
  pair_weight: float = 0.1
  recon_weight: float = 1.0
  adv_weight: float = 0.05
  budget_weight: float = 2.0
  temperature: float = agents_lib.TEMPERATURE
  use_peer: bool = True
  prune_d: bool = True
  d_outputs: str = "prob"
  feature_layer: str = "dense_2"
  features: str = "discriminator"
  pixel_size: int = 16
  max_shift: int = 2
  conditional: bool = False
  search: bool = True

  def __post_init__(self):
    agents_lib.check_budget(self.g_budget, "g_budget")
    if self.d_budget is not None:
      agents_lib.check_budget(self.d_budget, "d_budget")
    for name in ("sigma", "density_weight", "lam", "pair_weight", "recon_weight", "adv_weight",
                 "budget_weight"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
    if self.d_outputs not in D_OUTPUTS:
      raise ValueError(f"d_outputs must be one of {D_OUTPUTS}, got {self.d_outputs!r}")
    check_features(self.features)
    if self.pixel_size < 1 or self.max_shift < 0:
      raise ValueError(f"pixel_size must be >= 1 and max_shift >= 0, got {self.pixel_size} and "
                       f"{self.max_shift}")

  @property
  def d_target(self) -> float:
    """D's budget (``g_budget`` unless set)."""
    return self.g_budget if self.d_budget is None else self.d_budget


def check_features(features: str) -> str:
  """``features`` when it is a feature space of :data:`FEATURES`, else a one-line ValueError
  (``"inception"`` refused, saying why)."""
  if features == "inception":
    raise ValueError("features 'inception' is refused: the FID Inception (299 x 299, about 5.7 "
                     "GFLOPs per image) on every teacher and student output of every step is "
                     "far too slow on a CPU; use 'discriminator' or 'pixels'")
  if features not in FEATURES:
    raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
  return features


def split_batch(batch: Any) -> tuple[jax.Array, jax.Array | None]:
  """``(inputs, real)`` of a step's batch: an array of inputs (latents ``[batch, z_dim]`` or
  images ``[batch, height, width, channels]``), or ``{"input": ..., "real": ...}`` with real
  target images ``[batch, height, width, channels]`` for D (pix2pix pairs)."""
  if isinstance(batch, dict):
    return batch["input"], batch.get("real")
  return batch, None


def d_input(config: CollabConfig, x: jax.Array, y: jax.Array) -> jax.Array:
  """What D reads for input ``x`` and output ``y``: ``y``, or both concatenated on the channel
  axis when ``config.conditional``."""
  return jnp.concatenate([x, y], axis=-1) if config.conditional else y


@flax.struct.dataclass
class CollabState:
  """Everything the collaborative step reads and writes.

  Attributes:
    g, d: train states of the (full-width, gated) student generator and discriminator.
    ga, da: train states of the G- and D-agents; ``da`` is unused when D is not pruned.
    pair: train state of the pair discriminator.
    key: the PRNG key of the next step.
    g_keep, d_keep: ``[groups]`` float32 keep ratios of the last step's gates (peer feedback).
    d_acc: ``[2]`` float32 D's real and fake accuracy at the last step; g_adv: G's last
      adversarial loss.
  """

  g: TrainState
  d: TrainState
  ga: TrainState
  da: TrainState
  pair: TrainState
  key: jax.Array
  g_keep: jax.Array
  d_keep: jax.Array
  d_acc: jax.Array
  g_adv: jax.Array

  @property
  def step(self) -> jax.Array:
    """Steps taken (G's optimizer updates)."""
    return self.g.step

  def checkpoint_tree(self) -> dict[str, Any]:
    """The arrays an orbax checkpoint holds (``jaxgc.train.save_state``): every train state's
    leaves, the key's raw data and the peer statistics."""
    def leaves(ts):
      return {"step": ts.step, "params": ts.params, "opt_state": ts.opt_state,
              "frozen": ts.frozen}
    return {"g": leaves(self.g), "d": leaves(self.d), "ga": leaves(self.ga),
            "da": leaves(self.da), "pair": leaves(self.pair),
            "key": jax.random.key_data(self.key), "g_keep": self.g_keep, "d_keep": self.d_keep,
            "d_acc": self.d_acc, "g_adv": self.g_adv}

  def from_checkpoint_tree(self, tree: dict[str, Any]) -> "CollabState":
    """This state with the values of :meth:`checkpoint_tree`'s ``tree``."""
    return self.replace(
        g=self.g.replace(**tree["g"]), d=self.d.replace(**tree["d"]),
        ga=self.ga.replace(**tree["ga"]), da=self.da.replace(**tree["da"]),
        pair=self.pair.replace(**tree["pair"]), key=jax.random.wrap_key_data(tree["key"]),
        g_keep=tree["g_keep"], d_keep=tree["d_keep"], d_acc=tree["d_acc"],
        g_adv=tree["g_adv"])


@dataclasses.dataclass(frozen=True)
class CollabModels:
  """The modules and gate specs of one collaborative run (static)."""

  generator: nn.Module
  discriminator: nn.Module
  g_spec: agents_lib.GateSpec
  d_spec: agents_lib.GateSpec
  g_agent: agents_lib.PruningAgent
  d_agent: agents_lib.PruningAgent
  pair: density_lib.PairDiscriminator
  teacher: nn.Module          # the teacher generator (the student's module before slimming)
  feature_disc: nn.Module     # the frozen discriminator copy whose features are phi


def build_models(generator: nn.Module, g_vars: Any, discriminator: nn.Module, d_vars: Any,
                 z: jax.Array, config: CollabConfig, agent_dim: int = 32,
                 pair_hidden: tuple[int, ...] = (64,), teacher: nn.Module | None = None,
                 feature_disc: nn.Module | None = None) -> CollabModels:
  """Gate specs and agents for a G/D pair (``teacher`` and ``feature_disc`` default to
  ``generator`` and ``discriminator``; give the originals when the pair is slimmed).

  Raises:
    ValueError: no discriminator, an architecture that cannot be gated (naming it), or ``k``
      / ``m`` not smaller than the batch of ``z``.
  """
  if discriminator is None or d_vars is None:
    raise ValueError("collaborative pruning needs a discriminator; got none")
  density_lib.check_neighbourhood(int(z.shape[0]), config.k, config.m)
  g_spec = agents_lib.gate_spec(generator, g_vars, z)
  y = jax.eval_shape(generator.apply, g_vars, z)
  d_spec = agents_lib.gate_spec(discriminator, d_vars,
                                d_input(config, z, jnp.zeros(y.shape, y.dtype)))
  return CollabModels(
      generator, discriminator, g_spec, d_spec,
      agents_lib.PruningAgent(g_spec.sizes, agent_dim, use_peer=config.use_peer),
      agents_lib.PruningAgent(d_spec.sizes, agent_dim, use_peer=config.use_peer),
      density_lib.PairDiscriminator(pair_hidden), teacher or generator,
      feature_disc or discriminator)


def g_peer_dim(models: CollabModels) -> int:
  """Size of the G-agent's peer summary: D's groups + D's real/fake accuracy."""
  return len(models.d_spec.sizes) + LOSS_STATS


def d_peer_dim(models: CollabModels) -> int:
  """Size of the D-agent's peer summary: G's groups + G's adversarial loss."""
  return len(models.g_spec.sizes) + 1


def create_collab_state(models: CollabModels, g_vars: Any, d_vars: Any, key: jax.Array,
                        g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                        agent_tx: optax.GradientTransformation, feature_dim: int,
                        ) -> CollabState:
  """The state at step 0: G and D from the given (teacher / trained) variables, fresh agents
  (gates open) and a fresh pair discriminator on ``feature_dim``-wide features."""
  ka, kd, kp, key = jax.random.split(key, 4)
  # jitted: one compilation per network instead of one per operation of an eager init
  ga = jax.jit(models.g_agent.init)(ka, jnp.zeros(g_peer_dim(models)))
  da = jax.jit(models.d_agent.init)(kd, jnp.zeros(d_peer_dim(models)))
  f = jnp.zeros((1, feature_dim))
  pair = jax.jit(models.pair.init)(kp, f, f)

  def split(v):
    return v["params"], {c: x for c, x in v.items() if c != "params"}

  return CollabState(
      g=create_train_state(split(g_vars)[0], g_tx, split(g_vars)[1]),
      d=create_train_state(split(d_vars)[0], d_tx, split(d_vars)[1]),
      ga=create_train_state(ga["params"], agent_tx), da=create_train_state(da["params"], agent_tx),
      pair=create_train_state(pair["params"], d_tx), key=key,
      g_keep=jnp.ones(len(models.g_spec.sizes), jnp.float32),
      d_keep=jnp.ones(len(models.d_spec.sizes), jnp.float32),
      d_acc=jnp.zeros(LOSS_STATS, jnp.float32), g_adv=jnp.zeros((), jnp.float32))


def _logits(d_out: jax.Array, kind: str) -> jax.Array:
  """D's outputs as logits (probabilities clipped to [1e-7, 1 - 1e-7] first)."""
  if kind == "logits":
    return d_out.astype(jnp.float32)
  p = jnp.clip(d_out.astype(jnp.float32), gan_losses.PROB_EPS, 1 - gan_losses.PROB_EPS)
  return jnp.log(p) - jnp.log1p(-p)


def feature_fn(models: CollabModels, config: CollabConfig
               ) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """``phi(d_frozen, inputs, outputs) -> [batch, f]`` float32: the frozen D copy's
  ``feature_layer`` input (D reading :func:`d_input`), or the outputs' pixels at
  ``pixel_size`` (``d_frozen`` unused)."""
  if config.features == "pixels":
    return lambda d_frozen, x, y: density_lib.pixel_features(y, config.pixel_size)
  return lambda d_frozen, x, y: density_lib.penultimate_features(
      models.feature_disc, d_frozen, d_input(config, x, y), config.feature_layer)


def perturb(config: CollabConfig, key: jax.Array, z: jax.Array) -> jax.Array | None:
  """``[batch * m, ...]``: ``m`` perturbed copies of every input, input-major (``z + sigma *
  eps`` for latents; shifts of up to ``max_shift`` pixels plus noise of std ``sigma`` for
  images), or None when ``m`` is 0."""
  if not config.m:
    return None
  if z.ndim == 4:
    zp = density_lib.perturb_images(key, z, config.m, config.max_shift, config.sigma)
  else:
    zp = density_lib.perturb_latents(key, z, config.m, config.sigma)
  return zp.reshape((z.shape[0] * config.m,) + z.shape[1:])


def _d_loss(disc: nn.Module, dv: Any, config: CollabConfig, z: jax.Array, real: jax.Array,
            fake: jax.Array) -> tuple[jax.Array, jax.Array]:
  """D's vanilla GAN loss on ``real`` vs ``fake`` outputs for inputs ``z``, and its ``[2]``
  real / fake accuracy (the share of logits on the right side of 0)."""
  r = _logits(disc.apply(dv, d_input(config, z, real)), config.d_outputs)
  f = _logits(disc.apply(dv, d_input(config, z, fake)), config.d_outputs)
  loss, _, _ = gan_losses.discriminator_loss(r, f, "vanilla")
  return loss, jnp.stack([jnp.mean(r > 0), jnp.mean(f < 0)]).astype(jnp.float32)


def make_d_warmup_step(models: CollabModels, config: CollabConfig, seed: int,
                       mesh: jax.sharding.Mesh | None = None
                       ) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
  """The D warm-up before the search: ``step(d_state, batch, teacher_variables)``.

  A discriminator trained online (the image path's fresh PatchGAN) knows nothing when the
  search starts, and its frozen copy is the feature space ``phi``; so it is first trained
  alone, ungated, for a few steps: real = the teacher's outputs (or the batch's real target
  images), fake = the student as the search starts, a copy of the teacher gated by gates
  sampled at the agents' initial logits (``PruningAgent.init_logit``: each channel dropped with
  probability ``sigmoid(-init_logit)``, about 12%). (Our choice: the ungated student equals
  the teacher at that point, so it would give D nothing to tell apart.) The gates' key is
  ``fold_in(key(seed), d_state.step)``, so a resumed warm-up equals an uninterrupted one.

  Args:
    models: :func:`build_models`; config: its :class:`CollabConfig`; seed: the gates' seed.
    mesh: a mesh with a ``'data'`` axis, or None.

  Returns:
    ``step``, jitted (``donate_argnums=(0,)``): ``d_state`` a :class:`TrainState` of D, the batch
    as :func:`split_batch` reads it (sharded over ``'data'``), the teacher's variables
    (replicated). Returns ``(new_d_state, metrics)``: ``loss`` (= ``d_loss``), ``d_loss``,
    ``d_acc_real``, ``d_acc_fake``, float32 scalars.
  """
  cfg = config
  logits = [jnp.full((n,), models.g_agent.init_logit, jnp.float32) for n in models.g_spec.sizes]

  def step(d_state: TrainState, batch: Any, teacher_vars: Any):
    z, real_in = split_batch(batch)
    t_out = jax.lax.stop_gradient(models.teacher.apply(teacher_vars, z))
    real = t_out if real_in is None else real_in
    key = jax.random.fold_in(jax.random.key(seed), d_state.step)
    gates = agents_lib.sample_gates(key, logits, cfg.temperature)
    fake = jax.lax.stop_gradient(models.generator.apply(
        agents_lib.apply_gates(models.g_spec, teacher_vars, gates), z))

    def loss_fn(d_params):
      return _d_loss(models.discriminator, {"params": d_params, **d_state.frozen}, cfg, z,
                     real, fake)

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_state.params)
    return d_state.apply_gradients(grads), {"loss": loss, "d_loss": loss,
                                            "d_acc_real": acc[0], "d_acc_fake": acc[1]}

  return parallel.jit_step(step, mesh, num_replicated_args=1)


def make_collab_step(models: CollabModels, config: CollabConfig,
                     mesh: jax.sharding.Mesh | None = None
                     ) -> Callable[..., tuple[CollabState, dict[str, jax.Array]]]:
  """Builds the jitted ``step(state, batch, teacher_variables, frozen_d_variables)``.

  Args:
    models: :func:`build_models`.
    config: a :class:`CollabConfig` (static).
    mesh: a mesh with a ``'data'`` axis, or None (one device).

  Returns:
    ``step``, compiled with ``jax.jit(..., donate_argnums=(0,))``: the batch (sharded over
    ``'data'``): ``[batch, z_dim]`` float32 latents, ``[batch, height, width, channels]``
    images in [-1, 1], or ``{"input": images, "real": target images}`` (:func:`split_batch`);
    the teacher's variables and the frozen D copy (the feature space) replicated. It returns
    ``(new_state, metrics)``, metrics float32 scalars: ``loss`` (= ``g_loss``, G's objective),
    ``g_loss``, ``d_loss``, ``density``, ``kl``, ``kde``, ``pair_d``, ``pair_g``, ``recon``, ``g_adv``, ``d_acc_real``, ``d_acc_fake``, ``g_ratio``, ``d_ratio`` (MACs
    fractions of the sampled gates) and ``g_keep/<group>``, ``d_keep/<group>``.
  """
  gen, disc = models.generator, models.discriminator
  cfg = config
  features = feature_fn(models, cfg)

  def step(state: CollabState, batch: Any, teacher_vars: Any, d_frozen: Any):
    z, real_in = split_batch(batch)
    key, k_pert, k_g, k_d = jax.random.split(state.key, 4)
    b = z.shape[0]
    zp = perturb(cfg, k_pert, z)
    t_out = jax.lax.stop_gradient(models.teacher.apply(teacher_vars, z))
    t_feat = features(d_frozen, z, t_out)
    t_pert = None
    if zp is not None:
      tp = models.teacher.apply(teacher_vars, zp)
      t_pert = jax.lax.stop_gradient(features(d_frozen, zp, tp).reshape(b, cfg.m, -1))
    real = t_out if real_in is None else real_in
    g_peer = agents_lib.peer_summary(state.d_keep, state.d_acc)
    d_peer = agents_lib.peer_summary(state.g_keep, state.g_adv)
    # the D gates the G update sees: the D-agent's sample, a constant there
    d_prunes = cfg.prune_d and cfg.search
    d_gates = (agents_lib.sample_gates(k_d, models.d_agent.apply({"params": state.da.params},
                                                                 d_peer), cfg.temperature)
               if d_prunes else [jnp.ones(n) for n in models.d_spec.sizes])
    d_vars = {"params": state.d.params, **state.d.frozen}
    d_gated_const = jax.lax.stop_gradient(
        agents_lib.apply_gates(models.d_spec, d_vars, d_gates))

    def g_loss_fn(g_params, ga_params, pair_params):
      if cfg.search:
        g_gates = agents_lib.sample_gates(
            k_g, models.g_agent.apply({"params": ga_params}, g_peer), cfg.temperature)
      else:
        g_gates = [jnp.ones(n) for n in models.g_spec.sizes]
      gv = agents_lib.apply_gates(models.g_spec, {"params": g_params, **state.g.frozen},
                                  g_gates)
      s_out = gen.apply(gv, z)
      adv = gan_losses.generator_loss(
          _logits(disc.apply(d_gated_const, d_input(cfg, z, s_out)), cfg.d_outputs), "vanilla")
      recon = gan_losses.reconstruction_loss(s_out, t_out, "l1")
      budget, ratio = agents_lib.budget_loss(models.g_spec, g_gates, cfg.g_budget,
                                             cfg.budget_weight)
      loss = cfg.adv_weight * adv + cfg.recon_weight * recon + (budget if cfg.search else 0.0)
      dens = {"density": jnp.zeros(()), "kl": jnp.zeros(()), "kde": jnp.zeros(()),
              "pair_g": jnp.zeros(()), "pair_d": jnp.zeros(())}
      if cfg.density_weight > 0:
        s_feat = features(d_frozen, z, s_out)
        s_pert = None
        if zp is not None:
          s_pert = features(d_frozen, zp, gen.apply(gv, zp)).reshape(b, cfg.m, -1)
        dl, aux = density_lib.density_loss(t_feat, s_feat, cfg.k, t_pert=t_pert,
                                           s_pert=s_pert, lam=cfg.lam)
        idx, _ = density_lib.nearest_neighbours(t_feat, cfg.k)
        pair_d, pair_g = density_lib.pair_losses(models.pair.apply, {"params": pair_params},
                                                 t_feat, s_feat, idx, t_pert, s_pert)
        loss = loss + cfg.density_weight * dl + cfg.pair_weight * pair_g
        dens = {"density": dl, "kl": aux["kl"], "kde": aux["kde"], "pair_g": pair_g,
                "pair_d": pair_d}
      # pair_d reaches only the pair discriminator's params, pair_g only G's and the agent's
      # (pair_losses puts the other side under stop-gradient): one gradient trains all three
      return loss + dens["pair_d"], {"g_loss": loss, "recon": recon, "g_adv": adv,
                                     "g_ratio": ratio, "g_gates": g_gates, **dens}

    (_, g_aux), (g_grads, ga_grads, pair_grads) = jax.value_and_grad(
        g_loss_fn, argnums=(0, 1, 2), has_aux=True)(state.g.params, state.ga.params,
                                                    state.pair.params)
    g_state = state.g.apply_gradients(g_grads)
    ga_state = state.ga.apply_gradients(ga_grads) if cfg.search else state.ga
    pair_state = (state.pair.apply_gradients(pair_grads) if cfg.density_weight > 0
                  else state.pair)
    g_gates = [jax.lax.stop_gradient(x) for x in g_aux.pop("g_gates")]

    # D update against the updated G
    s_new = jax.lax.stop_gradient(gen.apply(agents_lib.apply_gates(
        models.g_spec, {"params": g_state.params, **g_state.frozen}, g_gates), z))

    def d_loss_fn(d_params, da_params):
      if d_prunes:
        gates = agents_lib.sample_gates(
            k_d, models.d_agent.apply({"params": da_params}, d_peer), cfg.temperature)
      else:
        gates = [jnp.ones(n) for n in models.d_spec.sizes]
      dv = agents_lib.apply_gates(models.d_spec, {"params": d_params, **state.d.frozen}, gates)
      d_loss, acc = _d_loss(disc, dv, cfg, z, real, s_new)
      budget, ratio = agents_lib.budget_loss(models.d_spec, gates, cfg.d_target,
                                             cfg.budget_weight)
      return d_loss + (budget if d_prunes else 0.0), {
          "d_loss": d_loss, "d_ratio": ratio, "d_acc": acc, "d_gates": gates}

    (_, d_aux), (d_grads, da_grads) = jax.value_and_grad(
        d_loss_fn, argnums=(0, 1), has_aux=True)(state.d.params, state.da.params)
    d_state = state.d.apply_gradients(d_grads)
    da_state = state.da.apply_gradients(da_grads) if d_prunes else state.da
    d_gates_new = [jax.lax.stop_gradient(x) for x in d_aux.pop("d_gates")]
    d_acc = d_aux.pop("d_acc")

    new = state.replace(g=g_state, d=d_state, ga=ga_state, da=da_state, pair=pair_state,
                        key=key, g_keep=agents_lib.keep_ratios(g_gates),
                        d_keep=agents_lib.keep_ratios(d_gates_new), d_acc=d_acc,
                        g_adv=g_aux["g_adv"])
    metrics = {"loss": g_aux["g_loss"], **g_aux, **d_aux, "d_acc_real": d_acc[0],
               "d_acc_fake": d_acc[1]}
    for name, r in zip(models.g_spec.names, new.g_keep):
      metrics[f"g_keep/{name}"] = r
    for name, r in zip(models.d_spec.names, new.d_keep):
      metrics[f"d_keep/{name}"] = r
    return new, metrics

  return parallel.jit_step(step, mesh)


def final_masks(models: CollabModels, state: CollabState, config: CollabConfig, g_vars: Any,
                d_vars: Any) -> tuple[Any, Any, list, list]:
  """The agents' deterministic decisions hardened onto the budgets (``agents.harden``):
  ``(g_masks, d_masks, g_keep, d_keep)``, masks in ``jaxgc.compress.slim`` format (``d_masks``
  keeps every channel when D is not pruned)."""
  g_peer = agents_lib.peer_summary(state.d_keep, state.d_acc)
  d_peer = agents_lib.peer_summary(state.g_keep, state.g_adv)
  g_logits = jax.jit(models.g_agent.apply)({"params": state.ga.params}, g_peer)
  g_keep = agents_lib.harden(models.g_spec, g_logits, config.g_budget)
  if config.prune_d:
    d_logits = jax.jit(models.d_agent.apply)({"params": state.da.params}, d_peer)
    d_keep = agents_lib.harden(models.d_spec, d_logits, config.d_target)
  else:
    d_keep = [jnp.ones(n, bool) for n in models.d_spec.sizes]
  return (agents_lib.hard_masks(models.g_spec, g_vars, g_keep),
          agents_lib.hard_masks(models.d_spec, d_vars, d_keep), g_keep, d_keep)
