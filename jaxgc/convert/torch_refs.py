"""PyTorch reference generators for parity checks: pytorch-CycleGAN-and-pix2pix and the
vintage CycleGAN layout (optional dependency: importing this module needs torch).

Each class keeps the upstream module structure (``nn.Sequential`` indices, attribute names,
in-place activations), so an upstream ``state_dict`` loads with ``strict=True`` and the
forward computes what upstream computes. Only inference behaviour is rebuilt: no weight
initialisation schemes, no training helpers.

Upstream sources (read, then rewritten):

* junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``: ``ResnetGenerator``,
  ``ResnetBlock``, ``UnetGenerator``, ``UnetSkipConnectionBlock``, ``get_norm_layer``.
* PyPI ``vintagify==0.1.2`` ``vintagify/generator.py`` (the generator of
  ``$JAXGC_ASSETS/cyclegan-vintage-resnet9``): the same ResNet generator with
  ``InstanceNorm2d(affine=True)``, biases in every convolution and each residual block's layers
  under ``block`` instead of ``conv_block`` (``jaxgc.convert.mapping.RESNET_LAYOUTS``).

Used by ``scripts/convert_pytorch_cyclegan_pix2pix.py`` and the tests; jaxgc itself never
imports it.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

try:
  import torch
  from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
  raise ImportError("jaxgc.convert.torch_refs needs torch: pip install torch==2.13.0 (CPU "
                    "build), or pip install 'jaxgc[torch]'") from e

from jaxgc.convert import mapping

ARCHS = ("resnet_generator", "unet_generator")


def get_norm_layer(norm: str = "instance"):
  """The norm factory of upstream ``get_norm_layer``, plus the vintage generator's.

  Args:
    norm: ``"batch"`` (``BatchNorm2d(affine=True, track_running_stats=True)``), ``"instance"``
      (``InstanceNorm2d(affine=False, track_running_stats=False)``: no keys) or
      ``"instance_affine"`` (``InstanceNorm2d(affine=True)``: ``weight`` and ``bias``, no
      running statistics).

  Raises:
    ValueError: another name.
  """
  if norm == "batch":
    return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
  if norm == "instance":
    return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
  if norm == "instance_affine":
    return functools.partial(nn.InstanceNorm2d, affine=True, track_running_stats=False)
  raise ValueError(f"norm must be 'batch', 'instance' or 'instance_affine', got {norm!r}")


def uses_bias(norm_layer) -> bool:
  """Upstream's rule: convolutions followed by a norm carry a bias only with InstanceNorm.

  Args:
    norm_layer: a norm class or a ``functools.partial`` of one (``get_norm_layer``); anything
      else (PatchGAN's ``"none"`` factory) counts as no InstanceNorm.
  """
  return getattr(norm_layer, "func", norm_layer) is nn.InstanceNorm2d


def pad_layers(padding_type: str, amount: int = 1) -> tuple[list[nn.Module], int]:
  """(explicit padding layers, the convolution's own zero padding) for ``padding_type``."""
  if padding_type == "reflect":
    return [nn.ReflectionPad2d(amount)], 0
  if padding_type == "replicate":
    return [nn.ReplicationPad2d(amount)], 0
  if padding_type == "zero":
    return [], amount
  raise ValueError(f"padding_type must be reflect, replicate or zero, got {padding_type!r}")


class ResnetBlock(nn.Module):
  """``x + seq(x)``, ``seq`` = [pad, conv3x3, norm, ReLU, (Dropout(0.5)), pad, conv3x3, norm],
  stored under the attribute ``attr`` (``conv_block`` upstream, ``block`` in the vintage
  layout)."""

  def __init__(self, dim: int, padding_type: str, norm_layer, use_dropout: bool,
               use_bias: bool, attr: str = "conv_block"):
    super().__init__()
    pads, p = pad_layers(padding_type)
    seq = pads + [nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim),
                  nn.ReLU(True)]
    if use_dropout:
      seq.append(nn.Dropout(0.5))
    pads, p = pad_layers(padding_type)
    seq += pads + [nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim)]
    self.attr = attr
    setattr(self, attr, nn.Sequential(*seq))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + getattr(self, self.attr)(x)


