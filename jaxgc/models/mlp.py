"""MLP GAN for MNIST (Goodfellow et al. 2014 style), as in csinva/gan-vae-pretrained-pytorch
``mnist_gan_mlp`` (``nn.Sequential`` keys ``0.weight``, ``2.weight``, ``4.weight``)."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models import layers


class MLPGenerator(nn.Module):
  """``Linear(z, h0)``-ReLU-...-``Linear(h_last, prod(image_shape))``-tanh.

  Input ``[batch, z_dim]`` float32 latents; output ``[batch, 28, 28, 1]`` (``image_shape``) in
  [-1, 1], the 784 outputs read row-major as upstream's ``view(-1, 1, 28, 28)``.
  """

  kind: ClassVar[str] = "unconditional"
  z_dim: int = 64
  hidden: tuple[int, ...] = (256, 256)
  image_shape: tuple[int, ...] = (28, 28, 1)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    if z.ndim != 2 or z.shape[-1] != self.z_dim:
      raise ValueError(f"latents must be [batch, {self.z_dim}], got shape {tuple(z.shape)}")
    x = z
    for i, h in enumerate(self.hidden):
      x = nn.relu(layers.dense(h, name=f"dense_{i}")(x))
    n = 1
    for s in self.image_shape:
      n *= s
    x = jnp.tanh(layers.dense(n, name=f"dense_{len(self.hidden)}")(x))
    return x.reshape((x.shape[0],) + tuple(self.image_shape))


class MLPDiscriminator(nn.Module):
  """``Linear(784, h0)``-LeakyReLU(0.2)-...-``Linear(h_last, 1)``-sigmoid.

  Input ``[batch, 28, 28, 1]`` or flattened ``[batch, 784]`` float32 in [-1, 1]; output
  ``[batch, 1]`` probabilities that the image is real.
  """

  kind: ClassVar[str] = "discriminator"
  hidden: tuple[int, ...] = (256, 256)
  image_shape: tuple[int, ...] = (28, 28, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    n = 1
    for s in self.image_shape:
      n *= s
    if x.shape[-1] != n:
      raise ValueError(f"images must be [batch, {', '.join(map(str, self.image_shape))}] or "
                       f"[batch, {n}], got {x.shape[-1]} values per sample")
    for i, h in enumerate(self.hidden):
      x = nn.leaky_relu(layers.dense(h, name=f"dense_{i}")(x), 0.2)
    return jax.nn.sigmoid(layers.dense(1, name=f"dense_{len(self.hidden)}")(x))
