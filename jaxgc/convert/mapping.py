"""PyTorch state_dict key names <-> Flax variable paths, per architecture.

Every converter names its upstream file: the Flax path of each parameter is mapped to the
PyTorch key that upstream's module structure produces, with the layout change
(``Conv2d [out, in, kh, kw] -> [kh, kw, in, out]``, ``ConvTranspose2d [in, out, kh, kw] ->
[kh, kw, in, out]``, ``Linear [out, in] -> [in, out]``; BatchNorm ``weight, bias,
running_mean, running_var -> params/scale, params/bias, batch_stats/mean, batch_stats/var``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import numpy as np

# Layout kinds: how a PyTorch tensor becomes the Flax array.
CONV, CONVT, DENSE, VEC = "conv", "convt", "dense", "vector"
# StyleGAN2 (rosinality): ModulatedConv2d weight [1, out, in, k, k]; ConstantInput [1, C, 4, 4]
# (NVlabs const [C, 4, 4]); ToRGB bias [1, C, 1, 1]; NoiseInjection weight [1]; noise buffers
# [1, 1, R, R].
MODCONV, CONST1, CONST, BIAS4D, SCALAR1, NOISE4D = (
    "modconv", "const_1chw", "const_chw", "bias_1c11", "scalar_1", "noise_11hw")
# A fixed buffer (a blur filter) checked against its known value and not converted; the
# entry's Flax path names the value in FIXED_VALUES.
FIXED = "fixed"

_TO_FLAX: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    CONV: lambda w: np.transpose(w, (2, 3, 1, 0)),
    CONVT: lambda w: np.transpose(w, (2, 3, 0, 1)),
    DENSE: lambda w: np.transpose(w, (1, 0)),
    VEC: lambda w: w,
    MODCONV: lambda w: np.transpose(w[0], (2, 3, 1, 0)),
    CONST1: lambda w: np.transpose(w[0], (1, 2, 0)),
    CONST: lambda w: np.transpose(w, (1, 2, 0)),
    BIAS4D: lambda w: w.reshape(-1),
    SCALAR1: lambda w: w.reshape(()),
    NOISE4D: lambda w: w[0, 0],
}
_TO_TORCH_SHAPE: dict[str, Callable[[tuple], tuple]] = {
    CONV: lambda s: (s[3], s[2], s[0], s[1]),
    CONVT: lambda s: (s[2], s[3], s[0], s[1]),
    DENSE: lambda s: (s[1], s[0]),
    VEC: lambda s: tuple(s),
    MODCONV: lambda s: (1, s[3], s[2], s[0], s[1]),
    CONST1: lambda s: (1, s[2], s[0], s[1]),
    CONST: lambda s: (s[2], s[0], s[1]),
    BIAS4D: lambda s: (1, s[0], 1, 1),
    SCALAR1: lambda s: (1,),
    NOISE4D: lambda s: (1, 1, s[0], s[1]),
}


def _blur(gain: float) -> np.ndarray:
  k = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0])
  return (k / k.sum() * gain).astype(np.float32)


# Values of the FIXED buffers: the [1,3,3,1] filter normalised to sum 1 (rosinality ``Blur``
# of a downsampling layer, NVlabs ``resample_filter``), and times 4 (rosinality ``Upsample``
# and the ``Blur`` after an upsampling convolution).
FIXED_VALUES: dict[str, np.ndarray] = {"blur": _blur(1.0), "blur_up": _blur(4.0)}

# (flax path, torch key, layout kind)
Entry = tuple[str, str, str]


def to_flax(kind: str, w: np.ndarray) -> np.ndarray:
  return np.array(_TO_FLAX[kind](w), order="C")  # keeps 0-d scalars 0-d


def torch_shape(kind: str, flax_shape: tuple) -> tuple:
  return tuple(int(d) for d in _TO_TORCH_SHAPE[kind](tuple(flax_shape)))


def _conv(flax: str, torch: str, kind: str = CONV, bias: bool = True) -> list[Entry]:
  out = [(f"params/{flax}/kernel", f"{torch}.weight", kind)]
  if bias:
    out.append((f"params/{flax}/bias", f"{torch}.bias", VEC))
  return out


def _norm(flax: str, torch: str, norm: str) -> list[Entry]:
  """``InstanceNorm2d(affine=False)`` (``"instance"``): no keys; ``affine=True``
  (``"instance_affine"``): ``weight``, ``bias``; ``BatchNorm2d`` (``"batch"``): those and the
  running statistics. Other norms (``"none"`` of the PatchGAN) have no keys either."""
  if norm not in ("instance_affine", "batch"):
    return []
  affine = [(f"params/{flax}/scale", f"{torch}.weight", VEC),
            (f"params/{flax}/bias", f"{torch}.bias", VEC)]
  if norm == "instance_affine":
    return affine
  return affine + [(f"batch_stats/{flax}/mean", f"{torch}.running_mean", VEC),
                   (f"batch_stats/{flax}/var", f"{torch}.running_var", VEC)]


def _sep(flax: str, torch: str) -> list[Entry]:
  """GAN Compression ``SeparableConv2d``: ``conv.0`` depthwise, ``conv.1`` a parameter-free
  InstanceNorm, ``conv.2`` pointwise; both convolutions with biases whatever the block's norm."""
  return (_conv(f"{flax}/depthwise", f"{torch}.conv.0")
          + _conv(f"{flax}/pointwise", f"{torch}.conv.2"))