class ResnetGenerator(nn.Module):
  """CycleGAN ResNet generator (``model``: pad, conv7x7, norm, ReLU; two stride-2 conv3x3
  with norm and ReLU; ``n_blocks`` residual blocks at ``4 ngf``; two ConvTranspose2d(3, 2,
  padding 1, output_padding 1) with norm and ReLU; pad, conv7x7 (bias), Tanh). No input clamp.

  ``layout`` is a ``jaxgc.convert.mapping.RESNET_LAYOUTS`` name: it sets the residual blocks'
  attribute; the vintage generator is ``layout="vintage"`` with ``norm="instance_affine"``.
  """

  def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64,
               norm: str = "instance", use_dropout: bool = False, n_blocks: int = 9,
               padding_type: str = "reflect", layout: str = "cyclegan"):
    super().__init__()
    norm_layer = get_norm_layer(norm)
    use_bias = uses_bias(norm_layer)
    attr = mapping.RESNET_LAYOUTS[layout][0]
    model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_layer(ngf),
             nn.ReLU(True)]
    for i in range(2):
      c = ngf * 2**i
      model += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(2 * c), nn.ReLU(True)]
    model += [ResnetBlock(4 * ngf, padding_type, norm_layer, use_dropout, use_bias, attr)
              for _ in range(n_blocks)]
    for i in range(2):
      c = ngf * 2**(2 - i)
      model += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1,
                                   bias=use_bias),
                norm_layer(c // 2), nn.ReLU(True)]
    model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    self.model = nn.Sequential(*model)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
  """One level of the U-Net: ``model`` = [LeakyReLU(0.2, in place), down conv4x4/2, norm,
  next block, ReLU(in place), up ConvTranspose4x4/2, norm, (Dropout(0.5))]; the outermost
  block drops the LeakyReLU and both norms and ends in Tanh, the innermost has no next block
  and no down norm. ``forward`` returns ``cat([x, model(x)], 1)`` (outermost: ``model(x)``),
  where the in-place LeakyReLU has already turned ``x`` into ``leaky_relu(x)``."""

  def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
               submodule: nn.Module | None = None, outermost: bool = False,
               innermost: bool = False, norm_layer=None, use_dropout: bool = False):
    super().__init__()
    self.outermost = outermost
    use_bias = uses_bias(norm_layer)
    input_nc = outer_nc if input_nc is None else input_nc
    downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
    if outermost:
      seq = [downconv, submodule, nn.ReLU(True),
             nn.ConvTranspose2d(2 * inner_nc, outer_nc, 4, stride=2, padding=1), nn.Tanh()]
    elif innermost:
      seq = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True),
             nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias),
             norm_layer(outer_nc)]
    else:
      seq = [nn.LeakyReLU(0.2, True), downconv, norm_layer(inner_nc), submodule, nn.ReLU(True),
             nn.ConvTranspose2d(2 * inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias),
             norm_layer(outer_nc)]
      if use_dropout:
        seq.append(nn.Dropout(0.5))
    self.model = nn.Sequential(*seq)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.outermost:
      return self.model(x)
    return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
  """pix2pix U-Net: ``num_downs`` nested ``UnetSkipConnectionBlock``s, widths ``ngf * min(2**i,
  8)`` at level ``i``; dropout (``use_dropout``) in the ``num_downs - 5`` middle blocks."""

  def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
               norm: str = "batch", use_dropout: bool = False):
    super().__init__()
    norm_layer = get_norm_layer(norm)
    block = UnetSkipConnectionBlock(8 * ngf, 8 * ngf, innermost=True, norm_layer=norm_layer)
    for _ in range(num_downs - 5):
      block = UnetSkipConnectionBlock(8 * ngf, 8 * ngf, submodule=block, norm_layer=norm_layer,
                                      use_dropout=use_dropout)
    for mult in (4, 2, 1):
      block = UnetSkipConnectionBlock(mult * ngf, 2 * mult * ngf, submodule=block,
                                      norm_layer=norm_layer)
    self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                         outermost=True, norm_layer=norm_layer)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.model(x)


