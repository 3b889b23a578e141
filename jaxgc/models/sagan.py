"""Self-Attention GAN generator and discriminator (Zhang et al. 2019), 64x64 and 32x32, NHWC.

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

Training mode (``spectral_training=True``, used by ``jaxgc gan``): the ``params`` kernels are
the *unnormalised* weights ``W`` and every forward normalises them as upstream's
``SpectralNorm._update_u_v`` does (Miyato et al. 2018, Algorithm 1, one power iteration per
forward): ``v = normalize(W^T u)``, ``u = normalize(W v)`` (``normalize(x) = x / (|x| +
1e-12)``), ``sigma = u . W v``, kernel ``W / sigma``; ``u`` and ``v`` are constants to the
gradient (upstream updates them on ``.data``), ``sigma`` is not. ``W`` is viewed as PyTorch's
matrix (:func:`spectral_shapes`, columns in PyTorch's memory order, as
``jaxgc.convert.spectral.weight_matrix``). The new ``u``, ``v``, ``sigma`` are written back when
``apply`` is called with ``mutable=["spectral"]`` (the train step keeps them like BatchNorm's
running statistics) and only used otherwise. :func:`fold_spectral` turns a trained model into
the inference form above (kernels ``W / sigma``, ``spectral_training=False``), equal to the
training-mode forward on the same variables.

32x32 (``image_size=32``) is jaxgc's own generalisation: upstream works only at 64x64. It drops
the first of the four doubling layers and keeps the attention layers after the last two, at the
same relative place and widths. Generator: ``l1`` 1x1 -> 4x4 (``4 conv_dim`` channels), ``l2``
-> 8x8 (``2 conv_dim``), ``attn1`` at 8x8 on ``2 conv_dim`` channels, ``l3`` -> 16x16
(``conv_dim``), ``attn2`` at 16x16 on ``conv_dim`` channels, ``last`` -> 32x32 (64x64 upstream:
``attn1`` at 16x16 on ``2 conv_dim``, ``attn2`` at 32x32 on ``conv_dim``). Discriminator:
``l1`` 32 -> 16 (``conv_dim``), ``l2`` -> 8x8 (``2 conv_dim``), ``attn1`` at 8x8 on ``2
conv_dim`` channels, ``l3`` -> 4x4 (``4 conv_dim``), ``attn2`` at 4x4 on ``4 conv_dim``,
``last`` 4x4 -> 1x1 (64x64 upstream: ``attn1`` at 8x8 on ``4 conv_dim``, ``attn2`` at 4x4 on
``8 conv_dim``): the attention maps sit at the same resolutions as upstream's, on half the
channels.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models import layers

SPECTRAL = "spectral"
IMAGE_SIZE = 64
# The sizes the models make: upstream's 64x64 and jaxgc's 32x32 generalisation.
IMAGE_SIZES = (32, 64)
# heykeetae spectral.py l2normalize: v / (|v| + eps).
SPECTRAL_EPS = 1e-12
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


def _spectral_state(module: nn.Module, kernel_shape, transpose: bool, rows: str,
                    training: bool = False):
  """Declares ``spectral`` ``u``, ``v``, ``sigma``: at ``init`` only in inference mode (``apply``
  never reads them, so variables without the collection run too); always in training mode.
  Returns the three variables, or None when not declared."""
  if not (training or module.is_initializing()):
    return None
  nu, nv = spectral_shapes(tuple(kernel_shape), transpose, rows)
  return (module.variable(SPECTRAL, "u", lambda: jnp.full((nu,), nu**-0.5, jnp.float32)),
          module.variable(SPECTRAL, "v", lambda: jnp.full((nv,), nv**-0.5, jnp.float32)),
          module.variable(SPECTRAL, "sigma", lambda: jnp.ones((), jnp.float32)))


def spectral_matrix(kernel: jax.Array, transpose: bool, rows: str = "in") -> jax.Array:
  """A Flax kernel ``[kh, kw, in, out]`` as PyTorch's spectral-norm matrix ``[rows, columns]``
  (:func:`spectral_shapes`; columns in PyTorch's memory order)."""
  if transpose:   # PyTorch [in, out, kh, kw]
    w = jnp.transpose(kernel, (2, 3, 0, 1))
    if rows == "out":
      w = jnp.swapaxes(w, 0, 1)
  else:           # PyTorch [out, in, kh, kw]
    w = jnp.transpose(kernel, (3, 2, 0, 1))
  return w.reshape(w.shape[0], -1)


def power_iteration_step(mat: jax.Array, u: jax.Array, v: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One step of heykeetae ``SpectralNorm._update_u_v``: ``(u, v, sigma)``.

  Args:
    mat: ``[rows, columns]`` float32 (:func:`spectral_matrix`).
    u: ``[rows]`` stored vector, float32.
    v: ``[columns]`` stored vector: unused (upstream overwrites it before reading it).

  Returns:
    the new ``u`` ``[rows]``, ``v`` ``[columns]`` (gradient stopped) and ``sigma = u . mat v``
    (float32 scalar, differentiable in ``mat``).
  """
  del v
  hi = jax.lax.Precision.HIGHEST
  m = jax.lax.stop_gradient(mat)
  v = jnp.dot(m.T, u, precision=hi)
  v = v / (jnp.linalg.norm(v) + SPECTRAL_EPS)
  u = jnp.dot(m, v, precision=hi)
  u = u / (jnp.linalg.norm(u) + SPECTRAL_EPS)
  u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
  return u, v, jnp.dot(u, jnp.dot(mat, v, precision=hi), precision=hi)


def _spectral_kernel(module: nn.Module, kernel: jax.Array, transpose: bool, rows: str,
                     training: bool) -> jax.Array:
  """The kernel the forward uses: ``kernel`` itself (inference: already folded), or in training
  ``kernel / sigma`` after one power iteration, writing the new ``u``, ``v``, ``sigma`` when the
  ``spectral`` collection is mutable (not at ``init``)."""
  state = _spectral_state(module, kernel.shape, transpose, rows, training)
  if not training:
    return kernel
  u, v, s = state
  u_new, v_new, sigma = power_iteration_step(spectral_matrix(kernel, transpose, rows), u.value,
                                             v.value)
  if module.is_mutable_collection(SPECTRAL) and not module.is_initializing():
    u.value, v.value, s.value = u_new, v_new, jax.lax.stop_gradient(sigma)
  return kernel / sigma


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
  training: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    shape = (k, k, x.shape[-1], self.features)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
    kernel = _spectral_kernel(self, kernel, False, "out", self.training)
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
  training: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    kernel = _spectral_kernel(self, kernel, True, self.rows, self.training)
    y = layers.transposed_conv(x, kernel, self.strides, self.padding, self.output_padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


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


def _check_size(image_size: int) -> None:
  if image_size not in IMAGE_SIZES:
    raise ValueError(f"SAGAN makes {IMAGE_SIZES[0]}x{IMAGE_SIZES[0]} (jaxgc's generalisation) or "
                     f"{IMAGE_SIZES[1]}x{IMAGE_SIZES[1]} (upstream) images, got image_size "
                     f"{image_size}")


class SAGANGenerator(nn.Module):
  """SAGAN generator, 64x64 (heykeetae/Self-Attention-GAN ``Generator``) or 32x32 (jaxgc's
  generalisation, module docstring).

  64x64: ``l1``: spectrally normalised ``ConvTranspose2d(z_dim, 8 conv_dim, 4)`` (1x1 -> 4x4);
  ``l2``, ``l3``, ``l4``: spectrally normalised ``ConvTranspose2d(c, c / 2, 4, 2, 1)``; each
  followed by inference-mode BatchNorm (``bn1`` .. ``bn4``) and ReLU; ``attn1`` (16x16, ``2
  conv_dim`` channels) after ``l3``, ``attn2`` (32x32, ``conv_dim``) after ``l4``; ``last``:
  plain ``ConvTranspose2d(conv_dim, channels, 4, 2, 1)`` and tanh. 32x32: ``l1`` (``4
  conv_dim``), ``l2``, ``l3``, ``bn1`` .. ``bn3``; ``attn1`` (8x8, ``2 conv_dim``) after ``l2``,
  ``attn2`` (16x16, ``conv_dim``) after ``l3``; ``last``.

  Attributes:
    z_dim: latent size (upstream ``parameter.py`` default 128).
    conv_dim: width of the last spectrally normalised layer's output; the others follow
      (upstream 64).
    spectral_rows: the axis of the transposed kernels the ``spectral`` vectors ``u`` run along:
      ``"in"`` (heykeetae ``SpectralNorm``) or ``"out"`` (``torch.nn.utils.spectral_norm``);
      it changes only the shapes of ``spectral/*/u`` and ``v``, never the forward.
    image_size: 64 (upstream) or 32.
    channels: output channels (upstream 3).
    spectral_training: normalise the kernels by power iteration in every forward (module
      docstring); False: the kernels are already folded.

  Called as ``module.apply(variables, z)``: ``z`` ``[batch, z_dim]`` float32 (N(0, 1) in
  training) -> images ``[batch, image_size, image_size, channels]`` in [-1, 1]. Upstream's
  forward returns ``(out, p1, p2)``, the images and both attention maps; this returns the
  images only (``return_attention=True``: ``(images, p1, p2)``, at 64x64 ``p1 [batch, 256,
  256]``, ``p2 [batch, 1024, 1024]``). ``batch_statistics=True`` normalises with the batch's
  own statistics, as upstream's ``trainer.py`` samples (it never calls ``eval()``).

  Raises:
    ValueError: ``z`` is not ``[batch, z_dim]``, a bad ``spectral_rows`` or ``image_size``.
  """

  kind: ClassVar[str] = "unconditional"
  z_dim: int = 128
  conv_dim: int = 64
  spectral_rows: str = "in"
  image_size: int = IMAGE_SIZE
  channels: int = 3
  spectral_training: bool = False

  @nn.compact
  def __call__(self, z: jax.Array, batch_statistics: bool = False,
               return_attention: bool = False):
    if z.ndim != 2 or z.shape[-1] != self.z_dim:
      raise ValueError(f"latents must be [batch, {self.z_dim}], got shape {tuple(z.shape)}")
    _check_conv_dim(self.conv_dim)
    _check_size(self.image_size)
    if self.spectral_rows not in SPECTRAL_ROWS:
      raise ValueError(f"spectral_rows must be one of {SPECTRAL_ROWS}, got {self.spectral_rows!r}")
    x = z[:, None, None, :]
    maps = []
    widths = (8, 4, 2, 1) if self.image_size == 64 else (4, 2, 1)
    for i, f in enumerate(widths):
      first = i == 0
      x = SpectralConvTranspose(f * self.conv_dim, 4, strides=1 if first else 2,
                                padding=0 if first else 1, rows=self.spectral_rows,
                                training=self.spectral_training, name=f"l{i + 1}")(x)
      x = nn.relu(layers.BatchNorm(name=f"bn{i + 1}")(x, batch_statistics))
      if i >= len(widths) - 2:
        x, p = SelfAttention(name=f"attn{i + 3 - len(widths)}")(x, return_attention=True)
        maps.append(p)
    y = jnp.tanh(layers.ConvTranspose(self.channels, 4, strides=2, padding=1, name="last")(x))
    return (y, *maps) if return_attention else y


class SAGANDiscriminator(nn.Module):
  """SAGAN discriminator, 64x64 (heykeetae/Self-Attention-GAN ``Discriminator``) or 32x32
  (jaxgc's generalisation, module docstring).

  64x64: ``l1`` .. ``l4``: spectrally normalised ``Conv2d(c, 2c, 4, 2, 1)`` (``input_nc ->
  conv_dim -> ... -> 8 conv_dim``), each followed by LeakyReLU(0.1); ``attn1`` (8x8, ``4
  conv_dim`` channels) after ``l3``, ``attn2`` (4x4, ``8 conv_dim``) after ``l4``; ``last``:
  plain ``Conv2d(8 conv_dim, 1, 4)`` (4x4 -> 1x1). No norms, no sigmoid. 32x32: ``l1`` ..
  ``l3`` (up to ``4 conv_dim``), ``attn1`` (8x8, ``2 conv_dim``) after ``l2``, ``attn2`` (4x4,
  ``4 conv_dim``) after ``l3``, ``last`` ``Conv2d(4 conv_dim, 1, 4)``.

  Attributes:
    conv_dim: width of ``l1`` (upstream 64).
    image_size: 64 (upstream) or 32.
    input_nc: image channels (upstream 3).
    spectral_training: as :class:`SAGANGenerator`.

  Called as ``module.apply(variables, x)``: ``x`` ``[batch, image_size, image_size,
  input_nc]`` float32 images in [-1, 1] -> ``[batch, 1]`` float32 logits (upstream returns
  ``(out.squeeze(), p1, p2)``: ``[batch]`` logits and both attention maps;
  ``return_attention=True`` gives ``(logits, p1 [batch, 64, 64], p2 [batch, 16, 16])``).

  Raises:
    ValueError: ``x`` is not ``[batch, image_size, image_size, input_nc]``; a bad
      ``image_size``.
  """

  kind: ClassVar[str] = "discriminator"
  conv_dim: int = 64
  image_size: int = IMAGE_SIZE
  input_nc: int = 3
  spectral_training: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, return_attention: bool = False):
    _check_size(self.image_size)
    s, c = self.image_size, self.input_nc
    if x.ndim != 4 or tuple(x.shape[1:]) != (s, s, c):
      raise ValueError(f"images must be [batch, {s}, {s}, {c}], got shape {tuple(x.shape)}")
    _check_conv_dim(self.conv_dim)
    maps = []
    widths = (1, 2, 4, 8) if s == 64 else (1, 2, 4)
    for i, f in enumerate(widths):
      x = nn.leaky_relu(SpectralConv(f * self.conv_dim, 4, 2, 1,
                                     training=self.spectral_training, name=f"l{i + 1}")(x), 0.1)
      if i >= len(widths) - 2:
        x, p = SelfAttention(name=f"attn{i + 3 - len(widths)}")(x, return_attention=True)
        maps.append(p)
    y = layers.conv(1, 4, name="last")(x).reshape(x.shape[0], 1)
    return (y, *maps) if return_attention else y


@functools.partial(jax.jit, static_argnums=(3, 4))
def _fold_one(kernel, u, v, transpose: bool, rows: str):
  u, v, sigma = power_iteration_step(spectral_matrix(kernel, transpose, rows), u, v)
  return kernel / sigma, u, v, sigma


def fold_spectral(module: nn.Module, variables: dict) -> tuple[nn.Module, dict]:
  """A training-mode SAGAN (``spectral_training=True``) as its inference form.

  Each spectrally normalised kernel ``W`` becomes ``W / sigma`` after one power iteration from
  the stored ``u`` (what the training-mode forward computes), and ``spectral`` holds the new
  ``u``, ``v``, ``sigma``, as ``jaxgc.convert`` folds an upstream checkpoint; so the returned
  model's forward equals the training-mode forward on ``variables`` (to float32 rounding).

  Args:
    module: a :class:`SAGANGenerator` or :class:`SAGANDiscriminator`.
    variables: its variables (``params``, ``spectral``, and ``batch_stats`` for G), arrays.

  Returns:
    ``(module with spectral_training=False, variables)``; float32 numpy arrays; ``variables``
    is not changed.

  Raises:
    ValueError: ``module`` is not a SAGAN or is already in inference form.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  if not isinstance(module, (SAGANGenerator, SAGANDiscriminator)):
    raise ValueError(f"fold_spectral takes a SAGAN module, got {type(module).__name__}")
  if not module.spectral_training:
    raise ValueError("fold_spectral: the module's kernels are already folded "
                     "(spectral_training=False)")
  transpose = isinstance(module, SAGANGenerator)
  rows = module.spectral_rows if transpose else "out"
  params = dict(variables["params"])
  spectral = {}
  for name, state in variables[SPECTRAL].items():
    kernel, u, v, sigma = _fold_one(jnp.asarray(params[name]["kernel"], jnp.float32),
                                    jnp.asarray(state["u"]), jnp.asarray(state["v"]),
                                    transpose, rows)
    params[name] = {**params[name], "kernel": np.asarray(kernel, np.float32)}
    spectral[name] = {"u": np.asarray(u, np.float32), "v": np.asarray(v, np.float32),
                      "sigma": np.asarray(sigma, np.float32)}
  return (module.clone(spectral_training=False),
          {**variables, "params": params, SPECTRAL: spectral})