# Layouts of the ResNet generator: upstreams that save the same layers under other key names.
# name: (attribute of a residual block holding its ``nn.Sequential``, upstream file). Both
# number the ``model`` Sequential and the block's layers alike (see ``resnet_entries``); the
# norm (none, affine InstanceNorm, BatchNorm) is read from the keys separately.
RESNET_LAYOUTS: dict[str, tuple[str, str]] = {
    "cyclegan": ("conv_block", "junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py "
                               "ResnetGenerator, ResnetBlock; mit-han-lab/gan-compression"),
    "vintage": ("block", "PyPI vintagify 0.1.2 vintagify/generator.py (affine InstanceNorm, "
                         "conv biases everywhere, residual layers under block.N)"),
}


def resnet_layout(sd: dict[str, np.ndarray]) -> str | None:
  """The ``RESNET_LAYOUTS`` name whose residual-block keys (``model.N.<block>.M...``) the
  state_dict has, or None when it has no residual block."""
  for name, (block, _) in RESNET_LAYOUTS.items():
    if any(re.fullmatch(rf"model\.\d+\.{block}\.\d+\..+", k) for k in sd):
      return name
  return None


def _block_attr(layout: str | None) -> str:
  if layout is None:
    return RESNET_LAYOUTS["cyclegan"][0]
  if layout not in RESNET_LAYOUTS:
    raise ValueError(f"unknown ResNet layout {layout!r}; expected one of "
                     f"{', '.join(RESNET_LAYOUTS)}")
  return RESNET_LAYOUTS[layout][0]


def resnet_entries(kw: dict[str, Any], mobile: bool, dropout: bool = False,
                   layout: str | None = None) -> list[Entry]:
  """Key map of the ``nn.Sequential`` ``model`` of pytorch-CycleGAN-and-pix2pix
  ``ResnetGenerator`` (``models/networks.py``), of GAN Compression's
  (Sub)MobileResnetGenerator, and of the other ``RESNET_LAYOUTS``.

  Indices: 1 stem conv, 2 norm; 4, 5 and 7, 8 downsampling; ``10 .. 9+n`` residual blocks;
  ``10+n``, ``11+n`` and ``13+n``, ``14+n`` transposed convolutions; ``17+n`` head conv.
  In a ``ResnetBlock`` the convolutions are ``conv_block.1`` and ``conv_block.5``
  (``conv_block.6`` with dropout), norms right after; in a ``MobileResnetBlock`` the separable
  convolutions are ``conv_block.1`` and ``conv_block.6`` (its dropout layer is always there).
  ``layout`` (a ``RESNET_LAYOUTS`` name, default ``"cyclegan"``) names the block attribute
  (``block`` instead of ``conv_block`` for ``"vintage"``).
  """
  norm = kw.get("norm", "instance")
  bias = norm != "batch"
  attr = _block_attr(layout)
  n = len(kw["hidden"]) if "hidden" in kw else kw.get("n_blocks", 9)
  e = _conv("conv_in", "model.1", bias=bias) + _norm("norm_in", "model.2", norm)
  for i, (c, nm) in enumerate(((4, 5), (7, 8))):
    e += _conv(f"down_{i}", f"model.{c}", bias=bias) + _norm(f"down_norm_{i}", f"model.{nm}", norm)
  for b in range(n):
    t, f = f"model.{10 + b}.{attr}", f"block_{b}"
    if mobile:
      e += _sep(f"{f}/sep_0", f"{t}.1") + _norm(f"{f}/norm_0", f"{t}.2", norm)
      e += _sep(f"{f}/sep_1", f"{t}.6") + _norm(f"{f}/norm_1", f"{t}.7", norm)
    else:
      second = 6 if dropout else 5
      e += _conv(f"{f}/conv_0", f"{t}.1", bias=bias) + _norm(f"{f}/norm_0", f"{t}.2", norm)
      e += (_conv(f"{f}/conv_1", f"{t}.{second}", bias=bias)
            + _norm(f"{f}/norm_1", f"{t}.{second + 1}", norm))
  for i, (c, nm) in enumerate(((10 + n, 11 + n), (13 + n, 14 + n))):
    e += _conv(f"up_{i}", f"model.{c}", CONVT, bias) + _norm(f"up_norm_{i}", f"model.{nm}", norm)
  return e + _conv("conv_out", f"model.{17 + n}")


def dcgan_generator_entries(kw: dict[str, Any]) -> list[Entry]:
  """``main``: ``ConvTranspose2d`` at ``3 i``, ``BatchNorm2d`` at ``3 i + 1`` (not after the last)."""
  nl = len(kw.get("features", (512, 256, 128, 64, 3)))
  e: list[Entry] = []
  for i in range(nl):
    e += _conv(f"convt_{i}", f"main.{3 * i}", CONVT, bias=False)
    if i < nl - 1:
      e += _norm(f"bn_{i}", f"main.{3 * i + 1}", "batch")
  return e


def dcgan_discriminator_entries(kw: dict[str, Any]) -> list[Entry]:
  """``main``: conv at 0; then conv at ``3 i - 1`` and BatchNorm at ``3 i`` for ``i >= 1``."""
  nf = len(kw.get("features", (64, 128, 256)))
  e = _conv("conv_0", "main.0", bias=False)
  for i in range(1, nf):
    e += _conv(f"conv_{i}", f"main.{3 * i - 1}", bias=False) + _norm(f"bn_{i}", f"main.{3 * i}",
                                                                     "batch")
  return e + _conv(f"conv_{nf}", f"main.{3 * nf - 1}", bias=False)


