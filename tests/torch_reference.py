"""PyTorch reference networks for the parity tests, rebuilt after their upstream repositories.

Each class keeps the upstream module structure (``nn.Sequential`` indices included), so a
``state_dict`` saved by the upstream code loads here with ``strict=True`` and every key name is
identical to upstream. Only inference behaviour matters here: no weight initialisation schemes,
no training helpers.

Upstream sources (read, then rewritten):

* junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``: ``ResnetGenerator``,
  ``ResnetBlock``, ``get_norm_layer``.
* mit-han-lab/gan-compression ``models/modules/mobile_modules.py`` (``SeparableConv2d``),
  ``models/modules/resnet_architecture/mobile_resnet_generator.py`` (``MobileResnetGenerator``,
  ``MobileResnetBlock``) and ``sub_mobile_resnet_generator.py`` (``SubMobileResnetGenerator``
  and its own ``MobileResnetBlock``, here ``SubMobileResnetBlock``).
* chien-liu/DCGAN-PyTorch ``gan_face_generate/models.py`` (``Generator``; the PyTorch DCGAN
  tutorial architecture).
* csinva/gan-vae-pretrained-pytorch ``mnist_dcgan/dcgan.py`` (``Discriminator``) and
  ``mnist/gan_mnist.py`` (the ``nn.Sequential`` MLP ``G`` and ``D`` of ``mnist_gan_mlp``).

This module imports torch at the top; only tests that already called
``pytest.importorskip("torch")`` import it.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

ARCHS = (
    "resnet_generator",
    "mobile_resnet_generator",
    "sub_mobile_resnet_generator",
    "dcgan_generator",
    "dcgan_discriminator",
    "mlp_generator",
    "mlp_discriminator",
)


# --------------------------------------------------------------------------------------------
# Normalisation and padding helpers
# --------------------------------------------------------------------------------------------


def get_norm_layer(norm_type: str = "instance"):
  """Norm-layer factory of ``get_norm_layer`` in both CycleGAN and GAN Compression
  ``models/networks.py``: ``"batch"`` is ``BatchNorm2d(affine=True, track_running_stats=True)``,
  ``"instance"`` is ``InstanceNorm2d(affine=False, track_running_stats=False)`` (no parameters,
  no buffers, so no state_dict keys)."""
  if norm_type == "batch":
    return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
  if norm_type == "instance":
    return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
  raise ValueError(f"norm_type must be 'batch' or 'instance', got {norm_type!r}")


def _uses_bias(norm_layer) -> bool:
  """Upstream rule: convolutions followed by a norm layer carry a bias only with InstanceNorm."""
  if isinstance(norm_layer, functools.partial):
    return norm_layer.func == nn.InstanceNorm2d
  return norm_layer == nn.InstanceNorm2d


def _pad_layers(padding_type: str, amount: int = 1) -> tuple[list[nn.Module], int]:
  """Returns (explicit padding layers, implicit conv padding) for a padding type, as the
  ResNet blocks of all three upstream generators do."""
  if padding_type == "reflect":
    return [nn.ReflectionPad2d(amount)], 0
  if padding_type == "replicate":
    return [nn.ReplicationPad2d(amount)], 0
  if padding_type == "zero":
    return [], amount
  raise NotImplementedError(f"padding [{padding_type}] is not implemented")


# --------------------------------------------------------------------------------------------
# CycleGAN ResNet generator
# --------------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
  """Residual block of the CycleGAN ResNet generator.

  Upstream: junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py`` ``ResnetBlock``.
  ``conv_block``: [pad, conv3x3, norm, ReLU, (Dropout(0.5) only if use_dropout), pad, conv3x3,
  norm]; ``forward`` returns ``x + conv_block(x)``. With reflect padding and no dropout the two
  convolutions are ``conv_block.1`` and ``conv_block.5``; with dropout ``conv_block.1`` and
  ``conv_block.6``.
  """

  def __init__(self, dim: int, padding_type: str, norm_layer, use_dropout: bool,
               use_bias: bool):
    super().__init__()
    layers: list[nn.Module] = []
    pads, p = _pad_layers(padding_type)
    layers += pads
    layers += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim),
               nn.ReLU(True)]
    if use_dropout:
      layers += [nn.Dropout(0.5)]
    pads, p = _pad_layers(padding_type)
    layers += pads
    layers += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
    self.conv_block = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
  """CycleGAN / pix2pix ResNet generator (Johnson et al.).

  Upstream: junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py`` ``ResnetGenerator``.
  ``model``: ReflectionPad(3), conv7x7(input_nc, ngf), norm, ReLU; two stride-2 conv3x3
  downsamplings (ngf -> 2 ngf -> 4 ngf) each followed by norm and ReLU; ``n_blocks``
  ``ResnetBlock(4 ngf)``; two ConvTranspose2d(k3, s2, p1, output_padding 1) upsamplings with norm
  and ReLU; ReflectionPad(3), conv7x7(ngf, output_nc) (always with bias), Tanh. Convs before a
  norm have a bias only with InstanceNorm. ``forward`` does NOT clamp the input (unlike the GAN
  Compression generators).
  """

  def __init__(self, input_nc: int, output_nc: int, ngf: int = 64,
               norm_layer=nn.BatchNorm2d, use_dropout: bool = False, n_blocks: int = 6,
               padding_type: str = "reflect"):
    assert n_blocks >= 0
    super().__init__()
    self.input_nc = input_nc
    self.output_nc = output_nc
    self.ngf = ngf
    use_bias = _uses_bias(norm_layer)
    model: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
        norm_layer(ngf),
        nn.ReLU(True),
    ]
    n_downsampling = 2
    for i in range(n_downsampling):
      mult = 2**i
      model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1,
                          bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True)]
    mult = 2**n_downsampling
    for _ in range(n_blocks):
      model += [ResnetBlock(ngf * mult, padding_type=padding_type, norm_layer=norm_layer,
                            use_dropout=use_dropout, use_bias=use_bias)]
    for i in range(n_downsampling):
      mult = 2**(n_downsampling - i)
      model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2,
                                   padding=1, output_padding=1, bias=use_bias),
                norm_layer(int(ngf * mult / 2)),
                nn.ReLU(True)]
    model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0),
              nn.Tanh()]
    self.model = nn.Sequential(*model)

  def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (upstream name)
    return self.model(input)


# --------------------------------------------------------------------------------------------
# GAN Compression mobile generators
# --------------------------------------------------------------------------------------------


class SeparableConv2d(nn.Module):
  """Depthwise-separable convolution of GAN Compression.

  Upstream: mit-han-lab/gan-compression ``models/modules/mobile_modules.py``
  ``SeparableConv2d``. ``conv`` = Sequential(depthwise Conv2d(in, in * scale_factor, k,
  groups=in), norm_layer(in * scale_factor), pointwise Conv2d(in * scale_factor, out, 1)).
  ``norm_layer`` defaults to a plain ``nn.InstanceNorm2d`` (affine=False, no running stats) and
  ``use_bias`` to True; the ResNet blocks pass neither, so both convs always carry a bias and
  the inner norm is always a parameter-free InstanceNorm, whatever norm the generator uses.
  Keys: ``conv.0.weight/bias`` (depthwise ``[in, 1, k, k]``), ``conv.2.weight/bias``.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
               padding: int = 0, norm_layer=nn.InstanceNorm2d, use_bias: bool = True,
               scale_factor: int = 1):
    super().__init__()
    hidden = in_channels * scale_factor
    self.conv = nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size=kernel_size, stride=stride, padding=padding,
                  groups=in_channels, bias=use_bias),
        norm_layer(hidden),
        nn.Conv2d(hidden, out_channels, kernel_size=1, stride=1, bias=use_bias),
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.conv(x)


