"""PyTorch reference StyleGAN2 networks for parity checks, in both layouts jaxgc converts
(optional dependency: importing this module needs torch).

Each class keeps its upstream's module structure, attribute names and registered buffers, so an
upstream ``state_dict`` loads with ``strict=True`` and upstream's keys come out of
``state_dict()``; the forward computes what upstream's inference path computes on CPU in
float32: the *fused* (grouped-convolution) modulated convolution that both upstreams use by
default in eval mode, so the parity tests compare jaxgc's unfused form with an independent
computation. No training code (no path-length regularisation, no ``w_avg`` tracking, no
mixing), no custom CUDA ops.

Upstream sources (read, then rewritten):

* rosinality/stylegan2-pytorch ``model.py`` (``PixelNorm``, ``make_kernel``, ``Upsample``,
  ``Blur``, ``EqualConv2d``, ``EqualLinear``, ``ModulatedConv2d``, ``NoiseInjection``,
  ``ConstantInput``, ``StyledConv``, ``ToRGB``, ``Generator``, ``ConvLayer``, ``ResBlock``,
  ``Discriminator``), ``op/upfirdn2d.py`` (``upfirdn2d_native``), ``op/fused_act.py``
  (``fused_leaky_relu``: ``leaky_relu(x + b, 0.2) * sqrt(2)``).
* NVlabs/stylegan2-ada-pytorch ``training/networks.py`` (``FullyConnectedLayer``,
  ``Conv2dLayer``, ``MappingNetwork``, ``SynthesisLayer``, ``ToRGBLayer``, ``SynthesisBlock``,
  ``SynthesisNetwork``, ``Generator``, ``DiscriminatorBlock``, ``MinibatchStdLayer``,
  ``DiscriminatorEpilogue``, ``Discriminator``; ``architecture`` ``'skip'`` / ``'resnet'``
  only), ``torch_utils/ops/upfirdn2d.py`` (``setup_filter``, ``_upfirdn2d_ref``),
  ``conv2d_resample.py`` (the paddings of ``up=2`` / ``down=2``), ``bias_act.py``.

Deviation for small test models: both generators and discriminators take ``channels``
(``{resolution: width}``) in place of upstream's width tables; the defaults are upstream's.

Used by ``scripts/convert_rosinality_stylegan2.py``, ``scripts/convert_nvlabs_stylegan2_ada.py``
and the tests; jaxgc itself never imports it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

try:
  import torch
  import torch.nn.functional as F
  from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
  raise ImportError("jaxgc.convert.torch_refs_stylegan2 needs torch: pip install torch==2.13.0 "
                    "(CPU build), or pip install 'jaxgc[torch]'") from e

from jaxgc.convert import mapping

ARCHS = ("stylegan2_generator", "stylegan2_discriminator")
SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------------------------
# Shared ops (both upstreams' reference implementations compute the same)


def make_filter(taps=(1, 3, 3, 1), gain: float = 1.0) -> torch.Tensor:
  """``outer(taps, taps) / sum * gain`` (rosinality ``make_kernel``, NVlabs ``setup_filter``)."""
  k = torch.tensor(taps, dtype=torch.float32)
  k = k[None, :] * k[:, None]
  return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
  """NCHW upsample (zero insertion), pad, filter (true convolution), downsample."""
  n, c, h, w = x.shape
  if up > 1:
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape(n, c, h * up, w * up)
  x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
  k = torch.flip(f, [0, 1])[None, None].repeat(c, 1, 1, 1).to(x.dtype)
  x = F.conv2d(x, k, groups=c)
  return x[:, :, ::down, ::down]


def lrelu(x: torch.Tensor, bias: torch.Tensor | None = None, gain: float = SQRT2,
          clamp: float | None = None) -> torch.Tensor:
  """``leaky_relu(x + bias, 0.2) * gain``, clamped (fused_leaky_relu / bias_act 'lrelu')."""
  if bias is not None:
    x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
  x = F.leaky_relu(x, 0.2) * gain
  return x if clamp is None else x.clamp(-clamp, clamp)


def _resolutions(size: int) -> list[int]:
  return [4 * 2**i for i in range(int(round(math.log2(size))) - 1)]


# --------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch


def rosinality_channels(channel_multiplier: int = 2) -> dict[int, int]:
  """rosinality's width table (``Generator.channels``, ``Discriminator``'s ``channels``)."""
  cm = channel_multiplier
  return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm,
          512: 32 * cm, 1024: 16 * cm}


class PixelNorm(nn.Module):
  """rosinality ``PixelNorm``: ``x * rsqrt(mean(x^2, 1) + 1e-8)``."""


  def forward(self, x):
    return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
  """Registers ``kernel`` (the filter, times ``factor**2`` after an upsampling conv)."""

  def __init__(self, pad, upsample_factor: int = 1):
    super().__init__()
    self.register_buffer("kernel", make_filter(gain=upsample_factor**2))
    self.pad = pad

  def forward(self, x):
    return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
  """rosinality ``op``'s ``Upsample``: zero-insertion by ``factor`` then the [1,3,3,1] blur
  (upfirdn2d), NCHW float32 ``[n, c, h, w]`` -> ``[n, c, h * factor, w * factor]``."""

  def __init__(self, factor: int = 2):
    super().__init__()
    self.factor = factor
    self.register_buffer("kernel", make_filter(gain=factor**2))
    p = 4 - factor
    self.pad = ((p + 1) // 2 + factor - 1, p // 2)

  def forward(self, x):
    return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
  """rosinality ``EqualConv2d``: ``conv2d(x, weight / sqrt(in k^2), bias)``."""


  def __init__(self, cin, cout, k, stride=1, padding=0, bias=True):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
    self.scale = 1 / math.sqrt(cin * k * k)
    self.stride, self.padding = stride, padding
    self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

  def forward(self, x):
    return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride,
                    padding=self.padding)


class EqualLinear(nn.Module):
  """rosinality ``EqualLinear``: gain ``lr_mul / sqrt(in)``, bias times ``lr_mul``, fused lrelu."""


  def __init__(self, din, dout, bias=True, bias_init=0.0, lr_mul=1.0, activation=None):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(dout, din) / lr_mul)
    self.bias = nn.Parameter(torch.zeros(dout).fill_(bias_init)) if bias else None
    self.activation = activation
    self.scale = 1 / math.sqrt(din) * lr_mul
    self.lr_mul = lr_mul

  def forward(self, x):
    if self.activation:
      return lrelu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
    return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class FusedLeakyReLU(nn.Module):
  """rosinality ``FusedLeakyReLU``: ``leaky_relu(x + bias, 0.2) * sqrt(2)``."""


  def __init__(self, channels, bias=True):
    super().__init__()
    self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

  def forward(self, x):
    return lrelu(x, self.bias)


class ModulatedConv2d(nn.Module):
  """rosinality's fused (grouped) modulated convolution."""

  def __init__(self, cin, cout, k, style_dim, demodulate=True, upsample=False):
    super().__init__()
    self.cin, self.cout, self.k, self.upsample = cin, cout, k, upsample
    if upsample:
      p = (4 - 2) - (k - 1)
      self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
    self.scale = 1 / math.sqrt(cin * k * k)
    self.padding = k // 2
    self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k))
    self.modulation = EqualLinear(style_dim, cin, bias_init=1)
    self.demodulate = demodulate

  def forward(self, x, style):
    n, cin, h, w = x.shape
    style = self.modulation(style).view(n, 1, cin, 1, 1)
    weight = self.scale * self.weight * style
    if self.demodulate:
      demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
      weight = weight * demod.view(n, self.cout, 1, 1, 1)
    weight = weight.view(n * self.cout, cin, self.k, self.k)
    x = x.view(1, n * cin, h, w)
    if self.upsample:
      weight = weight.view(n, self.cout, cin, self.k, self.k).transpose(1, 2).reshape(
          n * cin, self.cout, self.k, self.k)
      out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=n)
      out = self.blur(out.view(n, self.cout, *out.shape[2:]))
    else:
      out = F.conv2d(x, weight, padding=self.padding, groups=n)
      out = out.view(n, self.cout, *out.shape[2:])
    return out