def patchgan_discriminator_entries(kw: dict[str, Any]) -> list[Entry]:
  """pytorch-CycleGAN-and-pix2pix ``NLayerDiscriminator`` (``models/networks.py``), ``model``:
  conv at 0 (with bias); conv ``i`` at ``3 i - 1`` and its norm at ``3 i`` for
  ``i = 1 .. n_layers`` (biases only with InstanceNorm, parameters only with BatchNorm); the
  final conv (with bias) at ``3 n_layers + 2``."""
  n = kw.get("n_layers", 3)
  norm = kw.get("norm", "batch")
  e = _conv("conv_0", "model.0")
  for i in range(1, n + 1):
    e += (_conv(f"conv_{i}", f"model.{3 * i - 1}", bias=norm == "instance")
          + _norm(f"norm_{i}", f"model.{3 * i}", norm))
  return e + _conv(f"conv_{n + 1}", f"model.{3 * n + 2}")


def unet_block_prefix(level: int) -> str:
  """Key prefix of the ``nn.Sequential`` of skip block ``level`` (0 = outermost) of
  pytorch-CycleGAN-and-pix2pix ``UnetGenerator``: ``model.model``, then the submodule at index 1
  of the outermost block and at index 3 of every other, ``model.model.1.model.3.model...``."""
  if level == 0:
    return "model.model"
  return "model.model.1.model" + ".3.model" * (level - 1)


def unet_depth(sd: dict[str, np.ndarray]) -> int:
  """Number of nested skip blocks (``num_downs``) whose keys the state_dict has."""
  n = 0
  while any(k.startswith(unet_block_prefix(n) + ".") for k in sd):
    n += 1
  return n


def unet_entries(kw: dict[str, Any]) -> list[Entry]:
  """Key map of pytorch-CycleGAN-and-pix2pix ``UnetGenerator`` (``models/networks.py``):
  nested ``UnetSkipConnectionBlock``s, each an ``nn.Sequential`` ``model``.

  Outermost (``model.model``): ``0`` down conv, ``1`` the next block, ``3`` up conv (always
  with a bias). Middle blocks: ``1`` down conv, ``2`` its norm, ``3`` the next block, ``5`` up
  conv, ``6`` its norm (``7`` a parameter-free dropout). Innermost: ``1`` down conv (no norm),
  ``3`` up conv, ``4`` its norm. Convolutions before a norm (and the outermost down conv) have
  biases unless the norm is a BatchNorm. Flax names: see ``jaxgc.models.unet``.
  """
  n = kw.get("num_downs", 8)
  norm = kw.get("norm", "batch")
  bias = norm != "batch"
  e = _conv("down_0", "model.model.0", bias=bias) + _conv("up_out", "model.model.3", CONVT)
  for i in range(1, n):
    p = unet_block_prefix(i)
    if i < n - 1:
      e += _conv(f"down_{i}", f"{p}.1", bias=bias) + _norm(f"down_norm_{i}", f"{p}.2", norm)
      e += (_conv(f"up_{i - 1}", f"{p}.5", CONVT, bias)
            + _norm(f"up_norm_{i - 1}", f"{p}.6", norm))
    else:
      e += _conv(f"down_{i}", f"{p}.1", bias=bias)
      e += (_conv(f"up_{i - 1}", f"{p}.3", CONVT, bias)
            + _norm(f"up_norm_{i - 1}", f"{p}.4", norm))
  return e


def mlp_entries(kw: dict[str, Any]) -> list[Entry]:
  """``nn.Sequential`` of Linear layers at even indices 0, 2, 4, ..."""
  nh = len(kw.get("hidden", (256, 256)))
  return [e for i in range(nh + 1) for e in _conv(f"dense_{i}", str(2 * i), DENSE)]


def lenet5_entries(kw: dict[str, Any]) -> list[Entry]:
  """``convnet.c1/c3/c5`` convolutions and ``fc.f6/f7`` linear layers."""
  del kw
  return ([e for n in ("c1", "c3", "c5") for e in _conv(n, f"convnet.{n}")]
          + [e for n in ("f6", "f7") for e in _conv(n, f"fc.{n}", DENSE)])


# StyleGAN2 layouts: the same generator and discriminator saved by two upstreams.
# name: (a key only its generator has, a key only its discriminator has, upstream file).
STYLEGAN2_LAYOUTS: dict[str, tuple[str, str, str]] = {
    "rosinality": ("style.1.weight", "final_linear.0.weight",
                   "rosinality/stylegan2-pytorch model.py Generator, Discriminator (a training "
                   "checkpoint's g_ema, g or d)"),
    "nvlabs": ("synthesis.b4.const", "b4.out.weight",
               "NVlabs/stylegan2-ada-pytorch training/networks.py Generator (G_ema."
               "state_dict()), Discriminator (D.state_dict())"),
}


def stylegan2_layout(sd: dict[str, np.ndarray]) -> str | None:
  """The ``STYLEGAN2_LAYOUTS`` name whose generator or discriminator keys ``sd`` has, or None."""
  for name, (g_key, d_key, _) in STYLEGAN2_LAYOUTS.items():
    if g_key in sd or d_key in sd:
      return name
  return None


def _sg2_resolutions(size: int) -> list[int]:
  return [4 * 2**i for i in range(max(int(round(np.log2(max(size, 4)))) - 1, 1))]


