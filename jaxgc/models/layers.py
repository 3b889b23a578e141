"""Layers that reproduce PyTorch numerics in Flax Linen, NHWC.

Kernels are stored the Flax way, ``[kh, kw, in, out]`` (transposed convolutions too), so the
output channel is always the last axis of every kernel in the zoo.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc import stats


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
  left in training mode computes its output. The running statistics are left as they are
  (the call needs no mutable collection) unless ``batch_stats`` is mutable in the call
  (``apply(..., mutable=["batch_stats"])``, training): then they are updated as PyTorch's
  ``BatchNorm2d`` does, ``running = (1 - momentum) * running + momentum * batch`` with the
  batch's unbiased variance.
  Input and output ``[batch, height, width, channels]`` float32.
  """

  epsilon: float = 1e-5
  momentum: float = 0.1   # PyTorch's convention: the weight of the new batch

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
      if self.is_mutable_collection("batch_stats") and not self.is_initializing():
        n = x.size // c
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(var) * n / max(n - 1, 1)
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


def _transposed_conv_dilated(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                             output_padding: int) -> jax.Array:
  """The reference formulation of ``ConvTranspose2d``: the input dilated by ``stride`` (zeros
  between its pixels) convolved with the spatially flipped kernel. Most of its MACs multiply
  those zeros."""
  k = kernel.shape[0]
  lo = k - 1 - padding
  hi = k - 1 - padding + output_padding
  return jax.lax.conv_general_dilated(
      x, jnp.flip(kernel, (0, 1)).astype(x.dtype), window_strides=(1, 1),
      padding=((lo, hi), (lo, hi)), lhs_dilation=(stride, stride),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)