class NoiseInjection(nn.Module):
  """rosinality ``NoiseInjection``: ``x + weight * noise`` (fresh N(0, 1) when None)."""


  def __init__(self):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(1))

  def forward(self, image, noise=None):
    if noise is None:
      n, _, h, w = image.shape
      noise = image.new_empty(n, 1, h, w).normal_()
    return image + self.weight * noise


class ConstantInput(nn.Module):
  """rosinality ``ConstantInput``: the learned ``input`` ``[1, C, 4, 4]`` repeated."""


  def __init__(self, channels, size=4):
    super().__init__()
    self.input = nn.Parameter(torch.randn(1, channels, size, size))

  def forward(self, n):
    return self.input.repeat(n, 1, 1, 1)


class StyledConv(nn.Module):
  """rosinality ``StyledConv``: modulated conv, noise, fused lrelu with bias."""


  def __init__(self, cin, cout, k, style_dim, upsample=False):
    super().__init__()
    self.conv = ModulatedConv2d(cin, cout, k, style_dim, upsample=upsample)
    self.noise = NoiseInjection()
    self.activate = FusedLeakyReLU(cout)

  def forward(self, x, style, noise=None):
    return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
  """rosinality ``ToRGB``: 1x1 modulated conv (no demodulation), bias, upsampled skip."""


  def __init__(self, cin, style_dim, upsample=True):
    super().__init__()
    if upsample:
      self.upsample = Upsample()
    self.conv = ModulatedConv2d(cin, 3, 1, style_dim, demodulate=False)
    self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

  def forward(self, x, style, skip=None):
    out = self.conv(x, style) + self.bias
    if skip is not None:
      out = out + self.upsample(skip)
    return out


