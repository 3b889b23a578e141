"""GAN and reconstruction losses, one definition each, for every train step of jaxgc.

Adversarial losses take the discriminator's outputs for a batch (``[batch]``, ``[batch, 1]`` or
PatchGAN maps ``[batch, h, w, 1]``; every element is averaged) and return a float32 scalar:

* ``"lsgan"``: least squares (Mao et al. 2017), ``mean((D - target)**2)``; pytorch-CycleGAN-and-
  pix2pix ``GANLoss('lsgan')``.
* ``"vanilla"`` / ``"non_saturating_logits"``: binary cross-entropy on logits (Goodfellow et al.
  2014, the non-saturating generator loss ``mean(softplus(-D))``); ``GANLoss('vanilla')``.
* ``"non_saturating_prob"``: the same on probabilities in [0, 1] (discriminators ending in a
  sigmoid), ``-mean(log(D + eps))`` with :data:`PROB_EPS`.
* ``"hinge"``: the hinge loss of SAGAN (Zhang et al. 2019, eq. 5; heykeetae/Self-Attention-GAN
  ``trainer.py``, ``adv_loss == 'hinge'``): D minimises ``mean(relu(1 - D(x))) +
  mean(relu(1 + D(G(z))))``, G minimises ``-mean(D(G(z)))``, on logits.

Reconstruction losses (:func:`reconstruction_loss`) compare a generator's outputs with a target
(the teacher's outputs) as ``torch.nn.L1Loss`` / ``MSELoss`` do, including L1's zero gradient
where the two are equal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GENERATOR_LOSSES = ("lsgan", "vanilla", "non_saturating_logits", "non_saturating_prob", "hinge")
DISCRIMINATOR_LOSSES = ("lsgan", "vanilla")
# Losses of GANs trained from scratch (jaxgc gan): D's loss is the sum of both terms.
TRAINING_LOSSES = ("non_saturating_prob", "non_saturating_logits", "hinge", "lsgan")
RECONSTRUCTION_LOSSES = ("l1", "mse")
# Added to D's probability inside the log of the non-saturating loss: bounds the loss per sample
# by -log(1e-7) ~ 16.1 and keeps a gradient where D is sure the sample is fake (p underflows to 0).
PROB_EPS = 1e-7


def _check(kind: str, choices: tuple[str, ...], what: str) -> None:
  if kind not in choices:
    raise ValueError(f"{what} must be one of {choices}, got {kind!r}")


def _terms(d_out: jax.Array, target: float, kind: str) -> jax.Array:
  d_out = d_out.astype(jnp.float32)
  if kind == "hinge":   # D's terms relu(1 -+ D); G's term (target 1, generator side) is -D
    return jnp.mean(jax.nn.relu(1.0 - d_out if target == 1.0 else 1.0 + d_out))
  if kind == "lsgan":
    return jnp.mean(jnp.square(d_out - target))
  if kind == "non_saturating_prob":
    p = d_out if target == 1.0 else 1.0 - d_out
    return -jnp.mean(jnp.log(p + PROB_EPS))
  # BCE with logits: -log sigmoid(x) for target 1, -log(1 - sigmoid(x)) for target 0.
  return jnp.mean(jax.nn.softplus(-d_out if target == 1.0 else d_out))


def generator_loss(d_out: jax.Array, kind: str = "lsgan") -> jax.Array:
  """The generator's GAN loss on D's outputs for its samples (target "real").

  Args:
    d_out: ``[batch, ...]`` discriminator outputs: probabilities in [0, 1] for
      ``"non_saturating_prob"``, logits otherwise.
    kind: one of :data:`GENERATOR_LOSSES`.

  Returns:
    float32 scalar: ``mean((D - 1)**2)`` (lsgan), ``mean(softplus(-D))`` (vanilla /
    non_saturating_logits), ``-mean(log(D + 1e-7))`` (non_saturating_prob) or ``-mean(D)``
    (hinge).

  Raises:
    ValueError: an unknown ``kind``.
  """
  _check(kind, GENERATOR_LOSSES, "the generator's GAN loss")
  if kind == "hinge":
    return -jnp.mean(d_out.astype(jnp.float32))
  return _terms(d_out, 1.0, kind)


def discriminator_loss(real_out: jax.Array, fake_out: jax.Array, kind: str = "lsgan"
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(loss, real term, fake term)``: ``0.5 * (l(real, 1) + l(fake, 0))``, float32 scalars.


  As CycleGAN's ``backward_D_basic`` (pytorch-CycleGAN-and-pix2pix
  ``models/cycle_gan_model.py``).

  Args:
    real_out: ``[batch, ...]`` D's logits for real samples.
    fake_out: ``[batch, ...]`` D's logits for generated samples.
    kind: one of :data:`DISCRIMINATOR_LOSSES`.

  Raises:
    ValueError: an unknown ``kind``.
  """
  _check(kind, DISCRIMINATOR_LOSSES, "the discriminator's GAN loss")
  r = _terms(real_out, 1.0, kind)
  f = _terms(fake_out, 0.0, kind)
  return 0.5 * (r + f), r, f


def reconstruction_loss(outputs: jax.Array, targets: jax.Array, kind: str = "l1") -> jax.Array:
  """Mean L1 or squared distance of ``outputs`` to ``targets`` (a constant: no gradient flows
  into it), float32 scalar, as ``torch.nn.L1Loss`` / ``MSELoss``.

  L1's gradient is ``sign(outputs - targets) / size``, 0 where the two are equal (PyTorch's
  ``sign(0) = 0``; ``jnp.abs`` would give 1 there and move a student equal to its teacher).

  Args:
    outputs: ``[batch, ...]`` generated outputs, differentiated.
    targets: the same shape, e.g. the teacher's outputs.
    kind: one of :data:`RECONSTRUCTION_LOSSES`.

  Raises:
    ValueError: an unknown ``kind``.
  """
  _check(kind, RECONSTRUCTION_LOSSES, "the reconstruction loss")
  err = outputs.astype(jnp.float32) - jax.lax.stop_gradient(targets).astype(jnp.float32)
  if kind == "mse":
    return jnp.mean(err * err)
  return jnp.mean(err * jax.lax.stop_gradient(jnp.sign(err)))


def training_discriminator_loss(real_out: jax.Array, fake_out: jax.Array, kind: str
                                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(loss, real term, fake term)`` of a discriminator trained from scratch:
  ``l(real, 1) + l(fake, 0)`` (the sum, as the DCGAN tutorial's ``errD = errD_real +
  errD_fake`` and SAGAN's ``d_loss = d_loss_real + d_loss_fake``), float32 scalars.

  Args:
    real_out: ``[batch, ...]`` D's outputs for real samples: probabilities in [0, 1] for
      ``"non_saturating_prob"`` (the DCGAN discriminator ends in a sigmoid), logits otherwise.
    fake_out: the same for generated samples.
    kind: one of :data:`TRAINING_LOSSES`; ``"hinge"`` gives ``mean(relu(1 - real)) +
      mean(relu(1 + fake))`` (Zhang et al. 2019, eq. 5), ``"non_saturating_logits"`` the
      binary cross-entropy on logits (StyleGAN2's logistic loss, ``training/loss.py``).

  Raises:
    ValueError: an unknown ``kind``.
  """
  _check(kind, TRAINING_LOSSES, "the GAN training loss")
  r = _terms(real_out, 1.0, kind)
  f = _terms(fake_out, 0.0, kind)
  return r + f, r, f
