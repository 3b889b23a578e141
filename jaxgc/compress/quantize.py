"""Uniform (affine) weight quantization: scales, integer codes and fake quantization.

The scheme is the affine map of Jacob et al. 2018, "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference" (CVPR), eq. 1: ``r = S * (q - Z)`` with a real
scale ``S > 0`` and an integer zero point ``Z``; the inverse is ``q = clip(round(r / S) + Z)``.
Per-channel scales (one per output channel, the last axis) follow the recipe of Andreev et al.
2021, "Quantization of Generative Adversarial Networks for Efficient Inference: a Methodological
Study" (arXiv 2108.13996); post-training quantization of GAN generators without fine-tuning is the
setting of Mordido et al. 2021 (arXiv 2103.11912).

Every computation runs in float32, whatever the weight dtype, and the result is cast back, so
:func:`fake_quant` and the real low-bit storage of :mod:`jaxgc.compress.storage` produce the same
bits.

Kernel layout: conv and transposed-conv kernels are ``[kh, kw, in, out]``, dense kernels
``[in, out]``; the output channel is always the last axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgc.compress import selection

MIN_BITS = 2
MAX_BITS = 8
GRANULARITIES = ("per_tensor", "per_channel")

# Smallest normal float32. A scale below it (a zero or denormal range) is replaced by 1: then every
# code is the zero point and the tensor dequantizes to exact zeros, with an error below
# 2**MAX_BITS * _TINY.
_TINY = float(np.finfo(np.float32).tiny)


def check_bits(bits: Any) -> None:
  """Raises ``ValueError`` unless ``bits`` is a Python/NumPy int in ``[2, 8]``."""
  if (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
      or not MIN_BITS <= bits <= MAX_BITS):
    raise ValueError(f"weight bits must be in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


def check_granularity(granularity: Any) -> None:
  """Raises ``ValueError`` unless ``granularity`` is ``"per_tensor"`` or ``"per_channel"``."""
  if granularity not in GRANULARITIES:
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
  """Returns the integer code range ``(qmin, qmax)``.

  Args:
    bits: bit width in ``[2, 8]``.
    symmetric: signed restricted range ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (int8: ``[-127, 127]``,
      int4: ``[-7, 7]``, so zero is exact and the range is symmetric) when true; unsigned
      ``[0, 2**b - 1]`` when false.

  Raises:
    ValueError: ``bits`` outside ``[2, 8]``.
  """
  check_bits(bits)
  if symmetric:
    qmax = 2 ** (bits - 1) - 1
    return -qmax, qmax
  return 0, 2**bits - 1


# Bit-exactness across eager, jitted and storage paths. XLA's algebraic simplifier rewrites
# ``a / broadcast(b)`` as ``a * broadcast(1 / b)`` (and may do the same for a division by a
# constant) in compiled code, which changes the last bit and, near a rounding tie, a code. So no
# quantity here is divided: constants are multiplied by their float32 reciprocal computed in Python,
# and weights by ``1 / scale`` computed once per scale. Every remaining op is an IEEE-exact
# elementwise op that XLA does not reassociate, so all paths give the same bits.


def _inverse(n: int) -> np.float32:
  return np.float32(1.0 / n)


def _reciprocal(scale: jax.Array) -> jax.Array:
  return np.float32(1.0) / scale


def reduce_axes(ndim: int, granularity: str) -> tuple[int, ...]:
  """Axes a per-tensor or per-channel statistic reduces over (per channel: all but the last)."""
  check_granularity(granularity)
  if granularity == "per_channel" and ndim > 0:
    return tuple(range(ndim - 1))
  return tuple(range(ndim))


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """Weight quantization settings. Hashable, so it can be a static argument of ``jax.jit``.

  Attributes:
    bits: int in ``[2, 8]``, weight bit width.
    symmetric: signed restricted range with zero point 0 when true; unsigned affine range with a
      per-scale integer zero point when false.
    granularity: ``"per_channel"`` (one scale per output channel, the last axis) or
      ``"per_tensor"``.

  Raises:
    ValueError: ``bits`` outside ``[2, 8]`` or an unknown ``granularity``.
  """

  bits: int
  symmetric: bool = True
  granularity: str = "per_channel"

  def __post_init__(self):
    check_bits(self.bits)
    check_granularity(self.granularity)


def compute_scale_zero_point(
    w: jax.Array,
    bits: int,
    symmetric: bool = True,
    granularity: str = "per_channel",
) -> tuple[jax.Array, jax.Array]:
  """Min-max scale and zero point of Jacob et al. 2018 (eq. 1-3).

  * symmetric: ``qmax = 2**(b-1) - 1``, ``scale = max|w| / qmax``, ``zero_point = 0``.
  * asymmetric: the range ``[lo, hi]`` with ``lo = min(min(w), 0)`` and ``hi = max(max(w), 0)``
    (so that 0 is representable), ``scale = (hi - lo) / (2**b - 1)`` and
    ``zero_point = round(-lo / scale)``, an integer-valued float in ``[0, 2**b - 1]``.

  Divisions are computed as multiplications by a float32 reciprocal (``max|w| * float32(1/qmax)``,
  ``-lo * (1 / scale)``), which XLA leaves alone, so eager and jitted results agree bit for bit;
  they differ from the true quotient by at most one float32 rounding.

  A scale that is zero or below the smallest normal float32 (an all-zero tensor or channel) is
  replaced by 1, so the codes are the zero point and the dequantized values are exactly 0.

  Args:
    w: weights of any float dtype, e.g. ``[kh, kw, in, out]`` or ``[in, out]``; computed in
      float32.
    bits: bit width in ``[2, 8]``.
    symmetric: symmetric (signed) or asymmetric (unsigned affine) range.
    granularity: ``"per_channel"`` reduces over every axis but the last; ``"per_tensor"`` over all
      axes. A 0-d array is always per tensor.

  Returns:
    ``(scale, zero_point)``, float32, both of shape ``[1, ..., 1, out]`` (per channel) or
    ``[1, ..., 1]`` (per tensor), ``ndim`` equal to ``w.ndim``, so they broadcast against ``w``.

  Raises:
    ValueError: ``bits`` outside ``[2, 8]`` or an unknown ``granularity``.
  """
  check_bits(bits)
  w = jnp.asarray(w).astype(jnp.float32)
  axes = reduce_axes(w.ndim, granularity)
  if symmetric:
    amax = jnp.max(jnp.abs(w), axis=axes, keepdims=True)
    scale = amax * _inverse(2 ** (bits - 1) - 1)
    scale = jnp.where(scale >= _TINY, scale, np.float32(1.0))
    zero_point = jnp.zeros_like(scale)
  else:
    lo = jnp.minimum(jnp.min(w, axis=axes, keepdims=True), np.float32(0.0))
    hi = jnp.maximum(jnp.max(w, axis=axes, keepdims=True), np.float32(0.0))
    scale = (hi - lo) * _inverse(2**bits - 1)
    scale = jnp.where(scale >= _TINY, scale, np.float32(1.0))
    zero_point = jnp.round(-lo * _reciprocal(scale))
  return scale, zero_point


def quantize_int(
    w: jax.Array,
    scale: jax.Array,
    zero_point: jax.Array,
    bits: int,
    symmetric: bool = True,
) -> jax.Array:
  """Integer codes ``q = clip(round(w / scale) + zero_point, qmin, qmax)`` (Jacob et al. eq. 1).

  Rounding is ``jnp.round``: to nearest, ties to even. ``w / scale`` is computed as
  ``w * (1 / scale)`` so that compiled and eager code round the same way (see the module notes).

  Args:
    w: weights, any float dtype (computed in float32).
    scale: float32, broadcastable to ``w`` (from :func:`compute_scale_zero_point`).
    zero_point: float32 integer-valued, broadcastable to ``w``.
    bits: bit width in ``[2, 8]``.
    symmetric: selects the code range, see :func:`code_range`.

  Returns:
    int32 codes of the shape of ``w``, in ``[qmin, qmax]``.

  Raises:
    ValueError: ``bits`` outside ``[2, 8]``.
  """
  qmin, qmax = code_range(bits, symmetric)
  q = jnp.round(jnp.asarray(w).astype(jnp.float32) * _reciprocal(scale)) + zero_point
  return jnp.clip(q, qmin, qmax).astype(jnp.int32)


def dequantize(q: jax.Array, scale: jax.Array, zero_point: jax.Array) -> jax.Array:
  """Real values ``(q - zero_point) * scale`` in float32 (Jacob et al. eq. 1).

  Args:
    q: integer codes (any integer dtype).
    scale: float32, broadcastable to ``q``.
    zero_point: float32 integer-valued, broadcastable to ``q``.

  Returns:
    float32 array of the broadcast shape.
  """
  return (jnp.asarray(q).astype(jnp.float32) - zero_point) * scale


def fake_quant(
    w: jax.Array,
    bits: int,
    symmetric: bool = True,
    granularity: str = "per_channel",
) -> jax.Array:
  """Round-to-nearest uniform fake quantization with a straight-through gradient.

  The forward value is ``dequantize(quantize_int(w))`` with the min-max scale of
  :func:`compute_scale_zero_point`: at most ``2**bits`` distinct values per channel (per tensor),
  and ``|out - w| <= scale / 2`` for every weight. The gradient with respect to ``w`` is the
  identity: the plain straight-through estimator (Bengio, Leonard and Courville 2013, "Estimating
  or Propagating Gradients Through Stochastic Neurons"; used for quantization-aware training by
  Jacob et al. 2018 and, for GANs, Andreev et al. 2021).

  The STE is written ``(w - stop_gradient(w)) + stop_gradient(q)`` rather than
  ``w + stop_gradient(q - w)``: both have gradient one, but only the first returns exactly ``q``
  in floating point (``w - w == 0`` exactly, ``0 + q == q``), which is what makes the forward
  value bit-identical to the dequantized low-bit storage.

  ``bits``, ``symmetric`` and ``granularity`` are Python values, static under ``jax.jit``.

  Args:
    w: weights, e.g. ``[kh, kw, in, out]``, any float dtype; arithmetic in float32.
    bits: bit width in ``[2, 8]``.
    symmetric: symmetric signed range (zero point 0) or asymmetric unsigned range.
    granularity: ``"per_channel"`` (last axis) or ``"per_tensor"``.

  Returns:
    The fake-quantized weights, same shape and dtype as ``w``.

  Raises:
    ValueError: ``bits`` outside ``[2, 8]`` or an unknown ``granularity``.
  """
  check_bits(bits)
  check_granularity(granularity)
  w = jnp.asarray(w)
  w32 = w.astype(jnp.float32)
  scale, zero_point = compute_scale_zero_point(w32, bits, symmetric, granularity)
  q = dequantize(quantize_int(w32, scale, zero_point, bits, symmetric), scale, zero_point)
  q = q.astype(w.dtype)
  return (w - jax.lax.stop_gradient(w)) + jax.lax.stop_gradient(q)


def fake_quantize(
    variables: Any,
    config: QuantConfig,
    include: str = selection.DEFAULT_INCLUDE,
    exclude: str | None = None,
) -> Any:
  """Applies :func:`fake_quant` to the selected leaves of a variables tree.

  Pure: returns a new tree; leaves that are not selected are returned as they are. Jittable with
  ``config``, ``include`` and ``exclude`` static, e.g.
  ``jax.jit(fake_quantize, static_argnames=("config", "include", "exclude"))``.

  Args:
    variables: nested dicts of arrays, e.g. ``{"params": {...}, "batch_stats": {...}}``, or
      an ``nnx.State`` (``nnx.split(model)``; selected by its Linen-style paths, returned as an
      ``nnx.State``: :mod:`jaxgc.compress.selection`).
    config: the :class:`QuantConfig`.
    include: regex on "/"-joined paths; by default every ``kernel`` under ``params``.
    exclude: optional regex of paths to keep in full precision (e.g. first and last layers).

  Returns:
    A tree of the same structure; selected leaves keep their shape and dtype.

  Raises:
    ValueError: no leaf selected, a selected leaf is not floating point, or (outside ``jit``) a
      selected leaf holds NaN/Inf; the message names the path.
  """
  return selection.map_selected(
      lambda w: fake_quant(w, config.bits, config.symmetric, config.granularity),
      variables, include, exclude)