def _fixed(name: str, torch: str) -> list[Entry]:
  return [(name, torch, FIXED)]


def stylegan2_generator_entries(kw: dict[str, Any]) -> list[Entry]:
  """Key map of the StyleGAN2 generator in the layout ``kw["layout"]``.

  rosinality ``Generator`` (``model.py``): ``style.{1..n_mlp}`` (``style.0`` is the
  parameter-free PixelNorm), ``input.input``, ``conv1`` and ``to_rgb1`` at 4x4, then per
  resolution ``2**(j+3)`` ``convs.{2j}`` (upsampling, with ``conv.blur.kernel``),
  ``convs.{2j+1}`` and ``to_rgbs.{j}`` (with ``upsample.kernel``); a ``StyledConv`` holds
  ``conv.weight``, ``conv.modulation.{weight,bias}``, ``noise.weight``, ``activate.bias``;
  noise buffers ``noises.noise_{0..2 log2(size) - 4}`` in layer order. No ``w_avg``
  (``derived_paths``).

  NVlabs ``Generator`` (``training/networks.py``): ``mapping.fc{i}``, ``mapping.embed``
  (conditional), ``mapping.w_avg``; ``synthesis.b{res}.const`` (4x4), ``conv0`` (from 8x8),
  ``conv1``, ``torgb``, each ``weight``, ``bias``, ``affine.{weight,bias}``, plus
  ``noise_strength``, ``noise_const`` and ``resample_filter`` for convolutions.
  """
  res = _sg2_resolutions(kw.get("size", 256))
  n_mlp = kw.get("n_mlp", 8)
  e: list[Entry] = []
  if kw.get("layout", "rosinality") == "rosinality":
    for i in range(n_mlp):
      e += _conv(f"mapping/fc_{i}", f"style.{i + 1}", DENSE)
    e.append(("params/b4/const", "input.input", CONST1))

    def styled(f: str, t: str, noise: int) -> list[Entry]:
      return ([(f"params/{f}/kernel", f"{t}.conv.weight", MODCONV)]
              + _conv(f"{f}/affine", f"{t}.conv.modulation", DENSE)
              + [(f"params/{f}/noise_strength", f"{t}.noise.weight", SCALAR1),
                 (f"params/{f}/bias", f"{t}.activate.bias", VEC),
                 (f"buffers/{f}/noise_const", f"noises.noise_{noise}", NOISE4D)])

    def torgb(f: str, t: str) -> list[Entry]:
      return ([(f"params/{f}/kernel", f"{t}.conv.weight", MODCONV)]
              + _conv(f"{f}/affine", f"{t}.conv.modulation", DENSE)
              + [(f"params/{f}/bias", f"{t}.bias", BIAS4D)])

    e += styled("b4/conv1", "conv1", 0) + torgb("b4/torgb", "to_rgb1")
    for j, r in enumerate(res[1:]):
      e += styled(f"b{r}/conv0", f"convs.{2 * j}", 2 * j + 1)
      e += _fixed("blur_up", f"convs.{2 * j}.conv.blur.kernel")
      e += styled(f"b{r}/conv1", f"convs.{2 * j + 1}", 2 * j + 2)
      e += torgb(f"b{r}/torgb", f"to_rgbs.{j}") + _fixed("blur_up", f"to_rgbs.{j}.upsample.kernel")
    return e
  if kw.get("c_dim", 0):
    e += _conv("mapping/embed", "mapping.embed", DENSE)
  for i in range(n_mlp):
    e += _conv(f"mapping/fc_{i}", f"mapping.fc{i}", DENSE)
  e.append(("buffers/mapping/w_avg", "mapping.w_avg", VEC))
  for r in res:
    t = f"synthesis.b{r}"
    e += _fixed("blur", f"{t}.resample_filter")
    if r == 4:
      e.append(("params/b4/const", f"{t}.const", CONST))
    for layer in (("conv1",) if r == 4 else ("conv0", "conv1")):
      f, tl = f"b{r}/{layer}", f"{t}.{layer}"
      e += _conv(f, tl) + _conv(f"{f}/affine", f"{tl}.affine", DENSE)
      e += [(f"params/{f}/noise_strength", f"{tl}.noise_strength", VEC),
            (f"buffers/{f}/noise_const", f"{tl}.noise_const", VEC)]
      e += _fixed("blur", f"{tl}.resample_filter")
    e += _conv(f"b{r}/torgb", f"{t}.torgb") + _conv(f"b{r}/torgb/affine", f"{t}.torgb.affine",
                                                      DENSE)
  return e