class MobileResnetBlock(nn.Module):
  """Residual block of GAN Compression's MobileResnetGenerator.

  Upstream: mit-han-lab/gan-compression
  ``models/modules/resnet_architecture/mobile_resnet_generator.py`` ``MobileResnetBlock``.
  ``conv_block``: [pad, SeparableConv2d(dim, dim, 3), norm(dim), ReLU, Dropout(dropout_rate),
  pad, SeparableConv2d(dim, dim, 3), norm(dim)]. The Dropout is ALWAYS present (even at rate 0),
  so with reflect padding the separable convs sit at ``conv_block.1`` and ``conv_block.6``.
  ``use_bias`` is accepted but not passed on (upstream does the same).
  """

  def __init__(self, dim: int, padding_type: str, norm_layer, dropout_rate: float,
               use_bias: bool):
    super().__init__()
    layers: list[nn.Module] = []
    pads, p = _pad_layers(padding_type)
    layers += pads
    layers += [SeparableConv2d(dim, dim, kernel_size=3, padding=p, stride=1), norm_layer(dim),
               nn.ReLU(True)]
    layers += [nn.Dropout(dropout_rate)]
    pads, p = _pad_layers(padding_type)
    layers += pads
    layers += [SeparableConv2d(dim, dim, kernel_size=3, padding=p, stride=1), norm_layer(dim)]
    self.conv_block = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv_block(x)


