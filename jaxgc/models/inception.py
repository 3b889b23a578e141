"""The FID Inception-v3 (TF graph ``inception-2015-12-05``) in Flax Linen, NHWC.

This is the network behind FID in TTUR, pytorch-fid, torch-fidelity and clean-fid, up to the
``pool3`` layer: ``[batch, 299, 299, 3]`` float32 in, ``[batch, 2048]`` features out. It
follows the TorchScript port shipped as ``$JAXGC_ASSETS/fid-inception-v3`` (module names and
structure read from its graph), which differs from torchvision's Inception-v3 in the ways
pytorch-fid's ``FIDInceptionA/C/E_1/E_2`` describe: every branch average pool is 3x3, stride 1,
padding 1 with ``count_include_pad=False``; the pool branch of the last block (``mixed_10``) is
a 3x3 *max* pool; batch norms are TensorFlow's (no scale, only ``beta``; ``eps = 1e-3``).

Variable names follow the TorchScript module tree with the ``net.layers.`` prefix removed and
nested ``Sequential`` names joined by ``_``: the torch key ``net.layers.mixed.tower.conv_1.weight``
is ``params/mixed/tower_conv_1/conv/kernel`` here, its ``beta`` is ``params/.../bn/bias`` and its
``mean``/``var`` are ``batch_stats/.../bn/mean``/``var``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models import layers

BN_EPSILON = 1e-3
FEATURES = 2048
INPUT_SIZE = 299


class ConvBN(nn.Module):
  """``Conv2dLayer`` of the FID TorchScript: convolution (no bias), TF batch norm, ReLU.

  Zero padding ``padding = (pad_h, pad_w)`` on each side; kernel ``[kh, kw, in, out]``
  (PyTorch ``weight`` ``[out, in, kh, kw]`` permuted ``(2, 3, 1, 0)``). The batch norm uses its
  running statistics: ``(y - mean) / sqrt(var + 1e-3) + beta``.
  """

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = layers.Conv(self.features, tuple(self.kernel_size), (self.strides, self.strides),
                    ((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, use_scale=False, epsilon=BN_EPSILON,
                     name="bn")(x)
    return nn.relu(x)


def _conv(features: int, kernel: int | Sequence[int], strides: int = 1,
          padding: int | Sequence[int] = 0, name: str | None = None) -> ConvBN:
  kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
  return ConvBN(features, kernel, strides, padding, name=name)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """``AvgPool2d(3, stride=1, padding=1, count_include_pad=False)``."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x: jax.Array, strides: int, padding: int = 0) -> jax.Array:
  """``MaxPool2d(3, stride, padding)``; padding cells are ``-inf`` as in PyTorch."""
  return nn.max_pool(x, (3, 3), strides=(strides, strides),
                     padding=((padding, padding), (padding, padding)))