class RosinalityGenerator(nn.Module):
  """rosinality ``Generator(size, style_dim, n_mlp, channel_multiplier)``.

  ``forward(z, truncation=1, truncation_latent=None, randomize_noise=False)`` returns the
  image ``[n, 3, size, size]`` (upstream returns ``(image, None)``; one style, no mixing;
  ``randomize_noise=False`` uses the ``noises`` buffers as jaxgc's ``noise_mode="const"``).
  """

  def __init__(self, size, style_dim=512, n_mlp=8, channel_multiplier=2, lr_mlp=0.01,
               channels: Mapping[int, int] | None = None):
    super().__init__()
    self.size, self.style_dim = size, style_dim
    self.style = nn.Sequential(PixelNorm(), *[
        EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
        for _ in range(n_mlp)])
    self.channels = dict(channels or rosinality_channels(channel_multiplier))
    ch = self.channels
    self.input = ConstantInput(ch[4])
    self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim)
    self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
    self.log_size = int(math.log(size, 2))
    self.num_layers = (self.log_size - 2) * 2 + 1
    self.convs, self.upsamples, self.to_rgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
    self.noises = nn.Module()
    for i in range(self.num_layers):
      r = (i + 5) // 2
      self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, 2**r, 2**r))
    cin = ch[4]
    for i in range(3, self.log_size + 1):
      cout = ch[2**i]
      self.convs.append(StyledConv(cin, cout, 3, style_dim, upsample=True))
      self.convs.append(StyledConv(cout, cout, 3, style_dim))
      self.to_rgbs.append(ToRGB(cout, style_dim))
      cin = cout
    self.n_latent = self.log_size * 2 - 2

  def mean_latent(self, n_latent: int, generator: torch.Generator | None = None):
    z = torch.randn(n_latent, self.style_dim, generator=generator)
    return self.style(z).mean(0, keepdim=True)

  def forward(self, z, truncation=1.0, truncation_latent=None, randomize_noise=False):
    style = self.style(z)
    noise = ([None] * self.num_layers if randomize_noise else
             [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)])
    if truncation < 1:
      style = truncation_latent + truncation * (style - truncation_latent)
    latent = style.unsqueeze(1).repeat(1, self.n_latent, 1)
    out = self.input(z.shape[0])
    out = self.conv1(out, latent[:, 0], noise=noise[0])
    skip = self.to_rgb1(out, latent[:, 1])
    i = 1
    for c1, c2, n1, n2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2],
                                      noise[2::2], self.to_rgbs):
      out = c1(out, latent[:, i], noise=n1)
      out = c2(out, latent[:, i + 1], noise=n2)
      skip = to_rgb(out, latent[:, i + 2], skip)
      i += 2
    return skip


