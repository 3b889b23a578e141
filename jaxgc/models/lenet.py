"""LeNet-5 (LeCun et al. 1998) as trained for MNIST in csinva/gan-vae-pretrained-pytorch
``mnist_classifier`` (key names ``convnet.c1/c3/c5``, ``fc.f6/f7``; the activatedgeek/LeNet-5
module layout): a domain feature extractor for MNIST FID and precision/recall."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from jaxgc.models import layers


class LeNet5(nn.Module):
  """``c1`` conv 5x5 (6), ReLU, max-pool 2; ``c3`` conv 5x5 (16), ReLU, max-pool 2; ``c5`` conv
  5x5 (120), ReLU; ``f6`` dense (84), ReLU; ``f7`` dense (10), log-softmax.

  Input ``[batch, 32, 32, 1]`` float32 in [0, 1] (MNIST digits resized from 28x28; see
  ``jaxgc.eval.extractors.lenet5_features``). ``__call__`` returns ``[batch, 10]`` log
  probabilities; ``features`` returns the ``[batch, 84]`` activations of ``f6`` after ReLU.
  """

  kind: ClassVar[str] = "classifier"
  input_nc: int = 1
  image_size: int = 32

  def setup(self):
    self.c1 = layers.conv(6, 5)
    self.c3 = layers.conv(16, 5)
    self.c5 = layers.conv(120, 5)
    self.f6 = layers.dense(84)
    self.f7 = layers.dense(10)

  def features(self, x: jax.Array) -> jax.Array:
    """``[batch, 32, 32, 1]`` in [0, 1] -> ``[batch, 84]`` penultimate (f6, ReLU) features."""
    pool = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))  # noqa: E731
    x = pool(nn.relu(self.c1(x)))
    x = pool(nn.relu(self.c3(x)))
    x = nn.relu(self.c5(x)).reshape(x.shape[0], -1)
    return nn.relu(self.f6(x))

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(self.f7(self.features(x)), axis=-1)