class InceptionA(nn.Module):
  """35x35 block (``mixed``..``mixed_2``): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b0 = _conv(64, 1, name="conv")(x)
    b1 = _conv(48, 1, name="tower_conv")(x)
    b1 = _conv(64, 5, padding=2, name="tower_conv_1")(b1)
    b2 = _conv(64, 1, name="tower_1_conv")(x)
    b2 = _conv(96, 3, padding=1, name="tower_1_conv_1")(b2)
    b2 = _conv(96, 3, padding=1, name="tower_1_conv_2")(b2)
    b3 = _conv(self.pool_features, 1, name="tower_2_conv")(_avg_pool_3x3(x))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction (``mixed_3``): 3x3/2 | 1x1-3x3-3x3/2 | maxpool 3x3/2."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b0 = _conv(384, 3, strides=2, name="conv")(x)
    b1 = _conv(64, 1, name="tower_conv")(x)
    b1 = _conv(96, 3, padding=1, name="tower_conv_1")(b1)
    b1 = _conv(96, 3, strides=2, name="tower_conv_2")(b1)
    return jnp.concatenate([b0, b1, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block (``mixed_4``..``mixed_7``) with factorised 1x7 / 7x1 convolutions."""

  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.channels_7x7
    b0 = _conv(192, 1, name="conv")(x)
    b1 = _conv(c, 1, name="tower_conv")(x)
    b1 = _conv(c, (1, 7), padding=(0, 3), name="tower_conv_1")(b1)
    b1 = _conv(192, (7, 1), padding=(3, 0), name="tower_conv_2")(b1)
    b2 = _conv(c, 1, name="tower_1_conv")(x)
    b2 = _conv(c, (7, 1), padding=(3, 0), name="tower_1_conv_1")(b2)
    b2 = _conv(c, (1, 7), padding=(0, 3), name="tower_1_conv_2")(b2)
    b2 = _conv(c, (7, 1), padding=(3, 0), name="tower_1_conv_3")(b2)
    b2 = _conv(192, (1, 7), padding=(0, 3), name="tower_1_conv_4")(b2)
    b3 = _conv(192, 1, name="tower_2_conv")(_avg_pool_3x3(x))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction (``mixed_8``): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool 3x3/2."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b0 = _conv(192, 1, name="tower_conv")(x)
    b0 = _conv(320, 3, strides=2, name="tower_conv_1")(b0)
    b1 = _conv(192, 1, name="tower_1_conv")(x)
    b1 = _conv(192, (1, 7), padding=(0, 3), name="tower_1_conv_1")(b1)
    b1 = _conv(192, (7, 1), padding=(3, 0), name="tower_1_conv_2")(b1)
    b1 = _conv(192, 3, strides=2, name="tower_1_conv_3")(b1)
    return jnp.concatenate([b0, b1, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block (``mixed_9``, ``mixed_10``) with split 1x3 / 3x1 branches.

  ``pool="avg"`` for ``mixed_9`` (pytorch-fid ``FIDInceptionE_1``: average pool without the
  padding in the count), ``"max"`` for ``mixed_10`` (``FIDInceptionE_2``).
  """

  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b0 = _conv(320, 1, name="conv")(x)
    a = _conv(384, 1, name="tower_conv")(x)
    b1 = _conv(384, (1, 3), padding=(0, 1), name="tower_mixed_conv")(a)
    b2 = _conv(384, (3, 1), padding=(1, 0), name="tower_mixed_conv_1")(a)
    b = _conv(448, 1, name="tower_1_conv")(x)
    b = _conv(384, 3, padding=1, name="tower_1_conv_1")(b)
    b3 = _conv(384, (1, 3), padding=(0, 1), name="tower_1_mixed_conv")(b)
    b4 = _conv(384, (3, 1), padding=(1, 0), name="tower_1_mixed_conv_1")(b)
    if self.pool == "avg":
      p = _avg_pool_3x3(x)
    elif self.pool == "max":
      p = _max_pool_3x3(x, 1, padding=1)
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    b5 = _conv(192, 1, name="tower_2_conv")(p)
    return jnp.concatenate([b0, b1, b2, b3, b4, b5], axis=-1)


# Stages of the network in order: (tap name, what it does). ``pool0`` / ``pool1`` are the two
# stem max pools; ``mixed`` .. ``mixed_10`` the Inception blocks; ``pool3`` the final average.
STAGES = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
          "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9",
          "mixed_10", "pool3")
# Smallest input side the first ``mixed_3`` (stride-2 valid convolutions) still accepts.
MIN_TAP_SIZE = 75


def _stage(name: str, x: jax.Array) -> jax.Array:
  """Applies stage ``name`` of ``STAGES`` (inside ``FIDInceptionV3.__call__``)."""
  if name == "pool0" or name == "pool1":
    return _max_pool_3x3(x, 2)
  if name == "pool3":
    return jnp.mean(x, axis=(1, 2))                     # AvgPool2d(8) -> [batch, 2048]
  if name.startswith("conv"):
    features, kernel, strides, padding = {
        "conv": (32, 3, 2, 0), "conv_1": (32, 3, 1, 0), "conv_2": (64, 3, 1, 1),
        "conv_3": (80, 1, 1, 0), "conv_4": (192, 3, 1, 0)}[name]
    return _conv(features, kernel, strides=strides, padding=padding, name=name)(x)
  block = {"mixed": lambda: InceptionA(32, name=name), "mixed_1": lambda: InceptionA(64, name=name),
           "mixed_2": lambda: InceptionA(64, name=name), "mixed_3": lambda: InceptionB(name=name),
           "mixed_4": lambda: InceptionC(128, name=name),
           "mixed_5": lambda: InceptionC(160, name=name),
           "mixed_6": lambda: InceptionC(160, name=name),
           "mixed_7": lambda: InceptionC(192, name=name), "mixed_8": lambda: InceptionD(name=name),
           "mixed_9": lambda: InceptionE("avg", name=name),
           "mixed_10": lambda: InceptionE("max", name=name)}[name]
  return block()(x)


class FIDInceptionV3(nn.Module):
  """FID Inception-v3 up to ``pool3``, or its intermediate feature maps.

  Input ``[batch, 299, 299, 3]`` float32 RGB, already scaled as ``(pixel - 128) / 128`` with
  pixels in [0, 255] (so values in [-1, 0.9921875]); no resizing is done here (see
  ``jaxgc.eval.fid_inception.inception_features``). Output ``[batch, 2048]`` float32, the
  non-negative average of the last 8x8 feature map. Inference only: the batch norms always use
  their running statistics, so ``apply`` needs ``{"params", "batch_stats"}`` and nothing mutable.

  Shapes at 299 x 299: ``pool0`` 73x73x64, ``pool1`` 35x35x192, ``mixed``/``mixed_1``/
  ``mixed_2`` 35x35x(256/288/288), ``mixed_3``..``mixed_7`` 17x17x768, ``mixed_8`` 8x8x1280,
  ``mixed_9``/``mixed_10`` 8x8x2048.

  Attributes:
    taps: names from ``STAGES``; when given, ``__call__`` returns a tuple of those stages'
      outputs (in ``STAGES`` order) and stops after the last one, and accepts any input side of
      at least ``MIN_TAP_SIZE`` (a frozen perceptual feature network, e.g. ``("pool1",
      "mixed_2")``). Empty (the default): the FID network, 299 x 299 only.

  Raises:
    ValueError: (at trace time) the input is not ``[batch, 299, 299, 3]`` (without taps) or
      ``[batch, >= 75, >= 75, 3]`` (with taps); an unknown tap name.
  """

  taps: tuple[str, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, ...]:
    unknown = [t for t in self.taps if t not in STAGES]
    if unknown:
      raise ValueError(f"unknown Inception taps {unknown}; expected names from {STAGES}")
    if self.taps:
      if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < MIN_TAP_SIZE:
        raise ValueError(f"FIDInceptionV3 with taps takes [batch, >= {MIN_TAP_SIZE}, "
                         f">= {MIN_TAP_SIZE}, 3], got {tuple(x.shape)}")
    elif x.ndim != 4 or x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f"FIDInceptionV3 takes [batch, {INPUT_SIZE}, {INPUT_SIZE}, 3], "
                       f"got {tuple(x.shape)}")
    last = max((STAGES.index(t) for t in self.taps), default=len(STAGES) - 1)
    out = []
    for name in STAGES[:last + 1]:
      x = _stage(name, x)
      if name in self.taps:
        out.append(x)
    return tuple(out) if self.taps else x
