"""Quantization-aware training under a mixed-precision recipe, for every kind of generator.

A :class:`QuantizedGenerator` is a generator module seen through a recipe: its ``apply`` fake-
quantizes each kernel at the bits the recipe's rules give that layer (straight-through gradient,
:func:`jaxgc.compress.apply_allocation`) and fake-quantizes each layer input with the static
ranges of a calibration (clipped straight-through gradient,
:func:`jaxgc.compress.apply_quantized`). Plugged in as the *student* of the existing steps, it
trains the float shadow weights so that the quantized network matches the FP32 one (Andreev,
Fritzler and Vetrov 2021, arXiv 2108.13996: QAT from the PTQ starting point):

* unconditional generators: :func:`jaxgc.train.selfsup_step.make_train_step` on random latents,
  ``distill(G_q(z), G_fp32(z))`` (Yu and Pool 2020, arXiv 2007.01491);
* image-to-image generators: :func:`jaxgc.train.crd_step.make_distill_step` on photo crops,
  the pixel distance to the FP32 outputs plus, with ``adv_weight > 0``, the LSGAN loss of a
  PatchGAN trained online on teacher outputs (real) vs student outputs (fake)
  (``disc_real="teacher"``, as ``jaxgc distill``), for generators released without their
  discriminator.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgc.compress import activations
from jaxgc.compress import allocate
from jaxgc.compress.qconfig import PrecisionRule
from jaxgc.models import layers
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.train import crd_step
from jaxgc.train import selfsup_step
from jaxgc.train.state import create_train_state


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedGenerator:
  """``module`` with recipe-quantized weights and calibrated, quantized layer inputs.

  Attributes:
    module: the generator (any zoo module; ``kind`` is forwarded).
    assignment: ``{"params/<layer>/kernel": bits}``, the kernels fake-quantized and their bits
      in ``[2, 8]`` (layers absent stay float32).
    symmetric: symmetric weight codes.
    granularity: ``"per_channel"`` or ``"per_tensor"`` weight ranges.
    act_config: the activation :class:`~jaxgc.compress.ActQuantConfig` (static mode), or None
      for float32 activations.
    calibration: ``{layer: {"min", "max"}}`` static ranges (:func:`jaxgc.compress.calibrate`).
    act_rules: per-layer activation bits (:func:`jaxgc.compress.act_rules`), markers expanded.
  """

  module: nn.Module
  assignment: Mapping[str, int]
  symmetric: bool = True
  granularity: str = "per_channel"
  act_config: activations.ActQuantConfig | None = None
  calibration: Mapping[str, Mapping[str, Any]] | None = None
  act_rules: tuple[PrecisionRule, ...] = ()

  @property
  def kind(self) -> str:
    """The wrapped generator's kind (``"unconditional"`` or ``"image_to_image"``)."""
    return self.module.kind

  def quantize_weights(self, variables: Any) -> Any:
    """The variables with the assigned kernels fake-quantized (STE gradient)."""
    return allocate.apply_allocation(variables, dict(self.assignment), self.symmetric,
                                     self.granularity)

  def apply(self, variables: Any, x: jax.Array) -> jax.Array:
    """The quantized generator's outputs on ``x`` (latents ``[batch, z_dim]`` or images
    ``[batch, height, width, channels]`` in [-1, 1]), from float shadow ``variables``."""
    v = self.quantize_weights(variables)
    if self.act_config is None:
      return self.module.apply(v, x)
    return activations.apply_quantized(self.module, v, x, self.act_config, self.calibration,
                                       rules=self.act_rules)


@dataclasses.dataclass(frozen=True)
class QATSettings:
  """How :func:`train` fine-tunes.

  Attributes:
    steps: optimizer steps (>= 0).
    batch_size: latents or crops per step (>= 1).
    learning_rate: Adam's, > 0 (the online PatchGAN's too).
    distill: ``"l1"`` or ``"mse"``, the distance to the FP32 outputs.
    adv_weight: >= 0, image-to-image only: weight of the online PatchGAN's LSGAN loss; 0: none.
    disc_ndf, disc_layers: the PatchGAN's width and depth (CycleGAN's 64 and 3: 70x70 patches).
    seed: latents / crops and the PatchGAN's initialisation.

  Raises:
    ValueError: a bad value.
  """

  steps: int = 100
  batch_size: int = 8
  learning_rate: float = 1e-4
  distill: str = "l1"
  adv_weight: float = 0.0
  disc_ndf: int = 64
  disc_layers: int = 3
  seed: int = 0

  def __post_init__(self):
    selfsup_step.check_loss_weights(self.distill, 1.0, self.adv_weight)
    if self.steps < 0 or self.batch_size < 1 or not self.learning_rate > 0:
      raise ValueError(f"qat needs steps >= 0, batch_size >= 1 and learning_rate > 0, got "
                       f"{self.steps}, {self.batch_size}, {self.learning_rate}")


def train(student: QuantizedGenerator, variables: dict[str, Any],
          batch_fn: Callable[[int], np.ndarray], settings: QATSettings,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
  """Fine-tunes ``variables`` so that ``student.apply`` matches the FP32 ``student.module``.

  Args:
    student: the recipe-quantized generator (its module with ``variables`` is the teacher).
    variables: the FP32 generator's variables, the starting point of the shadow weights.
    batch_fn: ``step -> inputs`` of that step: latents ``[batch, z_dim]`` or crops
      ``[batch, h, w, c]`` in [-1, 1]; a function of the step, so reruns see the same data.
    settings: :class:`QATSettings`.
    on_step: called as ``on_step(step, metrics)`` after every step (float metrics).

  Returns:
    The trained float shadow variables (``student.apply`` of them is the QAT model).

  Raises:
    FloatingPointError: the loss became NaN or Inf (naming the step).
  """
  module = student.module
  tx = optax.adam(settings.learning_rate)
  image_to_image = module.kind == "image_to_image"
  frozen = {k: v for k, v in variables.items() if k != "params"}
  if image_to_image:
    cfg = crd_step.DistillConfig(crd_weight=0.0, recon=settings.distill, recon_weight=1.0,
                                 adv_weight=settings.adv_weight, disc_real="teacher",
                                 seed=settings.seed)
    disc = disc_vars = None
    if settings.adv_weight > 0:
      example = jnp.asarray(batch_fn(0)[:1])
      disc = PatchGANDiscriminator(ndf=settings.disc_ndf, n_layers=settings.disc_layers,
                                   norm="instance", image_size=int(example.shape[1]))
      disc_vars = layers.normal_init(disc, example, seed=settings.seed + 2)
    state = crd_step.create_distill_state(variables, disc_vars, tx)
    step_fn = crd_step.make_distill_step(student, module, cfg, disc)
    call = lambda st, x: step_fn(st, {"A": x}, variables, None)  # noqa: E731
  else:
    state = create_train_state(variables["params"], tx, frozen)
    step_fn = selfsup_step.make_train_step(
        student, selfsup_step.SelfSupConfig(settings.distill), teacher=module)
    call = lambda st, x: step_fn(st, x, variables, None)  # noqa: E731
  for step in range(settings.steps):
    state, metrics = call(state, jnp.asarray(batch_fn(step)))
    metrics = {k: float(v) for k, v in metrics.items()}
    if not np.isfinite(metrics["loss"]):
      raise FloatingPointError(f"QAT loss is {metrics['loss']} at step {step}")
    if on_step is not None:
      on_step(step, metrics)
  if image_to_image:
    return jax.device_get(crd_step.student_variables(state))
  return jax.device_get({"params": state.params, **state.frozen})