class ConvLayer(nn.Sequential):
  """rosinality ``ConvLayer``: (blur,) equalized conv, (fused lrelu)."""


  def __init__(self, cin, cout, k, downsample=False, bias=True, activate=True):
    layers = []
    if downsample:
      p = (4 - 2) + (k - 1)
      layers.append(Blur(((p + 1) // 2, p // 2)))
      stride, padding = 2, 0
    else:
      stride, padding = 1, k // 2
    layers.append(EqualConv2d(cin, cout, k, padding=padding, stride=stride,
                              bias=bias and not activate))
    if activate:
      layers.append(FusedLeakyReLU(cout, bias=bias))
    super().__init__(*layers)


class ResBlock(nn.Module):
  """rosinality ``ResBlock``: ``(conv2(conv1(x)) + skip(x)) / sqrt(2)``."""


  def __init__(self, cin, cout):
    super().__init__()
    self.conv1 = ConvLayer(cin, cin, 3)
    self.conv2 = ConvLayer(cin, cout, 3, downsample=True)
    self.skip = ConvLayer(cin, cout, 1, downsample=True, activate=False, bias=False)

  def forward(self, x):
    return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class RosinalityDiscriminator(nn.Module):
  """rosinality ``Discriminator(size, channel_multiplier)``: logits ``[n, 1]``."""

  def __init__(self, size, channel_multiplier=2, channels: Mapping[int, int] | None = None):
    super().__init__()
    ch = dict(channels or rosinality_channels(channel_multiplier))
    convs = [ConvLayer(3, ch[size], 1)]
    log_size = int(math.log(size, 2))
    cin = ch[size]
    for i in range(log_size, 2, -1):
      convs.append(ResBlock(cin, ch[2**(i - 1)]))
      cin = ch[2**(i - 1)]
    self.convs = nn.Sequential(*convs)
    self.stddev_group, self.stddev_feat = 4, 1
    self.final_conv = ConvLayer(cin + 1, ch[4], 3)
    self.final_linear = nn.Sequential(
        EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"), EqualLinear(ch[4], 1))

  def forward(self, x):
    out = self.convs(x)
    n, c, h, w = out.shape
    group = min(n, self.stddev_group)
    std = out.view(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
    std = torch.sqrt(std.var(0, unbiased=False) + 1e-8)
    std = std.mean([2, 3, 4], keepdims=True).squeeze(2).repeat(group, 1, h, w)
    out = self.final_conv(torch.cat([out, std], 1))
    return self.final_linear(out.view(n, -1))


# --------------------------------------------------------------------------------------------
# NVlabs/stylegan2-ada-pytorch


def nvlabs_channels(resolution: int, channel_base: int = 32768, channel_max: int = 512
                    ) -> dict[int, int]:
  """NVlabs' width table ``min(channel_base // res, channel_max)`` for ``4 .. resolution``."""
  return {r: min(channel_base // r, channel_max) for r in _resolutions(resolution)}


def normalize_2nd_moment(x, eps=1e-8):
  """NVlabs ``networks.normalize_2nd_moment``: ``x / sqrt(mean(x**2, dim=1) + eps)``, ``[n, d]``
  float32."""
  return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
  """NVlabs ``FullyConnectedLayer``: gain ``lr_multiplier / sqrt(in)``, bias gain
  ``lr_multiplier``, ``'linear'`` or ``'lrelu'`` (times sqrt(2))."""


  def __init__(self, din, dout, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0):
    super().__init__()
    self.activation = activation
    self.weight = nn.Parameter(torch.randn(dout, din) / lr_multiplier)
    self.bias = nn.Parameter(torch.full([dout], float(bias_init))) if bias else None
    self.weight_gain = lr_multiplier / np.sqrt(din)
    self.bias_gain = lr_multiplier

  def forward(self, x):
    w = self.weight * self.weight_gain
    b = self.bias * self.bias_gain if self.bias is not None else None
    if self.activation == "linear" and b is not None:
      return torch.addmm(b.unsqueeze(0), x, w.t())
    return lrelu(x.matmul(w.t()), b)


class Conv2dLayer(nn.Module):
  """NVlabs ``Conv2dLayer`` (``down`` 1 or 2), with ``conv2d_resample``'s paddings."""

  def __init__(self, cin, cout, k, bias=True, activation="linear", down=1, conv_clamp=None):
    super().__init__()
    self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
    self.register_buffer("resample_filter", make_filter())
    self.padding = k // 2
    self.weight_gain = 1 / np.sqrt(cin * k * k)
    self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
    self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

  def forward(self, x, gain=1.0):
    w = self.weight * self.weight_gain
    k = w.shape[-1]
    if self.down == 2:
      p0 = self.padding + (4 - 2 + 1) // 2
      p1 = self.padding + (4 - 2) // 2
      if k == 1:
        x = F.conv2d(upfirdn2d(x, self.resample_filter, down=2, pad=(p0, p1)), w)
      else:
        x = F.conv2d(upfirdn2d(x, self.resample_filter, pad=(p0, p1)), w, stride=2)
    else:
      x = F.conv2d(x, w, padding=self.padding)
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    if self.activation == "lrelu":
      return lrelu(x, self.bias, SQRT2 * gain, clamp)
    if self.bias is not None:
      x = x + self.bias.reshape(1, -1, 1, 1)
    x = x * gain if gain != 1 else x
    return x if clamp is None else x.clamp(-clamp, clamp)


class MappingNetwork(nn.Module):
  """NVlabs ``MappingNetwork`` (inference: no ``w_avg`` update, no ``truncation_cutoff``)."""


  def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, lr_multiplier=0.01,
               w_avg_beta=0.995):
    super().__init__()
    self.z_dim, self.c_dim, self.num_ws = z_dim, c_dim, num_ws
    embed = w_dim if c_dim else 0
    feats = [z_dim + embed] + [w_dim] * num_layers
    if c_dim > 0:
      self.embed = FullyConnectedLayer(c_dim, embed)
    for i in range(num_layers):
      setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], activation="lrelu",
                                                  lr_multiplier=lr_multiplier))
    self.num_layers = num_layers
    if num_ws is not None and w_avg_beta is not None:
      self.register_buffer("w_avg", torch.zeros([w_dim]))

  def forward(self, z, c, truncation_psi=1.0):
    x = normalize_2nd_moment(z) if self.z_dim > 0 else None
    if self.c_dim > 0:
      y = normalize_2nd_moment(self.embed(c))
      x = torch.cat([x, y], dim=1) if x is not None else y
    for i in range(self.num_layers):
      x = getattr(self, f"fc{i}")(x)
    if self.num_ws is not None:
      x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
      if truncation_psi != 1:
        x = self.w_avg.lerp(x, truncation_psi)
    return x


def modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None,
                     demodulate=True):
  """NVlabs ``modulated_conv2d``, fused path (grouped convolution), float32."""
  n = x.shape[0]
  cout, cin, kh, kw = weight.shape
  w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
  if demodulate:
    w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
  x = x.reshape(1, -1, *x.shape[2:])
  if up == 2:  # conv2d_resample: transposed conv (stride 2), then the filter padded (1, 1) x4
    wt = w.reshape(n, cout, cin, kh, kw).transpose(1, 2).reshape(n * cin, cout, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=2, groups=n)
    x = upfirdn2d(x, resample_filter * 4, pad=(1, 1))
  else:
    x = F.conv2d(x, w.reshape(-1, cin, kh, kw), padding=padding, groups=n)
  x = x.reshape(n, -1, *x.shape[2:])
  return x if noise is None else x + noise


class SynthesisLayer(nn.Module):
  """NVlabs ``SynthesisLayer``: modulated conv (up 1 or 2), noise, bias, lrelu, clamp."""


  def __init__(self, cin, cout, w_dim, resolution, k=3, up=1, conv_clamp=None):
    super().__init__()
    self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
    self.affine = FullyConnectedLayer(w_dim, cin, bias_init=1)
    self.register_buffer("resample_filter", make_filter())
    self.padding = k // 2
    self.weight = nn.Parameter(torch.randn([cout, cin, k, k]))
    self.register_buffer("noise_const", torch.randn([resolution, resolution]))
    self.noise_strength = nn.Parameter(torch.zeros([]))
    self.bias = nn.Parameter(torch.zeros([cout]))

  def forward(self, x, w, noise_mode="const", gain=1.0):
    styles = self.affine(w)
    noise = None
    if noise_mode == "random":
      noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution]) * self.noise_strength
    if noise_mode == "const":
      noise = self.noise_const * self.noise_strength
    x = modulated_conv2d(x, self.weight, styles, noise, self.up, self.padding,
                         self.resample_filter)
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return lrelu(x, self.bias, SQRT2 * gain, clamp)


