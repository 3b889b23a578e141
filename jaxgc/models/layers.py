"""Layers that reproduce PyTorch numerics in Flax Linen, NHWC.

Kernels are stored the Flax way, ``[kh, kw, in, out]`` (transposed convolutions too), so the
output channel is always the last axis of every kernel in the zoo.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def pad2d(x: jax.Array, pad: int, mode: str = "reflect") -> jax.Array:
  """Pads the two spatial axes of ``x`` ``[batch, height, width, channels]`` by ``pad`` pixels.

  Args:
    x: float array ``[batch, height, width, channels]``.
    pad: pixels added on each side of height and width (>= 0).
    mode: ``"reflect"`` (``nn.ReflectionPad2d``), ``"replicate"`` (``nn.ReplicationPad2d``) or
      ``"zero"``.

  Returns:
    ``[batch, height + 2 pad, width + 2 pad, channels]``, same dtype.

  Raises:
    ValueError: unknown mode.
  """
  if pad == 0:
    return x
  modes = {"reflect": "reflect", "replicate": "edge", "zero": "constant"}
  if mode not in modes:
    raise ValueError(f"padding mode must be one of {sorted(modes)}, got {mode!r}")
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=modes[mode])


class InstanceNorm(nn.Module):
  """``torch.nn.InstanceNorm2d``: per-sample, per-channel normalisation over height and width.

  Biased variance, ``eps`` inside the square root; ``affine=False`` (the CycleGAN default) has
  no parameters, ``affine=True`` adds ``scale`` and ``bias`` ``[channels]``.
  Input and output ``[batch, height, width, channels]`` float32.
  """

  epsilon: float = 1e-5
  affine: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    if self.affine:
      c = x.shape[-1]
      y = y * self.param("scale", nn.initializers.ones, (c,)) + self.param(
          "bias", nn.initializers.zeros, (c,))
    return y


def batch_norm(name: str | None = None, epsilon: float = 1e-5) -> nn.BatchNorm:
  """Inference-mode ``torch.nn.BatchNorm2d`` / ``BatchNorm1d`` with running statistics.

  Parameters ``scale``/``bias`` (PyTorch ``weight``/``bias``) live in ``params``; running
  ``mean``/``var`` (PyTorch ``running_mean``/``running_var``) in ``batch_stats``.
  """
  return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=epsilon, name=name)


class BatchNorm(nn.Module):
  """``torch.nn.BatchNorm2d`` whose statistics are chosen per call, never updated.

  Variables as ``flax.linen.BatchNorm``'s: ``params`` ``scale``/``bias`` (PyTorch
  ``weight``/``bias``), ``batch_stats`` ``mean``/``var`` (``running_mean``/``running_var``),
  all ``[channels]``. ``batch_statistics=False`` is PyTorch's ``eval()``; True normalises with
  the batch's own mean and biased variance over batch, height and width, as a PyTorch module
  left in training mode computes its output (the running statistics are left as they are, so
  the call needs no mutable collection).
  Input and output ``[batch, height, width, channels]`` float32.
  """

  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, batch_statistics: bool = False) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if batch_statistics:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
    else:
      mean, var = ra_mean.value, ra_var.value
    return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias


NORMS = ("instance", "instance_affine", "batch")


def norm_layer(kind: str, name: str) -> nn.Module:
  """Returns the normalisation layer named by ``kind``.

  Args:
    kind: ``"instance"`` (``InstanceNorm2d(affine=False)``, no parameters),
      ``"instance_affine"`` (``InstanceNorm2d(affine=True)``: ``scale`` and ``bias`` in
      ``params``, no running statistics) or ``"batch"`` (inference-mode ``BatchNorm2d``).
    name: the layer's name.

  Raises:
    ValueError: unknown kind.
  """
  if kind == "instance":
    return InstanceNorm(name=name)
  if kind == "instance_affine":
    return InstanceNorm(affine=True, name=name)
  if kind == "batch":
    return batch_norm(name=name)
  raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def norm_has_conv_bias(kind: str) -> bool:
  """pytorch-CycleGAN-and-pix2pix's rule: a convolution followed by a norm carries a bias
  unless the norm is a BatchNorm (whose own bias makes it redundant)."""
  return kind != "batch"


class ConvTranspose(nn.Module):
  """``torch.nn.ConvTranspose2d`` (groups=1, dilation=1) in NHWC.

  Output size per spatial axis: ``(in - 1) * stride - 2 * padding + kernel + output_padding``.
  Implemented as a dilated convolution of the input with the spatially flipped kernel, which is
  what PyTorch computes. Kernel ``[kh, kw, in, out]`` (PyTorch ``[in, out, kh, kw]`` permuted
  ``(2, 3, 0, 1)``), bias ``[out]``.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0
  output_padding: int = 0
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    lo = k - 1 - self.padding
    hi = k - 1 - self.padding + self.output_padding
    y = jax.lax.conv_general_dilated(
        x, jnp.flip(kernel, (0, 1)).astype(x.dtype), window_strides=(1, 1),
        padding=((lo, hi), (lo, hi)), lhs_dilation=(self.strides, self.strides),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def conv(features: int, kernel_size: int, strides: int = 1, padding: int = 0,
         use_bias: bool = True, groups: int = 1, name: str | None = None) -> nn.Conv:
  """``torch.nn.Conv2d`` with zero padding ``padding`` on each side, kernel ``[kh, kw, in/groups, out]``."""
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                 feature_group_count=groups, precision=jax.lax.Precision.HIGHEST, name=name)


def dense(features: int, use_bias: bool = True, name: str | None = None) -> nn.Dense:
  """``torch.nn.Linear``: kernel ``[in, out]`` (PyTorch ``weight`` transposed), bias ``[out]``."""
  return nn.Dense(features, use_bias=use_bias, precision=jax.lax.Precision.HIGHEST, name=name)


def as_tuple(xs: Sequence[int]) -> tuple[int, ...]:
  return tuple(int(x) for x in xs)


def normal_init(module: nn.Module, example: jax.Array, seed: int = 0, gain: float = 0.02
                ) -> dict:
  """Variables of ``module`` drawn as pytorch-CycleGAN-and-pix2pix's ``init_weights`` with
  ``init_type="normal"`` (``models/networks.py``): every ``kernel`` ~ N(0, ``gain``), every
  ``bias`` 0, every norm ``scale`` ~ N(1, ``gain``); other variables (``batch_stats``) as the
  module's own ``init`` gives them (running mean 0, variance 1).

  Only the shapes come from ``module.init`` (through ``jax.eval_shape``: nothing is compiled or
  run), and the values from ``numpy.random.default_rng(seed)``, so this is fast on any backend.

  Args:
    module: a Flax module.
    example: an input (or ``jax.ShapeDtypeStruct``) of the shape ``module`` is called with.
    seed: seeds the draw.
    gain: standard deviation of the draws, 0.02 upstream.

  Returns:
    Variables, nested dicts of float32 numpy arrays.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  shapes = jax.eval_shape(module.init, jax.random.key(0), example)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = getattr(path[-1], "key", None)
    collection = getattr(path[0], "key", None)
    if collection == "batch_stats":
      return np.full(leaf.shape, 1.0 if name == "var" else 0.0, np.float32)
    if name == "kernel":
      return (gain * rng.standard_normal(leaf.shape)).astype(np.float32)
    if name == "scale":
      return (1.0 + gain * rng.standard_normal(leaf.shape)).astype(np.float32)
    return np.zeros(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)