def _as_tensors(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
  return {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
          for k, v in state_dict.items()}


def build_reference(state_dict: Mapping[str, Any], arch: str | None = None,
                    use_dropout: bool = False) -> nn.Module:
  """The reference network of a state_dict, loaded with ``strict=True``, in eval mode.

  Args:
    state_dict: ``{upstream key: tensor or array}`` (unwrapped, no ``module.`` prefix).
    arch: ``"resnet_generator"`` (any ``RESNET_LAYOUTS`` layout, reflect padding) or
      ``"unet_generator"``; None infers it from the keys (``jaxgc.convert.infer_arch``).
    use_dropout: build the dropout layers (U-Net; key names do not show them). For the ResNet
      generator they are read from the keys.

  Returns:
    The ``torch.nn.Module`` in eval mode, float32.

  Raises:
    ValueError: an architecture without a reference here.
    RuntimeError: ``load_state_dict`` found keys or shapes that do not fit.
  """
  sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  arch = arch or mapping.infer_arch({k: np.asarray(v) for k, v in sd.items()})
  kw = mapping.infer_kwargs(arch, {k: np.asarray(v) for k, v in sd.items()})
  if arch == "resnet_generator":
    layout = mapping.resnet_layout(sd) or "cyclegan"
    attr = mapping.RESNET_LAYOUTS[layout][0]
    dropout = f"model.10.{attr}.6.weight" in sd and np.ndim(sd[f"model.10.{attr}.6.weight"]) == 4
    net = ResnetGenerator(kw["input_nc"], kw["output_nc"], kw["ngf"], kw["norm"], dropout,
                          kw["n_blocks"], layout=layout)
  elif arch == "unet_generator":
    net = UnetGenerator(kw["input_nc"], kw["output_nc"], kw["num_downs"], kw["ngf"], kw["norm"],
                        use_dropout)
  else:
    raise ValueError(f"no PyTorch reference for arch {arch!r}; expected one of {ARCHS}")
  return load_checked(net, sd, arch)


def load_checked(net: nn.Module, state_dict: Mapping[str, Any], arch: str) -> nn.Module:
  """Loads ``state_dict`` into ``net`` and returns it in eval mode; every key must match,
  except ``num_batches_tracked`` counters, which may be absent (``jaxgc.convert`` drops them).

  Raises:
    RuntimeError: missing or unexpected keys (naming the first three of each), or shapes that
      do not fit.
  """
  sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  want = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
  missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want)
  if missing or unexpected:
    raise RuntimeError(f"state_dict does not fit the {arch} reference: missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]}")
  net.load_state_dict(_as_tensors(sd), strict=False)  # num_batches_tracked may be absent
  return net.eval()


def randomize_norms(net: nn.Module, seed: int) -> nn.Module:
  """Gives every affine norm random parameters (weight ~ 1 + N(0, 0.1), bias ~ N(0, 0.1)) and
  every BatchNorm random running statistics (mean ~ N(0, 0.1), var ~ U(0.5, 1.5)), so that
  parity checks exercise them; returns ``net``."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
        m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
  return net


def random_generator(arch: str, seed: int = 0, **kwargs: Any) -> nn.Module:
  """A reference generator with PyTorch's default initialisation under ``seed`` and random
  norms (``randomize_norms``), in eval mode.

  Args:
    arch: ``"resnet_generator"`` or ``"unet_generator"``.
    seed: seeds ``torch.manual_seed``.
    **kwargs: constructor arguments of ``ResnetGenerator`` / ``UnetGenerator``.

  Raises:
    ValueError: another arch.
  """
  torch.manual_seed(seed)
  if arch == "resnet_generator":
    net = ResnetGenerator(**kwargs)
  elif arch == "unet_generator":
    net = UnetGenerator(**kwargs)
  else:
    raise ValueError(f"no PyTorch reference for arch {arch!r}; expected one of {ARCHS}")
  return randomize_norms(net, seed).eval()


def forward_nhwc(net: nn.Module, x: np.ndarray) -> np.ndarray:
  """Runs ``net`` on NHWC float32 images, without gradients; returns NHWC numpy float32.

  Args:
    net: a reference generator.
    x: ``[batch, height, width, channels]`` float32.
  """
  with torch.no_grad():
    y = net(torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)), np.float32)))
  return np.ascontiguousarray(np.transpose(y.numpy(), (0, 2, 3, 1)))



def parity(y: np.ndarray, state_dict: Mapping[str, Any], x: np.ndarray,
           arch: str | None = None) -> float:
  """Max abs difference between a converted generator's outputs and its PyTorch reference's.

  Args:
    y: the converted generator's outputs for ``x`` (``module.apply(variables, x)``),
      ``[batch, height, width, output_nc]`` float32.
    state_dict: the PyTorch state_dict it was converted from.
    x: ``[batch, height, width, input_nc]`` float32 images in [-1, 1] (sides multiples of 4,
      of ``2**num_downs`` for a U-Net).
    arch: the reference's architecture; None infers it from the keys.

  Returns:
    ``max |y - reference(x)|`` over every output value (outputs in [-1, 1]; the tests hold
    1e-4).

  Raises:
    ValueError: ``y`` and the reference's output differ in shape; as ``build_reference``.
    RuntimeError: as ``build_reference``.
  """
  return max_abs_diff(y, forward_nhwc(build_reference(state_dict, arch), x))


def max_abs_diff(y: Any, y_ref: np.ndarray) -> float:
  """``max |y - y_ref|`` in float64 over outputs of the same shape (any, float32).

  Raises:
    ValueError: the shapes differ (naming both).
  """
  y = np.asarray(y)
  if y.shape != y_ref.shape:
    raise ValueError(f"outputs of shape {y.shape}, the PyTorch reference's {y_ref.shape}")
  return float(np.max(np.abs(y.astype(np.float64) - y_ref.astype(np.float64))))
