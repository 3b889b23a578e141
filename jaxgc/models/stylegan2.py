"""StyleGAN2 generator and discriminator (Karras et al. 2020, config F, skip G / resnet D), NHWC.

One Flax family for two upstream layouts (``layout``), whose key names
``jaxgc.convert.mapping.STYLEGAN2_LAYOUTS`` maps:

* ``"rosinality"``: rosinality/stylegan2-pytorch ``model.py`` (``Generator``,
  ``Discriminator``; ops ``op/upfirdn2d.py``, ``op/fused_act.py``).
* ``"nvlabs"``: NVlabs/stylegan2-ada-pytorch ``training/networks.py`` (``Generator`` /
  ``Discriminator`` with ``architecture='skip'`` / ``'resnet'``, conditional with ``c_dim > 0``).

The architectures agree: a mapping network (2nd-moment normalisation of ``z``, ``n_mlp``
equalized-lr dense layers with learning-rate multiplier ``lr_mlp`` and leaky ReLU(0.2) times
sqrt(2)); a learned 4x4 constant; per resolution a modulated 3x3 convolution (upsampling by a
stride-2 transposed convolution then a [1,3,3,1] blur from 8x8 on), a second one, each with
noise, bias and leaky ReLU times sqrt(2); skip to-RGB (1x1 modulated, not demodulated),
the running image upsampled by upfirdn2d with [1,3,3,1]. The discriminator: from-RGB 1x1,
residual blocks (3x3, blur + stride-2 3x3, blur + stride-2 1x1 skip), minibatch standard
deviation, 3x3 conv, two dense layers. Numerical differences, kept per layout:

* modulated convolution: rosinality folds the equalized-lr gain ``1/sqrt(fan_in)`` into the
  weight before demodulation (``rsqrt(sum((g w s)^2) + 1e-8)``); NVlabs demodulates the raw
  weight (``rsqrt(sum((w s)^2) + 1e-8)``) and applies the gain to the to-RGB styles.
* residual blocks: rosinality ``(conv + skip) / sqrt(2)``; NVlabs gives both branches a gain
  ``sqrt(0.5)`` (the conv's activation gain becomes 1) before adding.
* ``conv_clamp`` (NVlabs only; ``train.py`` uses 256): activations clamped to +-clamp after
  the gain. Not in the state dict; None (no clamp) unless passed.

Where they agree numerically (to float rounding): to-RGB upsampling (both pad (2, 1), gain 4),
noise (added after demodulation, before bias; ``noise_strength`` times a stored constant or
fresh N(0, 1)), minibatch std (group ``min(4, batch)``, biased variance + 1e-8), the fused
bias-activation gain sqrt(2), truncation ``w_avg + psi (w - w_avg)``.

The modulated convolution is written unfused: inputs scaled by the styles, one ordinary
convolution shared by the batch, outputs scaled by the demodulation coefficients (upstream's
``fused_modconv=False`` / ``fused=False`` path). Measured on 2 CPU cores, one 512->512 3x3
layer at 32x32, batch 8: 0.21 s unfused, 1.39 s grouped, outputs equal to 6e-6.

Variables: ``params`` (raw upstream weights, gains applied in the forward as upstream does)
and ``buffers``: ``buffers/mapping/w_avg`` ``[w_dim]`` and
``buffers/b{res}/conv{0,1}/noise_const`` ``[res, res]`` (generator only); quantization and
pruning see only ``params``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LAYOUTS = ("rosinality", "nvlabs")
NOISE_MODES = ("const", "random", "none")
SQRT2 = math.sqrt(2.0)
_DN = ("NHWC", "HWIO", "NHWC")


def blur_filter(taps: tuple[int, ...] = (1, 3, 3, 1)) -> np.ndarray:
  """The 2-D low-pass filter ``outer(taps, taps) / sum`` (rosinality ``make_kernel``, NVlabs
  ``upfirdn2d.setup_filter``): float32 ``[4, 4]`` summing to 1 for the default taps."""
  k = np.asarray(taps, np.float64)
  k = np.outer(k, k)
  return (k / k.sum()).astype(np.float32)


def upfirdn2d(x: jax.Array, f: np.ndarray, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0), gain: float = 1.0) -> jax.Array:
  """Upsample (zero insertion), pad, FIR-filter, downsample, per channel (upfirdn2d).

  Args:
    x: ``[batch, height, width, channels]`` float32.
    f: ``[kh, kw]`` filter (convolved, i.e. flipped, as upstream's ``upfirdn2d_native``).
    up: integer upsampling factor (>= 1): ``up - 1`` zeros after every pixel.
    down: integer downsampling factor (>= 1): every ``down``-th output pixel is kept.
    pad: ``(before, after)`` zero padding of both spatial axes after upsampling (>= 0).
    gain: the filter is multiplied by ``gain`` (``up**2`` when upsampling).

  Returns:
    ``[batch, (height * up + before + after - kh) // down + 1, ..., channels]``.
  """
  n, h, w, c = x.shape
  if up > 1:
    x = x.reshape(n, h, 1, w, 1, c)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, up - 1), (0, 0), (0, up - 1), (0, 0)))
    x = x.reshape(n, h * up, w * up, c)
  x = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))
  k = np.ascontiguousarray(np.flip(np.asarray(f, np.float32), (0, 1)) * gain)
  k = jnp.broadcast_to(jnp.asarray(k)[:, :, None, None], k.shape + (1, c))
  return jax.lax.conv_general_dilated(x, k, (down, down), "VALID", dimension_numbers=_DN,
                                      feature_group_count=c)


def _conv(x: jax.Array, w: jax.Array, stride: int = 1, padding: int = 0) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2,
                                      dimension_numbers=_DN)


def _conv_transpose_stride2(x: jax.Array, w: jax.Array) -> jax.Array:
  """``torch.nn.functional.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=0)`` for a
  conv kernel ``w`` ``[k, k, in, out]``: output side ``2 (side - 1) + k``."""
  k = w.shape[0]
  return jax.lax.conv_general_dilated(x, w[::-1, ::-1], (1, 1), [(k - 1, k - 1)] * 2,
                                      lhs_dilation=(2, 2), dimension_numbers=_DN)


def _act(x: jax.Array, gain: float, clamp: float | None) -> jax.Array:
  """Leaky ReLU(0.2) times ``gain`` (sqrt(2) for upstream's fused lrelu), then the clamp."""
  x = jax.nn.leaky_relu(x, 0.2) * gain
  return x if clamp is None else jnp.clip(x, -clamp, clamp)


def _clamp(x: jax.Array, clamp: float | None) -> jax.Array:
  return x if clamp is None else jnp.clip(x, -clamp, clamp)


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """``x * rsqrt(mean(x^2, -1) + eps)`` (rosinality ``PixelNorm``, NVlabs
  ``normalize_2nd_moment``) over the last axis of ``[batch, features]``."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


class EqualDense(nn.Module):
  """Equalized-learning-rate dense layer (rosinality ``EqualLinear``, NVlabs
  ``FullyConnectedLayer``): ``x @ (kernel * lr_mul / sqrt(in)) + bias * lr_mul``, then leaky
  ReLU(0.2) times sqrt(2) when ``activation``.

  ``kernel`` ``[in, out]`` and ``bias`` ``[out]`` hold the upstream tensors unscaled.
  Input ``[batch, in]``, output ``[batch, features]``, float32.
  """

  features: int
  lr_mul: float = 1.0
  bias_init: float = 0.0
  activation: bool = False
  clamp: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", lambda k, s: jax.random.normal(k, s) / self.lr_mul,
                        (fan_in, self.features))
    bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
    y = x @ (kernel * (self.lr_mul / math.sqrt(fan_in))) + bias * self.lr_mul
    return _act(y, SQRT2, self.clamp) if self.activation else y


class EqualConv(nn.Module):
  """Equalized-learning-rate convolution (rosinality ``ConvLayer``, NVlabs ``Conv2dLayer``),
  optionally downsampling by 2 (blur with [1,3,3,1] padded ``(p0, p1)``, then stride 2), then
  bias and leaky ReLU(0.2) times ``sqrt(2) * gain`` when ``activation`` (else times ``gain``).

  ``kernel`` ``[k, k, in, out]`` unscaled (times ``1/sqrt(in k^2)`` in the forward). Input and
  output ``[batch, height, width, channels]`` float32 (height and width halved by ``down``).
  """

  features: int
  kernel_size: int
  down: bool = False
  use_bias: bool = True
  activation: bool = True
  gain: float = 1.0
  clamp: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.normal(1.0), (k, k, x.shape[-1], self.features))
    w = kernel * (1.0 / math.sqrt(x.shape[-1] * k * k))
    if self.down:
      p = 2 + (k - 1)  # len(filter) - factor + (k - 1)
      x = _conv(upfirdn2d(x, blur_filter(), pad=((p + 1) // 2, p // 2)), w, stride=2)
    else:
      x = _conv(x, w, padding=k // 2)
    if self.use_bias:
      x = x + self.param("bias", nn.initializers.zeros, (self.features,))
    if self.activation:
      return _act(x, SQRT2 * self.gain, None if self.clamp is None else self.clamp * self.gain)
    x = x * self.gain if self.gain != 1.0 else x
    return _clamp(x, None if self.clamp is None else self.clamp * self.gain)


class ModulatedConv(nn.Module):
  """A modulated convolution with its affine layer, noise, bias and activation: rosinality
  ``StyledConv`` / ``ToRGB``, NVlabs ``SynthesisLayer`` / ``ToRGBLayer``.

  Unfused: ``y = conv(x * s, g w)`` times ``d = rsqrt(sum_{kh,kw,in} (g w s)^2 + 1e-8)`` per
  sample and output channel, with ``s = affine(w_latent)`` (bias initialised to 1) and ``g``
  as the module docstring says per layout. Upsampling (``up``): stride-2 transposed
  convolution, then the [1,3,3,1] blur padded (1, 1) with gain 4.

  Attributes:
    features: output channels.
    kernel_size: 3 for convolutions, 1 for to-RGB.
    up: upsample by 2.
    demodulate: False for to-RGB (then no noise and no activation: ``y + bias``).
    resolution: output side (the noise buffer is ``[resolution, resolution]``).
    layout: ``"rosinality"`` or ``"nvlabs"``.
    clamp: NVlabs ``conv_clamp`` or None.

  Input ``[batch, side, side, in]`` and styles ``[batch, w_dim]``; output
  ``[batch, resolution, resolution, features]`` float32.
  """

  features: int
  kernel_size: int
  resolution: int
  up: bool = False
  demodulate: bool = True
  layout: str = "rosinality"
  clamp: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, noise_mode: str = "const",
               rng: jax.Array | None = None) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    s = EqualDense(cin, bias_init=1.0, name="affine")(w)
    kernel = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
    gain = 1.0 / math.sqrt(cin * k * k)
    if self.layout == "rosinality":
      kernel = kernel * gain
    elif not self.demodulate:
      s = s * gain
    y = x * s[:, None, None, :]
    if self.up:
      y = upfirdn2d(_conv_transpose_stride2(y, kernel), blur_filter(), pad=(1, 1), gain=4.0)
    else:
      y = _conv(y, kernel, padding=k // 2)
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if not self.demodulate:
      return _clamp(y + bias, self.clamp)
    d = jax.lax.rsqrt(jnp.square(s) @ jnp.sum(jnp.square(kernel), axis=(0, 1)) + 1e-8)
    y = y * d[:, None, None, :]
    strength = self.param("noise_strength", nn.initializers.zeros, ())
    noise_const = self.variable(
        "buffers", "noise_const",
        lambda: jax.random.normal(self.make_rng("params"), (self.resolution,) * 2)).value
    if noise_mode == "const":
      y = y + strength * noise_const[None, :, :, None]
    elif noise_mode == "random":
      y = y + strength * jax.random.normal(rng, y.shape[:3] + (1,), y.dtype)
    return _act(y + bias, SQRT2, self.clamp)


class Mapping(nn.Module):
  """Mapping network: ``z`` (and the embedded label ``c``) -> ``w`` ``[batch, w_dim]``.

  ``normalize_2nd_moment(z)``, concatenated with ``normalize_2nd_moment(embed(c))`` when
  ``c_dim > 0`` (NVlabs), then ``n_mlp`` ``EqualDense`` layers (``lr_mul``, leaky ReLU).
  With ``track_w_avg`` (the generator's), ``buffers/w_avg`` ``[w_dim]`` is the average ``w``
  and ``truncation_psi != 1`` returns ``w_avg + psi (w - w_avg)`` (``w_avg`` may be passed).
  """

  z_dim: int
  w_dim: int
  n_mlp: int
  lr_mul: float = 0.01
  c_dim: int = 0
  embed_features: int = 0
  track_w_avg: bool = True

  @nn.compact
  def __call__(self, z: jax.Array | None, c: jax.Array | None = None,
               truncation_psi: float = 1.0, w_avg: jax.Array | None = None) -> jax.Array:
    stored = (self.variable("buffers", "w_avg", lambda: jnp.zeros((self.w_dim,), jnp.float32))
              if self.track_w_avg else None)
    parts = []
    if self.z_dim > 0:
      parts.append(normalize_2nd_moment(z))
    if self.c_dim > 0:
      parts.append(normalize_2nd_moment(EqualDense(self.embed_features, name="embed")(c)))
    x = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    for i in range(self.n_mlp):
      x = EqualDense(self.w_dim, lr_mul=self.lr_mul, activation=True, name=f"fc_{i}")(x)
    if isinstance(truncation_psi, (int, float)) and truncation_psi == 1.0:
      return x
    if w_avg is None:
      w_avg = stored.value
    elif np.shape(w_avg) != (self.w_dim,):
      raise ValueError(f"w_avg must be [{self.w_dim}], got shape {tuple(np.shape(w_avg))}")
    return w_avg + truncation_psi * (x - w_avg)


def _resolutions(size: int) -> list[int]:
  return [4 * 2**i for i in range(int(round(math.log2(size))) - 1)]


def _check_size(size: int, channels: tuple[int, ...], what: str) -> None:
  if size < 4 or size & (size - 1):
    raise ValueError(f"{what} size must be a power of 2 >= 4, got {size}")
  if len(channels) != len(_resolutions(size)):
    raise ValueError(f"{what} channels must give one width per resolution 4..{size} "
                     f"({len(_resolutions(size))}), got {len(channels)}: {channels}")


def _label(module: nn.Module, c: jax.Array | None, n: int) -> jax.Array | None:
  """The label batch ``[n, c_dim]`` of a conditional module (zeros while initialising)."""
  if module.c_dim == 0:
    if c is not None:
      raise ValueError(f"this model is unconditional (c_dim = 0); got a label c of shape "
                       f"{tuple(np.shape(c))}")
    return None
  if c is None:
    if module.is_initializing():
      return jnp.zeros((n, module.c_dim), jnp.float32)
    raise ValueError(f"this model is conditional: pass c [batch, {module.c_dim}]")
  if np.ndim(c) != 2 or np.shape(c) != (n, module.c_dim):
    raise ValueError(f"labels c must be [{n}, {module.c_dim}], got shape {tuple(np.shape(c))}")
  return jnp.asarray(c, jnp.float32)


class StyleGAN2Generator(nn.Module):
  """StyleGAN2 generator (skip to-RGB), both layouts (see the module docstring).

  Attributes:
    size: output side, a power of 2 (rosinality ``size``, NVlabs ``img_resolution``).
    channels: widths per resolution ``4, 8, ..., size`` (rosinality ``channels[res]``,
      NVlabs ``min(channel_base // res, channel_max)``).
    z_dim, w_dim: latent and intermediate latent widths (rosinality ``style_dim`` both).
    n_mlp: mapping layers (rosinality ``n_mlp``, NVlabs ``mapping_kwargs.num_layers``).
    lr_mlp: mapping learning-rate multiplier (0.01 in both upstreams).
    c_dim: label width (NVlabs conditional models), 0 for unconditional ones.
    embed_features: width of the label embedding (NVlabs: ``w_dim``), 0 when ``c_dim = 0``.
    img_channels: image channels (3).
    layout: ``"rosinality"`` or ``"nvlabs"``.
    conv_clamp: NVlabs ``conv_clamp`` (None: no clamp).

  Called as ``module.apply(variables, z, c=None, truncation_psi=1.0, noise_mode="const",
  rng=None, w_avg=None)``: ``z`` ``[batch, z_dim]`` float32 latents (N(0, 1));
  ``c`` ``[batch, c_dim]`` labels (one-hot upstream) for conditional models;
  ``truncation_psi`` in [0, 1] typically (1 = no truncation), ``w = w_avg + psi (w - w_avg)``
  with the stored ``buffers/mapping/w_avg`` or an explicit ``w_avg`` ``[w_dim]``, for every
  ``psi != 1`` as NVlabs (rosinality's ``forward`` ignores ``truncation >= 1``); applied to
  all layers (no ``truncation_cutoff``);
  ``noise_mode`` ``"const"`` (the stored noise buffers), ``"random"`` (fresh N(0, 1) from the
  ``rng`` key, required then) or ``"none"``; under ``jax.jit`` make ``noise_mode`` static
  (``static_argnames=("noise_mode",)``). Returns ``[batch, size, size, img_channels]``
  float32, unclamped (about [-1, 1] for trained models), as upstream.

  Raises:
    ValueError: latents, labels or ``w_avg`` of the wrong shape, a label for an
      unconditional model or none for a conditional one, an unknown ``noise_mode``,
      ``"random"`` without ``rng``, an unknown layout or size.
  """

  kind: ClassVar[str] = "unconditional"
  size: int = 256
  channels: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128)
  z_dim: int = 512
  w_dim: int = 512
  n_mlp: int = 8
  lr_mlp: float = 0.01
  c_dim: int = 0
  embed_features: int = 0
  img_channels: int = 3
  layout: str = "rosinality"
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, z: jax.Array, c: jax.Array | None = None, truncation_psi: float = 1.0,
               noise_mode: str = "const", rng: jax.Array | None = None,
               w_avg: jax.Array | None = None) -> jax.Array:
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
    _check_size(self.size, self.channels, "generator")
    if z.ndim != 2 or z.shape[-1] != self.z_dim:
      raise ValueError(f"latents must be [batch, {self.z_dim}], got shape {tuple(z.shape)}")
    if noise_mode not in NOISE_MODES:
      raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    if noise_mode == "random" and rng is None:
      raise ValueError("noise_mode='random' needs an explicit rng (a jax.random key)")
    n = z.shape[0]
    c = _label(self, c, n)
    w = Mapping(self.z_dim, self.w_dim, self.n_mlp, self.lr_mlp, self.c_dim,
                self.embed_features, name="mapping")(z, c, truncation_psi, w_avg)
    rngs = list(jax.random.split(rng, 2 * len(self.channels))) if noise_mode == "random" else None
    x = img = None
    for i, (res, ch) in enumerate(zip(_resolutions(self.size), self.channels)):
      block = _SynthesisBlock(ch, res, self.img_channels, self.layout, self.conv_clamp,
                              name=f"b{res}")
      x, img = block(x, img, w, noise_mode, rngs[2 * i: 2 * i + 2] if rngs else None, n)
    return img


class _SynthesisBlock(nn.Module):
  """One resolution: (const), conv0 (up, from 8x8 on), conv1, torgb, image upsampled + added."""

  features: int
  resolution: int
  img_channels: int
  layout: str
  clamp: float | None

  @nn.compact
  def __call__(self, x, img, w, noise_mode, rngs, n):
    rngs = rngs or [None, None]
    kw = dict(layout=self.layout, clamp=self.clamp, resolution=self.resolution)
    if x is None:
      const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.features))
      x = jnp.broadcast_to(const[None], (n, 4, 4, self.features))
    else:
      x = ModulatedConv(self.features, 3, up=True, name="conv0", **kw)(x, w, noise_mode, rngs[0])
    x = ModulatedConv(self.features, 3, name="conv1", **kw)(x, w, noise_mode, rngs[1])
    y = ModulatedConv(self.img_channels, 1, demodulate=False, name="torgb", **kw)(x, w)
    if img is not None:
      y = y + upfirdn2d(img, blur_filter(), up=2, pad=(2, 1), gain=4.0)
    return x, y


class StyleGAN2Discriminator(nn.Module):
  """StyleGAN2 discriminator (resnet), both layouts (see the module docstring).

  Attributes:
    image_size: input side, a power of 2.
    channels: widths per resolution ``4, 8, ..., image_size`` (the from-RGB layer writes
      ``channels[-1]``; the block at resolution ``r`` maps ``channels[r]`` to
      ``channels[r / 2]``; the epilogue works at ``channels[0]``).
    input_nc: image channels (3).
    c_dim: label width (NVlabs conditional models; projection with ``cmap_dim``), 0 otherwise.
    cmap_dim: width of the mapped label (NVlabs: ``channels[0]``), 0 when ``c_dim = 0``.
    n_mlp: layers of the label mapping network (NVlabs default 8).
    lr_mlp: its learning-rate multiplier (0.01).
    mbstd_group_size: minibatch-std group (4 in both upstreams; the batch must be a multiple of
      ``min(group, batch)``).
    mbstd_num_channels: minibatch-std features (1).
    layout: ``"rosinality"`` or ``"nvlabs"``.
    conv_clamp: NVlabs ``conv_clamp`` (None: no clamp).

  Called as ``module.apply(variables, x, c=None)``: ``x`` ``[batch, image_size, image_size,
  input_nc]`` float32 images in [-1, 1]; returns ``[batch, 1]`` float32 logits (unbounded).

  Raises:
    ValueError: images or labels of the wrong shape, or a batch not divisible by the
      minibatch-std group.
  """

  kind: ClassVar[str] = "discriminator"
  image_size: int = 256
  channels: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128)
  input_nc: int = 3
  c_dim: int = 0
  cmap_dim: int = 0
  n_mlp: int = 8
  lr_mlp: float = 0.01
  mbstd_group_size: int = 4
  mbstd_num_channels: int = 1
  layout: str = "rosinality"
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array | None = None) -> jax.Array:
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
    _check_size(self.image_size, self.channels, "discriminator")
    s = self.image_size
    if x.ndim != 4 or tuple(x.shape[1:]) != (s, s, self.input_nc):
      raise ValueError(f"images must be [batch, {s}, {s}, {self.input_nc}], got shape "
                       f"{tuple(x.shape)}")
    n = x.shape[0]
    c = _label(self, c, n)
    clamp = self.conv_clamp
    res_list = _resolutions(s)[::-1]
    ch = dict(zip(_resolutions(s), self.channels))
    x = EqualConv(ch[s], 1, clamp=clamp, name=f"b{s}_fromrgb")(x)
    nv = self.layout == "nvlabs"
    g = math.sqrt(0.5) if nv else 1.0
    for res in res_list[:-1]:
      out = ch[res // 2]
      y = EqualConv(out, 1, down=True, use_bias=False, activation=False, gain=g,
                    name=f"b{res}_skip")(x)  # NVlabs clamps no skip
      x = EqualConv(ch[res], 3, clamp=clamp, name=f"b{res}_conv0")(x)
      x = EqualConv(out, 3, down=True, gain=g, clamp=clamp, name=f"b{res}_conv1")(x)
      x = y + x if nv else (x + y) / SQRT2
    x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
    x = EqualConv(ch[4], 3, clamp=clamp, name="b4_conv")(x)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(n, -1)  # upstream flattens NCHW
    x = EqualDense(ch[4], activation=True, name="b4_fc")(x)
    x = EqualDense(1 if self.c_dim == 0 else self.cmap_dim, name="b4_out")(x)
    if self.c_dim > 0:
      cmap = Mapping(0, self.cmap_dim, self.n_mlp, self.lr_mlp, self.c_dim, self.cmap_dim,
                     track_w_avg=False, name="mapping")(None, c)
      x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1.0 / math.sqrt(self.cmap_dim))
    return x


def minibatch_std(x: jax.Array, group_size: int, num_channels: int = 1) -> jax.Array:
  """Appends the minibatch standard deviation channels (rosinality ``Discriminator.forward``,
  NVlabs ``MinibatchStdLayer``).

  Sample ``i`` is grouped with ``i + k n/G`` (``G = min(group_size, batch)``); per group and
  channel slice, the biased std (``sqrt(var + 1e-8)``) averaged over pixels and channels.

  Args:
    x: ``[batch, height, width, channels]`` float32.
    group_size: the group (4 upstream).
    num_channels: features appended (channels split into that many slices).

  Returns:
    ``[batch, height, width, channels + num_channels]``.

  Raises:
    ValueError: the batch is not a multiple of ``min(group_size, batch)``.
  """
  n, h, w, c = x.shape
  g = min(group_size, n)
  if n % g:
    raise ValueError(f"the batch ({n}) must be a multiple of the minibatch-std group "
                     f"min({group_size}, batch) = {g}")
  f = num_channels
  y = x.reshape(g, n // g, h, w, f, c // f)
  y = y - jnp.mean(y, axis=0)
  y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)
  y = jnp.mean(y, axis=(1, 2, 4))  # [n/G, F]
  y = jnp.tile(y, (g, 1))
  return jnp.concatenate([x, jnp.broadcast_to(y[:, None, None, :], (n, h, w, f))], axis=-1)


def mean_w(module: StyleGAN2Generator, variables: dict, n: int = 4096, seed: int = 0,
           c: np.ndarray | None = None) -> np.ndarray:
  """The average intermediate latent of ``n`` latents ``z ~ N(0, 1)`` drawn with
  ``numpy.random.default_rng(seed)`` (rosinality ``Generator.mean_latent(4096)``, which its
  checkpoints do not store).

  Args:
    module: the generator.
    variables: its variables (``params`` at least).
    n: number of latents (4096 upstream).
    seed: the numpy seed.
    c: labels ``[n, c_dim]`` for conditional models (default: zeros).

  Returns:
    ``[w_dim]`` float32.
  """
  z = np.random.default_rng(seed).standard_normal((n, module.z_dim)).astype(np.float32)
  mapping = Mapping(module.z_dim, module.w_dim, module.n_mlp, module.lr_mlp, module.c_dim,
                    module.embed_features)
  if module.c_dim and c is None:
    c = np.zeros((n, module.c_dim), np.float32)
  mv = {"params": variables["params"]["mapping"],
        "buffers": {"w_avg": np.zeros((module.w_dim,), np.float32)}}
  w = jax.jit(mapping.apply)(mv, z, c)
  return np.asarray(jnp.mean(w, axis=0), np.float32)
