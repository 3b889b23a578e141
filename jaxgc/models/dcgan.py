"""DCGAN generator and discriminator (Radford et al. 2016), NHWC.

Sources: the PyTorch DCGAN tutorial architecture as used by chien-liu/DCGAN-PyTorch
(``gan-face-generate`` on PyPI, key names ``main.N.*``) and csinva/gan-vae-pretrained-pytorch
``mnist_dcgan`` (discriminator, keys ``main.N.*``).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models import layers


class DCGANGenerator(nn.Module):
  """DCGAN generator: ``ConvT(z, f0, 4, 1, 0)``, then ``ConvT(f_i, f_i+1, 4, 2, 1)``.

  Every transposed convolution but the last is followed by BatchNorm and ReLU; the last by
  tanh. No convolution biases. BatchNorm uses the running statistics (PyTorch ``eval()``)
  unless called with ``batch_statistics=True`` (training, :class:`jaxgc.models.layers.BatchNorm`).

  Attributes:
    features: output channels of each transposed convolution, the last being the image
      channels. DigiFace-64: ``(512, 256, 128, 64, 3)``.

  Input ``[batch, z_dim]`` float32 latents (N(0, 1) in training); output
  ``[batch, 4 * 2**(len(features)-1), same, features[-1]]`` in [-1, 1] (64x64 for 5 layers).
  """

  kind: ClassVar[str] = "unconditional"
  features: tuple[int, ...] = (512, 256, 128, 64, 3)
  z_dim: int = 100

  @nn.compact
  def __call__(self, z: jax.Array, batch_statistics: bool = False) -> jax.Array:
    if z.ndim != 2 or z.shape[-1] != self.z_dim:
      raise ValueError(f"latents must be [batch, {self.z_dim}], got shape {tuple(z.shape)}")
    x = z[:, None, None, :]
    last = len(self.features) - 1
    for i, f in enumerate(self.features):
      x = layers.ConvTranspose(f, 4, strides=1 if i == 0 else 2, padding=0 if i == 0 else 1,
                               use_bias=False, name=f"convt_{i}")(x)
      if i < last:
        x = nn.relu(layers.BatchNorm(name=f"bn_{i}")(x, batch_statistics))
    return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
  """DCGAN discriminator: ``Conv(c, f0, 4, 2, 1)``, LeakyReLU(0.2), then
  ``Conv(f_i, f_i+1, 4, 2, 1)``, BatchNorm, LeakyReLU(0.2), and ``Conv(f_last, 1, 4, 2, 1)``,
  sigmoid. No convolution biases. BatchNorm as in :class:`DCGANGenerator`.

  Attributes:
    features: widths of the hidden convolutions; MNIST: ``(64, 128, 256)``.
    input_nc: image channels.
    image_size: the side of the square images it was trained on (28 for MNIST); used for
      example inputs, any size the strides allow is accepted.

  Input ``[batch, 28, 28, 1]`` float32 in [-1, 1] for MNIST (the final map is then 1x1);
  output ``[batch, 1]`` probabilities that the image is real (more columns, one per position
  of the final map, for larger inputs).
  """

  kind: ClassVar[str] = "discriminator"
  features: tuple[int, ...] = (64, 128, 256)
  input_nc: int = 1
  image_size: int = 28

  @nn.compact
  def __call__(self, x: jax.Array, batch_statistics: bool = False) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.input_nc:
      raise ValueError(f"images must be [batch, height, width, {self.input_nc}], got shape "
                       f"{tuple(x.shape)}")
    for i, f in enumerate(self.features):
      x = layers.conv(f, 4, strides=2, padding=1, use_bias=False, name=f"conv_{i}")(x)
      if i > 0:
        x = layers.BatchNorm(name=f"bn_{i}")(x, batch_statistics)
      x = nn.leaky_relu(x, 0.2)
    x = layers.conv(1, 4, strides=2, padding=1, use_bias=False,
                    name=f"conv_{len(self.features)}")(x)
    return jax.nn.sigmoid(x.reshape(x.shape[0], -1))
