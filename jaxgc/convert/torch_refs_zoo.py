"""PyTorch reference networks for parity checks: GAN Compression's mobile ResNet generators,
the DCGAN tutorial generator, csinva's MNIST GANs and LeNet-5, the PatchGAN discriminator
(optional dependency: importing this module needs torch).

Each class keeps the upstream module structure (``nn.Sequential`` indices included), so a
``state_dict`` saved by the upstream code loads here with every key name identical to upstream.
Only inference behaviour matters here: no weight initialisation schemes, no training helpers.
The CycleGAN / pix2pix generators live in ``jaxgc.convert.torch_refs``, whose helpers this
module shares; ``build_reference`` here covers both modules' architectures.

Upstream sources (read, then rewritten):

* mit-han-lab/gan-compression ``models/modules/mobile_modules.py`` (``SeparableConv2d``),
  ``models/modules/resnet_architecture/mobile_resnet_generator.py`` (``MobileResnetGenerator``,
  ``MobileResnetBlock``) and ``sub_mobile_resnet_generator.py`` (``SubMobileResnetGenerator``
  and its own ``MobileResnetBlock``, here ``SubMobileResnetBlock``).
* chien-liu/DCGAN-PyTorch ``gan_face_generate/models.py`` (``Generator``; the PyTorch DCGAN
  tutorial architecture).
* csinva/gan-vae-pretrained-pytorch ``mnist_dcgan/dcgan.py`` (``Discriminator``),
  ``mnist/gan_mnist.py`` (the ``nn.Sequential`` MLP ``G`` and ``D`` of ``mnist_gan_mlp``) and
  ``mnist_classifier/lenet.py`` (LeNet-5 after activatedgeek/LeNet-5).
* junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py`` (``NLayerDiscriminator``).

Used by the scripts, the tests and the benchmarks; jaxgc itself never imports it.
"""

from __future__ import annotations

import collections
import re
import warnings
from typing import Any, Mapping

import numpy as np

try:
  import torch
  from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
  raise ImportError("jaxgc.convert.torch_refs_zoo needs torch: pip install torch==2.13.0 (CPU "
                    "build), or pip install 'jaxgc[torch]'") from e

from jaxgc.convert import mapping
from jaxgc.convert import torch_io
from jaxgc.convert import torch_refs

ARCHS = (
    "mobile_resnet_generator",
    "sub_mobile_resnet_generator",
    "dcgan_generator",
    "dcgan_discriminator",
    "mlp_generator",
    "mlp_discriminator",
    "lenet5",
)


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
    pads, p = torch_refs.pad_layers(padding_type)
    layers += pads
    layers += [SeparableConv2d(dim, dim, kernel_size=3, padding=p, stride=1), norm_layer(dim),
               nn.ReLU(True)]
    layers += [nn.Dropout(dropout_rate)]
    pads, p = torch_refs.pad_layers(padding_type)
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
    use_bias = torch_refs.uses_bias(norm_layer)
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
    pads, p = torch_refs.pad_layers(padding_type)
    layers += pads
    layers += [SeparableConv2d(ic, oc, kernel_size=3, padding=p, stride=1), norm_layer(oc),
               nn.ReLU(True)]
    layers += [nn.Dropout(dropout_rate)]
    pads, p = torch_refs.pad_layers(padding_type)
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
    use_bias = torch_refs.uses_bias(norm_layer)
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
# DCGAN, MNIST MLP GAN, LeNet-5
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


class LeNet5(nn.Module):
  """LeNet-5 MNIST classifier.

  Upstream: csinva/gan-vae-pretrained-pytorch ``mnist_classifier/lenet.py`` (after
  activatedgeek/LeNet-5). ``convnet``: c1 Conv(1, 6, 5), ReLU, s2 MaxPool(2), c3 Conv(6, 16, 5),
  ReLU, s4 MaxPool(2), c5 Conv(16, 120, 5), ReLU; ``fc``: f6 Linear(120, 84), ReLU,
  f7 Linear(84, 10), LogSoftmax. Input ``[N, 1, 32, 32]`` in [0, 1], output ``[N, 10]``
  log-probabilities.
  """

  def __init__(self):
    super().__init__()
    self.convnet = nn.Sequential(collections.OrderedDict([
        ("c1", nn.Conv2d(1, 6, 5)), ("relu1", nn.ReLU()), ("s2", nn.MaxPool2d(2, 2)),
        ("c3", nn.Conv2d(6, 16, 5)), ("relu3", nn.ReLU()), ("s4", nn.MaxPool2d(2, 2)),
        ("c5", nn.Conv2d(16, 120, 5)), ("relu5", nn.ReLU())]))
    self.fc = nn.Sequential(collections.OrderedDict([
        ("f6", nn.Linear(120, 84)), ("relu6", nn.ReLU()), ("f7", nn.Linear(84, 10)),
        ("sig7", nn.LogSoftmax(dim=-1))]))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc(self.convnet(x).reshape(len(x), -1))


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