class MobileResnetGenerator(nn.Module):
  """GAN Compression's mobile ResNet generator (the full-width "student" before channel
  pruning).

  Upstream: mit-han-lab/gan-compression
  ``models/modules/resnet_architecture/mobile_resnet_generator.py`` ``MobileResnetGenerator``.
  Same layout as the CycleGAN ResnetGenerator with the blocks replaced by
  ``MobileResnetBlock``; default norm InstanceNorm. ``forward`` does NOT clamp the input (the
  clamp is commented out upstream).
  """

  def __init__(self, input_nc: int, output_nc: int, ngf: int, norm_layer=nn.InstanceNorm2d,
               dropout_rate: float = 0, n_blocks: int = 9, padding_type: str = "reflect"):
    assert n_blocks >= 0
    super().__init__()
    use_bias = _uses_bias(norm_layer)
    model: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
        norm_layer(ngf),
        nn.ReLU(True),
    ]
    n_downsampling = 2
    for i in range(n_downsampling):
      mult = 2**i
      model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1,
                          bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True)]
    mult = 2**n_downsampling
    # Upstream builds the blocks in three groups (n//3, n//3, rest); all are identical.
    for _ in range(n_blocks):
      model += [MobileResnetBlock(ngf * mult, padding_type=padding_type, norm_layer=norm_layer,
                                  dropout_rate=dropout_rate, use_bias=use_bias)]
    for i in range(n_downsampling):
      mult = 2**(n_downsampling - i)
      model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2,
                                   padding=1, output_padding=1, bias=use_bias),
                norm_layer(int(ngf * mult / 2)),
                nn.ReLU(True)]
    model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0),
              nn.Tanh()]
    self.model = nn.Sequential(*model)

  def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    return self.model(input)


class SubMobileResnetBlock(nn.Module):
  """Residual block of the pruned (sub) mobile generator, with a bottleneck width ``oc``.

  Upstream: mit-han-lab/gan-compression
  ``models/modules/resnet_architecture/sub_mobile_resnet_generator.py`` ``MobileResnetBlock``.
  ``conv_block``: [pad, SeparableConv2d(ic, oc, 3), norm(oc), ReLU, Dropout(dropout_rate), pad,
  SeparableConv2d(oc, ic, 3), norm(oc)] (the last norm is declared with ``oc`` features although
  it sees ``ic`` channels; harmless with parameter-free InstanceNorm, as upstream).
  """

  def __init__(self, ic: int, oc: int, padding_type: str, norm_layer, dropout_rate: float,
               use_bias: bool):
    super().__init__()
    layers: list[nn.Module] = []
    pads, p = _pad_layers(padding_type)
    layers += pads
    layers += [SeparableConv2d(ic, oc, kernel_size=3, padding=p, stride=1), norm_layer(oc),
               nn.ReLU(True)]
    layers += [nn.Dropout(dropout_rate)]
    pads, p = _pad_layers(padding_type)
    layers += pads
    layers += [SeparableConv2d(oc, ic, kernel_size=3, padding=p, stride=1), norm_layer(oc)]
    self.conv_block = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv_block(x)


