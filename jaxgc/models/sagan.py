"""Self-Attention GAN generator and discriminator (Zhang et al. 2019), 64x64, NHWC.

Source (module structure and numerics; the converter follows its state_dict key names):
heykeetae/Self-Attention-GAN ``sagan_models.py`` (``Generator``, ``Discriminator``,
``Self_Attn``) and ``spectral.py`` (``SpectralNorm``). Upstream builds ``l4`` only for
``image_size == 64`` and calls it unconditionally, and sizes its attention layers for
``conv_dim = 64`` (128 and 64 channels in the generator, 256 and 512 in the discriminator):
64x64 is its only working size. Here the attention layers take the channels they are given, so
``conv_dim`` may differ (equal to upstream at 64).

Spectral normalisation is folded into the weights at conversion (``jaxgc.convert``): the
``params`` kernels are upstream's ``weight_bar / sigma`` as its first forward after loading
computes them, so the forward here is plain convolutions and what quantization sees is the
folded kernel. The power-iteration state is kept, for training, in the variable collection
:data:`SPECTRAL` (``"spectral"``), one entry per spectrally normalised layer
(``spectral/<layer>/u``, ``v``, ``sigma``): ``u`` and ``v`` the vectors after that first call,
``sigma = u . W v`` the spectral-norm estimate the kernel was divided by (so the unnormalised
weight is ``kernel * sigma``). The forward never reads them; ``module.apply`` may be given
``{"params", "batch_stats"}`` without them.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models import layers

SPECTRAL = "spectral"
IMAGE_SIZE = 64
# Which axis of a transposed convolution's kernel the spectral vector ``u`` runs along.
SPECTRAL_ROWS = ("in", "out")


def spectral_shapes(kernel_shape: tuple[int, ...], transpose: bool, rows: str = "in"
                    ) -> tuple[int, int]:
  """``(len(u), len(v))`` of a spectrally normalised layer with a Flax kernel of this shape.

  PyTorch views its weight as a matrix with one row per index of one axis: ``Conv2d`` weight
  ``[out, in, kh, kw]`` as ``out`` rows (both upstreams); ``ConvTranspose2d`` weight
  ``[in, out, kh, kw]`` as ``in`` rows in heykeetae ``SpectralNorm`` (``w.view(w.shape[0], -1)``,
  ``rows="in"``) and as ``out`` rows in ``torch.nn.utils.spectral_norm`` (``dim=1``,
  ``rows="out"``).

  Args:
    kernel_shape: Flax kernel ``[kh, kw, in, out]``.
    transpose: the layer is a transposed convolution.
    rows: ``"in"`` or ``"out"``, for transposed convolutions only.

  Returns:
    ``(rows, columns)`` of that matrix: the lengths of ``u`` and ``v``.

  Raises:
    ValueError: ``rows`` is not one of :data:`SPECTRAL_ROWS`.
  """
  if rows not in SPECTRAL_ROWS:
    raise ValueError(f"spectral_rows must be one of {SPECTRAL_ROWS}, got {rows!r}")
  kh, kw, cin, cout = kernel_shape
  r = cin if transpose and rows == "in" else cout
  return r, kh * kw * cin * cout // r


def _spectral_state(module: nn.Module, kernel_shape, transpose: bool, rows: str) -> None:
  """Declares ``spectral`` ``u``, ``v``, ``sigma`` at ``init`` only: ``apply`` never reads them,
  so variables without the collection run too."""
  if not module.is_initializing():
    return
  nu, nv = spectral_shapes(tuple(kernel_shape), transpose, rows)
  module.variable(SPECTRAL, "u", lambda: jnp.full((nu,), nu**-0.5, jnp.float32))
  module.variable(SPECTRAL, "v", lambda: jnp.full((nv,), nv**-0.5, jnp.float32))
  module.variable(SPECTRAL, "sigma", lambda: jnp.ones((), jnp.float32))


def _check_conv_dim(conv_dim: int) -> None:
  if conv_dim < 8:
    raise ValueError(f"conv_dim must be >= 8 (the attention layers need 8 channels), got "
                     f"{conv_dim}")


class SpectralConv(nn.Module):
  """``torch.nn.Conv2d`` (zero padding ``padding``) whose kernel is spectrally normalised.

  Variables: ``params`` ``kernel`` ``[k, k, in, features]`` (already divided by ``sigma``) and
  ``bias`` ``[features]``; ``spectral`` ``u`` ``[features]``, ``v`` ``[k * k * in]``,
  ``sigma`` ``[]`` (:func:`spectral_shapes`). Input and output ``[batch, height, width,
  channels]`` float32.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    shape = (k, k, x.shape[-1], self.features)
    _spectral_state(self, shape, False, "out")
    kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
    p, s = self.padding, self.strides
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=(s, s), padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    return y + self.param("bias", nn.initializers.zeros, (self.features,))