def load_state_dict_file(path) -> dict[str, np.ndarray]:
  """A checkpoint's state_dict, read without executing pickled code and unwrapped
  (``{'netG_state_dict': ...}`` of the DigiFace DCGAN ``weights.tar``, ``module.`` prefixes);
  ``jaxgc.convert.read_torch_file`` then ``unwrap_state_dict``.

  Raises:
    FileNotFoundError, CheckpointError: as ``jaxgc.convert.read_torch_file``.
  """
  return torch_io.unwrap_state_dict(torch_io.read_torch_file(path), str(path))


def _block_indices(sd: Mapping[str, Any]) -> list[int]:
  return sorted({int(m.group(1)) for k in sd
                 for m in [re.match(r"model\.(\d+)\.conv_block\.", k)] if m})


def _resnet_common(sd: Mapping[str, Any]) -> dict[str, Any]:
  """Constructor arguments shared by the mobile generators (reflect padding, as jaxgc)."""
  kw = mapping.infer_kwargs("mobile_resnet_generator", sd)
  return dict(input_nc=kw["input_nc"], output_nc=kw["output_nc"],
              n_blocks=len(_block_indices(sd)), norm_layer=torch_refs.get_norm_layer(kw["norm"]))


def build_reference(state_dict: Mapping[str, Any], arch: str | None = None) -> nn.Module:
  """The upstream-structured reference of a state_dict, every width read from its tensor
  shapes, loaded (``torch_refs.load_checked``) and in eval mode.

  Args:
    state_dict: ``{upstream key: torch tensor or numpy array}`` (unwrapped, no ``module.``
      prefix; ``num_batches_tracked`` may be absent).
    arch: one of ``ARCHS`` or of ``jaxgc.convert.torch_refs.ARCHS`` (built there); None infers
      it from the keys (``jaxgc.convert.infer_arch``).

  Raises:
    ValueError: an architecture without a reference; RuntimeError: keys or shapes that do not
      fit it.
  """
  sd = {k: np.asarray(v) if not isinstance(v, torch.Tensor) else v.detach().numpy()
        for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  arch = arch or mapping.infer_arch(sd)
  if arch in torch_refs.ARCHS:
    return torch_refs.build_reference(sd, arch)
  if arch == "mobile_resnet_generator":
    c = _resnet_common(sd)
    net = MobileResnetGenerator(ngf=int(sd["model.1.weight"].shape[0]), **c)
  elif arch == "sub_mobile_resnet_generator":
    c = _resnet_common(sd)
    net = SubMobileResnetGenerator(config={"channels": sub_mobile_config_from_state_dict(sd)},
                                   **c)
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
  elif arch == "lenet5":
    net = LeNet5()
  else:
    raise ValueError(f"no PyTorch reference for arch {arch!r}; expected one of "
                     f"{ARCHS + torch_refs.ARCHS}")
  return torch_refs.load_checked(net, sd, arch)


def sub_mobile_config_from_state_dict(sd: Mapping[str, Any]) -> list[int]:
  """Recovers GAN Compression's ``config['channels']`` (8 entries) from tensor shapes.

  Inverse of the mapping documented in ``SubMobileResnetGenerator``: ``c[0]`` = stem output,
  ``c[1]`` = first down conv output / 2, ``c[2]`` = second down conv output / 4,
  ``c[3 + g]`` = bottleneck width / 4 of block group g (blocks 3g..3g+2), ``c[6]`` = first up
  conv output / 2, ``c[7]`` = second up conv output.
  """
  blocks = _block_indices(sd)
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


def _randomize(net: nn.Module, seed: int) -> nn.Module:
  """``torch_refs.randomize_norms`` (random BatchNorm parameters and running statistics)."""
  return torch_refs.randomize_norms(net, seed)


def random_state_dict(arch: str, seed: int = 0, *, ngf: int = 8, n_blocks: int = 9,
                      norm: str = "instance", use_dropout: bool = False, input_nc: int = 3,
                      output_nc: int = 3, padding_type: str = "reflect"
                      ) -> dict[str, torch.Tensor]:
  """Random upstream-keyed state dict for ``resnet_generator`` or ``mobile_resnet_generator``.

  Weights come from PyTorch's default initialisation under ``torch.manual_seed(seed)``; every
  norm gets random parameters and every BatchNorm random running statistics
  (``torch_refs.randomize_norms``), so that inference-mode BN is really exercised.

  Raises:
    ValueError: another arch.
  """
  if arch == "resnet_generator":
    net = torch_refs.random_generator(arch, seed, input_nc=input_nc, output_nc=output_nc,
                                      ngf=ngf, norm=norm, use_dropout=use_dropout,
                                      n_blocks=n_blocks, padding_type=padding_type)
  elif arch == "mobile_resnet_generator":
    torch.manual_seed(seed)
    net = _randomize(MobileResnetGenerator(
        input_nc, output_nc, ngf=ngf, norm_layer=torch_refs.get_norm_layer(norm),
        dropout_rate=0.5 if use_dropout else 0.0, n_blocks=n_blocks,
        padding_type=padding_type), seed)
  else:
    raise ValueError(f"random_state_dict supports resnet_generator and "
                     f"mobile_resnet_generator, got {arch!r}")
  return {k: v.detach().clone() for k, v in net.state_dict().items()}


def forward(net: nn.Module, arch: str, x: np.ndarray) -> np.ndarray:
  """Runs a reference on jaxgc's inputs and returns jaxgc's output layout, without gradients.

  Args:
    net: a reference of ``arch``.
    arch: its architecture (``ARCHS`` or ``torch_refs.ARCHS``).
    x: what the converted jaxgc module takes: latents ``[batch, z_dim]`` for the DCGAN and MLP
      generators, images ``[batch, height, width, channels]`` float32 otherwise.

  Returns:
    What the converted module returns: images ``[batch, height, width, channels]`` for
    generators, ``[batch, 1]`` probabilities for the DCGAN and MLP discriminators (upstream's
    ``[N]`` and ``[N, 784]``-input layouts adapted), ``[batch, 10]`` log-probabilities for
    LeNet-5; float32.
  """
  x = np.ascontiguousarray(x, np.float32)
  if arch == "dcgan_generator":
    xt = torch.from_numpy(x.reshape(len(x), -1, 1, 1))
  elif arch in ("mlp_generator", "mlp_discriminator"):
    xt = torch.from_numpy(x.reshape(len(x), -1))
  else:
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
  with torch.no_grad(), warnings.catch_warnings():
    # SubMobileResnetGenerator declares some InstanceNorms with a num_features that differs
    # from the channels they see (as upstream); PyTorch warns, the result is unaffected.
    warnings.filterwarnings("ignore", message=".*does not match num_features.*")
    y = net(xt).numpy()
  if arch == "mlp_generator":
    return y.reshape(len(x), 28, 28, 1) if y.shape[1] == 784 else y
  if arch == "dcgan_discriminator":
    return y.reshape(len(x), 1)
  if y.ndim == 4:
    return np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1)))
  return y