class SubMobileResnetGenerator(nn.Module):
  """GAN Compression's compressed (channel-pruned) mobile ResNet generator.

  Upstream: mit-han-lab/gan-compression
  ``models/modules/resnet_architecture/sub_mobile_resnet_generator.py``
  ``SubMobileResnetGenerator``. ``config['channels']`` (8 entries, e.g. the released
  horse2zebra ``16_16_32_16_32_32_16_16``; or 6 entries) maps to layers as:

  * ``c[0]``: stem conv7x7 output.
  * downsampling i (mult 2**i): Conv2d(c[i] * mult, c[i+1] * mult * 2), i.e. outputs
    ``2 c[1]`` and ``4 c[2]``.
  * block i of n_blocks: ``SubMobileResnetBlock(4 c[2], 4 c[3 + off])`` with ``off = i // 3``
    for an 8-entry config (blocks 0-2 use c[3], 3-5 c[4], 6-8 c[5]) and ``off = 0`` for 6
    entries.
  * upsampling i (mult 2**(2-i), offset 6 for 8 entries, 4 for 6): ConvTranspose2d(ic * mult,
    c[off + i] * mult / 2) where ic starts as c[2] and becomes c[off + i]; outputs ``2 c[6]``
    and ``c[7]``.
  * final conv7x7(c[7], output_nc) with bias, Tanh.

  ``forward`` clamps the input to [-1, 1] before the network (upstream does).
  """

  def __init__(self, input_nc: int, output_nc: int, config: Mapping[str, Any],
               norm_layer=nn.BatchNorm2d, dropout_rate: float = 0, n_blocks: int = 9,
               padding_type: str = "reflect"):
    assert n_blocks >= 0
    super().__init__()
    channels = list(config["channels"])
    use_bias = _uses_bias(norm_layer)
    model: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(input_nc, channels[0], kernel_size=7, padding=0, bias=use_bias),
        norm_layer(channels[0]),
        nn.ReLU(True),
    ]
    n_downsampling = 2
    for i in range(n_downsampling):
      mult = 2**i
      ic, oc = channels[i], channels[i + 1]
      # Upstream declares this norm with ic * mult * 2 features (equal to the conv output only
      # when ic == oc); kept as is, it has no parameters with InstanceNorm.
      model += [nn.Conv2d(ic * mult, oc * mult * 2, kernel_size=3, stride=2, padding=1,
                          bias=use_bias),
                norm_layer(ic * mult * 2),
                nn.ReLU(True)]
    mult = 2**n_downsampling
    ic = channels[2]
    for i in range(n_blocks):
      offset = 0 if len(channels) == 6 else i // 3
      oc = channels[offset + 3]
      model += [SubMobileResnetBlock(ic * mult, oc * mult, padding_type=padding_type,
                                     norm_layer=norm_layer, dropout_rate=dropout_rate,
                                     use_bias=use_bias)]
    offset = 4 if len(channels) == 6 else 6
    for i in range(n_downsampling):
      oc = channels[offset + i]
      mult = 2**(n_downsampling - i)
      model += [nn.ConvTranspose2d(ic * mult, int(oc * mult / 2), kernel_size=3, stride=2,
                                   padding=1, output_padding=1, bias=use_bias),
                norm_layer(int(oc * mult / 2)),
                nn.ReLU(True)]
      ic = oc
    model += [nn.ReflectionPad2d(3), nn.Conv2d(ic, output_nc, kernel_size=7, padding=0),
              nn.Tanh()]
    self.model = nn.Sequential(*model)

  def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    input = input.clamp(-1, 1)
    return self.model(input)