class SpectralConvTranspose(layers.ConvTranspose):
  """``torch.nn.ConvTranspose2d`` (:class:`jaxgc.models.layers.ConvTranspose`) whose kernel is
  spectrally normalised.

  Variables: those of ``layers.ConvTranspose`` (``kernel`` ``[k, k, in, features]``, already
  divided by ``sigma``; ``bias``) and ``spectral`` ``u``, ``v``, ``sigma``, shaped by ``rows``
  (:func:`spectral_shapes`).
  """

  rows: str = "in"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    _spectral_state(self, (k, k, x.shape[-1], self.features), True, self.rows)
    return super().__call__(x)


class SelfAttention(nn.Module):
  """``Self_Attn`` of ``sagan_models.py``: ``x + gamma * attention(x)``.

  1x1 convolutions ``query_conv`` and ``key_conv`` (``channels // 8`` outputs) and
  ``value_conv`` (``channels``), all with biases; ``gamma`` ``[1]`` (0 at initialisation). With
  ``N = height * width`` positions in row-major order, ``q``, ``k`` ``[batch, N, channels//8]``
  and ``v`` ``[batch, N, channels]``: ``attention = softmax(q k^T)`` over the last axis (keys)
  and ``out = attention v``; no scaling of the logits, as upstream.

  Input and output ``[batch, height, width, channels]`` float32 (``channels >= 8``).
  ``return_attention=True`` also returns the map ``[batch, N, N]`` (upstream's second output).
  """

  @nn.compact
  def __call__(self, x: jax.Array, return_attention: bool = False):
    b, h, w, c = x.shape
    if c < 8:
      raise ValueError(f"self-attention needs at least 8 channels, got {c}")
    q = layers.conv(c // 8, 1, name="query_conv")(x).reshape(b, h * w, c // 8)
    k = layers.conv(c // 8, 1, name="key_conv")(x).reshape(b, h * w, c // 8)
    v = layers.conv(c, 1, name="value_conv")(x).reshape(b, h * w, c)
    gamma = self.param("gamma", nn.initializers.zeros, (1,))
    hi = jax.lax.Precision.HIGHEST
    attention = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k, precision=hi), axis=-1)
    out = jnp.einsum("bij,bjc->bic", attention, v, precision=hi).reshape(b, h, w, c)
    y = gamma * out + x
    return (y, attention) if return_attention else y


