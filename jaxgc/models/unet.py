"""The pix2pix U-Net generator.

Source (module structure and numerics; the converter follows its state_dict key names):
junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py`` (``UnetGenerator``,
``UnetSkipConnectionBlock``), Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks", Sec. 3.1 and appendix 6.1.1.

Upstream nests ``num_downs`` skip blocks; block ``i`` (0 = outermost) downsamples with a 4x4
stride-2 convolution, runs block ``i + 1`` and upsamples with a 4x4 stride-2 transposed
convolution. Here the same layers are flat, named by level:

* ``down_{i}``, ``i = 0 .. num_downs - 1``: the downsampling convolution of block ``i``
  (output width ``down[i]``), preceded by LeakyReLU(0.2) except in the outermost block, and
  followed by ``down_norm_{i}`` except in the outermost and innermost blocks;
* ``up_{i}``, ``i = 0 .. num_downs - 2``: the transposed convolution of block ``i + 1`` (output
  width ``up[i]``), preceded by ReLU and followed by ``up_norm_{i}`` and, in the blocks with
  ``8 ngf`` channels in and out other than the innermost, ``Dropout(0.5)`` when
  ``use_dropout``;
* ``up_out``: the transposed convolution of the outermost block (``output_nc`` channels, always
  with a bias), preceded by ReLU and followed by tanh.

Block ``i + 1`` returns ``concat([leaky_relu(d_i), u_i])`` (channels last): ``d_i`` is the
output of ``down_{i}`` (and its norm), ``u_i`` of ``up_{i}``. The skip carries
``leaky_relu(d_i)``, not ``d_i``, because upstream's in-place ``LeakyReLU(0.2, True)``
overwrites the block's input before ``torch.cat`` reads it.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models import layers


def default_widths(num_downs: int, ngf: int) -> dict[str, tuple[int, ...]]:
  """Upstream widths: ``down[i] = ngf * min(2**i, 8)``, ``up[i] = down[i]``.

  Args:
    num_downs: number of downsamplings, >= 5.
    ngf: width of the outermost convolution.

  Returns:
    ``{"down": (num_downs ints), "up": (num_downs - 1 ints)}``.
  """
  down = tuple(ngf * min(2**i, 8) for i in range(num_downs))
  return {"down": down, "up": down[:-1]}


def dropout_levels(num_downs: int) -> range:
  """Levels ``i`` of the ``up_{i}`` layers followed by ``Dropout(0.5)`` with ``use_dropout``:
  those of upstream's ``num_downs - 5`` middle blocks, ``3 .. num_downs - 3``."""
  return range(3, num_downs - 2)


