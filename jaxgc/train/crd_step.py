"""Content relationship distillation with an online teacher discriminator: the train step.

You et al., "Exploring Content Relationships for Distilling Efficient GANs" (CRD, arXiv
2212.11091; METHODS.md section 5). A narrow *student* generator learns from a frozen, pretrained
*teacher* generator on the same inputs ``x``:

  L_G = crd_weight * CRD(G_s(x), G_t(x))                    (:func:`jaxgc.train.crd_losses.crd_loss`)
      + recon_weight * |G_s(x) - G_t(x)|_1 (or squared)     (pixel term, off by default)
      + perceptual_weight * P + style_weight * S            (:mod:`jaxgc.train.feature_nets`)
      + adv_weight * GAN_G(D(G_s(x)))                       (D frozen for this term)

The discriminator ``D`` (a PatchGAN) is the *online teacher discriminator*: it is updated in
the same step and is frozen (``stop_gradient``) in the student's adversarial term. What it is
trained on depends on the data, by ``disc_real``:

* ``"target"`` (real target-domain images ``B`` in the batch): D is trained against the
  teacher generator, real ``B`` vs fake ``G_t(x)``, as the teacher's own discriminator would be;
  the student then learns to look real to the teacher's discriminator (CRD's online scheme with
  the teacher frozen instead of co-trained).
* ``"teacher"`` (no target-domain images, the frozen-teacher default): D is trained alongside
  the student on teacher outputs (real) vs student outputs (fake), so it learns exactly what
  still tells the student from the teacher.

``GAN_D = 0.5 * (l(D(real), 1) + l(D(fake), 0))`` with ``l`` LSGAN's squared error (CycleGAN's
default, Mao et al. 2017) or the BCE-with-logits of the vanilla GAN; ``GAN_G = l(D(G_s(x)), 1)``.
Both gradients are taken at the same parameters and applied together, which is exactly
pytorch-CycleGAN-and-pix2pix's order (``models/cycle_gan_model.py``: the generator step with D
frozen, then the D step on the detached fakes of the same forward). Its image pool of 50 past
fakes is not used.

Both networks live in one :class:`~jaxgc.train.state.TrainState`: ``params = {"generator": ...,
"discriminator": ...}`` with one optax transformation per branch
(:func:`create_distill_state`), so checkpointing, resuming and the step loop are the same as for
every other jaxgc train job.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgc import parallel
from jaxgc.train import crd_losses as crd_lib
from jaxgc.train import feature_nets as features_lib
from jaxgc.train import gan_losses
from jaxgc.train.state import TrainState
from jaxgc.train.state import create_train_state

RECON_LOSSES = gan_losses.RECONSTRUCTION_LOSSES
GAN_LOSSES = gan_losses.DISCRIMINATOR_LOSSES
DISC_REAL = ("teacher", "target")
BRANCHES = ("generator", "discriminator")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """The terms of the distillation objective. Hashable (static under jit).

  Attributes:
    crd_weight: float >= 0, weight of the whole CRD loss.
    patch_size: side of CRD's square patches (32 in the paper); must divide the crop size.
    distance_weight, angle_weight: CRD's within-slicing weights (paper: 1 and 2).
    slicing_weights: CRD's row, column and patch weights (paper: 25 each).
    num_anchors: None (exact angle term) or the angle vertices drawn per sample and slicing
      (cheaper; see :func:`jaxgc.train.crd_losses.rkd_angle_loss`); drawn from ``seed`` and the step.
    recon: ``"l1"`` or ``"mse"``, the pixel distance to the teacher's outputs.
    recon_weight: float >= 0; 0 disables it.
    perceptual_weight, style_weight: floats >= 0, the feature terms (need a feature network).
    adv_weight: float >= 0, weight of the student's adversarial term; 0 disables the
      discriminator altogether.
    gan_loss: ``"lsgan"`` or ``"vanilla"``.
    disc_real: ``"teacher"`` or ``"target"`` (see the module docstring).
    seed: seeds the angle anchors.

  Raises:
    ValueError: a negative weight, every weight 0, an unknown ``recon``, ``gan_loss`` or
      ``disc_real``, or a bad ``patch_size`` / ``num_anchors``.
  """

  crd_weight: float = 1.0
  patch_size: int = crd_lib.DEFAULT_PATCH_SIZE
  distance_weight: float = crd_lib.DEFAULT_DISTANCE_WEIGHT
  angle_weight: float = crd_lib.DEFAULT_ANGLE_WEIGHT
  slicing_weights: tuple[float, float, float] = tuple(crd_lib.DEFAULT_SLICING_WEIGHTS)
  num_anchors: int | None = None
  recon: str = "l1"
  recon_weight: float = 0.0
  perceptual_weight: float = 0.0
  style_weight: float = 0.0
  adv_weight: float = 1.0
  gan_loss: str = "lsgan"
  disc_real: str = "teacher"
  seed: int = 0

  def __post_init__(self):
    weights = {k: getattr(self, k) for k in ("crd_weight", "distance_weight", "angle_weight",
                                             "recon_weight", "perceptual_weight",
                                             "style_weight", "adv_weight")}
    bad = {k: v for k, v in weights.items() if not float(v) >= 0}
    if bad:
      raise ValueError(f"loss weights must be >= 0, got {bad}")
    if not any(float(weights[k]) > 0 for k in ("crd_weight", "recon_weight",
                                               "perceptual_weight", "style_weight",
                                               "adv_weight")):
      raise ValueError("every loss weight is 0: nothing to train")
    if self.recon not in RECON_LOSSES:
      raise ValueError(f"recon must be one of {RECON_LOSSES}, got {self.recon!r}")
    if self.gan_loss not in GAN_LOSSES:
      raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {self.gan_loss!r}")
    if self.disc_real not in DISC_REAL:
      raise ValueError(f"disc_real must be one of {DISC_REAL}, got {self.disc_real!r}")
    if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int) \
        or self.patch_size < 1:
      raise ValueError(f"patch_size must be a positive int, got {self.patch_size!r}")
    if self.num_anchors is not None and (isinstance(self.num_anchors, bool)
                                         or not isinstance(self.num_anchors, int)
                                         or self.num_anchors < 3):
      raise ValueError(f"num_anchors must be None or an int >= 3, got {self.num_anchors!r}")

  @property
  def uses_discriminator(self) -> bool:
    return float(self.adv_weight) > 0

  @property
  def uses_features(self) -> bool:
    return float(self.perceptual_weight) > 0 or float(self.style_weight) > 0


def check_crop(config: DistillConfig, height: int, width: int) -> None:
  """Raises ValueError when CRD cannot slice ``height x width`` outputs (patch size, counts)."""
  dummy = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  jax.eval_shape(lambda a, b: crd_lib.crd_loss(
      a, b, patch_size=config.patch_size, distance_weight=config.distance_weight,
      angle_weight=config.angle_weight, slicing_weights=config.slicing_weights), dummy, dummy)


def create_distill_state(student_variables: dict[str, Any], disc_variables: dict[str, Any] | None,
                         g_tx: optax.GradientTransformation,
                         d_tx: optax.GradientTransformation | None = None) -> TrainState:
  """A :class:`TrainState` training the student generator and the discriminator together.

  ``params = {"generator": student params, "discriminator": D params or {}}``; ``frozen`` holds
  the other collections under the same two keys; ``tx`` applies ``g_tx`` to the generator
  branch and ``d_tx`` (default ``g_tx``) to the discriminator's (``optax.multi_transform``).

  Raises:
    ValueError: discriminator variables with ``batch_stats`` (a batch-norm D would need its
      running statistics updated; use ``norm="instance"``, CycleGAN's default).
  """
  disc_variables = dict(disc_variables or {})
  if disc_variables.get("batch_stats"):
    raise ValueError("the online discriminator must not use batch norm (its batch_stats would "
                     "go stale); build it with norm='instance' or 'none'")
  params = {"generator": student_variables["params"],
            "discriminator": disc_variables.get("params", {})}
  frozen = {"generator": {k: v for k, v in student_variables.items() if k != "params"},
            "discriminator": {k: v for k, v in disc_variables.items() if k != "params"}}
  tx = optax.multi_transform({"generator": g_tx, "discriminator": d_tx or g_tx},
                             {"generator": "generator", "discriminator": "discriminator"})
  return create_train_state(params, tx, frozen)


def student_variables(state: TrainState) -> dict[str, Any]:
  """The student generator's variables ``{"params", ...}`` of a distillation state."""
  return {"params": state.params["generator"], **state.frozen["generator"]}


def disc_variables(state: TrainState) -> dict[str, Any]:
  """The discriminator's variables of a distillation state."""
  return {"params": state.params["discriminator"], **state.frozen["discriminator"]}


def make_distill_step(student: nn.Module, teacher: nn.Module, config: DistillConfig,
                      discriminator: nn.Module | None = None,
                      feature_net: features_lib.FeatureNet | None = None,
                      mesh: jax.sharding.Mesh | None = None):
  """The jitted step ``step(state, batch, teacher_variables, feature_variables)``.

  ``batch`` is ``{"A": [batch, h, w, 3]}`` float32 inputs in [-1, 1], plus ``"B"`` (target-domain
  images, same shape) when ``config.disc_real == "target"``. The step runs the teacher (no
  gradient), the student, CRD and the other terms, the discriminator update, and one optimizer
  update of both branches of ``state`` (:func:`create_distill_state`). ``feature_variables`` is
  ``feature_net.variables`` (None without a feature network).

  Returns ``(new_state, metrics)``; metrics are float32 scalars: ``loss`` (the student's total),
  ``crd``, ``crd_row``/``crd_column``/``crd_patch`` (before the slicing weights), ``recon``,
  ``perceptual``, ``style``, ``adv``, ``d_loss``, ``d_real``, ``d_fake``, ``grad_norm`` (the
  student's) and ``d_grad_norm``; disabled terms are 0.

  Compiled with ``donate_argnums=(0,)``; with a ``mesh`` the batch is sharded over ``'data'``
  (a multiple of its size) and the rest replicated. Every loss is a mean over the global batch,
  so 1 and 8 devices take the same step.

  Raises:
    ValueError: ``adv_weight > 0`` without a discriminator, feature weights without a feature
      network, a mesh without a ``'data'`` axis; at trace time, student and teacher outputs of
      different shapes, a patch size not dividing the crop, fewer than 3 slices, or a missing
      ``"B"`` with ``disc_real="target"``.
  """
  if config.uses_discriminator and discriminator is None:
    raise ValueError(f"adv_weight is {config.adv_weight} but no discriminator was given")
  if config.uses_features and feature_net is None:
    raise ValueError("perceptual_weight / style_weight > 0 need a feature network")
  zero = lambda: jnp.zeros((), jnp.float32)  # noqa: E731

  def g_loss(g_params, g_frozen, d_params, d_frozen, x, t_out, feature_vars, key):
    out = student.apply({"params": g_params, **g_frozen}, x)
    if out.shape != t_out.shape:
      raise ValueError(f"student and teacher outputs must have the same shape, got "
                       f"{tuple(out.shape)} and {tuple(t_out.shape)}")
    out32, t32 = out.astype(jnp.float32), t_out.astype(jnp.float32)
    m = {"crd": zero(), "crd_row": zero(), "crd_column": zero(), "crd_patch": zero(),
         "recon": zero(), "perceptual": zero(), "style": zero(), "adv": zero()}
    loss = zero()
    if config.crd_weight > 0:
      total, terms = crd_lib.crd_loss(
          out32, t32, patch_size=config.patch_size, distance_weight=config.distance_weight,
          angle_weight=config.angle_weight, slicing_weights=config.slicing_weights,
          num_anchors=config.num_anchors, key=key if config.num_anchors else None)
      m["crd"] = total
      for s in crd_lib.SLICINGS:
        if s in terms:
          m[f"crd_{s}"] = terms[s]
      loss = loss + config.crd_weight * total
    if config.recon_weight > 0:
      m["recon"] = gan_losses.reconstruction_loss(out32, t32, config.recon)
      loss = loss + config.recon_weight * m["recon"]
    if config.uses_features:
      f = features_lib.feature_losses(feature_net, feature_vars, out32, t32,
                                      style=config.style_weight > 0)
      m.update(f)
      loss = loss + config.perceptual_weight * f["perceptual"] + config.style_weight * f["style"]
    if config.uses_discriminator:
      frozen_d = jax.lax.stop_gradient({"params": d_params, **d_frozen})
      m["adv"] = gan_losses.generator_loss(discriminator.apply(frozen_d, out), config.gan_loss)
      loss = loss + config.adv_weight * m["adv"]
    return loss, (m, out)

  def d_loss(d_params, d_frozen, real, fake):
    v = {"params": d_params, **d_frozen}
    return gan_losses.discriminator_loss(discriminator.apply(v, real), discriminator.apply(v, fake),
                                  config.gan_loss)

  def step(state: TrainState, batch: dict[str, jax.Array], teacher_variables: Any,
           feature_variables: Any):
    x = batch["A"]
    t_out = jax.lax.stop_gradient(teacher.apply(jax.lax.stop_gradient(teacher_variables), x))
    key = jax.random.fold_in(jax.random.key(config.seed), state.step)
    p, fr = state.params, state.frozen
    (loss, (m, out)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(
        p["generator"], fr["generator"], p["discriminator"], fr["discriminator"], x, t_out,
        feature_variables, key)
    d_grads = jax.tree.map(jnp.zeros_like, p["discriminator"])
    m.update(d_loss=zero(), d_real=zero(), d_fake=zero())
    if config.uses_discriminator:
      if config.disc_real == "target":
        if "B" not in batch:
          raise ValueError("disc_real='target' needs target-domain images: the batch has no 'B'")
        real, fake = batch["B"], t_out
      else:
        real, fake = t_out, jax.lax.stop_gradient(out)
      (dl, (dr, df)), d_grads = jax.value_and_grad(
          lambda dp: (lambda r: (r[0], r[1:]))(d_loss(dp, fr["discriminator"], real, fake)),
          has_aux=True)(p["discriminator"])
      m.update(d_loss=dl, d_real=dr, d_fake=df)
    grads = {"generator": g_grads, "discriminator": d_grads}
    metrics = {"loss": loss, **m, "grad_norm": optax.tree.norm(g_grads),
               "d_grad_norm": optax.tree.norm(d_grads)}
    return state.apply_gradients(grads), metrics

  return parallel.jit_step(step, mesh)
