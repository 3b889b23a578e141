"""Self-supervised GAN compression: a compressed generator trained by the original pair.

Yu and Pool, "Self-Supervised GAN Compression", arXiv 2007.01491 (2020), METHODS.md section 3:
plain fine-tuning of a pruned generator fails on GANs; instead the compressed *student* is
trained with (a) the original, frozen, trained discriminator's adversarial loss and (b) a
distillation loss to the original (teacher) generator's outputs on the same latents or inputs:

  loss = distill_weight * distill + adv_weight * adv
  distill = mean((G_s(x) - G_t(x))**2)  ("mse")   or   mean(|G_s(x) - G_t(x)|)  ("l1")
  adv     = the generator's GAN loss under the frozen D, by ``adv_loss``:
            "non_saturating_prob":   mean(-log(D(G_s(x)) + eps)), D outputs probabilities;
            "non_saturating_logits": mean(softplus(-D(G_s(x)))), D outputs logits;
            "lsgan":                 mean((D(G_s(x)) - 1)**2) (Mao et al. 2017, CycleGAN's default)

The student's weights may go through a ``transform`` before the forward pass (fake quantization
for QAT, :mod:`jaxgc.train.qat_step`); pruning keeps its masks in the optimizer (an optax
transformation, :func:`jaxgc.compress.prune.pruning`), so the step itself is the same for every
kind of compression. Teacher and discriminator variables are separate, non-differentiated
arguments (big_vision ``trainers/proj/distill/distill.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgc import parallel
from jaxgc.train import gan_losses
from jaxgc.train.state import TrainState

DISTILL_LOSSES = ("mse", "l1")
ADV_LOSSES = ("non_saturating_prob", "non_saturating_logits", "lsgan")
METRIC_NAMES = ("loss", "distill", "adv", "grad_norm")


@dataclasses.dataclass(frozen=True)
class SelfSupConfig:
  """The terms of the self-supervised compression loss. Hashable (static under jit).

  Attributes:
    distill: ``"mse"`` or ``"l1"``, the distance to the teacher's outputs.
    distill_weight: float >= 0, weight of the distillation term.
    adv_weight: float >= 0, weight of the adversarial term; 0 disables it (no D needed).
    adv_loss: one of ``ADV_LOSSES``; must match what the discriminator outputs.

  Raises:
    ValueError: unknown ``distill`` or ``adv_loss``, a negative weight, or both weights zero.
  """

  distill: str = "mse"
  distill_weight: float = 1.0
  adv_weight: float = 0.0
  adv_loss: str = "non_saturating_prob"

  def __post_init__(self):
    check_loss_weights(self.distill, self.distill_weight, self.adv_weight)
    if self.adv_loss not in ADV_LOSSES:
      raise ValueError(f"adv_loss must be one of {ADV_LOSSES}, got {self.adv_loss!r}")


def check_loss_weights(distill: str, distill_weight: float, adv_weight: float) -> None:
  """Raises ValueError for an unknown distillation loss, a negative weight or two zero weights."""
  if distill not in DISTILL_LOSSES:
    raise ValueError(f"distill must be one of {DISTILL_LOSSES}, got {distill!r}")
  if distill_weight < 0 or adv_weight < 0:
    raise ValueError(f"loss weights must be >= 0, got distill_weight={distill_weight}, "
                     f"adv_weight={adv_weight}")
  if distill_weight == 0 and adv_weight == 0:
    raise ValueError("distill_weight and adv_weight are both 0: nothing to train")


def selfsup_loss(
    params: Any,
    frozen: dict[str, Any],
    inputs: jax.Array,
    teacher_out: jax.Array,
    disc_variables: Any,
    *,
    generator: nn.Module,
    discriminator: nn.Module | None,
    config: Any,
    transform: Callable[[Any], Any] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The compression objective of the student ``params`` on one batch.

  Args:
    params: the student's (float, possibly masked) weights, differentiated.
    frozen: the student's other collections (``batch_stats``), not trained.
    inputs: ``[batch, z_dim]`` latents or ``[batch, height, width, channels]`` images in [-1, 1].
    teacher_out: the teacher's outputs on ``inputs`` (same shape as the student's), a constant.
    disc_variables: the frozen discriminator's variables (None without a discriminator).
    generator: the student generator module (may be narrower than the teacher's).
    discriminator: the frozen discriminator module, or None.
    config: a :class:`SelfSupConfig` (or any object with its attributes; ``adv_loss`` defaults to
      ``"non_saturating_prob"``).
    transform: optional ``variables -> variables`` applied before the forward pass (e.g. fake
      quantization with a straight-through gradient).

  Returns:
    ``(loss, {"distill": ..., "adv": ...})``, float32 scalars; ``adv`` is 0 when disabled.
  """
  variables = {"params": params, **frozen}
  if transform is not None:
    variables = transform(variables)
  out = generator.apply(variables, inputs)
  distill = gan_losses.reconstruction_loss(out, teacher_out, config.distill)
  loss = config.distill_weight * distill
  adv = jnp.zeros((), jnp.float32)
  if discriminator is not None and config.adv_weight > 0:
    d_out = discriminator.apply(jax.lax.stop_gradient(disc_variables), out)
    adv = gan_losses.generator_loss(d_out, getattr(config, "adv_loss", "non_saturating_prob"))
    loss = loss + config.adv_weight * adv
  return loss, {"distill": distill, "adv": adv}