class UnetGenerator(nn.Module):
  """pix2pix U-Net (``unet_128``: ``num_downs=7``; ``unet_256``: 8; 5 for 32x32 images).

  Attributes:
    input_nc: image channels in.
    output_nc: image channels out.
    num_downs: number of downsamplings (>= 5); height and width must be multiples of
      ``2**num_downs`` (the innermost feature map is 1x1 at that size).
    ngf: width of the outermost convolution; the defaults of ``down`` and ``up`` follow it.
    norm: ``"batch"`` (upstream's default; no biases in the convolutions before a norm),
      ``"instance"`` or ``"instance_affine"`` (biases everywhere).
    use_dropout: ``Dropout(0.5)`` after the middle blocks' up path (pix2pix trains with it);
      only active with ``deterministic=False``. It has no parameters, so a state_dict does
      not show it: pass ``use_dropout=True`` to ``jaxgc.convert`` to get it.
    down: per level, the width of ``down_{i}``; None: ``default_widths``.
    up: per level ``i < num_downs - 1``, the width of ``up_{i}``; None: ``default_widths``. A
      channel-slimmed model (``jaxgc.compress.slim``) sets ``down`` and ``up``.

  Invariants: ``len(down) == num_downs``, ``len(up) == num_downs - 1``; ``up_{i}`` reads
  ``down[i + 1] + up[i + 1]`` channels (``down[-1]`` for the innermost) and ``up_out``
  ``down[0] + up[0]``.
  """

  kind: ClassVar[str] = "image_to_image"
  input_nc: int = 3
  output_nc: int = 3
  num_downs: int = 8
  ngf: int = 64
  norm: str = "batch"
  use_dropout: bool = False
  down: tuple[int, ...] | None = None
  up: tuple[int, ...] | None = None

  def _widths(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if self.num_downs < 5:
      raise ValueError(f"num_downs must be >= 5 (upstream's UnetGenerator), got "
                       f"{self.num_downs}")
    if self.norm not in layers.NORMS:
      raise ValueError(f"norm must be one of {layers.NORMS}, got {self.norm!r}")
    w = default_widths(self.num_downs, self.ngf)
    down = w["down"] if self.down is None else layers.as_tuple(self.down)
    up = w["up"] if self.up is None else layers.as_tuple(self.up)
    if len(down) != self.num_downs or len(up) != self.num_downs - 1:
      raise ValueError(f"down must have {self.num_downs} widths and up {self.num_downs - 1}, "
                       f"got down={down}, up={up}")
    return down, up

  def _norm(self, name: str, x: jax.Array, batch_statistics: bool) -> jax.Array:
    if self.norm == "batch":
      return layers.BatchNorm(name=name)(x, batch_statistics)
    return layers.norm_layer(self.norm, name)(x)

  @nn.compact
  def __call__(self, x: jax.Array, batch_statistics: bool = False,
               deterministic: bool = True) -> jax.Array:
    """Translates images.

    Args:
      x: ``[batch, height, width, input_nc]`` float32 in [-1, 1]; height and width multiples
        of ``2**num_downs``.
      batch_statistics: False (default): inference as after PyTorch's ``eval()`` (BatchNorm
        with its running statistics). True: BatchNorm normalises with the batch's own
        statistics, as upstream ``test.py`` does by default (it calls ``eval()`` only with
        ``--eval``); no effect with instance norm.
      deterministic: True (default): no dropout. False: ``Dropout(0.5)`` where ``use_dropout``
        put it (also upstream ``test.py``'s default); needs ``rngs={"dropout": key}``. PyTorch's
        random stream is not reproduced, only the distribution.

    Returns:
      ``[batch, height, width, output_nc]`` float32 in [-1, 1] (tanh).

    Raises:
      ValueError: wrong rank or channel count, sides not multiples of ``2**num_downs``,
        ``num_downs < 5``, an unknown ``norm`` or widths of the wrong length.
    """
    down, up = self._widths()
    n, side = self.num_downs, 2**self.num_downs
    if x.ndim != 4 or x.shape[-1] != self.input_nc or x.shape[1] % side or x.shape[2] % side:
      raise ValueError(f"images must be [batch, height, width, {self.input_nc}] with height and "
                       f"width multiples of 2**num_downs = {side}, got shape {tuple(x.shape)}")
    use_bias = layers.norm_has_conv_bias(self.norm)

    def down_conv(i, h):
      return layers.conv(down[i], 4, strides=2, padding=1, use_bias=use_bias,
                         name=f"down_{i}")(h)

    def up_conv(features, h, name, bias):
      return layers.ConvTranspose(features, 4, strides=2, padding=1, use_bias=bias,
                                  name=name)(nn.relu(h))

    # Down path: d[i] is the output of down_{i} (and its norm).
    d = [down_conv(0, x)]
    for i in range(1, n):
      h = down_conv(i, nn.leaky_relu(d[-1], 0.2))
      if i < n - 1:
        h = self._norm(f"down_norm_{i}", h, batch_statistics)
      d.append(h)
    # Up path, innermost first: block i + 1 returns concat([leaky_relu(d[i]), u_i]).
    h = d[-1]
    for i in reversed(range(n - 1)):
      u = self._norm(f"up_norm_{i}", up_conv(up[i], h, f"up_{i}", use_bias), batch_statistics)
      if self.use_dropout and i in dropout_levels(n):
        u = nn.Dropout(0.5, deterministic=deterministic)(u)
      h = jnp.concatenate([nn.leaky_relu(d[i], 0.2), u], axis=-1)
    return jnp.tanh(up_conv(self.output_nc, h, "up_out", True))