# --------------------------------------------------------------------------------------------
# DCGAN and MNIST MLP GAN
# --------------------------------------------------------------------------------------------


class DCGANGenerator(nn.Module):
  """DCGAN generator of the PyTorch DCGAN tutorial, 64x64 output.

  Upstream: chien-liu/DCGAN-PyTorch ``gan_face_generate/models.py`` ``Generator``.
  ``main``: ConvT(nz, 8 ngf, 4, 1, 0), BN, ReLU, ConvT(8 ngf, 4 ngf, 4, 2, 1), BN, ReLU,
  ConvT(4 ngf, 2 ngf, 4, 2, 1), BN, ReLU, ConvT(2 ngf, ngf, 4, 2, 1), BN, ReLU,
  ConvT(ngf, nc, 4, 2, 1), Tanh; no conv has a bias. Input ``[N, nz, 1, 1]``, output
  ``[N, nc, 64, 64]``.
  """

  def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
    super().__init__()
    self.main = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 4),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
        nn.Tanh(),
    )

  def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    return self.main(input)


class DCGANDiscriminator(nn.Module):
  """MNIST DCGAN discriminator.

  Upstream: csinva/gan-vae-pretrained-pytorch ``mnist_dcgan/dcgan.py`` ``Discriminator``
  (trained with ``--imageSize 28``). ``main``: Conv(nc, ndf, 4, 2, 1), LeakyReLU(0.2),
  Conv(ndf, 2 ndf, 4, 2, 1), BN, LeakyReLU(0.2), Conv(2 ndf, 4 ndf, 4, 2, 1), BN,
  LeakyReLU(0.2), Conv(4 ndf, 1, 4, 2, 1), Sigmoid; no conv bias. A 28x28 input shrinks
  28 -> 14 -> 7 -> 3 -> 1, so ``forward``'s ``output.view(-1, 1).squeeze(1)`` gives one
  probability per image, shape ``[N]`` (other sizes would give several per image).
  """

  def __init__(self, nc: int = 1, ndf: int = 64):
    super().__init__()
    self.main = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, 1, 4, 2, 1, bias=False),
        nn.Sigmoid(),
    )

  def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    output = self.main(input)
    return output.view(-1, 1).squeeze(1)


def mlp_generator(latent_size: int = 64, hidden_size: int = 256,
                  image_size: int = 784) -> nn.Sequential:
  """MNIST MLP generator ``G``: Linear(64, 256), ReLU, Linear(256, 256), ReLU,
  Linear(256, 784), Tanh. Output ``[N, 784]``, a row-major 28x28 image in [-1, 1].

  Upstream: csinva/gan-vae-pretrained-pytorch ``mnist/gan_mnist.py`` (weights in
  ``mnist_gan_mlp/weights/G--300.ckpt``); keys ``0.*``, ``2.*``, ``4.*``.
  """
  return nn.Sequential(
      nn.Linear(latent_size, hidden_size), nn.ReLU(),
      nn.Linear(hidden_size, hidden_size), nn.ReLU(),
      nn.Linear(hidden_size, image_size), nn.Tanh())


def mlp_discriminator(image_size: int = 784, hidden_size: int = 256) -> nn.Sequential:
  """MNIST MLP discriminator ``D``: Linear(784, 256), LeakyReLU(0.2), Linear(256, 256),
  LeakyReLU(0.2), Linear(256, 1), Sigmoid. Input ``[N, 784]`` (row-major 28x28 in [-1, 1]),
  output ``[N, 1]``.

  Upstream: csinva/gan-vae-pretrained-pytorch ``mnist/gan_mnist.py`` (weights in
  ``mnist_gan_mlp/weights/D--300.ckpt``).
  """
  return nn.Sequential(
      nn.Linear(image_size, hidden_size), nn.LeakyReLU(0.2),
      nn.Linear(hidden_size, hidden_size), nn.LeakyReLU(0.2),
      nn.Linear(hidden_size, 1), nn.Sigmoid())


