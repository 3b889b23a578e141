"""Quantization-aware training (QAT) of a GAN generator, distilled from its FP32 self.

The student's forward pass runs on fake-quantized weights, ``G(fake_quantize(params), z)``; the
rounding has a straight-through gradient (:func:`jaxgc.compress.fake_quant`), so the float
*shadow* weights ``params`` are what the optimizer updates (Jacob et al. 2018, section 3; for GANs
Andreev et al. 2021, arXiv 2108.13996: QAT fine-tuning from the post-training-quantized starting
point). The loss follows the self-supervised compression recipe of Yu and Pool 2020 (arXiv
2007.01491), the generator distilled from the original one and judged by the original, frozen,
trained discriminator (METHODS.md sections 3 and 4):

  loss = distill_weight * distill + adv_weight * adv
  distill = mean((G_q(z) - G_fp32(z))**2)      ("mse")   or   mean(|G_q(z) - G_fp32(z)|) ("l1")
  adv = mean(-log(D(G_q(z)) + eps))             non-saturating GAN loss, D frozen

Teacher and discriminator variables are separate, non-differentiated arguments of the step
(big_vision ``trainers/proj/distill/distill.py``); their outputs go through ``stop_gradient``.
The step is ``jax.jit`` with the state donated; latents are sharded over a mesh's ``'data'`` axis
and everything else is replicated (big_vision ``train.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.compress import quantize
from jaxgc.compress import selection
from jaxgc.train import selfsup_step as selfsup
from jaxgc.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class QATConfig:
  """What the QAT loss quantizes and how it weighs its terms. Hashable (static under jit).

  Attributes:
    quant: the weight :class:`~jaxgc.compress.QuantConfig` (bits, symmetric, granularity).
    include: regex on "/"-joined variable paths (``params/dense_0/kernel``) of the leaves to
      quantize; by default every kernel.
    exclude: optional regex of paths kept in full precision (e.g. first/last layer).
    distill: ``"mse"`` or ``"l1"``, the distance to the teacher's outputs.
    distill_weight: float >= 0, weight of the distillation term.
    adv_weight: float >= 0, weight of the adversarial term; 0 disables it (no D needed).

  Raises:
    ValueError: unknown ``distill``, a negative weight, or both weights zero.
  """

  quant: quantize.QuantConfig
  include: str = selection.DEFAULT_INCLUDE
  exclude: str | None = None
  distill: str = "mse"
  distill_weight: float = 1.0
  adv_weight: float = 0.0

  def __post_init__(self):
    selfsup.check_loss_weights(self.distill, self.distill_weight, self.adv_weight)


def quantized_variables(variables: Any, config: QATConfig) -> Any:
  """``fake_quantize(variables)`` with the selection and bits of ``config`` (STE gradient).

  Args:
    variables: ``{"params": ..., ...}``, e.g. ``state.variables``.
    config: the :class:`QATConfig`.

  Returns:
    The tree with the selected kernels fake-quantized: what the deployed model computes with.
  """
  return quantize.fake_quantize(variables, config.quant, config.include, config.exclude)


def sample_latents(key: jax.Array, step: int | jax.Array, batch_size: int, z_dim: int
                   ) -> jax.Array:
  """The latents of training step ``step``: ``N(0, 1)`` from ``fold_in(key, step)``.

  A function of ``(key, step)`` only, so a run resumed from a checkpoint at step ``s`` draws the
  same batches ``s, s+1, ...`` as an uninterrupted run.

  Returns:
    float32 ``[batch_size, z_dim]``.
  """
  return jax.random.normal(jax.random.fold_in(key, step), (batch_size, z_dim), jnp.float32)


def qat_loss(
    params: Any,
    frozen: dict[str, Any],
    latents: jax.Array,
    teacher_out: jax.Array,
    disc_variables: Any,
    *,
    generator: nn.Module,
    discriminator: nn.Module | None,
    config: QATConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The QAT objective of the student ``params`` on one batch.

  Args:
    params: the student's float shadow weights (differentiated).
    frozen: the student's other collections (``batch_stats``), not trained.
    latents: float32 ``[batch, z_dim]``.
    teacher_out: the FP32 teacher's outputs on ``latents``, e.g. ``[batch, 28, 28, 1]`` in
      [-1, 1]; treated as a constant.
    disc_variables: the frozen discriminator's variables (None when ``discriminator`` is None).
    generator: the generator module (student and teacher share it).
    discriminator: a module mapping images to ``[batch, 1]`` probabilities of "real", or None.
    config: the :class:`QATConfig`.

  Returns:
    ``(loss, {"distill": ..., "adv": ...})``, float32 scalars; ``adv`` is 0 when the term is
    disabled (``adv_weight == 0`` or no discriminator).
  """
  return selfsup.selfsup_loss(
      params, frozen, latents, teacher_out, disc_variables, generator=generator,
      discriminator=discriminator, config=config,
      transform=functools.partial(quantized_variables, config=config))


def make_train_step(
    generator: nn.Module,
    config: QATConfig,
    discriminator: nn.Module | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the jitted QAT step ``train_step(state, latents, teacher_variables, disc_variables)``.

  ``train_step`` computes the teacher's outputs (no gradient), the loss of :func:`qat_loss` and
  its gradient with respect to ``state.params`` (straight through the rounding), applies one
  optimizer update and returns ``(new_state, metrics)`` with ``metrics`` the float32 scalars
  ``{"loss", "distill", "adv", "grad_norm"}`` (``grad_norm``: global L2 norm of the gradient).

  Compiled with ``jax.jit(..., donate_argnums=(0,))``: the input state's buffers are reused for
  the output, so the caller must not read ``state`` after the call. With a ``mesh``, the latents
  are sharded over its ``'data'`` axis (``NamedSharding(mesh, P('data'))``; the batch must be a
  multiple of the axis size) and the state, teacher and discriminator variables are replicated,
  in and out. Place the state and variables with :func:`replicate` and the latents with
  :func:`shard_batch` (the step's outputs are then laid out like its inputs, so a second call
  does not recompile).

  Args:
    generator: the generator module.
    config: the :class:`QATConfig` (static).
    discriminator: the frozen discriminator module, or None (then ``disc_variables`` must be
      None and the adversarial term is 0).
    mesh: a mesh with a ``'data'`` axis (see :func:`data_mesh`), or None for the default device.

  Returns:
    The jitted step function.

  Raises:
    ValueError: a ``mesh`` without a ``'data'`` axis.
  """
  return selfsup.make_train_step(
      generator, config, discriminator, mesh,
      transform=functools.partial(quantized_variables, config=config))