def stylegan2_discriminator_entries(kw: dict[str, Any]) -> list[Entry]:
  """Key map of the StyleGAN2 discriminator in the layout ``kw["layout"]``.

  rosinality ``Discriminator`` (``model.py``): ``convs.0`` from-RGB (``0.weight``,
  ``1.bias``), ``convs.{i}`` residual blocks from the input resolution down (``conv1.0.weight``,
  ``conv1.1.bias``; ``conv2.0.kernel`` blur, ``conv2.1.weight``, ``conv2.2.bias``;
  ``skip.0.kernel``, ``skip.1.weight``), ``final_conv`` (``0.weight``, ``1.bias``),
  ``final_linear.0``, ``final_linear.1``.

  NVlabs ``Discriminator`` (``training/networks.py``, resnet): ``b{res}.fromrgb`` (input
  resolution), ``b{res}.conv0``, ``conv1``, ``skip`` (no bias), ``resample_filter`` buffers;
  epilogue ``b4.conv``, ``b4.fc``, ``b4.out``; ``mapping.embed``, ``mapping.fc{i}`` when
  conditional.
  """
  size = kw.get("image_size", 256)
  desc = _sg2_resolutions(size)[::-1]
  e: list[Entry] = []
  if kw.get("layout", "rosinality") == "rosinality":
    e += [(f"params/b{size}_fromrgb/kernel", "convs.0.0.weight", CONV),
          (f"params/b{size}_fromrgb/bias", "convs.0.1.bias", VEC)]
    for i, r in enumerate(desc[:-1], start=1):
      t = f"convs.{i}"
      e += [(f"params/b{r}_conv0/kernel", f"{t}.conv1.0.weight", CONV),
            (f"params/b{r}_conv0/bias", f"{t}.conv1.1.bias", VEC),
            (f"params/b{r}_conv1/kernel", f"{t}.conv2.1.weight", CONV),
            (f"params/b{r}_conv1/bias", f"{t}.conv2.2.bias", VEC),
            (f"params/b{r}_skip/kernel", f"{t}.skip.1.weight", CONV)]
      e += _fixed("blur", f"{t}.conv2.0.kernel") + _fixed("blur", f"{t}.skip.0.kernel")
    e += [("params/b4_conv/kernel", "final_conv.0.weight", CONV),
          ("params/b4_conv/bias", "final_conv.1.bias", VEC)]
    return e + _conv("b4_fc", "final_linear.0", DENSE) + _conv("b4_out", "final_linear.1", DENSE)
  for r in desc[:-1]:
    t = f"b{r}"
    e += _fixed("blur", f"{t}.resample_filter")
    if r == size:
      e += _conv(f"b{r}_fromrgb", f"{t}.fromrgb") + _fixed("blur", f"{t}.fromrgb.resample_filter")
    e += _conv(f"b{r}_conv0", f"{t}.conv0") + _fixed("blur", f"{t}.conv0.resample_filter")
    e += _conv(f"b{r}_conv1", f"{t}.conv1") + _fixed("blur", f"{t}.conv1.resample_filter")
    e += _conv(f"b{r}_skip", f"{t}.skip", bias=False) + _fixed("blur", f"{t}.skip.resample_filter")
  e += _conv("b4_conv", "b4.conv") + _fixed("blur", "b4.conv.resample_filter")
  e += _conv("b4_fc", "b4.fc", DENSE) + _conv("b4_out", "b4.out", DENSE)
  if kw.get("c_dim", 0):
    e += _conv("mapping/embed", "mapping.embed", DENSE)
    e += [x for i in range(kw.get("n_mlp", 8)) for x in _conv(f"mapping/fc_{i}", f"mapping.fc{i}",
                                                               DENSE)]
  return e


def derived_paths(arch: str, kw: dict[str, Any]) -> list[str]:
  """Flax paths the state_dict does not hold and the conversion computes: the ``sigma`` of
  every spectrally normalised SAGAN layer (``jaxgc.convert.spectral``), the rosinality
  generator's ``buffers/mapping/w_avg`` (its ``mean_latent``, see
  ``jaxgc.models.stylegan2.mean_w``)."""
  if arch in SAGAN_ARCHS:
    return [f"spectral/{name}/sigma" for name, _, _ in sagan_spectral_layers(arch)]
  if arch == "stylegan2_generator" and kw.get("layout", "rosinality") == "rosinality":
    return ["buffers/mapping/w_avg"]
  return []