# --------------------------------------------------------------------------------------------
# Building references from state dicts
# --------------------------------------------------------------------------------------------


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
  """Loads a checkpoint with ``weights_only=True`` and unwraps ``{'netG_state_dict': ...}``
  style containers (the DigiFace DCGAN ``weights.tar``)."""
  obj = torch.load(str(path), map_location="cpu", weights_only=True)
  return unwrap_state_dict(obj)


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
  """Returns the tensor mapping inside a checkpoint container (``*state_dict*`` or
  ``state_dict`` key), or the object itself when it already is one."""
  if isinstance(obj, Mapping) and obj and not all(
      isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values()):
    keys = [k for k in obj if "state_dict" in str(k)]
    if len(keys) != 1:
      raise ValueError(f"cannot find the state dict among keys {sorted(map(str, obj))}")
    return dict(obj[keys[0]])
  return dict(obj)


def _as_tensors(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
  return {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)))
          for k, v in state_dict.items()}


def _block_indices(sd: Mapping[str, Any]) -> list[int]:
  return sorted({int(m.group(1)) for k in sd
                 for m in [re.match(r"model\.(\d+)\.conv_block\.", k)] if m})


def _padding_type(sd: Mapping[str, Any], first_block: int) -> str:
  """``zero`` padding drops the pad layers, so the first conv is ``conv_block.0``; reflect and
  replicate leave identical keys (reflect, the default, is assumed)."""
  return "zero" if any(k.startswith(f"model.{first_block}.conv_block.0.") for k in sd) \
      else "reflect"


def _resnet_common(sd: Mapping[str, Any]) -> dict[str, Any]:
  blocks = _block_indices(sd)
  if not blocks:
    raise ValueError("no ResNet blocks (model.N.conv_block.*) in the state dict")
  norm = "batch" if "model.2.running_mean" in sd else "instance"
  last = max(int(k.split(".")[1]) for k in sd if re.match(r"model\.\d+\.weight$", k))
  return dict(blocks=blocks, norm=norm, input_nc=int(sd["model.1.weight"].shape[1]),
              output_nc=int(sd[f"model.{last}.weight"].shape[0]),
              padding_type=_padding_type(sd, blocks[0]))


def build_reference(arch: str, state_dict: Mapping[str, Any]) -> nn.Module:
  """Builds the upstream-structured reference for ``arch``, reading every width from the
  tensor shapes of ``state_dict``, loads it with ``strict=True`` and returns it in eval mode.

  Args:
    arch: one of ``ARCHS``.
    state_dict: mapping of upstream key names to torch tensors or numpy arrays (a
      ``{'netG_state_dict': ...}`` container is unwrapped).

  Raises:
    ValueError: unknown arch or shapes that do not fit it; RuntimeError from
      ``load_state_dict`` when the keys do not match exactly.
  """
  sd = _as_tensors(unwrap_state_dict(state_dict))
  if arch == "resnet_generator":
    c = _resnet_common(sd)
    first = c["blocks"][0]
    # The two convs of a block (4-D weights; BatchNorm weights are 1-D) are 4 layers apart
    # (conv, norm, relu, pad, conv; zero padding: conv, norm, relu, conv is 3) without dropout
    # and one more with the Dropout(0.5) layer.
    conv_idx = sorted(int(m.group(1)) for k in sd for m in
                      [re.match(rf"model\.{first}\.conv_block\.(\d+)\.weight$", k)]
                      if m and sd[k].ndim == 4)
    gap = conv_idx[1] - conv_idx[0]
    use_dropout = gap == (4 if c["padding_type"] == "zero" else 5)
    net = ResnetGenerator(c["input_nc"], c["output_nc"], ngf=int(sd["model.1.weight"].shape[0]),
                          norm_layer=get_norm_layer(c["norm"]), use_dropout=use_dropout,
                          n_blocks=len(c["blocks"]), padding_type=c["padding_type"])
  elif arch == "mobile_resnet_generator":
    c = _resnet_common(sd)
    net = MobileResnetGenerator(c["input_nc"], c["output_nc"],
                                ngf=int(sd["model.1.weight"].shape[0]),
                                norm_layer=get_norm_layer(c["norm"]),
                                n_blocks=len(c["blocks"]), padding_type=c["padding_type"])
  elif arch == "sub_mobile_resnet_generator":
    c = _resnet_common(sd)
    config = sub_mobile_config_from_state_dict(sd)
    net = SubMobileResnetGenerator(c["input_nc"], c["output_nc"], {"channels": config},
                                   norm_layer=get_norm_layer(c["norm"]),
                                   n_blocks=len(c["blocks"]), padding_type=c["padding_type"])
  elif arch == "dcgan_generator":
    w0 = sd["main.0.weight"]
    net = DCGANGenerator(nz=int(w0.shape[0]), ngf=int(w0.shape[1]) // 8,
                         nc=int(sd["main.12.weight"].shape[1]))
  elif arch == "dcgan_discriminator":
    w0 = sd["main.0.weight"]
    net = DCGANDiscriminator(nc=int(w0.shape[1]), ndf=int(w0.shape[0]))
  elif arch == "mlp_generator":
    net = mlp_generator(latent_size=int(sd["0.weight"].shape[1]),
                        hidden_size=int(sd["0.weight"].shape[0]),
                        image_size=int(sd["4.weight"].shape[0]))
  elif arch == "mlp_discriminator":
    net = mlp_discriminator(image_size=int(sd["0.weight"].shape[1]),
                            hidden_size=int(sd["0.weight"].shape[0]))
  else:
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
  net.load_state_dict(sd, strict=True)
  return net.eval()