def parity(y: np.ndarray, state_dict: Mapping[str, Any], x: np.ndarray,
           arch: str | None = None) -> float:
  """Max abs difference between a converted module's outputs ``y`` for ``x`` and its PyTorch
  reference's (``forward``).

  Raises:
    ValueError: the shapes differ; as ``build_reference``.
    RuntimeError: as ``build_reference``.
  """
  arch = arch or mapping.infer_arch({k: np.asarray(v) for k, v in state_dict.items()})
  y_ref = forward(build_reference(state_dict, arch), arch, x)
  y = np.asarray(y)
  if y.shape != y_ref.shape:
    raise ValueError(f"outputs of shape {y.shape}, the PyTorch reference's {y_ref.shape}")
  return float(np.max(np.abs(y.astype(np.float64) - y_ref.astype(np.float64))))


# --------------------------------------------------------------------------------------------
# PatchGAN discriminator (pix2pix / CycleGAN)
# --------------------------------------------------------------------------------------------


def patchgan_norm_layer(norm_type: str):
  """``get_norm_layer`` of junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``,
  including its ``"none"``: a factory returning an ``Identity`` (no parameters; the layer still
  takes a ``Sequential`` index)."""
  if norm_type == "none":
    return lambda num_features: nn.Identity()
  return torch_refs.get_norm_layer(norm_type)


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
    use_bias = torch_refs.uses_bias(norm_layer)
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
  ``torch.manual_seed(seed)``, random norms (``torch_refs.randomize_norms``); in eval mode."""
  torch.manual_seed(seed)
  net = NLayerDiscriminator(input_nc, ndf=ndf, n_layers=n_layers,
                            norm_layer=patchgan_norm_layer(norm))
  return _randomize(net, seed).eval()
