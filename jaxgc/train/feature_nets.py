"""Frozen feature networks and the perceptual and style terms computed with them.

Distillation of image-to-image GANs usually adds a *perceptual* term (Johnson et al. 2016,
"Perceptual Losses for Real-Time Style Transfer", arXiv 1603.08155, eq. 2: the squared distance
of feature maps, normalised by their size) and a *style* term (the same paper, eq. 3-4: the
squared Frobenius distance of the feature maps' Gram matrices ``F^T F / (h w c)``) between the
student's and the teacher's outputs, measured by a frozen VGG-16 (OMGD, Ren et al. 2021, and
CRD, You et al. 2022, follow this). **VGG-16 weights are not available to jaxgc** (nothing is
downloaded at run time and ``$JAXGC_ASSETS`` ships none), so the feature network is pluggable
and two substitutes are provided:

* ``"inception"``: the FID Inception-v3's intermediate maps (``pool1`` and ``mixed_2`` by
  default, 1/8 of the input side), from the standard weights of ``$JAXGC_ASSETS`` (converted once
  with PyTorch, then read from jaxgc's cache). ImageNet-trained like VGG, so closest in spirit;
  about 1.2 GMACs per 128 x 128 image up to ``mixed_2``.
* ``"teacher_encoder"``: the teacher generator's own stem and two downsampling convolutions
  (:func:`jaxgc.models.resnet.encoder_of`), at full, 1/2 and 1/4 resolution: free (no extra
  weights) and cheap, and it measures what the teacher itself attends to.

Any other network fits: a :class:`FeatureNet` is a pure function ``(variables, images) ->
tuple of [batch, h, w, c] maps`` with its variables, passed to the train step as a
non-differentiated argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models.inception import FIDInceptionV3
from jaxgc.models.inception import STAGES
from jaxgc.models.resnet import encoder_of

FEATURE_NETS = ("none", "teacher_encoder", "inception")
DEFAULT_INCEPTION_TAPS = ("pool1", "mixed_2")


@dataclasses.dataclass(frozen=True)
class FeatureNet:
  """A frozen feature network.

  Attributes:
    name: a label for reports (``"teacher_encoder"``, ``"inception:pool1,mixed_2"``).
    apply: ``(variables, images) -> tuple of maps``; ``images`` float32 ``[batch, height, width,
      3]`` in [-1, 1] (the generators' output range), each map ``[batch, h, w, c]``. Pure and
      jit-compatible; it is static in the train step (hashable by identity).
    variables: its variables (nested dicts of arrays), replicated over the mesh by the job.
  """

  name: str
  apply: Callable[[Any, jax.Array], tuple[jax.Array, ...]]
  variables: Any


def teacher_encoder(module: nn.Module, variables: dict[str, Any]) -> FeatureNet:
  """The teacher generator's encoder as the feature network (three maps, after ReLU).

  Raises:
    ValueError: the teacher is not one of the zoo's ResNet generators.
  """
  enc, enc_vars = encoder_of(module, variables)
  return FeatureNet("teacher_encoder", enc.apply, enc_vars)


def inception(variables: dict[str, Any], taps: Sequence[str] = DEFAULT_INCEPTION_TAPS
              ) -> FeatureNet:
  """The FID Inception-v3's intermediate maps ``taps`` as the feature network.

  Images in [-1, 1] are mapped to the network's input scale ``(pixel - 128) / 128`` with
  ``pixel = (x + 1) * 127.5`` (no resizing: any side >= 75 works).

  Args:
    variables: FID Inception variables (:func:`jaxgc.eval.fid_inception.load_inception`).
    taps: stage names of :data:`jaxgc.models.inception.STAGES`.

  Raises:
    ValueError: an unknown tap name, or no taps.
  """
  taps = tuple(taps)
  bad = [t for t in taps if t not in STAGES or t == "pool3"]
  if not taps or bad:
    raise ValueError(f"inception taps must be a non-empty list of feature-map stages from "
                     f"{STAGES[:-1]}, got {list(taps)}")
  net = FIDInceptionV3(taps=taps)

  def apply(v, images):
    return net.apply(v, (images + 1.0) * (127.5 / 128.0) - 1.0)

  return FeatureNet("inception:" + ",".join(taps), apply, variables)


def gram(x: jax.Array) -> jax.Array:
  """Gram matrices ``F^T F / (h w c)`` of ``[batch, h, w, c]`` maps: ``[batch, c, c]`` float32
  (Johnson et al. 2016, eq. 3)."""
  b, h, w, c = x.shape
  f = x.reshape(b, h * w, c).astype(jnp.float32)
  return jnp.einsum("bnc,bnd->bcd", f, f, precision=jax.lax.Precision.HIGHEST) / (h * w * c)


def feature_losses(net: FeatureNet, variables: Any, student: jax.Array, teacher: jax.Array,
                   style: bool = True) -> dict[str, jax.Array]:
  """Perceptual and style distances between student and teacher outputs under ``net``.

  ``perceptual = mean_l mean((F_l(s) - F_l(t))**2)``; ``style = mean_l mean((G_l(s) -
  G_l(t))**2)`` with ``G_l`` the Gram matrices of :func:`gram`; ``l`` over the net's maps. The
  teacher's maps carry no gradient.

  Args:
    net: the frozen feature network.
    variables: its variables (no gradient flows into them).
    student: ``[batch, height, width, 3]`` float32 student outputs in [-1, 1].
    teacher: the same shape, teacher outputs.
    style: also compute the style term (else it is 0).

  Returns:
    ``{"perceptual": scalar, "style": scalar}``, float32 >= 0 (0 for identical inputs).

  Raises:
    ValueError: student and teacher of different shapes.
  """
  if student.shape != teacher.shape:
    raise ValueError(f"student and teacher outputs must have the same shape, got "
                     f"{tuple(student.shape)} and {tuple(teacher.shape)}")
  variables = jax.lax.stop_gradient(variables)
  fs = net.apply(variables, student)
  ft = jax.lax.stop_gradient(net.apply(variables, teacher))
  perceptual = jnp.mean(jnp.stack([jnp.mean(jnp.square(a.astype(jnp.float32) - b))
                                   for a, b in zip(fs, ft)]))
  out = {"perceptual": perceptual, "style": jnp.zeros((), jnp.float32)}
  if style:
    out["style"] = jnp.mean(jnp.stack([jnp.mean(jnp.square(gram(a) - gram(b)))
                                       for a, b in zip(fs, ft)]))
  return out