class ToRGBLayer(nn.Module):
  """NVlabs ``ToRGBLayer``: styles times ``1/sqrt(in)``, no demodulation, bias, clamp."""


  def __init__(self, cin, cout, w_dim, k=1, conv_clamp=None):
    super().__init__()
    self.conv_clamp = conv_clamp
    self.affine = FullyConnectedLayer(w_dim, cin, bias_init=1)
    self.weight = nn.Parameter(torch.randn([cout, cin, k, k]))
    self.bias = nn.Parameter(torch.zeros([cout]))
    self.weight_gain = 1 / np.sqrt(cin * k * k)

  def forward(self, x, w):
    styles = self.affine(w) * self.weight_gain
    x = modulated_conv2d(x, self.weight, styles, demodulate=False)
    x = x + self.bias.reshape(1, -1, 1, 1)
    return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class SynthesisBlock(nn.Module):
  """NVlabs ``SynthesisBlock``, ``architecture='skip'``."""


  def __init__(self, cin, cout, w_dim, resolution, img_channels, conv_clamp=None):
    super().__init__()
    self.cin, self.resolution = cin, resolution
    self.register_buffer("resample_filter", make_filter())
    self.num_conv = 0
    if cin == 0:
      self.const = nn.Parameter(torch.randn([cout, resolution, resolution]))
    else:
      self.conv0 = SynthesisLayer(cin, cout, w_dim, resolution, up=2, conv_clamp=conv_clamp)
      self.num_conv += 1
    self.conv1 = SynthesisLayer(cout, cout, w_dim, resolution, conv_clamp=conv_clamp)
    self.num_conv += 1
    self.torgb = ToRGBLayer(cout, img_channels, w_dim, conv_clamp=conv_clamp)
    self.num_torgb = 1

  def forward(self, x, img, ws, noise_mode="const"):
    w_iter = iter(ws.unbind(1))
    if self.cin == 0:
      x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
      x = self.conv1(x, next(w_iter), noise_mode)
    else:
      x = self.conv0(x, next(w_iter), noise_mode)
      x = self.conv1(x, next(w_iter), noise_mode)
    if img is not None:  # upfirdn2d.upsample2d: up 2, padding (2, 1), gain 4
      img = upfirdn2d(img, self.resample_filter * 4, up=2, pad=(2, 1))
    y = self.torgb(x, next(w_iter))
    return x, (img + y if img is not None else y)


