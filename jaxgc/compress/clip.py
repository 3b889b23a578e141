"""Post-training weight clipping: clamp each tensor, or each output channel, to ``[-c, c]``.

Clipping is the first of the two post-training compressions studied by Mordido, Yang and Meinel
2021, "Evaluating Post-Training Compression in GANs using Locality-Sensitive Hashing"
(arXiv 2103.11912): the threshold ``c`` is an absolute value, a percentile of ``|w|``, or ``k``
standard deviations. It shrinks the range a later quantizer must cover, at the price of the
outlier weights.

Kernel layout: ``[kh, kw, in, out]`` (conv, transposed conv) or ``[in, out]`` (dense); per-channel
thresholds are taken over every axis but the last.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgc.compress import quantize
from jaxgc.compress import selection

MODES = ("absolute", "percentile", "std")


def check_clip(mode: Any, value: Any, granularity: Any) -> None:
  """Validates clipping settings.

  Raises:
    ValueError: unknown ``mode`` or ``granularity``; ``value`` not a finite number; an absolute
      threshold ``<= 0``; a percentile outside ``(0, 100]``; a std multiplier ``k <= 0``.
  """
  if mode not in MODES:
    raise ValueError(f"clip mode must be one of {MODES}, got {mode!r}")
  quantize.check_granularity(granularity)
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ValueError(f"clip value must be a number, got {value!r}")
  if not math.isfinite(value):
    raise ValueError(f"clip value must be finite, got {value!r}")
  if mode == "absolute" and not value > 0:
    raise ValueError(f"absolute clip threshold must be > 0, got {value!r}")
  if mode == "percentile" and not 0 < value <= 100:
    raise ValueError(f"clip percentile must be in (0, 100], got {value!r}")
  if mode == "std" and not value > 0:
    raise ValueError(f"clip std multiplier k must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """Clipping settings. Hashable, so it can be a static argument of ``jax.jit``.

  Attributes:
    mode: ``"absolute"`` (``c = value``), ``"percentile"`` (``c`` = the ``value``-th percentile of
      ``|w|``, ``value`` in ``(0, 100]``, e.g. 99.9) or ``"std"`` (``c = value * std(w)``,
      ``value = k > 0``).
    value: the threshold, percentile or multiplier, by mode.
    granularity: ``"per_tensor"`` or ``"per_channel"`` (one threshold per output channel).

  Raises:
    ValueError: see :func:`check_clip`.
  """

  mode: str
  value: float
  granularity: str = "per_tensor"

  def __post_init__(self):
    check_clip(self.mode, self.value, self.granularity)


def _percentile_abs(w: jax.Array, value: float, axes: tuple[int, ...]) -> jax.Array:
  """``numpy.percentile(|w|, value, method="linear")`` over ``axes`` (all, or all but the last).

  The interpolation position is computed in Python from the static ``value``, so the 100th
  percentile is exactly ``max|w|`` (``jnp.percentile`` is off by a few ulp there).
  """
  cols = 1 if len(axes) == w.ndim else w.shape[-1]
  s = jnp.sort(jnp.abs(w).reshape(-1, cols), axis=0)
  pos = float(value) / 100.0 * (s.shape[0] - 1)
  lo = min(int(math.floor(pos)), s.shape[0] - 1)
  hi = min(lo + 1, s.shape[0] - 1)
  frac = pos - lo
  if frac == 0.0:
    return s[lo]
  return s[lo] + np.float32(frac) * (s[hi] - s[lo])


def clip_threshold(
    w: jax.Array,
    mode: str,
    value: float,
    granularity: str = "per_tensor",
) -> jax.Array:
  """The clipping threshold ``c >= 0`` of a weight tensor.

  * ``"absolute"``: ``c = value``.
  * ``"percentile"``: ``c = percentile(|w|, value)`` with linear interpolation (as
    ``numpy.percentile``); ``value = 100`` gives exactly ``max|w|``, so clipping is the identity.
  * ``"std"``: ``c = k * std(w)``, the population standard deviation (``ddof = 0``, about the mean
    of the tensor or channel) times ``k = value``; the clamp itself is centred on 0, as trained
    conv weights are close to zero-mean. A tensor or channel with zero spread gets ``c = max|w|``,
    i.e. it is left unchanged rather than set to 0.

  Args:
    w: weights, e.g. ``[kh, kw, in, out]``, any float dtype; computed in float32.
    mode: ``"absolute"``, ``"percentile"`` or ``"std"``.
    value: the threshold, percentile in ``(0, 100]`` or multiplier ``k > 0``.
    granularity: ``"per_tensor"`` or ``"per_channel"`` (every axis but the last is reduced).

  Returns:
    float32 ``c`` of shape ``[1, ..., 1]`` (per tensor) or ``[1, ..., 1, out]`` (per channel),
    ``ndim`` equal to ``w.ndim``.

  Raises:
    ValueError: see :func:`check_clip`.
  """
  check_clip(mode, value, granularity)
  w = jnp.asarray(w).astype(jnp.float32)
  axes = quantize.reduce_axes(w.ndim, granularity)
  reduced = tuple(1 if i in axes else d for i, d in enumerate(w.shape))
  if mode == "absolute":
    return jnp.full(reduced, value, jnp.float32)
  if mode == "percentile":
    return _percentile_abs(w, value, axes).reshape(reduced)
  c = np.float32(value) * jnp.std(w, axis=axes, keepdims=True)
  amax = jnp.max(jnp.abs(w), axis=axes, keepdims=True)
  return jnp.where(c > 0, c, amax)


def clip_tensor(
    w: jax.Array,
    mode: str,
    value: float,
    granularity: str = "per_tensor",
) -> jax.Array:
  """Clamps ``w`` to ``[-c, c]`` with ``c = clip_threshold(w, mode, value, granularity)``.

  Args:
    w: weights, any float dtype; computed in float32.
    mode: see :func:`clip_threshold`.
    value: see :func:`clip_threshold`.
    granularity: see :func:`clip_threshold`.

  Returns:
    The clipped weights, same shape and dtype as ``w``.

  Raises:
    ValueError: see :func:`check_clip`.
  """
  w = jnp.asarray(w)
  c = clip_threshold(w, mode, value, granularity)
  return jnp.clip(w.astype(jnp.float32), -c, c).astype(w.dtype)


def clip_weights(
    variables: Any,
    config: ClipConfig,
    include: str = selection.DEFAULT_INCLUDE,
    exclude: str | None = None,
) -> Any:
  """Clips the selected leaves of a variables tree (Mordido et al. 2021, arXiv 2103.11912).

  Pure: returns a new tree; leaves that are not selected are returned as they are. Jittable with
  ``config``, ``include`` and ``exclude`` static.

  Args:
    variables: nested dicts of arrays, e.g. ``{"params": {...}, "batch_stats": {...}}``, or
      an ``nnx.State`` (``nnx.split(model)``; selected by its Linen-style paths, returned as an
      ``nnx.State``: :mod:`jaxgc.compress.selection`).
    config: the :class:`ClipConfig`.
    include: regex on "/"-joined paths; by default every ``kernel`` under ``params``.
    exclude: optional regex of paths to leave untouched.

  Returns:
    A tree of the same structure; selected leaves keep their shape and dtype.

  Raises:
    ValueError: no leaf selected, a selected leaf is not floating point, or (outside ``jit``) a
      selected leaf holds NaN/Inf; the message names the path.
  """
  return selection.map_selected(
      lambda w: clip_tensor(w, config.mode, config.value, config.granularity),
      variables, include, exclude)