def sub_mobile_config_from_state_dict(sd: Mapping[str, Any]) -> list[int]:
  """Recovers GAN Compression's ``config['channels']`` (8 entries) from tensor shapes.

  Inverse of the mapping documented in ``SubMobileResnetGenerator``: ``c[0]`` = stem output,
  ``c[1]`` = first down conv output / 2, ``c[2]`` = second down conv output / 4,
  ``c[3 + g]`` = bottleneck width / 4 of block group g (blocks 3g..3g+2), ``c[6]`` = first up
  conv output / 2, ``c[7]`` = second up conv output.
  """
  blocks = _block_indices(sd)
  first = blocks[0]
  # Stem conv at model.1, down convs at model.4 and model.7 (pad, conv, norm, relu layout).
  c0 = int(sd["model.1.weight"].shape[0])
  c1 = int(sd["model.4.weight"].shape[0]) // 2
  c2 = int(sd["model.7.weight"].shape[0]) // 4
  hidden = []
  for b in blocks:
    keys = sorted((k for k in sd if re.match(rf"model\.{b}\.conv_block\.\d+\.conv\.2\.weight$",
                                            k)), key=lambda k: int(k.split(".")[3]))
    hidden.append(int(sd[keys[0]].shape[0]) // 4)
  groups = [hidden[i:i + 3] for i in range(0, len(hidden), 3)]
  for g in groups:
    if len(set(g)) != 1:
      raise ValueError(f"bottleneck widths {hidden} do not follow the groups of three")
  if len(groups) > 3:
    raise ValueError("more than 9 blocks with an 8-entry config is not representable")
  mids = [g[0] for g in groups] + [groups[-1][0] if groups else c2] * (3 - len(groups))
  last = blocks[-1]
  up0 = int(sd[f"model.{last + 1}.weight"].shape[1]) // 2
  up1 = int(sd[f"model.{last + 4}.weight"].shape[1])
  return [c0, c1, c2, *mids, up0, up1]


def random_state_dict(arch: str, seed: int = 0, *, ngf: int = 8, n_blocks: int = 9,
                      norm: str = "instance", use_dropout: bool = False, input_nc: int = 3,
                      output_nc: int = 3, padding_type: str = "reflect"
                      ) -> dict[str, torch.Tensor]:
  """Random upstream-keyed state dict for ``resnet_generator`` or ``mobile_resnet_generator``.

  Weights come from PyTorch's default initialisation under ``torch.manual_seed(seed)``;
  every BatchNorm also gets random affine parameters and running statistics (mean ~ N(0, 0.1),
  var ~ U(0.5, 1.5)) so that inference-mode BN is really exercised.
  """
  gen = torch.manual_seed(seed)
  if arch == "resnet_generator":
    net = ResnetGenerator(input_nc, output_nc, ngf=ngf, norm_layer=get_norm_layer(norm),
                          use_dropout=use_dropout, n_blocks=n_blocks, padding_type=padding_type)
  elif arch == "mobile_resnet_generator":
    net = MobileResnetGenerator(input_nc, output_nc, ngf=ngf, norm_layer=get_norm_layer(norm),
                                dropout_rate=0.5 if use_dropout else 0.0, n_blocks=n_blocks,
                                padding_type=padding_type)
  else:
    raise ValueError(f"random_state_dict supports resnet_generator and "
                     f"mobile_resnet_generator, got {arch!r}")
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        m.num_batches_tracked.fill_(100)
  return {k: v.detach().clone() for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------------------------
# PatchGAN discriminator (pix2pix / CycleGAN)
# --------------------------------------------------------------------------------------------


def patchgan_norm_layer(norm_type: str):
  """``get_norm_layer`` of junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``,
  including its ``"none"``: a factory returning an ``Identity`` (no parameters; the layer still
  takes a ``Sequential`` index)."""
  if norm_type == "none":
    return lambda num_features: nn.Identity()
  return get_norm_layer(norm_type)


class NLayerDiscriminator(nn.Module):
  """PatchGAN discriminator.

  Upstream: junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``
  ``NLayerDiscriminator(input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d)``.
  ``model``: Conv(input_nc, ndf, 4, 2, 1) (bias), LeakyReLU(0.2); for n = 1 .. n_layers - 1:
  Conv(ndf * min(2**(n-1), 8), ndf * min(2**n, 8), 4, 2, 1, bias=use_bias), norm,
  LeakyReLU(0.2); Conv(., ndf * min(2**n_layers, 8), 4, 1, 1, bias=use_bias), norm,
  LeakyReLU(0.2); Conv(., 1, 4, 1, 1) (bias). ``use_bias`` is True only for an InstanceNorm2d
  factory (upstream's test; the "none" lambda gives False). No sigmoid.
  """

  def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3,
               norm_layer=nn.BatchNorm2d):
    super().__init__()
    use_bias = _uses_bias(norm_layer)
    kw, padw = 4, 1
    sequence: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2,
                                           padding=padw),
                                 nn.LeakyReLU(0.2, True)]
    mult, prev = 1, 1
    for n in range(1, n_layers):
      prev, mult = mult, min(2**n, 8)
      sequence += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=2, padding=padw,
                             bias=use_bias),
                   norm_layer(ndf * mult),
                   nn.LeakyReLU(0.2, True)]
    prev, mult = mult, min(2**n_layers, 8)
    sequence += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=1, padding=padw,
                           bias=use_bias),
                 norm_layer(ndf * mult),
                 nn.LeakyReLU(0.2, True)]
    sequence += [nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw)]
    self.model = nn.Sequential(*sequence)

  def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    return self.model(input)


def random_patchgan(seed: int = 0, *, input_nc: int = 3, ndf: int = 16, n_layers: int = 3,
                    norm: str = "batch") -> NLayerDiscriminator:
  """An ``NLayerDiscriminator`` with PyTorch's default initialisation under
  ``torch.manual_seed(seed)``, every BatchNorm given random affine parameters and running
  statistics (mean ~ N(0, 0.1), var ~ U(0.5, 1.5)); in eval mode."""
  gen = torch.manual_seed(seed)
  net = NLayerDiscriminator(input_nc, ndf=ndf, n_layers=n_layers,
                            norm_layer=patchgan_norm_layer(norm))
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        m.num_batches_tracked.fill_(100)
  return net.eval()