class SynthesisNetwork(nn.Module):
  """NVlabs ``SynthesisNetwork``: ``b4 .. b{img_resolution}``."""


  def __init__(self, w_dim, img_resolution, img_channels, channels: Mapping[int, int],
               conv_clamp=None):
    super().__init__()
    self.block_resolutions = _resolutions(img_resolution)
    self.num_ws = 0
    for r in self.block_resolutions:
      cin = channels[r // 2] if r > 4 else 0
      block = SynthesisBlock(cin, channels[r], w_dim, r, img_channels, conv_clamp)
      self.num_ws += block.num_conv
      if r == img_resolution:
        self.num_ws += block.num_torgb
      setattr(self, f"b{r}", block)

  def forward(self, ws, noise_mode="const"):
    x = img = None
    w_idx = 0
    for r in self.block_resolutions:
      block = getattr(self, f"b{r}")
      x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode)
      w_idx += block.num_conv
    return img


class NVlabsGenerator(nn.Module):
  """NVlabs ``Generator(z_dim, c_dim, w_dim, img_resolution, img_channels)`` (skip).

  ``forward(z, c, truncation_psi=1, noise_mode="const")`` returns ``[n, img_channels, res,
  res]``.
  """

  def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels=3, num_layers=8,
               channel_base=32768, channel_max=512, channels: Mapping[int, int] | None = None,
               conv_clamp=None):
    super().__init__()
    self.z_dim, self.c_dim = z_dim, c_dim
    channels = dict(channels or nvlabs_channels(img_resolution, channel_base, channel_max))
    self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channels, conv_clamp)
    self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.synthesis.num_ws, num_layers)

  def forward(self, z, c=None, truncation_psi=1.0, noise_mode="const"):
    return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode)