def _stylegan2_kwargs(arch: str, sd: dict[str, np.ndarray], kw: dict[str, Any]) -> None:
  """Fills ``kw`` with the StyleGAN2 widths and depth read from ``sd`` (see ``infer_kwargs``)."""
  layout = stylegan2_layout(sd)
  own = 0 if arch == "stylegan2_generator" else 1  # the layout key of this arch, not the other
  if layout is None or STYLEGAN2_LAYOUTS[layout][own] not in sd:
    return
  kw["layout"] = layout
  if arch == "stylegan2_generator" and layout == "rosinality":
    kw["n_mlp"] = len(_indices(sd, r"style\.(\d+)\.weight"))
    kw["w_dim"], kw["z_dim"] = (int(d) for d in sd["style.1.weight"].shape)
    n_up = len(_indices(sd, r"to_rgbs\.(\d+)\.conv\.weight"))
    kw["size"] = 4 * 2**n_up
    ch = [int(sd["input.input"].shape[1])]
    for j in range(n_up):
      w = sd.get(f"convs.{2 * j}.conv.weight")
      ch.append(int(w.shape[1]) if w is not None else ch[-1])
    kw["channels"] = tuple(ch)
    kw["img_channels"] = int(sd["to_rgb1.conv.weight"].shape[1])
  elif arch == "stylegan2_generator":
    fcs = _indices(sd, r"mapping\.fc(\d+)\.weight")
    kw["n_mlp"] = len(fcs)
    kw["w_dim"] = int(sd[f"mapping.fc{fcs[-1]}.weight"].shape[0])
    embed = sd.get("mapping.embed.weight")
    if embed is not None:
      kw["c_dim"], kw["embed_features"] = int(embed.shape[1]), int(embed.shape[0])
    kw["z_dim"] = int(sd["mapping.fc0.weight"].shape[1]) - kw.get("embed_features", 0)
    size = max(_indices(sd, r"synthesis\.b(\d+)\.conv1\.weight"))
    kw["size"] = size
    ch: list[int] = []
    for r in _sg2_resolutions(size):
      w = sd.get(f"synthesis.b{r}.conv1.weight")
      ch.append(int(w.shape[0]) if w is not None else ch[-1])
    kw["channels"] = tuple(ch)
    kw["img_channels"] = int(sd["synthesis.b4.torgb.weight"].shape[0])
  elif arch == "stylegan2_discriminator" and layout == "rosinality":
    n = len(_indices(sd, r"convs\.(\d+)\.conv1\.0\.weight"))
    kw["image_size"] = 4 * 2**n
    kw["input_nc"] = int(sd["convs.0.0.weight"].shape[1])
    desc = [int(sd["convs.0.0.weight"].shape[0])]
    for i in range(1, n + 1):
      w = sd.get(f"convs.{i}.conv2.1.weight")
      desc.append(int(w.shape[0]) if w is not None else desc[-1])
    kw["channels"] = tuple(desc[::-1])
    kw["mbstd_num_channels"] = int(sd["final_conv.0.weight"].shape[1]) - desc[-1]
  elif arch == "stylegan2_discriminator":
    size = max(_indices(sd, r"b(\d+)\.conv0\.weight"))
    kw["image_size"] = size
    ch = []
    for r in _sg2_resolutions(size):
      w = sd.get("b4.conv.weight" if r == 4 else f"b{r}.conv0.weight")
      ch.append(int(w.shape[0]) if w is not None else ch[-1])
    kw["channels"] = tuple(ch)
    kw["input_nc"] = int(sd[f"b{size}.fromrgb.weight"].shape[1])
    kw["mbstd_num_channels"] = int(sd["b4.conv.weight"].shape[1]) - ch[0]
    embed = sd.get("mapping.embed.weight")
    if embed is not None:
      kw["c_dim"], kw["cmap_dim"] = int(embed.shape[1]), int(sd["b4.out.weight"].shape[0])
      kw["n_mlp"] = len(_indices(sd, r"mapping\.fc(\d+)\.weight"))


def _indices(sd: dict[str, np.ndarray], pattern: str) -> list[int]:
  return sorted({int(m.group(1)) for k in sd for m in [re.fullmatch(pattern, k)] if m})


def infer_arch(sd: dict[str, np.ndarray]) -> str:
  """Names the zoo architecture a state_dict belongs to, from its key names and shapes.

  Raises:
    ValueError: no architecture of the zoo matches.
  """
  keys = set(sd)
  if "attn1.query_conv.weight" in keys and any(k.startswith("l1.0.") for k in keys):
    return "sagan_generator" if "l1.1.running_mean" in keys else "sagan_discriminator"
  if {"style.1.weight", "input.input"} <= keys or "synthesis.b4.const" in keys:
    return "stylegan2_generator"
  if ({"final_linear.0.weight", "convs.0.0.weight"} <= keys
      or {"b4.out.weight", "b4.conv.weight"} <= keys):
    return "stylegan2_discriminator"
  if resnet_layout(sd) not in (None, "cyclegan"):
    return "resnet_generator"
  if "model.model.0.weight" in keys and sd["model.model.0.weight"].ndim == 4:
    return "unet_generator"
  if any(".conv_block." in k for k in keys):
    if not any(re.search(r"\.conv_block\.1\.conv\.0\.weight$", k) for k in keys):
      return "resnet_generator"
    kw = infer_kwargs("sub_mobile_resnet_generator", sd)
    ngf = kw["stem"]
    regular = (tuple(kw["down"]) == (2 * ngf, 4 * ngf) and tuple(kw["up"]) == (2 * ngf, ngf)
               and all(h == 4 * ngf for h in kw["hidden"]))
    return "mobile_resnet_generator" if regular else "sub_mobile_resnet_generator"
  if "main.0.weight" in keys and sd["main.0.weight"].ndim == 4:
    return "dcgan_generator" if "main.1.running_mean" in keys else "dcgan_discriminator"
  if "convnet.c1.weight" in keys:
    return "lenet5"
  if ("model.0.weight" in keys and sd["model.0.weight"].ndim == 4
      and all(re.fullmatch(r"model\.\d+\.\w+", k) for k in keys)):
    return "patchgan_discriminator"  # a flat ``model`` Sequential whose first layer is a conv
  if "0.weight" in keys and sd["0.weight"].ndim == 2:
    last = max(_indices(sd, r"(\d+)\.weight"))
    return "mlp_discriminator" if sd[f"{last}.weight"].shape[0] == 1 else "mlp_generator"
  raise ValueError(f"cannot infer the architecture from keys {sorted(keys)[:6]}...; pass arch=")