def _transposed_conv_col2im(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                            output_padding: int) -> jax.Array:
  """``ConvTranspose2d`` without the zeros: every input pixel times every tap in one matrix
  product (``[pixels, in] @ [in, k * k * out]``: exactly PyTorch's MACs), then each output
  phase sums its taps' products at their offsets, and the ``stride**2`` phases are interleaved
  (depth-to-space). This is col2im, what PyTorch's CPU kernels compute.

  Input pixel ``h`` and tap ``i`` land on full-output row ``q = stride * h + i``; for phase
  ``a = q mod stride`` the taps ``i = a + stride * t`` land on ``m = h + t`` of that phase's
  grid. The result is cropped by ``padding`` (and extended by ``output_padding``) as PyTorch's.
  """
  n, h, w, cin = x.shape
  k, _, _, cout = kernel.shape
  s = stride
  j = -(-k // s)
  out_h = (h - 1) * s - 2 * padding + k + output_padding
  out_w = (w - 1) * s - 2 * padding + k + output_padding
  m_h = max(h - 1 + j, -(-(out_h + padding) // s))
  m_w = max(w - 1 + j, -(-(out_w + padding) // s))
  taps = kernel.astype(x.dtype).transpose(2, 0, 1, 3).reshape(cin, k * k * cout)
  prod = jnp.einsum("nhwc,ck->nhwk", x, taps, precision=jax.lax.Precision.HIGHEST)
  prod = prod.reshape(n, h, w, k, k, cout)
  rows = []
  for a in range(s):
    phases = []
    for b in range(s):
      acc = None
      for t1, i in enumerate(range(a, k, s)):
        for t2, jj in enumerate(range(b, k, s)):
          part = jnp.pad(prod[:, :, :, i, jj, :],
                         ((0, 0), (t1, m_h - h - t1), (t2, m_w - w - t2), (0, 0)))
          acc = part if acc is None else acc + part
      phases.append(jnp.zeros((n, m_h, m_w, cout), x.dtype) if acc is None else acc)
    rows.append(jnp.stack(phases, axis=3))           # [n, m_h, m_w, s (b), out]
  y = jnp.stack(rows, axis=2).reshape(n, m_h * s, m_w * s, cout)   # [n, m_h, s (a), m_w, s, out]
  return y[:, padding:padding + out_h, padding:padding + out_w, :]


def _transposed_conv_subpixel(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                              output_padding: int) -> jax.Array:
  """``ConvTranspose2d`` without the zeros, for large outputs: one stride-1 convolution (through
  :func:`conv2d`) of the input with the ``stride**2`` phases of the kernel side by side, then
  depth-to-space (a pixel shuffle).

  Output pixel ``o`` (one axis) with ``q = o + padding = stride * m + r`` is
  ``sum_j x[m - j] * w[r + stride * j]``: for each phase ``r`` a correlation of the input with
  the taps ``r, r + stride, ...`` of the kernel. With ``J = ceil(k / stride)`` taps per phase the
  convolution does ``J**2 * stride**2 / k**2`` of PyTorch's MACs per output (16/9 for the
  3x3 stride-2 upsampling of the ResNet generators, 1 for DCGAN's 4x4), where the dilated
  formulation does ``stride**2`` times them.
  """
  k, _, cin, cout = kernel.shape
  s = stride
  j = -(-k // s)
  n, h, w, _ = x.shape
  out_h = (h - 1) * s - 2 * padding + k + output_padding
  out_w = (w - 1) * s - 2 * padding + k + output_padding
  # phase kernels [J, J, cin, s, s, cout]: tap (jh, jw) of phase (rh, rw) is w[rh + s jh, rw + s jw]
  padded = jnp.pad(kernel, ((0, j * s - k), (0, j * s - k), (0, 0), (0, 0)))
  phases = padded.reshape(j, s, j, s, cin, cout).transpose(0, 2, 4, 1, 3, 5)
  phases = jnp.flip(phases, (0, 1)).reshape(j, j, cin, s * s * cout).astype(x.dtype)
  # enough rows after the input that every needed output position exists
  extra_h = max(0, -(-(out_h + padding) // s) - (h + j - 1))
  extra_w = max(0, -(-(out_w + padding) // s) - (w + j - 1))
  z = conv2d(x, phases, padding=((j - 1, j - 1 + extra_h), (j - 1, j - 1 + extra_w)))
  zh, zw = z.shape[1], z.shape[2]
  y = z.reshape(n, zh, zw, s, s, cout).transpose(0, 1, 3, 2, 4, 5).reshape(n, zh * s, zw * s,
                                                                            cout)
  # Materialised once: left to fusion, XLA recomputes the shuffle inside each consumer (the
  # mean, variance and normalisation of a following instance norm), 20% of the horse->zebra
  # generator's time at batch 8 on this CPU.
  return jax.lax.optimization_barrier(y[:, padding:padding + out_h, padding:padding + out_w, :])


# Input pixels per call from which the sub-pixel formulation beats col2im on the CPU (measured
# on 2 cores: col2im wins on DCGAN's 4x4 and 8x8 maps, sub-pixel from 16x16 at batch 64 and on
# the 128x128 maps of the ResNet generators).
SUBPIXEL_MIN_PIXELS = 4097


def transposed_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                    output_padding: int) -> jax.Array:
  """``torch.nn.functional.conv_transpose2d`` (groups 1) in NHWC, in the faster of two
  formulations that never multiply a dilated input's zeros: :func:`_transposed_conv_col2im` for
  small inputs and stride 1, :func:`_transposed_conv_subpixel` from ``SUBPIXEL_MIN_PIXELS`` input
  pixels per call (per sample when the batch is symbolic). Inside ``jaxgc.stats.count_macs`` the
  input-dilated reference formulation is traced.

  Args:
    x: ``[batch, height, width, in]`` float32.
    kernel: ``[k, k, in, out]``.
    stride, padding, output_padding: as PyTorch's.

  Returns:
    ``[batch, (height - 1) * stride - 2 padding + k + output_padding, ..., out]``.
  """
  if stats.reference_formulation():
    return _transposed_conv_dilated(x, kernel, stride, padding, output_padding)
  n, h, w, _ = x.shape
  pixels = h * w * (n if isinstance(n, int) else 1)
  if stride > 1 and pixels >= SUBPIXEL_MIN_PIXELS:
    return _transposed_conv_subpixel(x, kernel, stride, padding, output_padding)
  return _transposed_conv_col2im(x, kernel, stride, padding, output_padding)


class ConvTranspose(nn.Module):
  """``torch.nn.ConvTranspose2d`` (groups=1, dilation=1) in NHWC.

  Output size per spatial axis: ``(in - 1) * stride - 2 * padding + kernel + output_padding``.
  Kernel ``[kh, kw, in, out]`` (PyTorch ``[in, out, kh, kw]`` permuted ``(2, 3, 0, 1)``), bias
  ``[out]``. Computed by :func:`transposed_conv` without multiplying the zeros a dilated input
  would hold, equal to PyTorch's to float32 rounding. Its reference formulation (the
  input-dilated convolution PyTorch's definition describes) is what ``jaxgc.stats.count_macs`` traces, so MACs are counted as PyTorch's
  (``out_h * out_w * k * k * in * out``).
  Input ``[batch, height, width, in]`` float32; output ``[batch, out_height, out_width, out]``.
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
    y = transposed_conv(x, kernel, self.strides, self.padding, self.output_padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def _depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int, padding: int
                      ) -> jax.Array:
  """A depthwise convolution (groups = channels, one filter per channel) as ``kh * kw`` shifted
  slices of the input multiplied by the taps and summed: one fused elementwise loop, which
  XLA's CPU backend runs several times faster than its grouped convolution."""
  kh, kw = kernel.shape[0], kernel.shape[1]
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  out_h = (x.shape[1] - kh) // stride + 1
  out_w = (x.shape[2] - kw) // stride + 1
  taps = kernel[:, :, 0, :].astype(x.dtype)
  y = None
  for i in range(kh):
    for j in range(kw):
      part = jax.lax.slice(x, (0, i, j, 0),
                           (x.shape[0], i + (out_h - 1) * stride + 1,
                            j + (out_w - 1) * stride + 1, x.shape[3]),
                           (1, stride, stride, 1)) * taps[i, j]
      y = part if y is None else y + part
  return y


class DepthwiseConv(nn.Module):
  """``torch.nn.Conv2d(c, c, k, groups=c)``: a depthwise convolution, NHWC.

  Variables as ``flax.linen.Conv``'s with ``feature_group_count = channels``: ``kernel``
  ``[k, k, 1, channels]``, ``bias`` ``[channels]``. On the CPU it runs as shifted
  multiply-adds (:func:`_depthwise_shifted`), elsewhere as XLA's grouped convolution; the choice
  is made per platform inside one traced function (``jax.lax.platform_dependent``), so one
  exported artifact keeps each platform's best formulation. ``jaxgc.stats.count_macs`` counts it
  as the grouped convolution (``out_h * out_w * channels * k * k``).
  Input ``[batch, height, width, channels]`` float32; output ``[batch, out_height, out_width,
  channels]``, ``out = (in + 2 padding - k) // strides + 1``.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, k = x.shape[-1], self.kernel_size
    if self.features != c:
      raise ValueError(f"a depthwise convolution keeps its {c} channels, got features="
                       f"{self.features}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c))

    def grouped(x, kernel):
      p = self.padding
      return jax.lax.conv_general_dilated(
          x, kernel.astype(x.dtype), window_strides=(self.strides, self.strides),
          padding=((p, p), (p, p)), feature_group_count=c,
          dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)

    if stats.reference_formulation():
      y = grouped(x, kernel)
    else:
      y = jax.lax.platform_dependent(
          x, kernel, cpu=lambda x, w: _depthwise_shifted(x, w, self.strides, self.padding),
          default=grouped)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (c,))
    return y


def _conv_native(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=strides, padding=padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)


def _conv_unpadded_on_cpu(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]
                          ) -> jax.Array:
  """An unpadded ("VALID") convolution computed with one extra zero row below the input, then
  cropped to the valid output rows: the same numbers (every valid output reads the same window;
  the extra row only adds outputs, which are dropped). XLA's CPU backend runs an unpadded
  convolution on a slow path and any padded one on its fast path: measured on 2 cores, 10 ms
  instead of 52 ms for a 3x3 256->256 convolution at 64x64 (the ResNet trunk, whose reflection
  padding leaves the convolution itself unpadded), 5.4 ms instead of 195 ms for a 7x7 64->3
  output layer, 115 ms instead of 214 ms for an Inception 3x3/2 reduction at batch 32."""
  out_h = (x.shape[1] - kernel.shape[0]) // strides[0] + 1
  y = _conv_native(x, kernel, strides, ((0, 1), (0, 0)))
  return y[:, :out_h]


def _conv_1x1_as_dot(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """An unpadded 1x1 convolution as a matrix product over the channel axis (strided by slicing
  first): the same sums. XLA's CPU backend runs the product on its matmul path and the 1x1
  convolution on its convolution path, 1.7-6x slower: measured on 2 cores, 0.37 ms instead of
  0.63 ms for 128->128 at 64x64 (horse->zebra's pointwise layers), 4.6 ms instead of 28 ms for
  Inception's 288->64 at 35x35, batch 32."""
  sh, sw = strides
  if (sh, sw) != (1, 1):
    x = x[:, ::sh, ::sw]
  return jax.lax.dot_general(x, kernel[0, 0].astype(x.dtype), (((3,), (0,)), ((), ())),
                             precision=jax.lax.Precision.HIGHEST)


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int] = (1, 1),
           padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))) -> jax.Array:
  """``torch.nn.functional.conv2d`` (groups 1) in NHWC with the formulation that is fastest
  where it runs.

  On the CPU an unpadded convolution larger than 1x1 runs as :func:`_conv_unpadded_on_cpu`, an
  unpadded 1x1 one as :func:`_conv_1x1_as_dot`; padded ones, and every other platform, as XLA's
  convolution (chosen inside one traced
  function with ``jax.lax.platform_dependent``). Inside ``jaxgc.stats.count_macs`` the plain
  convolution is traced.

  Args:
    x: ``[batch, height, width, in]`` float32.
    kernel: ``[kh, kw, in, out]``.
    strides: ``(sh, sw)``.
    padding: zero padding ``((top, bottom), (left, right))``.

  Returns:
    ``[batch, out_height, out_width, out]``, float32.
  """
  kh, kw = kernel.shape[:2]
  strides = tuple(strides)
  native = lambda x, k: _conv_native(x, k, strides, padding)  # noqa: E731
  if stats.reference_formulation() or any(padding[0]) or any(padding[1]):
    return native(x, kernel)
  if kh * kw == 1:
    return jax.lax.platform_dependent(
        x, kernel, cpu=lambda x, k: _conv_1x1_as_dot(x, k, strides), default=native)
  return jax.lax.platform_dependent(
      x, kernel, cpu=lambda x, k: _conv_unpadded_on_cpu(x, k, strides), default=native)


class Conv(nn.Module):
  """``torch.nn.Conv2d`` (groups 1, dilation 1) in NHWC, computed by :func:`conv2d`.

  Variables as ``flax.linen.Conv``'s: ``kernel`` ``[kh, kw, in, out]`` (PyTorch ``weight``
  ``[out, in, kh, kw]`` permuted ``(2, 3, 1, 0)``), ``bias`` ``[out]``.
  Input ``[batch, height, width, in]`` float32; output ``[batch, out_height, out_width, out]``.
  """

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    y = conv2d(x, kernel, tuple(self.strides), tuple(tuple(p) for p in self.padding))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def conv(features: int, kernel_size: int, strides: int = 1, padding: int = 0,
         use_bias: bool = True, groups: int = 1, name: str | None = None) -> nn.Module:
  """``torch.nn.Conv2d`` with zero padding ``padding`` on each side, kernel ``[kh, kw, in/groups, out]``.

  ``groups == features`` (a depthwise convolution, as the mobile generators' separable
  convolutions use) gives a :class:`DepthwiseConv`, ``groups == 1`` a :class:`Conv` (both with
  ``flax.linen.Conv``'s variables, faster on the CPU); other groups a ``flax.linen.Conv``.
  """
  if groups > 1 and groups == features:
    return DepthwiseConv(features, kernel_size, strides, padding, use_bias, name=name)
  if groups == 1:
    return Conv(features, (kernel_size, kernel_size), (strides, strides),
                ((padding, padding), (padding, padding)), use_bias, name=name)
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