class DiscriminatorBlock(nn.Module):
  """NVlabs ``DiscriminatorBlock``, ``architecture='resnet'`` (branch gains sqrt(0.5))."""


  def __init__(self, cin, tmp, cout, img_channels, conv_clamp=None):
    super().__init__()
    self.cin = cin
    self.register_buffer("resample_filter", make_filter())
    if cin == 0:
      self.fromrgb = Conv2dLayer(img_channels, tmp, 1, activation="lrelu", conv_clamp=conv_clamp)
    self.conv0 = Conv2dLayer(tmp, tmp, 3, activation="lrelu", conv_clamp=conv_clamp)
    self.conv1 = Conv2dLayer(tmp, cout, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
    self.skip = Conv2dLayer(tmp, cout, 1, bias=False, down=2)

  def forward(self, x, img):
    if self.cin == 0:
      x = self.fromrgb(img)
    y = self.skip(x, gain=np.sqrt(0.5))
    x = self.conv1(self.conv0(x), gain=np.sqrt(0.5))
    return y + x


class DiscriminatorEpilogue(nn.Module):
  """NVlabs ``DiscriminatorEpilogue`` with ``MinibatchStdLayer`` (``mbstd``), projection."""


  def __init__(self, cin, cmap_dim, resolution=4, mbstd_group_size=4, mbstd_num_channels=1,
               conv_clamp=None):
    super().__init__()
    self.cmap_dim = cmap_dim
    self.group_size, self.num_channels = mbstd_group_size, mbstd_num_channels
    self.conv = Conv2dLayer(cin + mbstd_num_channels, cin, 3, activation="lrelu",
                            conv_clamp=conv_clamp)
    self.fc = FullyConnectedLayer(cin * resolution**2, cin, activation="lrelu")
    self.out = FullyConnectedLayer(cin, 1 if cmap_dim == 0 else cmap_dim)

  def mbstd(self, x):
    n, c, h, w = x.shape
    g = min(self.group_size, n)
    f = self.num_channels
    y = x.reshape(g, -1, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)

  def forward(self, x, cmap):
    x = self.conv(self.mbstd(x))
    x = self.out(self.fc(x.flatten(1)))
    if self.cmap_dim > 0:
      x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
    return x


class NVlabsDiscriminator(nn.Module):
  """NVlabs ``Discriminator(c_dim, img_resolution, img_channels)`` (resnet): ``[n, 1]``."""

  def __init__(self, c_dim, img_resolution, img_channels=3, channel_base=32768,
               channel_max=512, channels: Mapping[int, int] | None = None, num_layers=8,
               conv_clamp=None):
    super().__init__()
    self.c_dim = c_dim
    ch = dict(channels or nvlabs_channels(img_resolution, channel_base, channel_max))
    self.block_resolutions = _resolutions(img_resolution)[::-1][:-1]
    for r in self.block_resolutions:
      cin = ch[r] if r < img_resolution else 0
      setattr(self, f"b{r}", DiscriminatorBlock(cin, ch[r], ch[r // 2], img_channels, conv_clamp))
    cmap_dim = ch[4] if c_dim else 0
    if c_dim > 0:
      self.mapping = MappingNetwork(0, c_dim, cmap_dim, None, num_layers, w_avg_beta=None)
    self.b4 = DiscriminatorEpilogue(ch[4], cmap_dim, conv_clamp=conv_clamp)

  def forward(self, img, c=None):
    x = None
    for r in self.block_resolutions:
      x = getattr(self, f"b{r}")(x, img)
    cmap = self.mapping(None, c) if self.c_dim > 0 else None
    return self.b4(x, cmap)


# --------------------------------------------------------------------------------------------
# Building, randomising and running references


def _np(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
  return {k: np.asarray(v.detach().numpy() if isinstance(v, torch.Tensor) else v)
          for k, v in sd.items()}


def build_reference(state_dict: Mapping[str, Any], arch: str | None = None) -> nn.Module:
  """The reference network of a StyleGAN2 state_dict (either layout), loaded with
  ``strict=True``, in eval mode.

  Args:
    state_dict: ``{upstream key: tensor or array}`` (unwrapped; ``g_ema`` of a rosinality
      checkpoint, an NVlabs ``G_ema.state_dict()`` or ``D.state_dict()``).
    arch: ``"stylegan2_generator"`` or ``"stylegan2_discriminator"``; None infers it.

  Returns:
    A ``RosinalityGenerator``, ``RosinalityDiscriminator``, ``NVlabsGenerator`` or
    ``NVlabsDiscriminator``.

  Raises:
    ValueError: not a StyleGAN2 state_dict of a known layout.
    RuntimeError: ``load_state_dict`` found keys or shapes that do not fit.
  """
  sd = _np(state_dict)
  arch = arch or mapping.infer_arch(sd)
  layout = mapping.stylegan2_layout(sd)
  if arch not in ARCHS or layout is None:
    raise ValueError(f"no StyleGAN2 reference for arch {arch!r} (layout {layout})")
  kw = mapping.infer_kwargs(arch, sd)
  if arch == "stylegan2_generator":
    ch = dict(zip(_resolutions(kw["size"]), kw["channels"]))
    if layout == "rosinality":
      net = RosinalityGenerator(kw["size"], kw["w_dim"], kw["n_mlp"], channels=ch)
    else:
      net = NVlabsGenerator(kw["z_dim"], kw.get("c_dim", 0), kw["w_dim"], kw["size"],
                            kw["img_channels"], kw["n_mlp"], channels=ch)
  else:
    ch = dict(zip(_resolutions(kw["image_size"]), kw["channels"]))
    if layout == "rosinality":
      net = RosinalityDiscriminator(kw["image_size"], channels=ch)
    else:
      net = NVlabsDiscriminator(kw.get("c_dim", 0), kw["image_size"], kw["input_nc"],
                                channels=ch, num_layers=kw.get("n_mlp", 8))
  net.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True)
  return net.eval()


def randomize(net: nn.Module, seed: int) -> nn.Module:
  """Gives the parameters upstream initialises to constants random values, so parity checks
  exercise them: biases ~ N(0, 0.1) (affine / modulation biases ~ 1 + N(0, 0.1)), noise
  strengths ~ N(0, 0.3), ``w_avg`` ~ N(0, 0.3). Weights keep upstream's N(0, 1) (over
  ``lr_mul``) initialisation. Returns ``net`` in eval mode."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in list(net.named_parameters()) + list(net.named_buffers()):
      leaf = name.rsplit(".", 1)[-1]
      r = torch.randn(p.shape, generator=gen)
      if leaf == "bias":
        affine = ".affine." in name or ".modulation." in name
        p.copy_((1.0 if affine else 0.0) + 0.1 * r)
      elif leaf == "noise_strength" or name.endswith("noise.weight") or leaf == "w_avg":
        p.copy_(0.3 * r)
  return net.eval()


def random_network(arch: str, layout: str, seed: int = 0, **kwargs: Any) -> nn.Module:
  """A reference network with upstream's initialisation under ``seed`` and ``randomize``.

  Args:
    arch: ``"stylegan2_generator"`` or ``"stylegan2_discriminator"``.
    layout: ``"rosinality"`` or ``"nvlabs"``.
    seed: seeds ``torch.manual_seed``.
    **kwargs: constructor arguments of the reference class.

  Raises:
    ValueError: another arch or layout.
  """
  classes = {("stylegan2_generator", "rosinality"): RosinalityGenerator,
             ("stylegan2_generator", "nvlabs"): NVlabsGenerator,
             ("stylegan2_discriminator", "rosinality"): RosinalityDiscriminator,
             ("stylegan2_discriminator", "nvlabs"): NVlabsDiscriminator}
  if (arch, layout) not in classes:
    raise ValueError(f"no StyleGAN2 reference for arch {arch!r}, layout {layout!r}")
  torch.manual_seed(seed)
  return randomize(classes[arch, layout](**kwargs), seed)


def run_nhwc(net: nn.Module, x: np.ndarray, c: np.ndarray | None = None,
             truncation_psi: float = 1.0, w_avg: np.ndarray | None = None) -> np.ndarray:
  """Runs a reference without gradients, NHWC in and out (as jaxgc's modules).

  Args:
    net: a reference from this module.
    x: generators: latents ``[n, z_dim]``; discriminators: images ``[n, side, side, 3]``;
      float32.
    c: labels ``[n, c_dim]`` for conditional NVlabs networks.
    truncation_psi: generators: the truncation (rosinality: with ``w_avg`` ``[w_dim]``).
    w_avg: rosinality generators with ``truncation_psi != 1``: its ``truncation_latent``.

  Returns:
    Generators ``[n, side, side, channels]``, discriminators ``[n, 1]``, float32, noise
    ``const``.
  """
  with torch.no_grad():
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    tc = None if c is None else torch.from_numpy(np.ascontiguousarray(c, np.float32))
    if isinstance(net, RosinalityGenerator):
      lat = None if w_avg is None else torch.from_numpy(np.array(w_avg, np.float32))[None]
      y = net(t, truncation_psi, lat)
    elif isinstance(net, NVlabsGenerator):
      y = net(t, tc, truncation_psi)
    elif isinstance(net, NVlabsDiscriminator):
      return net(t.permute(0, 3, 1, 2), tc).numpy()
    else:
      return net(t.permute(0, 3, 1, 2)).numpy()
  return np.ascontiguousarray(y.permute(0, 2, 3, 1).numpy())