def infer_kwargs(arch: str, sd: dict[str, np.ndarray]) -> dict[str, Any]:
  """Reads channel widths and depth of ``arch`` from the state_dict's shapes.

  Missing keys leave the module's defaults in place, so that a wrong architecture shows up as
  a key mismatch listing every difference, not as a KeyError here.
  """
  kw: dict[str, Any] = {}
  try:
    if arch in SAGAN_ARCHS:
      layout = spectral_layout(sd)
      w = sd[f"l1.0.{SPECTRAL_LAYOUTS[layout].weight}" if layout else "l1.0.weight"]
      if arch == "sagan_generator":
        kw["z_dim"] = int(w.shape[0])
        if w.shape[1] >= 64 and w.shape[1] % 8 == 0:  # l1 has 8 conv_dim outputs
          kw["conv_dim"] = int(w.shape[1]) // 8
        if layout:
          kw["spectral_rows"] = SPECTRAL_LAYOUTS[layout].transpose_rows
      else:
        kw["conv_dim"] = int(w.shape[0])
    elif arch in ("resnet_generator", "mobile_resnet_generator", "sub_mobile_resnet_generator"):
      attr = _block_attr(resnet_layout(sd))
      blocks = _indices(sd, rf"model\.(\d+)\.{attr}\..*")
      n = len(blocks)
      kw["input_nc"] = int(sd["model.1.weight"].shape[1])
      kw["norm"] = ("batch" if "model.2.running_mean" in sd
                    else "instance_affine" if "model.2.weight" in sd else "instance")
      kw["output_nc"] = int(sd[f"model.{17 + n}.weight"].shape[0])
      if arch == "sub_mobile_resnet_generator":
        kw["stem"] = int(sd["model.1.weight"].shape[0])
        kw["down"] = (int(sd["model.4.weight"].shape[0]), int(sd["model.7.weight"].shape[0]))
        kw["hidden"] = tuple(int(sd[f"model.{b}.conv_block.1.conv.2.weight"].shape[0])
                             for b in blocks)
        kw["up"] = (int(sd[f"model.{10 + n}.weight"].shape[1]),
                    int(sd[f"model.{13 + n}.weight"].shape[1]))
      else:
        kw["ngf"] = int(sd["model.1.weight"].shape[0])
        kw["n_blocks"] = n
    elif arch == "unet_generator":
      w0 = sd["model.model.0.weight"]
      kw["input_nc"], kw["ngf"] = int(w0.shape[1]), int(w0.shape[0])
      kw["output_nc"] = int(sd["model.model.3.weight"].shape[1])
      kw["num_downs"] = unet_depth(sd)
      norm = unet_block_prefix(1) + ".2"
      kw["norm"] = ("batch" if f"{norm}.running_mean" in sd
                    else "instance_affine" if f"{norm}.weight" in sd else "instance")
    elif arch == "dcgan_generator":
      convs = [i for i in _indices(sd, r"main\.(\d+)\.weight") if sd[f"main.{i}.weight"].ndim == 4]
      kw["z_dim"] = int(sd["main.0.weight"].shape[0])
      kw["features"] = tuple(int(sd[f"main.{i}.weight"].shape[1]) for i in convs)
    elif arch == "dcgan_discriminator":
      convs = [i for i in _indices(sd, r"main\.(\d+)\.weight") if sd[f"main.{i}.weight"].ndim == 4]
      kw["features"] = tuple(int(sd[f"main.{i}.weight"].shape[0]) for i in convs[:-1])
    elif arch == "patchgan_discriminator":
      convs = [i for i in _indices(sd, r"model\.(\d+)\.weight")
               if sd[f"model.{i}.weight"].ndim == 4]
      kw["input_nc"] = int(sd["model.0.weight"].shape[1])
      kw["ndf"] = int(sd["model.0.weight"].shape[0])
      if len(convs) >= 3:
        kw["n_layers"] = len(convs) - 2
      # BatchNorm2d(affine=True) has a weight at model.3; InstanceNorm2d(affine=False) none, but
      # then the convolutions before it carry biases; upstream's "none" has neither.
      kw["norm"] = ("batch" if "model.3.weight" in sd
                    else "instance" if "model.2.bias" in sd else "none")
    elif arch in ("stylegan2_generator", "stylegan2_discriminator"):
      _stylegan2_kwargs(arch, sd, kw)
    elif arch in ("mlp_generator", "mlp_discriminator"):
      dense = _indices(sd, r"(\d+)\.weight")
      kw["hidden"] = tuple(int(sd[f"{i}.weight"].shape[0]) for i in dense[:-1])
      if arch == "mlp_generator":
        kw["z_dim"] = int(sd["0.weight"].shape[1])
        out = int(sd[f"{dense[-1]}.weight"].shape[0])
        side = int(round(out ** 0.5))
        kw["image_shape"] = (side, side, 1) if side * side == out else (out, 1, 1)
  except (KeyError, IndexError, ValueError, AttributeError):
    pass
  return kw


def entries(arch: str, kw: dict[str, Any], sd: dict[str, np.ndarray],
            layout: str | None = None) -> list[Entry]:
  """The full key map of ``arch`` built with ``kw``; ``layout`` (a ``RESNET_LAYOUTS`` name, or
  for SAGAN a ``SPECTRAL_LAYOUTS`` one) defaults to the one ``sd``'s keys show."""
  if arch == "resnet_generator":
    layout = layout or resnet_layout(sd)
    second = f"model.10.{_block_attr(layout)}.6.weight"  # the second conv, after a dropout
    return resnet_entries(kw, mobile=False, layout=layout,
                          dropout=second in sd and sd[second].ndim == 4)
  if arch in ("mobile_resnet_generator", "sub_mobile_resnet_generator"):
    return resnet_entries(kw, mobile=True)
  if arch == "unet_generator":
    return unet_entries(kw)
  if arch == "dcgan_generator":
    return dcgan_generator_entries(kw)
  if arch == "dcgan_discriminator":
    return dcgan_discriminator_entries(kw)
  if arch in ("mlp_generator", "mlp_discriminator"):
    return mlp_entries(kw)
  if arch == "lenet5":
    return lenet5_entries(kw)
  if arch == "patchgan_discriminator":
    return patchgan_discriminator_entries(kw)
  if arch in SAGAN_ARCHS:
    return sagan_entries(arch, layout or spectral_layout(sd))
  if arch == "stylegan2_generator":
    return stylegan2_generator_entries(kw)
  if arch == "stylegan2_discriminator":
    return stylegan2_discriminator_entries(kw)
  raise ValueError(f"unknown arch {arch!r}")


