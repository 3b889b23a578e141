"""ResNet image-to-image generators: CycleGAN/pix2pix and GAN Compression's mobile variants.

Sources (module structure and numerics; the converter follows their state_dict key names):
  * ``ResnetGenerator``: junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``
    (``ResnetGenerator``, ``ResnetBlock``), Zhu et al. 2017, Johnson et al. 2016.
  * ``MobileResnetGenerator``: mit-han-lab/gan-compression
    ``models/modules/resnet_architecture/mobile_resnet_generator.py`` and
    ``models/modules/mobile_modules.py`` (``SeparableConv2d``), Li et al. 2020.
  * ``SubMobileResnetGenerator``: same repository,
    ``models/modules/resnet_architecture/sub_mobile_resnet_generator.py``.

All take ``[batch, height, width, input_nc]`` float32 in [-1, 1] (height and width multiples of
4) and return ``[batch, height, width, output_nc]`` float32 in [-1, 1] (tanh).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models import layers


def _pad_conv(x, features, kernel, pad, padding_type, use_bias, name, groups=1):
  """``[Pad(pad), Conv2d(padding=0)]`` for reflect/replicate, ``Conv2d(padding=pad)`` for zero."""
  if padding_type == "zero":
    return layers.conv(features, kernel, padding=pad, use_bias=use_bias, groups=groups,
                       name=name)(x)
  x = layers.pad2d(x, pad, padding_type)
  return layers.conv(features, kernel, use_bias=use_bias, groups=groups, name=name)(x)


def check_image_input(x: jax.Array, channels: int) -> None:
  """Raises ValueError unless ``x`` is ``[batch, height, width, channels]`` with sides % 4 == 0."""
  if x.ndim != 4 or x.shape[-1] != channels or x.shape[1] % 4 or x.shape[2] % 4:
    raise ValueError(f"images must be [batch, height, width, {channels}] with height and width "
                     f"multiples of 4, got shape {tuple(x.shape)}")


def _resolve_widths(ngf: int, n_blocks: int, stem: int | None, down: Sequence[int] | None,
                   hidden: Sequence[int] | None, up: Sequence[int] | None) -> dict[str, Any]:
  """Per-layer widths of a ResNet generator: the given ones, the ``ngf`` defaults elsewhere.

  Args:
    ngf: base width; the defaults are stem ``ngf``, down ``(2 ngf, 4 ngf)``, hidden
      ``(4 ngf,) * n_blocks`` and up ``(2 ngf, ngf)``.
    n_blocks: number of residual blocks.
    stem, down, hidden, up: explicit widths or None (see ``SubMobileResnetGenerator``).

  Returns:
    ``{"stem": int, "down": (int, int), "hidden": (int,) * n_blocks, "up": (int, int)}``.

  Raises:
    ValueError: ``down`` or ``up`` not of length 2, or ``hidden`` not of length ``n_blocks``.
  """
  widths = {"stem": ngf if stem is None else int(stem),
            "down": (2 * ngf, 4 * ngf) if down is None else layers.as_tuple(down),
            "hidden": (4 * ngf,) * n_blocks if hidden is None else layers.as_tuple(hidden),
            "up": (2 * ngf, ngf) if up is None else layers.as_tuple(up)}
  for key, n in (("down", 2), ("hidden", n_blocks), ("up", 2)):
    if len(widths[key]) != n:
      raise ValueError(f"{key} must have {n} widths, got {widths[key]}")
  return widths


def _encode(x, *, stem: int, down: tuple[int, int], norm: str) -> list[jax.Array]:
  """The stem and the two stride-2 downsamplings: their three activations (after ReLU)."""
  use_bias = layers.norm_has_conv_bias(norm)
  x = layers.conv(stem, 7, use_bias=use_bias, name="conv_in")(layers.pad2d(x, 3, "reflect"))
  maps = [nn.relu(layers.norm_layer(norm, "norm_in")(x))]
  for i, c in enumerate(down):
    x = layers.conv(c, 3, strides=2, padding=1, use_bias=use_bias, name=f"down_{i}")(maps[-1])
    maps.append(nn.relu(layers.norm_layer(norm, f"down_norm_{i}")(x)))
  return maps


def _encoder_decoder(x, *, stem: int, down: tuple[int, int], up: tuple[int, int], output_nc: int,
                     norm: str, padding_type: str, blocks):
  """Stem, two stride-2 downsamplings, residual trunk, two transposed-conv upsamplings, head."""
  use_bias = layers.norm_has_conv_bias(norm)
  x = _encode(x, stem=stem, down=down, norm=norm)[-1]
  for block in blocks:
    x = block(x)
  for i, c in enumerate(up):
    x = layers.ConvTranspose(c, 3, strides=2, padding=1, output_padding=1, use_bias=use_bias,
                             name=f"up_{i}")(x)
    x = nn.relu(layers.norm_layer(norm, f"up_norm_{i}")(x))
  x = layers.conv(output_nc, 7, name="conv_out")(layers.pad2d(x, 3, "reflect"))
  return jnp.tanh(x)


class ResnetBlock(nn.Module):
  """``x + [pad, conv3x3, norm, relu, pad, conv3x3, norm](x)``; width ``dim`` in and out.

  ``hidden`` is the width between the two convolutions (``dim`` when None, as upstream; a
  channel-slimmed block has fewer). Dropout (``use_dropout`` upstream) is the identity at
  inference and is not modelled.
  """

  dim: int
  norm: str = "instance"
  padding_type: str = "reflect"
  hidden: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    use_bias = layers.norm_has_conv_bias(self.norm)
    hidden = self.dim if self.hidden is None else self.hidden
    y = _pad_conv(x, hidden, 3, 1, self.padding_type, use_bias, "conv_0")
    y = nn.relu(layers.norm_layer(self.norm, "norm_0")(y))
    y = _pad_conv(y, self.dim, 3, 1, self.padding_type, use_bias, "conv_1")
    y = layers.norm_layer(self.norm, "norm_1")(y)
    return x + y


class ResnetGenerator(nn.Module):
  """CycleGAN/pix2pix ResNet generator (``resnet_6blocks`` / ``resnet_9blocks``).

  Widths ``ngf, 2 ngf, 4 ngf`` (trunk), back to ``2 ngf, ngf``. ``norm="instance"`` is
  ``InstanceNorm2d(affine=False)`` with conv biases; ``norm="instance_affine"`` is
  ``InstanceNorm2d(affine=True)`` (``scale`` and ``bias`` per channel) with conv biases, as
  the vintage CycleGAN of ``$JAXGC_ASSETS/cyclegan-vintage-resnet9`` (PyPI ``vintagify``
  ``generator.py``) has it; ``norm="batch"`` is inference-mode ``BatchNorm2d`` (running
  statistics in ``batch_stats``) without conv biases.

  ``stem``, ``down``, ``hidden`` and ``up`` (None by default: the ``ngf`` widths) set
  per-layer widths with ``SubMobileResnetGenerator``'s meaning, as a channel-slimmed model
  (``jaxgc.compress.slim``) needs; ``down[1]`` is then the trunk width and ``hidden`` the
  width inside each block (``len(hidden) == n_blocks``). Parameter names do not change.

  Input ``[batch, height, width, input_nc]`` float32 in [-1, 1]; output
  ``[batch, height, width, output_nc]`` in [-1, 1]. Height and width must be multiples of 4.
  """

  kind: ClassVar[str] = "image_to_image"
  input_nc: int = 3
  output_nc: int = 3
  ngf: int = 64
  n_blocks: int = 9
  norm: str = "instance"
  padding_type: str = "reflect"
  stem: int | None = None
  down: tuple[int, ...] | None = None
  hidden: tuple[int, ...] | None = None
  up: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_image_input(x, self.input_nc)
    w = _resolve_widths(self.ngf, self.n_blocks, self.stem, self.down, self.hidden, self.up)
    blocks = [ResnetBlock(w["down"][1], self.norm, self.padding_type, hidden=h, name=f"block_{i}")
              for i, h in enumerate(w["hidden"])]
    return _encoder_decoder(x, stem=w["stem"], down=w["down"], up=w["up"],
                            output_nc=self.output_nc, norm=self.norm,
                            padding_type=self.padding_type, blocks=blocks)


class SeparableConv(nn.Module):
  """GAN Compression's ``SeparableConv2d``: depthwise conv, instance norm, pointwise 1x1 conv.

  ``depthwise`` kernel ``[k, k, 1, in]`` (groups = in) and bias ``[in]``, a parameter-free
  ``InstanceNorm2d`` over ``in`` channels, ``pointwise`` kernel ``[1, 1, in, features]`` and
  bias. Upstream's mobile blocks never pass their ``norm_layer`` or ``use_bias`` on to it, so
  the inner norm is always an instance norm and both convolutions always have biases.
  """

  features: int
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    x = layers.conv(c, self.kernel_size, groups=c, name="depthwise")(x)
    x = layers.InstanceNorm(name="mid_norm")(x)
    return layers.conv(self.features, 1, name="pointwise")(x)


class MobileResnetBlock(nn.Module):
  """``x + [pad, sep(dim->hidden), norm, relu, pad, sep(hidden->dim), norm](x)``.

  ``hidden == dim`` in ``MobileResnetGenerator``; the sub-network of GAN Compression chooses
  ``hidden`` per block. Dropout is the identity at inference and is not modelled.
  """

  dim: int
  hidden: int
  norm: str = "instance"
  padding_type: str = "reflect"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = layers.pad2d(x, 1, self.padding_type)
    y = SeparableConv(self.hidden, 3, name="sep_0")(y)
    y = nn.relu(layers.norm_layer(self.norm, "norm_0")(y))
    y = layers.pad2d(y, 1, self.padding_type)
    y = SeparableConv(self.dim, 3, name="sep_1")(y)
    y = layers.norm_layer(self.norm, "norm_1")(y)
    return x + y


class MobileResnetGenerator(nn.Module):
  """GAN Compression's ``MobileResnetGenerator``: ResNet generator with separable blocks.

  Same stem, downsampling and upsampling as ``ResnetGenerator`` (widths from ``ngf``); each
  residual block uses depthwise-separable convolutions at the trunk width ``4 ngf``. Unlike
  ``SubMobileResnetGenerator``, upstream's ``forward`` does not clamp the input (the clamp is
  commented out there), and neither does this module. ``stem``, ``down``, ``hidden`` and
  ``up`` override the ``ngf`` widths as in ``ResnetGenerator``.

  Input ``[batch, height, width, 3]`` float32 in [-1, 1]; output
  ``[batch, height, width, output_nc]`` in [-1, 1].
  """

  kind: ClassVar[str] = "image_to_image"
  input_nc: int = 3
  output_nc: int = 3
  ngf: int = 64
  n_blocks: int = 9
  norm: str = "instance"
  padding_type: str = "reflect"
  stem: int | None = None
  down: tuple[int, ...] | None = None
  hidden: tuple[int, ...] | None = None
  up: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_image_input(x, self.input_nc)
    w = _resolve_widths(self.ngf, self.n_blocks, self.stem, self.down, self.hidden, self.up)
    blocks = [MobileResnetBlock(w["down"][1], h, self.norm, self.padding_type, name=f"block_{i}")
              for i, h in enumerate(w["hidden"])]
    return _encoder_decoder(x, stem=w["stem"], down=w["down"], up=w["up"],
                            output_nc=self.output_nc, norm=self.norm,
                            padding_type=self.padding_type, blocks=blocks)


class SubMobileResnetGenerator(nn.Module):
  """GAN Compression's ``SubMobileResnetGenerator``: a mobile generator with per-layer widths.

  Attributes:
    stem: channels of the 7x7 stem convolution.
    down: output channels of the two stride-2 convolutions; ``down[1]`` is the trunk width.
    hidden: per residual block, the width between its two separable convolutions.
    up: output channels of the two transposed convolutions.
    output_nc: image channels out.

  The released horse->zebra generator of ``../shared/assets`` has stem 16, down (32, 128),
  hidden (64,)*3 + (128,)*6, up (32, 16). Input is clamped to [-1, 1] as upstream does.
  Input ``[batch, height, width, 3]`` float32 in [-1, 1]; output ``[batch, height, width,
  output_nc]`` in [-1, 1].
  """

  kind: ClassVar[str] = "image_to_image"
  input_nc: int = 3
  stem: int = 16
  down: tuple[int, ...] = (32, 128)
  hidden: tuple[int, ...] = (64, 64, 64, 128, 128, 128, 128, 128, 128)
  up: tuple[int, ...] = (32, 16)
  output_nc: int = 3
  norm: str = "instance"
  padding_type: str = "reflect"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_image_input(x, self.input_nc)
    dim = self.down[1]
    blocks = [MobileResnetBlock(dim, h, self.norm, self.padding_type, name=f"block_{i}")
              for i, h in enumerate(self.hidden)]
    return _encoder_decoder(jnp.clip(x, -1.0, 1.0), stem=self.stem, down=tuple(self.down),
                            up=tuple(self.up), output_nc=self.output_nc, norm=self.norm,
                            padding_type=self.padding_type, blocks=blocks)


class ResnetEncoder(nn.Module):
  """The encoder of a zoo ResNet generator (stem and two stride-2 convolutions) as a frozen
  feature network: a generator's own ``conv_in``/``norm_in``/``down_*``/``down_norm_*``
  variables apply to it unchanged (:func:`encoder_of`).

  Input ``[batch, height, width, 3]`` float32 in [-1, 1] (clamped first when ``clamp``, as
  ``SubMobileResnetGenerator`` does); output the three ReLU activations ``[batch, height, width,
  stem]``, ``[batch, height / 2, width / 2, down[0]]`` and ``[batch, height / 4, width / 4,
  down[1]]``.

  Raises:
    ValueError: (at trace time) images not ``[batch, height, width, 3]`` with sides % 4 == 0.
  """

  stem: int
  down: tuple[int, ...]
  norm: str = "instance"
  clamp: bool = False
  input_nc: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    check_image_input(x, self.input_nc)
    if self.clamp:
      x = jnp.clip(x, -1.0, 1.0)
    return tuple(_encode(x, stem=self.stem, down=tuple(self.down), norm=self.norm))


ENCODER_KEYS = ("conv_in", "norm_in", "down_0", "down_norm_0", "down_1", "down_norm_1")


def encoder_of(module: nn.Module, variables: dict[str, Any]) -> tuple[ResnetEncoder, dict]:
  """``(encoder, encoder variables)`` of a ResNet / mobile / sub-mobile generator of the zoo.

  The variables are the generator's own, restricted to ``ENCODER_KEYS`` in every collection.

  Raises:
    ValueError: ``module`` is not one of the zoo's ResNet generators.
  """
  if isinstance(module, SubMobileResnetGenerator):
    enc = ResnetEncoder(module.stem, tuple(module.down), module.norm, True, module.input_nc)
  elif isinstance(module, (ResnetGenerator, MobileResnetGenerator)):
    w = _resolve_widths(module.ngf, module.n_blocks, module.stem, module.down, module.hidden,
                        module.up)
    enc = ResnetEncoder(w["stem"], w["down"], module.norm, False, module.input_nc)
  else:
    raise ValueError(f"encoder_of needs a ResNet generator of the zoo, got "
                     f"{type(module).__name__}")
  sub = {c: {k: v for k, v in tree.items() if k in ENCODER_KEYS}
         for c, tree in variables.items()}
  return enc, {c: t for c, t in sub.items() if t}