class SAGANGenerator(nn.Module):
  """SAGAN generator, 64x64 (heykeetae/Self-Attention-GAN ``Generator``).

  ``l1``: spectrally normalised ``ConvTranspose2d(z_dim, 8 conv_dim, 4)`` (1x1 -> 4x4); ``l2``,
  ``l3``, ``l4``: spectrally normalised ``ConvTranspose2d(c, c / 2, 4, 2, 1)``; each followed by
  inference-mode BatchNorm (``bn1`` .. ``bn4``) and ReLU; ``attn1`` (16x16, ``2 conv_dim``
  channels) after ``l3``, ``attn2`` (32x32, ``conv_dim``) after ``l4``; ``last``: plain
  ``ConvTranspose2d(conv_dim, 3, 4, 2, 1)`` and tanh.

  Attributes:
    z_dim: latent size (upstream ``parameter.py`` default 128).
    conv_dim: width of ``l4``'s output; the others follow (upstream 64).
    spectral_rows: the axis of the transposed kernels the ``spectral`` vectors ``u`` run along:
      ``"in"`` (heykeetae ``SpectralNorm``) or ``"out"`` (``torch.nn.utils.spectral_norm``);
      it changes only the shapes of ``spectral/*/u`` and ``v``, never the forward.

  Called as ``module.apply(variables, z)``: ``z`` ``[batch, z_dim]`` float32 (N(0, 1) in
  training) -> images ``[batch, 64, 64, 3]`` in [-1, 1]. Upstream's forward returns
  ``(out, p1, p2)``, the images and both attention maps; this returns the images only
  (``return_attention=True``: ``(images, p1 [batch, 256, 256], p2 [batch, 1024, 1024])``).
  ``batch_statistics=True`` normalises with the batch's own statistics, as upstream's
  ``trainer.py`` samples (it never calls ``eval()``).

  Raises:
    ValueError: ``z`` is not ``[batch, z_dim]``, or a bad ``spectral_rows``.
  """

  kind: ClassVar[str] = "unconditional"
  z_dim: int = 128
  conv_dim: int = 64
  spectral_rows: str = "in"

  @nn.compact
  def __call__(self, z: jax.Array, batch_statistics: bool = False,
               return_attention: bool = False):
    if z.ndim != 2 or z.shape[-1] != self.z_dim:
      raise ValueError(f"latents must be [batch, {self.z_dim}], got shape {tuple(z.shape)}")
    _check_conv_dim(self.conv_dim)
    if self.spectral_rows not in SPECTRAL_ROWS:
      raise ValueError(f"spectral_rows must be one of {SPECTRAL_ROWS}, got {self.spectral_rows!r}")
    x = z[:, None, None, :]
    maps = []
    for i, f in enumerate((8, 4, 2, 1)):
      first = i == 0
      x = SpectralConvTranspose(f * self.conv_dim, 4, strides=1 if first else 2,
                                padding=0 if first else 1, rows=self.spectral_rows,
                                name=f"l{i + 1}")(x)
      x = nn.relu(layers.BatchNorm(name=f"bn{i + 1}")(x, batch_statistics))
      if i >= 2:
        x, p = SelfAttention(name=f"attn{i - 1}")(x, return_attention=True)
        maps.append(p)
    y = jnp.tanh(layers.ConvTranspose(3, 4, strides=2, padding=1, name="last")(x))
    return (y, *maps) if return_attention else y


class SAGANDiscriminator(nn.Module):
  """SAGAN discriminator, 64x64 (heykeetae/Self-Attention-GAN ``Discriminator``).

  ``l1`` .. ``l4``: spectrally normalised ``Conv2d(c, 2c, 4, 2, 1)`` (``3 -> conv_dim -> ...
  -> 8 conv_dim``), each followed by LeakyReLU(0.1); ``attn1`` (8x8, ``4 conv_dim`` channels)
  after ``l3``, ``attn2`` (4x4, ``8 conv_dim``) after ``l4``; ``last``: plain
  ``Conv2d(8 conv_dim, 1, 4)`` (4x4 -> 1x1). No norms, no sigmoid.

  Attributes:
    conv_dim: width of ``l1`` (upstream 64).

  Called as ``module.apply(variables, x)``: ``x`` ``[batch, 64, 64, 3]`` float32 images in
  [-1, 1] -> ``[batch, 1]`` float32 logits (upstream returns ``(out.squeeze(), p1, p2)``:
  ``[batch]`` logits and both attention maps; ``return_attention=True`` gives
  ``(logits, p1 [batch, 64, 64], p2 [batch, 16, 16])``).

  Raises:
    ValueError: ``x`` is not ``[batch, 64, 64, 3]``.
  """

  kind: ClassVar[str] = "discriminator"
  image_size: ClassVar[int] = IMAGE_SIZE
  input_nc: ClassVar[int] = 3
  conv_dim: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, return_attention: bool = False):
    if x.ndim != 4 or tuple(x.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
      raise ValueError(f"images must be [batch, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] (SAGAN's only "
                       f"size), got shape {tuple(x.shape)}")
    _check_conv_dim(self.conv_dim)
    maps = []
    for i, f in enumerate((1, 2, 4, 8)):
      x = nn.leaky_relu(SpectralConv(f * self.conv_dim, 4, 2, 1, name=f"l{i + 1}")(x), 0.1)
      if i >= 2:
        x, p = SelfAttention(name=f"attn{i - 1}")(x, return_attention=True)
        maps.append(p)
    y = layers.conv(1, 4, name="last")(x).reshape(x.shape[0], 1)
    return (y, *maps) if return_attention else y