# --------------------------------------------------------------------------------------------
# SAGAN (heykeetae/Self-Attention-GAN sagan_models.py) and its spectral-norm layouts


class SpectralLayout(NamedTuple):
  """Where one upstream saves a spectrally normalised layer ``{m}`` and what its forward does.

  Attributes:
    weight, u, v, bias: key suffixes after ``{m}.`` of the unnormalised weight, the two
      power-iteration vectors and the bias.
    transpose_rows: the axis of a ``ConvTranspose2d`` weight ``[in, out, kh, kw]`` the matrix
      rows (and ``u``) run along, ``"in"`` or ``"out"`` (``Conv2d``: always ``out``).
    power_iterations: power iterations the first forward call after loading runs on the stored
      vectors before it computes ``sigma = u . W v`` (the conversion reproduces that call).
    eps: the normalisation epsilon of the power iteration.
    eps_mode: ``"add"`` (``v / (|v| + eps)``) or ``"max"`` (``v / max(|v|, eps)``).
    source: the upstream file.
  """
  weight: str
  u: str
  v: str
  bias: str
  transpose_rows: str
  power_iterations: int
  eps: float
  eps_mode: str
  source: str


# Layouts of the spectrally normalised SAGAN layers: the same layers saved by two spectral-norm
# implementations (rows of one table, read from the keys by ``spectral_layout``).
SPECTRAL_LAYOUTS: dict[str, SpectralLayout] = {
    "heykeetae": SpectralLayout(
        "module.weight_bar", "module.weight_u", "module.weight_v", "module.bias", "in", 1,
        1e-12, "add",
        "heykeetae/Self-Attention-GAN spectral.py SpectralNorm: wraps the layer (keys under "
        "'.module'), views the weight as w.view(w.shape[0], -1), one power iteration on every "
        "call, training or not"),
    "torch": SpectralLayout(
        "weight_orig", "weight_u", "weight_v", "bias", "out", 0, 1e-6, "max",
        "torch.nn.utils.spectral_norm as POSTECH-CVLab/PyTorch-StudioGAN src/utils/ops.py "
        "(snconv2d, sndeconv2d: eps=1e-6) saves it: dim=1 for ConvTranspose2d; an eval() "
        "forward uses the stored vectors, a training one iterates once first"),
}

SAGAN_ARCHS = ("sagan_generator", "sagan_discriminator")


def spectral_layout(sd: dict[str, np.ndarray]) -> str | None:
  """The ``SPECTRAL_LAYOUTS`` name whose weight key (``l1.0.<weight>``) the state_dict has, or
  None when it has neither (no spectral-norm parameters)."""
  for name, row in SPECTRAL_LAYOUTS.items():
    if f"l1.0.{row.weight}" in sd:
      return name
  return None


def sagan_spectral_layers(arch: str) -> list[tuple[str, str, bool]]:
  """``(Flax name, upstream module prefix, transposed)`` of every spectrally normalised layer of
  ``arch``: ``l1`` .. ``l4`` at ``l{i}.0`` (``nn.Sequential`` index 0 of ``self.l{i}``)."""
  return [(f"l{i}", f"l{i}.0", arch == "sagan_generator") for i in range(1, 5)]


def sagan_entries(arch: str, layout: str | None) -> list[Entry]:
  """Key map of heykeetae/Self-Attention-GAN ``sagan_models.py`` ``Generator`` and
  ``Discriminator`` (64x64) with spectral-norm keys of ``SPECTRAL_LAYOUTS[layout]``.

  ``self.l{i}`` are ``nn.Sequential``: the spectrally normalised convolution at 0 (weight,
  ``u``, ``v`` -> ``params/l{i}/kernel``, ``spectral/l{i}/u``, ``v``; ``spectral/l{i}/sigma`` has
  no key: the conversion computes it), the generator's ``BatchNorm2d`` at 1 (-> ``bn{i}``);
  ``last.0`` a plain convolution (transposed in the generator); ``attn1``, ``attn2``:
  ``query_conv``, ``key_conv``, ``value_conv`` (1x1 ``Conv2d`` with biases) and ``gamma``.
  """
  row = SPECTRAL_LAYOUTS[layout or "heykeetae"]
  gen = arch == "sagan_generator"
  kind = CONVT if gen else CONV
  e: list[Entry] = []
  for name, m, _ in sagan_spectral_layers(arch):
    e += [(f"params/{name}/kernel", f"{m}.{row.weight}", kind),
          (f"params/{name}/bias", f"{m}.{row.bias}", VEC),
          (f"spectral/{name}/u", f"{m}.{row.u}", VEC),
          (f"spectral/{name}/v", f"{m}.{row.v}", VEC)]
    if gen:
      e += _norm(f"bn{name[1:]}", f"l{name[1:]}.1", "batch")
  for a in ("attn1", "attn2"):
    for c in ("query_conv", "key_conv", "value_conv"):
      e += _conv(f"{a}/{c}", f"{a}.{c}")
    e.append((f"params/{a}/gamma", f"{a}.gamma", VEC))
  return e + _conv("last", "last.0", kind)