def make_train_step(
    generator: nn.Module,
    config: Any,
    discriminator: nn.Module | None = None,
    mesh: jax.sharding.Mesh | None = None,
    transform: Callable[[Any], Any] | None = None,
    teacher: nn.Module | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the jitted step ``train_step(state, inputs, teacher_variables, disc_variables)``.

  ``train_step`` computes the teacher's outputs (no gradient), the loss of :func:`selfsup_loss`
  and its gradient with respect to ``state.params``, applies one update of ``state.tx`` (which,
  for pruning, ends with the masking transformation) and returns ``(new_state, metrics)``,
  ``metrics`` the float32 scalars ``{"loss", "distill", "adv", "grad_norm"}`` (``grad_norm``:
  global L2 norm of the gradient).

  Compiled with ``jax.jit(..., donate_argnums=(0,))``: the caller must not read ``state`` after
  the call. With a ``mesh`` the inputs are sharded over its ``'data'`` axis (the batch must be a
  multiple of its size) and the state, teacher and discriminator variables are replicated. The
  loss is a mean over the whole (global) batch, so 1 and 8 devices give the same step.

  Args:
    generator: the student module.
    config: a :class:`SelfSupConfig` (static).
    discriminator: the frozen discriminator module, or None (``disc_variables`` then None).
    mesh: a mesh with a ``'data'`` axis (:func:`jaxgc.train.data_mesh`), or None.
    transform: optional ``variables -> variables`` for the student's forward pass.
    teacher: the teacher module when it differs from the student's (a slimmed student); by
      default the student's module with the teacher's variables.

  Returns:
    The jitted step function.

  Raises:
    ValueError: a ``mesh`` without a ``'data'`` axis.
  """
  teacher = generator if teacher is None else teacher

  def train_step(state: TrainState, inputs: jax.Array, teacher_variables: Any,
                 disc_variables: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    teacher_out = jax.lax.stop_gradient(
        teacher.apply(jax.lax.stop_gradient(teacher_variables), inputs))
    grad_fn = jax.value_and_grad(selfsup_loss, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, state.frozen, inputs, teacher_out,
                                 disc_variables, generator=generator,
                                 discriminator=discriminator, config=config,
                                 transform=transform)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
    return state.apply_gradients(grads), metrics

  return parallel.jit_step(train_step, mesh)
