"""PyTorch reference SAGAN for parity checks (optional dependency: importing this needs torch).

Rewritten from heykeetae/Self-Attention-GAN ``sagan_models.py`` (``Self_Attn``, ``Generator``,
``Discriminator``) and ``spectral.py`` (``SpectralNorm``) with the same module structure, key
names and numerics, so an upstream ``state_dict`` loads with ``strict=True`` and the forward
computes what upstream computes: one power iteration on every call, in training and in eval
mode alike. The same networks in the ``torch.nn.utils.spectral_norm`` layout
(``weight_orig``, ``weight_u``, ``weight_v``, as POSTECH-CVLab/PyTorch-StudioGAN's
``snconv2d`` / ``sndeconv2d`` save them, ``eps=1e-6``) use PyTorch's own implementation. The
layouts are the rows of ``jaxgc.convert.mapping.SPECTRAL_LAYOUTS``.

Differences from upstream, none of which changes a key or an output: the attention layers take
the channels they are given (upstream hard-codes 128/64 and 256/512, its values at
``conv_dim=64``), and ``l4`` always exists (upstream builds it only at ``image_size=64``, the
only size whose forward runs). Only inference is rebuilt: no training helpers.

Used by ``scripts/convert_heykeetae_sagan.py``, ``scripts/convert_studiogan.py`` and the tests;
jaxgc itself never imports it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

try:
  import torch
  from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
  raise ImportError("jaxgc.convert.torch_refs_sagan needs torch: pip install torch==2.13.0 "
                    "(CPU build), or pip install 'jaxgc[torch]'") from e

from jaxgc.convert import mapping
from jaxgc.convert import spectral
from jaxgc.convert import torch_refs

ARCHS = mapping.SAGAN_ARCHS
LAYOUTS = tuple(mapping.SPECTRAL_LAYOUTS)


class SpectralNorm(nn.Module):
  """heykeetae ``SpectralNorm``: wraps ``module`` (keys ``<prefix>.module.*``), replaces its
  ``weight`` by the parameters ``weight_u`` ``[rows]``, ``weight_v`` ``[columns]`` (no gradient)
  and ``weight_bar`` (the unnormalised weight), with rows ``weight.shape[0]``. Every forward
  updates ``u`` and ``v`` in place by ``power_iterations`` steps and runs ``module`` with
  ``weight_bar / (u . weight_bar v)``; normalisation ``x / (|x| + 1e-12)``."""

  def __init__(self, module: nn.Module, power_iterations: int = 1):
    super().__init__()
    self.module = module
    self.power_iterations = power_iterations
    w = module.weight.detach()
    rows = w.shape[0]
    u = torch.randn(rows)
    v = torch.randn(w.numel() // rows)
    del module._parameters["weight"]
    module.register_parameter("weight_u", nn.Parameter(u / (u.norm() + 1e-12),
                                                       requires_grad=False))
    module.register_parameter("weight_v", nn.Parameter(v / (v.norm() + 1e-12),
                                                       requires_grad=False))
    module.register_parameter("weight_bar", nn.Parameter(w.clone()))

  def forward(self, *args):
    m = self.module
    w = m.weight_bar
    mat = w.view(w.shape[0], -1)
    for _ in range(self.power_iterations):
      v = torch.mv(mat.data.t(), m.weight_u.data)
      m.weight_v.data = v / (v.norm() + 1e-12)
      u = torch.mv(mat.data, m.weight_v.data)
      m.weight_u.data = u / (u.norm() + 1e-12)
    sigma = m.weight_u.dot(mat.mv(m.weight_v))
    m.weight = w / sigma
    return m(*args)


def spectral_layer(layer: nn.Module, layout: str) -> nn.Module:
  """``layer`` spectrally normalised as the ``SPECTRAL_LAYOUTS`` row ``layout`` saves it.

  Raises:
    ValueError: unknown layout.
  """
  if layout == "heykeetae":
    return SpectralNorm(layer)
  if layout == "torch":
    return nn.utils.spectral_norm(layer, eps=mapping.SPECTRAL_LAYOUTS["torch"].eps)
  raise ValueError(f"unknown spectral-norm layout {layout!r}; expected one of {LAYOUTS}")


class SelfAttn(nn.Module):
  """``Self_Attn``: ``gamma * (value . softmax(query^T key)^T) + x`` over the ``N = H W``
  positions; returns ``(out, attention [B, N, N])``."""

  def __init__(self, in_dim: int):
    super().__init__()
    self.query_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
    self.key_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
    self.value_conv = nn.Conv2d(in_dim, in_dim, 1)
    self.gamma = nn.Parameter(torch.zeros(1))
    self.softmax = nn.Softmax(dim=-1)

  def forward(self, x: torch.Tensor):
    b, c, h, w = x.size()
    q = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)
    k = self.key_conv(x).view(b, -1, h * w)
    attention = self.softmax(torch.bmm(q, k))
    v = self.value_conv(x).view(b, -1, h * w)
    out = torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w)
    return self.gamma * out + x, attention


class Generator(nn.Module):
  """SAGAN ``Generator`` at 64x64: ``l1`` .. ``l4`` = [SN(ConvTranspose2d), BatchNorm2d, ReLU],
  ``attn1`` after ``l3``, ``attn2`` after ``l4``, ``last`` = [ConvTranspose2d(conv_dim, 3, 4, 2,
  1), Tanh]. ``forward(z [B, z_dim])`` returns ``(images [B, 3, 64, 64], p1, p2)``."""

  def __init__(self, z_dim: int = 128, conv_dim: int = 64, layout: str = "heykeetae"):
    super().__init__()
    c = conv_dim * 8
    self.l1 = nn.Sequential(spectral_layer(nn.ConvTranspose2d(z_dim, c, 4), layout),
                            nn.BatchNorm2d(c), nn.ReLU())
    for i in (2, 3, 4):
      setattr(self, f"l{i}", nn.Sequential(
          spectral_layer(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), layout),
          nn.BatchNorm2d(c // 2), nn.ReLU()))
      c //= 2
    self.last = nn.Sequential(nn.ConvTranspose2d(c, 3, 4, 2, 1), nn.Tanh())
    self.attn1 = SelfAttn(2 * conv_dim)
    self.attn2 = SelfAttn(conv_dim)

  def forward(self, z: torch.Tensor):
    out = self.l3(self.l2(self.l1(z.view(z.size(0), z.size(1), 1, 1))))
    out, p1 = self.attn1(out)
    out, p2 = self.attn2(self.l4(out))
    return self.last(out), p1, p2


class Discriminator(nn.Module):
  """SAGAN ``Discriminator`` at 64x64: ``l1`` .. ``l4`` = [SN(Conv2d(c, 2c, 4, 2, 1)),
  LeakyReLU(0.1)], ``attn1`` after ``l3``, ``attn2`` after ``l4``, ``last`` = [Conv2d(8 conv_dim,
  1, 4)]. ``forward(x [B, 3, 64, 64])`` returns ``(out.squeeze(), p1, p2)``."""

  def __init__(self, conv_dim: int = 64, layout: str = "heykeetae"):
    super().__init__()
    c_in = 3
    for i in range(1, 5):
      c = conv_dim * 2**(i - 1)
      setattr(self, f"l{i}", nn.Sequential(
          spectral_layer(nn.Conv2d(c_in, c, 4, 2, 1), layout), nn.LeakyReLU(0.1)))
      c_in = c
    self.last = nn.Sequential(nn.Conv2d(c_in, 1, 4))
    self.attn1 = SelfAttn(4 * conv_dim)
    self.attn2 = SelfAttn(8 * conv_dim)

  def forward(self, x: torch.Tensor):
    out = self.l3(self.l2(self.l1(x)))
    out, p1 = self.attn1(out)
    out, p2 = self.attn2(self.l4(out))
    return self.last(out).squeeze(), p1, p2


def _as_tensors(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
  return {k: v.clone() if isinstance(v, torch.Tensor) else torch.as_tensor(np.array(v))
          for k, v in sd.items()}


def build_reference(state_dict: Mapping[str, Any], arch: str | None = None) -> nn.Module:
  """The reference network of a SAGAN state_dict, loaded with ``strict=True``, in eval mode.

  Args:
    state_dict: ``{upstream key: tensor or array}`` (unwrapped) in a ``SPECTRAL_LAYOUTS``
      layout; copied, never changed (the forward updates the copy's vectors).
    arch: ``"sagan_generator"`` or ``"sagan_discriminator"``; None infers it from the keys.

  Returns:
    The ``torch.nn.Module`` in eval mode, float32.

  Raises:
    ValueError: not a SAGAN, or no spectral-norm layout in the keys.
    RuntimeError: ``load_state_dict`` found keys or shapes that do not fit.
  """
  sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  arrays = {k: np.asarray(v) for k, v in sd.items()}
  arch = arch or mapping.infer_arch(arrays)
  layout = mapping.spectral_layout(arrays)
  if arch not in ARCHS or layout is None:
    raise ValueError(f"no SAGAN reference for arch {arch!r} with spectral-norm layout "
                     f"{layout!r}; expected one of {ARCHS} in one of {LAYOUTS}")
  kw = mapping.infer_kwargs(arch, arrays)
  kw.pop("spectral_rows", None)
  net = Generator(layout=layout, **kw) if arch == "sagan_generator" else Discriminator(
      layout=layout, **kw)
  net.load_state_dict(_as_tensors(sd), strict=True)
  return net.eval()


def random_sagan(arch: str, layout: str = "heykeetae", seed: int = 0, warmup: int = 1,
                 **kwargs: Any) -> nn.Module:
  """A reference SAGAN with random weights, as a trained one is saved, in eval mode.

  PyTorch's default initialisation under ``seed``; ``gamma`` of both attention layers
  ~ N(0, 0.5) (upstream starts it at 0, which would leave the attention untested); random
  BatchNorm affine parameters and running statistics; stored vectors after ``warmup`` power
  iterations from random ones (a saved model's are a training step behind, not converged).

  Args:
    arch: ``"sagan_generator"`` or ``"sagan_discriminator"``.
    layout: a ``SPECTRAL_LAYOUTS`` name.
    seed: seeds ``torch.manual_seed``.
    warmup: power iterations applied to the random vectors before saving.
    **kwargs: ``z_dim``, ``conv_dim`` (generator) or ``conv_dim`` (discriminator).

  Raises:
    ValueError: another arch or layout.
  """
  torch.manual_seed(seed)
  if arch == "sagan_generator":
    net = Generator(layout=layout, **kwargs)
  elif arch == "sagan_discriminator":
    net = Discriminator(layout=layout, **kwargs)
  else:
    raise ValueError(f"no SAGAN reference for arch {arch!r}; expected one of {ARCHS}")
  row = mapping.SPECTRAL_LAYOUTS[layout]
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, SelfAttn):
        m.gamma.copy_(0.5 * torch.randn(1, generator=gen))
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
      w = getattr(m, row.weight.rsplit(".", 1)[-1], None)
      if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and w is not None:
        mat = spectral.weight_matrix(w.numpy(), isinstance(m, nn.ConvTranspose2d), row)
        u, v, _ = spectral.power_iteration(mat, m.weight_u.numpy(), m.weight_v.numpy(), row,
                                           iterations=warmup)
        m.weight_u.copy_(torch.from_numpy(u.astype(np.float32)))
        m.weight_v.copy_(torch.from_numpy(v.astype(np.float32)))
  return net.eval()


def forward_nhwc(net: nn.Module, x: np.ndarray) -> np.ndarray:
  """Runs a reference SAGAN once, without gradients (its vectors update as upstream's do).

  Args:
    net: a reference ``Generator`` or ``Discriminator``.
    x: latents ``[batch, z_dim]`` or images ``[batch, 64, 64, 3]`` in [-1, 1], float32.

  Returns:
    Images ``[batch, 64, 64, 3]`` in [-1, 1] or logits ``[batch, 1]``, numpy float32 (the
    attention maps are dropped, as jaxgc's forward drops them).
  """
  x = np.asarray(x, np.float32)
  t = torch.from_numpy(np.ascontiguousarray(x if x.ndim == 2 else np.transpose(x, (0, 3, 1, 2))))
  with torch.no_grad():
    y = net(t)[0].numpy()
  if y.ndim == 4:
    return np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1)))
  return y.reshape(x.shape[0], 1)


def parity(y: np.ndarray, state_dict: Mapping[str, Any], x: np.ndarray,
           arch: str | None = None) -> float:
  """Max abs difference between a converted SAGAN's outputs and its reference's first call.

  Args:
    y: the converted module's outputs for ``x``: images ``[batch, 64, 64, 3]`` or logits
      ``[batch, 1]``, float32.
    state_dict: the PyTorch state_dict it was converted from (a fresh reference is built from
      it, so its forward is upstream's first call after loading).
    x: latents ``[batch, z_dim]`` or images ``[batch, 64, 64, 3]`` float32.
    arch: the reference's architecture; None infers it from the keys.

  Returns:
    ``max |y - reference(x)|`` (the tests hold 1e-4).

  Raises:
    ValueError: ``y`` and the reference's output differ in shape; as ``build_reference``.
    RuntimeError: as ``build_reference``.
  """
  return torch_refs.max_abs_diff(y, forward_nhwc(build_reference(state_dict, arch), x))
