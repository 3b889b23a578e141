"""PatchGAN discriminator (pix2pix, Isola et al. 2017; CycleGAN, Zhu et al. 2017), NHWC.

Source: junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``, ``NLayerDiscriminator``
and ``get_norm_layer`` (the converter in ``jaxgc.convert.mapping`` follows its ``model.N.*``
key names). With ``n_layers=3`` each output logit sees a 70x70 window of the input (the "70x70
PatchGAN" of both papers).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from jaxgc.models import layers

NORMS = ("batch", "instance", "none")


def receptive_field(n_layers: int) -> int:
  """Side in pixels of the input window one output logit of the PatchGAN depends on.

  ``n_layers`` stride-2 and two stride-1 convolutions, all 4x4: ``16, 34, 70, 142, ...`` for
  ``n_layers = 1, 2, 3, 4``.
  """
  rf = 1
  for stride in [1, 1] + [2] * n_layers:  # from the output back to the input
    rf = (rf - 1) * stride + 4
  return rf


def output_size(size: int, n_layers: int) -> int:
  """Side of the logit map for an input side ``size``: ``size // 2`` per stride-2 convolution
  (kernel 4, padding 1), then ``- 1`` per stride-1 convolution (30 for 256, 6 for 70)."""
  for _ in range(n_layers):
    size = (size + 2 - 4) // 2 + 1
  return size - 2


class PatchGANDiscriminator(nn.Module):
  """PatchGAN discriminator: a map of real/fake logits, one per overlapping input patch.

  Layers (upstream ``NLayerDiscriminator``; all convolutions 4x4 with zero padding 1):
  ``Conv(input_nc, ndf, stride 2)`` with bias, LeakyReLU(0.2); for ``n = 1 .. n_layers - 1``
  ``Conv(ndf * min(2**(n-1), 8), ndf * min(2**n, 8), stride 2)``, norm, LeakyReLU(0.2); then
  ``Conv(., ndf * min(2**n_layers, 8), stride 1)``, norm, LeakyReLU(0.2); and
  ``Conv(., 1, stride 1)`` with bias. The convolutions before a norm carry a bias only with
  ``norm="instance"`` (upstream's ``use_bias``: BatchNorm has its own shift, and upstream's
  ``"none"`` norm, an ``Identity``, also leaves them without bias).

  Attributes:
    input_nc: input channels (3 for CycleGAN; 6 for pix2pix, which feeds input and output
      concatenated).
    ndf: channels of the first convolution (64 upstream).
    n_layers: number of stride-2 convolutions, >= 1 (3: the 70x70 PatchGAN).
    norm: ``"batch"`` (``BatchNorm2d``: parameters ``scale``/``bias`` and ``batch_stats``
      running ``mean``/``var``, eps 1e-5, momentum 0.1 in PyTorch terms), ``"instance"``
      (``InstanceNorm2d(affine=False, track_running_stats=False)``: no variables) or ``"none"``.
    image_size: side of the square training crops (256 upstream); used for example inputs
      only, any size of at least ``2**n_layers * 3`` is accepted.
    features: output channels of ``conv_0 .. conv_{n_layers}``, ``n_layers + 1`` ints; None
      (the default) for upstream's ``ndf * min(2**i, 8)``. A channel-slimmed PatchGAN
      (``jaxgc.compress.slim``) sets them to the kept counts.

  Invariants: the output always has one channel and no sigmoid (LSGAN and the vanilla
  BCE-with-logits GAN losses apply their own); its side is ``output_size(size, n_layers)``.
  ``kind`` is ``"patch_discriminator"``, not ``"discriminator"``: jaxgc's ``"discriminator"``
  modules return probabilities, which this one does not.
  """

  kind: ClassVar[str] = "patch_discriminator"
  input_nc: int = 3
  ndf: int = 64
  n_layers: int = 3
  norm: str = "batch"
  image_size: int = 256
  features: tuple[int, ...] | None = None

  def widths(self) -> tuple[int, ...]:
    """Output channels of ``conv_0 .. conv_{n_layers}`` (``features``, or upstream's)."""
    if self.features is None:
      return tuple(self.ndf * min(2**i, 8) for i in range(self.n_layers + 1))
    return tuple(int(c) for c in self.features)

  def _norm(self, i: int, train: bool) -> nn.Module | None:
    if self.norm == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                          name=f"norm_{i}")
    if self.norm == "instance":
      return layers.InstanceNorm(name=f"norm_{i}")
    return None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits of "real" for each patch.

    Args:
      x: ``[batch, height, width, input_nc]`` float32 images (in [-1, 1] upstream), height
        and width at least ``3 * 2**n_layers`` (24 for ``n_layers=3``).
      train: with ``norm="batch"``, normalise with the batch's statistics and update the
        running ones (call with ``mutable=["batch_stats"]``); otherwise (the default, PyTorch's
        ``eval()``) use the running statistics. Flax updates the running variance with the
        biased batch variance, PyTorch with the unbiased one (a factor ``m / (m - 1)``, ``m``
        the number of values per channel). No effect with the other norms.

    Returns:
      ``[batch, output_size(height), output_size(width), 1]`` float32 logits (30x30 for
      256x256 inputs with ``n_layers=3``).

    Raises:
      ValueError: wrong rank or channel count, an input smaller than ``3 * 2**n_layers``, an
        unknown ``norm``, ``n_layers < 1`` or ``features`` of another length than
        ``n_layers + 1``.
    """
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
    if self.n_layers < 1:
      raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
    widths = self.widths()
    if len(widths) != self.n_layers + 1 or min(widths) < 1:
      raise ValueError(f"features must be {self.n_layers + 1} channel counts >= 1 (n_layers + "
                       f"1), got {self.features!r}")
    if x.ndim != 4 or x.shape[-1] != self.input_nc:
      raise ValueError(f"images must be [batch, height, width, {self.input_nc}], got shape "
                       f"{tuple(x.shape)}")
    smallest = 3 * 2**self.n_layers
    if min(x.shape[1:3]) < smallest:
      raise ValueError(f"images must be at least {smallest}x{smallest} for n_layers="
                       f"{self.n_layers}, got {x.shape[1]}x{x.shape[2]}")
    use_bias = self.norm == "instance"
    x = layers.conv(widths[0], 4, strides=2, padding=1, name="conv_0")(x)
    x = nn.leaky_relu(x, 0.2)
    for i in range(1, self.n_layers + 1):
      last = i == self.n_layers
      x = layers.conv(widths[i], 4, strides=1 if last else 2, padding=1,
                      use_bias=use_bias, name=f"conv_{i}")(x)
      norm = self._norm(i, train)
      if norm is not None:
        x = norm(x)
      x = nn.leaky_relu(x, 0.2)
    return layers.conv(1, 4, strides=1, padding=1, name=f"conv_{self.n_layers + 1}")(x)
