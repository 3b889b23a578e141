"""Activation fake quantization at apply time: calibration, static and dynamic ranges.

The *input* of every convolution, transposed convolution and dense layer (``nn.Conv``,
``nn.ConvTranspose``, ``jaxgc.models.layers.Conv``, ``ConvTranspose`` and ``DepthwiseConv``,
``nn.Dense``) is fake-quantized before the layer runs, for any model of the zoo and without changing model code: the layers'
``__call__`` is intercepted with :func:`flax.linen.intercept_methods`. A layer is named by its
module path joined with "/", e.g. ``block_0/sep_0/depthwise``; that is the path of its kernel
without the ``params/`` prefix and the ``/kernel`` suffix, so the same regexes select weights
(:mod:`jaxgc.compress.selection`) and activations.

Two ways to pick the range ``[lo, hi]`` of a layer's input:

* ``"static"``: ranges calibrated once on a calibration set by :func:`calibrate` (min-max,
  percentile, MSE-optimal or exponential moving average), the post-training recipe of Andreev,
  Fritzler and Vetrov 2021, "Quantization of Generative Adversarial Networks for Efficient
  Inference: a Methodological Study" (arXiv 2108.13996), section on activation calibration;
* ``"dynamic"``: the min and max of the current input, recomputed at every call.

The quantizer is the affine map of Jacob et al. 2018 (CVPR, eq. 1), as for weights in
:mod:`jaxgc.compress.quantize`, but with activation bit widths ``2..16``. The range is first
extended to contain 0 (``lo <= 0 <= hi``) so that zero (padding, ReLU outputs) is exact.
Gradients use a clipped straight-through estimator: the gradient is 1 where
``lo <= x <= hi`` and 0 outside, so quantization-aware training works through
:func:`apply_quantized` (Bengio et al. 2013; Jacob et al. 2018, section 3).

NNX: a model bridged by :func:`jaxgc.convert.to_nnx` (``flax.nnx.bridge.ToNNX``) runs the Linen
module's ``apply`` inside its ``__call__``, so the interception reaches its layers unchanged:
``with quantized_activations(cfg, calib): y = nnx_model(x)`` quantizes the same layer inputs as
:func:`apply_quantized` on the Linen module, with the same layer paths. :func:`calibrate` and
:func:`apply_quantized` take a Linen module and variables: pass
``*jaxgc.convert.from_nnx(nnx_model)``. Native NNX layers (``nnx.Conv``, ``nnx.Linear``) are not
Linen modules and are not intercepted.

Typical use::

  calib = calibrate(model, variables, batches, ActQuantConfig(8), method="percentile")
  save_calibration(calib, "calib.json")
  y = apply_quantized(model, variables, x, ActQuantConfig(8), calib)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgc._fileio import atomic_write_text
from jaxgc.compress import qconfig
from jaxgc.compress import quantize
from jaxgc.compress import selection
from jaxgc.compress.qconfig import ActQuantConfig
from jaxgc.compress.qconfig import ACT_MAX_BITS  # noqa: F401  (re-exported)
from jaxgc.compress.qconfig import ACT_MIN_BITS  # noqa: F401  (re-exported)
from jaxgc.compress.qconfig import METHODS
from jaxgc.compress.qconfig import MODES  # noqa: F401  (re-exported)
from jaxgc.compress.qconfig import check_act_bits
from jaxgc.models import layers
from jaxgc.models import sagan
from jaxgc.models import stylegan2

# The layers whose inputs are quantized. ``layers.conv``/``layers.dense`` build nn.Conv (or
# layers.DepthwiseConv for a depthwise convolution) / nn.Dense. The families' own layers too:
# SAGAN's spectrally normalised convolution (its transposed one is a layers.ConvTranspose) and
# StyleGAN2's equalized-lr dense / conv layers and modulated convolutions (whose first argument,
# the feature map, is the quantized input; their ``affine`` sublayer quantizes the latent w).
QUANTIZED_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv, nn.ConvTranspose, nn.Dense, layers.Conv, layers.ConvTranspose, layers.DepthwiseConv,
    sagan.SpectralConv, stylegan2.EqualDense, stylegan2.EqualConv, stylegan2.ModulatedConv)

# Calibration = {layer_path: {"min": float32 array, "max": float32 array}}, arrays of shape
# [] (per tensor) or [channels] (per channel).
Calibration = dict[str, dict[str, np.ndarray]]

_CALIBRATION_FORMAT = "jaxgc.activation_calibration/1"
_EXAMPLE_PATHS = 5
_TINY = float(np.finfo(np.float32).tiny)


# ------------------------------------------------------------------------------------------------
# The quantizer.


def _reduce_axes(ndim: int, granularity: str) -> tuple[int, ...]:
  return quantize.reduce_axes(ndim, granularity)


def act_code_range(bits: int, symmetric: bool) -> tuple[int, int]:
  """Integer code range ``(qmin, qmax)`` for activations, as :func:`quantize.code_range` but
  for ``bits`` in ``[2, 16]``.

  Raises:
    ValueError: ``bits`` outside ``[2, 16]``.
  """
  check_act_bits(bits)
  if symmetric:
    qmax = 2 ** (bits - 1) - 1
    return -qmax, qmax
  return 0, 2**bits - 1


def act_scale_zero_point(lo: jax.Array, hi: jax.Array, bits: int,
                         symmetric: bool) -> tuple[jax.Array, jax.Array]:
  """Scale and zero point of the range ``[lo, hi]`` (Jacob et al. 2018, eq. 1-3).

  The range is extended to contain 0. Symmetric: ``scale = max(-lo, hi) / (2**(b-1) - 1)``,
  zero point 0. Asymmetric: ``scale = (hi - lo) / (2**b - 1)``, ``zero_point = round(-lo /
  scale)``. Divisions are multiplications by float32 reciprocals, as in
  :func:`jaxgc.compress.quantize.compute_scale_zero_point`, so eager and jitted code agree bit
  for bit. A scale below the smallest normal float32 (an all-zero input) becomes 1.

  Args:
    lo: float32 lower end(s), shape ``[]`` or ``[channels]`` (or broadcastable to the input).
    hi: float32 upper end(s), same shape.
    bits: int in ``[2, 16]``.
    symmetric: symmetric or asymmetric codes.

  Returns:
    ``(scale, zero_point)``, float32 of the shape of ``lo``.

  Raises:
    ValueError: ``bits`` outside ``[2, 16]``.
  """
  check_act_bits(bits)
  lo = jnp.minimum(jnp.asarray(lo, jnp.float32), np.float32(0.0))
  hi = jnp.maximum(jnp.asarray(hi, jnp.float32), np.float32(0.0))
  if symmetric:
    scale = jnp.maximum(-lo, hi) * np.float32(1.0 / (2 ** (bits - 1) - 1))
    scale = jnp.where(scale >= _TINY, scale, np.float32(1.0))
    return scale, jnp.zeros_like(scale)
  scale = (hi - lo) * np.float32(1.0 / (2**bits - 1))
  scale = jnp.where(scale >= _TINY, scale, np.float32(1.0))
  return scale, jnp.round(-lo * (np.float32(1.0) / scale))


def fake_quant_act(x: jax.Array, lo: jax.Array, hi: jax.Array, bits: int,
                   symmetric: bool = False) -> jax.Array:
  """Fake-quantizes ``x`` on the range ``[lo, hi]`` with a clipped straight-through gradient.

  Forward: ``(clip(round(x / scale) + zp, qmin, qmax) - zp) * scale`` with
  :func:`act_scale_zero_point`; values outside the range saturate. Backward: the gradient
  with respect to ``x`` is 1 where ``lo' <= x <= hi'`` and 0 elsewhere, ``[lo', hi']`` being the
  range extended to contain 0 (symmetric: ``[-a, a]``, ``a = max(-lo, hi)``). ``lo`` and ``hi``
  get no gradient. The forward value is exactly the dequantized code (the STE is written
  ``(x - stop_gradient(x)) * inside + stop_gradient(q)``).

  Args:
    x: activations of any float dtype, e.g. ``[batch, height, width, channels]``; arithmetic in
      float32, result cast back.
    lo: lower end, float32, shape ``[]`` or broadcastable to ``x`` (e.g. ``[channels]``).
    hi: upper end, same shape as ``lo``.
    bits: int in ``[2, 16]``.
    symmetric: symmetric or asymmetric codes.

  Returns:
    The fake-quantized activations, shape and dtype of ``x``.

  Raises:
    ValueError: ``bits`` outside ``[2, 16]``.
  """
  qmin, qmax = act_code_range(bits, symmetric)
  x = jnp.asarray(x)
  x32 = x.astype(jnp.float32)
  lo = jax.lax.stop_gradient(jnp.minimum(jnp.asarray(lo, jnp.float32), np.float32(0.0)))
  hi = jax.lax.stop_gradient(jnp.maximum(jnp.asarray(hi, jnp.float32), np.float32(0.0)))
  if symmetric:
    hi = jnp.maximum(-lo, hi)
    lo = -hi
  scale, zp = act_scale_zero_point(lo, hi, bits, symmetric)
  codes = jnp.clip(jnp.round(x32 * (np.float32(1.0) / scale)) + zp, qmin, qmax)
  q = ((codes - zp) * scale).astype(x.dtype)
  inside = ((x32 >= lo) & (x32 <= hi)).astype(x.dtype)
  return (x - jax.lax.stop_gradient(x)) * inside + jax.lax.stop_gradient(q)


# ------------------------------------------------------------------------------------------------
# Interception.


def _site_path(context: Any) -> str | None:
  """The "/"-joined path of an intercepted quantizable layer call, else None."""
  if context.method_name != "__call__" or not isinstance(context.module, QUANTIZED_LAYER_TYPES):
    return None
  return "/".join(str(p) for p in context.module.path)


def _selector(include: str, exclude: str | None) -> Callable[[str], bool]:
  inc = selection.compile_pattern(include, "include")
  exc = selection.compile_pattern(exclude, "exclude")
  return lambda p: bool(inc.search(p)) and not (exc is not None and exc.search(p))


def _replace_input(args: tuple, kwargs: dict, fn: Callable[[jax.Array], jax.Array]):
  """Applies ``fn`` to the layer input (first positional argument, else the first keyword)."""
  if args:
    return (fn(args[0]),) + tuple(args[1:]), kwargs
  key = next(iter(kwargs))
  return args, {**kwargs, key: fn(kwargs[key])}


def _layer_input(args: tuple, kwargs: dict) -> jax.Array:
  return args[0] if args else next(iter(kwargs.values()))


def _layer_bits_fn(default_bits: int, rules: Sequence[Any] | None) -> Callable[[str], int | None]:
  if not rules:
    return lambda path: default_bits
  normalized = qconfig.as_rules(rules)
  if qconfig.has_markers(normalized):
    raise ValueError("rules use '@first'/'@last': expand them with rules.expand_markers(rules, "
                     "rules.first_last_layers(module, variables)), or use apply_quantized")

  def bits_for(path: str) -> int | None:
    rule = qconfig.first_match(path, normalized)
    return default_bits if rule is None else rule.act_bits

  return bits_for


def _check_calibration_entry(path: str, entry: Any) -> None:
  if not isinstance(entry, Mapping) or "min" not in entry or "max" not in entry:
    raise ValueError(f"calibration of layer '{path}' must be a dict with 'min' and 'max', got "
                     f"{type(entry).__name__}")


@contextlib.contextmanager
def quantized_activations(
    act_config: ActQuantConfig,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    include: str = r".*",
    exclude: str | None = None,
    rules: Sequence[Any] | None = None,
) -> Iterator[list[str]]:
  """Context manager: every ``module.apply`` inside it fake-quantizes layer inputs.

  Inside the ``with`` block, the input of each selected ``nn.Conv`` / ``nn.ConvTranspose`` /
  ``layers.ConvTranspose`` / ``nn.Dense`` call goes through :func:`fake_quant_act` before the
  layer runs. Works under ``jax.jit`` and ``jax.grad`` (the interception happens at trace time:
  enter the context inside the traced function, or trace inside the context). Calling an NNX
  model bridged by :func:`jaxgc.convert.to_nnx` inside the block counts: it runs the Linen
  ``apply``.

  Args:
    act_config: bits, symmetry, granularity and mode.
    calibration: ``{layer_path: {"min": ..., "max": ...}}`` from :func:`calibrate` or
      :func:`load_calibration`; required in static mode, ignored in dynamic mode. Its arrays may
      be traced (a jit argument).
    include: regex (``re.search``) on layer paths such as ``block_0/sep_0/depthwise``; by default
      every layer.
    exclude: optional regex of layer paths left in full precision.
    rules: optional :class:`jaxgc.compress.rules.PrecisionRule` sequence (or ``(pattern,
      weight_bits, act_bits)`` tuples): the first rule whose pattern matches a layer sets its
      activation bits, ``None`` meaning full precision; unmatched layers use
      ``act_config.bits``. ``"@first"``/``"@last"`` markers must be expanded first
      (:func:`jaxgc.compress.rules.expand_markers`); :func:`apply_quantized` does it.

  Yields:
    A list that receives the path of every quantized call, in call order, each time a model is
    traced or run eagerly inside the block (a layer called twice appears twice).

  Raises:
    TypeError: ``act_config`` is not an :class:`ActQuantConfig`.
    ValueError: a bad pattern; static mode without ``calibration``; (at apply time) a selected
      layer missing from ``calibration``, naming it.
  """
  if not isinstance(act_config, ActQuantConfig):
    raise TypeError(f"act_config must be an ActQuantConfig, got {type(act_config).__name__}")
  selected = _selector(include, exclude)
  bits_for = _layer_bits_fn(act_config.bits, rules)
  static = act_config.mode == "static"
  if static and calibration is None:
    raise ValueError("static activation quantization needs a calibration (from calibrate() or "
                     "load_calibration()); use mode='dynamic' to quantize without one")
  sites: list[str] = []

  def interceptor(next_fun, args, kwargs, context):
    path = _site_path(context)
    if path is None or not selected(path):
      return next_fun(*args, **kwargs)
    bits = bits_for(path)
    if bits is None:
      return next_fun(*args, **kwargs)

    def fq(x):
      axes = _reduce_axes(jnp.ndim(x), act_config.granularity)
      if static:
        if path not in calibration:
          known = ", ".join(list(calibration)[:_EXAMPLE_PATHS]) or "<none>"
          raise ValueError(f"static activation quantization: no calibration for layer '{path}' "
                           f"(calibrated layers are e.g. {known})")
        entry = calibration[path]
        _check_calibration_entry(path, entry)
        lo, hi = entry["min"], entry["max"]
      else:
        x32 = jnp.asarray(x, jnp.float32)
        lo, hi = jnp.min(x32, axis=axes), jnp.max(x32, axis=axes)
      return fake_quant_act(x, lo, hi, bits, act_config.symmetric)

    sites.append(path)
    args, kwargs = _replace_input(args, kwargs, fq)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield sites


def apply_quantized(
    module: nn.Module,
    variables: Any,
    x: Any,
    act_config: ActQuantConfig,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    include: str = r".*",
    exclude: str | None = None,
    rules: Sequence[Any] | None = None,
    **apply_kwargs: Any,
) -> Any:
  """``module.apply(variables, x, **apply_kwargs)`` with quantized layer inputs.

  A pure function of ``variables``, ``args`` and ``calibration``: wrap it in ``jax.jit`` (with
  the module and configs closed over) or ``jax.grad`` for quantization-aware training, e.g.
  ``jax.jit(lambda v, x, c: apply_quantized(model, v, x, cfg, c))``.

  Args:
    module: any Flax Linen module (the whole zoo, ``FIDInceptionV3`` too).
    variables: its variables, ``{"params": ..., "batch_stats": ...}``.
    x: the input of ``module.apply``, e.g. images ``[batch, height, width, channels]`` float32
      or latents ``[batch, z_dim]``.
    act_config: see :class:`ActQuantConfig`.
    calibration: ranges for static mode, see :func:`quantized_activations`.
    include: regex of layer paths to quantize.
    exclude: optional regex of layer paths to keep in full precision.
    rules: optional per-layer precision rules, see :func:`quantized_activations`.
    **apply_kwargs: passed on to ``module.apply`` (e.g. ``method=LeNet5.features``).

  Returns:
    What ``module.apply`` returns.

  Raises:
    ValueError: as :func:`quantized_activations`; or no layer was selected by ``include`` /
      ``exclude`` (the message lists the layer paths).
  """
  if rules:
    if qconfig.has_markers(rules):
      order = execution_order(module, variables, x, **apply_kwargs)
      rules = qconfig.expand_markers(rules, (order[0], order[-1]))
  with quantized_activations(act_config, calibration, include, exclude, rules) as sites:
    out = module.apply(variables, x, **apply_kwargs)
  if not sites and not _has_float_rule(rules):
    paths = execution_order(module, variables, x, **apply_kwargs)
    raise ValueError(f"include pattern '{include}' / exclude pattern '{exclude}' select no layer; "
                     f"layers are e.g. {', '.join(paths[:_EXAMPLE_PATHS]) or '<none>'}")
  return out


def _has_float_rule(rules: Sequence[Any] | None) -> bool:
  """True when some rule keeps activations in float (so no quantized site is legitimate)."""
  if not rules:
    return False
  return any(r.act_bits is None for r in qconfig.as_rules(rules))


def execution_order(module: nn.Module, variables: Any, *args: Any, **apply_kwargs: Any
                    ) -> list[str]:
  """Paths of the quantizable layers of ``module`` in the order they are first called.

  Runs ``module.apply`` abstractly (:func:`jax.eval_shape`: no FLOPs) with an interceptor that
  records each ``nn.Conv`` / ``nn.ConvTranspose`` / ``layers.ConvTranspose`` / ``nn.Dense`` call.

  Args:
    module: a Flax Linen module.
    variables: its variables (arrays or ``jax.ShapeDtypeStruct``).
    *args: example inputs of the right shape (e.g. ``jaxgc.models.example_input(module)``).
    **apply_kwargs: passed on to ``module.apply``.

  Returns:
    Unique "/"-joined layer paths, first call first; ``[0]`` is the first layer, ``[-1]`` the
    last.
  """
  order: list[str] = []

  def interceptor(next_fun, a, k, context):
    path = _site_path(context)
    if path is not None and path not in order:
      order.append(path)
    return next_fun(*a, **k)

  def run(v, *xs):
    with nn.intercept_methods(interceptor):
      return module.apply(v, *xs, **apply_kwargs)

  jax.eval_shape(run, variables, *args)
  return order


# ------------------------------------------------------------------------------------------------
# Calibration.


def _batch_stats_fn(module: nn.Module, selected: Callable[[str], bool], granularity: str,
                    method: str, percentile: float, bits: int, symmetric: bool,
                    fractions: np.ndarray, apply_kwargs: Mapping[str, Any]):
  """Returns a jittable ``fn(variables, x, ranges) -> {path: {stat: array}}`` for one batch."""

  def fn(variables, x, ranges):
    stats: dict[str, dict[str, jax.Array]] = {}

    def interceptor(next_fun, args, kwargs, context):
      path = _site_path(context)
      if path is None or not selected(path):
        return next_fun(*args, **kwargs)
      a = jnp.asarray(_layer_input(args, kwargs), jnp.float32)
      axes = _reduce_axes(a.ndim, granularity)
      if method == "mse" and ranges is not None:
        lo, hi = ranges[path]["min"], ranges[path]["max"]

        def sse(f):
          err = fake_quant_act(a, f * lo, f * hi, bits, symmetric) - a
          return jnp.sum(jnp.square(err), axis=axes)

        new = {"sse": jax.lax.map(sse, jnp.asarray(fractions, jnp.float32))}
      elif method == "percentile":
        new = {"min": jnp.percentile(a, 100.0 - percentile, axis=axes),
               "max": jnp.percentile(a, percentile, axis=axes)}
      else:
        new = {"min": jnp.min(a, axis=axes), "max": jnp.max(a, axis=axes)}
      old = stats.get(path)
      if old is not None:  # A layer called more than once: merge conservatively.
        if "sse" in new:
          new = {"sse": old["sse"] + new["sse"]}
        else:
          new = {"min": jnp.minimum(old["min"], new["min"]),
                 "max": jnp.maximum(old["max"], new["max"])}
      stats[path] = new
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      module.apply(variables, x, **apply_kwargs)
    return stats

  return fn


def _as_batches(batches: Iterable[Any]) -> list[jax.Array]:
  out = []
  for i, b in enumerate(batches):
    b = jnp.asarray(b)
    if b.ndim < 1:
      raise ValueError(f"calibration batch {i} has shape {tuple(b.shape)}; expected "
                       "[batch, ...] with a leading batch axis")
    if out and b.shape[1:] != out[0].shape[1:]:
      raise ValueError(f"calibration batch {i} has shape {tuple(b.shape)}, but batch 0 has shape "
                       f"{tuple(out[0].shape)}: every batch must be [batch, "
                       f"{', '.join(map(str, out[0].shape[1:]))}]")
    out.append(b)
  if not out:
    raise ValueError("calibration set is empty")
  return out


def calibrate(
    module: nn.Module,
    variables: Any,
    batches: Iterable[Any],
    act_config: ActQuantConfig = ActQuantConfig(8),
    method: str = "minmax",
    percentile: float = 99.99,
    ema_decay: float = 0.9,
    num_candidates: int = 100,
    include: str = r".*",
    exclude: str | None = None,
    **apply_kwargs: Any,
) -> Calibration:
  """Collects the input range of every selected layer over a calibration set.

  Each batch runs through one jitted ``module.apply`` (one trace per distinct batch shape) in
  which an interceptor reduces every selected layer input to per-batch statistics. Methods
  (Andreev et al. 2021, arXiv 2108.13996: min-max, percentile and MSE-optimal calibration;
  Jacob et al. 2018, section 3: EMA ranges):

  * ``"minmax"``: ``min`` and ``max`` over all batches (running min/max).
  * ``"percentile"``: per batch, the ``(100 - p)``-th and ``p``-th percentiles of the signed
    values ``x`` (two-sided, not of ``|x|``; ``jnp.percentile``, linear interpolation), averaged
    over batches. Always inside the min-max range.
  * ``"mse"``: two passes. The min-max range ``[lo, hi]`` first; then, for the candidates
    ``f * [lo, hi]`` with ``f = k / num_candidates``, ``k = 1..num_candidates``, the summed squared
    error ``sum ||x - fake_quant_act(x, f lo, f hi)||^2`` over the whole calibration set at
    ``act_config.bits`` / ``symmetric``; the candidate with the least error wins (the smallest
    ``f`` on ties). ``f = 1`` is a candidate, so the error is never above min-max's.
  * ``"ema"``: exponential moving average of the per-batch min and max,
    ``m_1 = b_1``, ``m_t = d * m_{t-1} + (1 - d) * b_t`` with ``d = ema_decay``.

  Per-channel granularity gives one range per channel (last axis) with the same rules; the MSE
  search is then done per channel.

  Args:
    module: a Flax Linen module.
    variables: its variables.
    batches: an iterable (list, generator) of model inputs, each ``[batch, ...]`` with the same
      trailing shape, e.g. ``[batch, height, width, 3]`` float32 in [-1, 1] or ``[batch, z_dim]``
      latents. Consumed once and kept in memory.
    act_config: bits and symmetry (used by ``"mse"``) and granularity; the mode is ignored.
    method: ``"minmax"``, ``"percentile"``, ``"mse"`` or ``"ema"``.
    percentile: float in ``(50, 100]``, for ``"percentile"``.
    ema_decay: float in ``[0, 1)``, for ``"ema"``.
    num_candidates: int >= 1, clipping candidates for ``"mse"``.
    include: regex of layer paths to calibrate.
    exclude: optional regex of layer paths to skip.
    **apply_kwargs: passed on to ``module.apply`` (e.g. ``method=LeNet5.features``).

  Returns:
    ``{layer_path: {"min": float32 ndarray, "max": float32 ndarray}}``, arrays of shape ``[]``
    (per tensor) or ``[channels]`` (per channel), layers sorted by path: a plain pytree.

  Raises:
    ValueError: unknown method or bad argument; ``"calibration set is empty"``; a batch whose
      shape differs from the first batch's or that the module rejects (naming the shape); no layer
      selected.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if not 50.0 < percentile <= 100.0:
    raise ValueError(f"percentile must be in (50, 100], got {percentile}")
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
  if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
    raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}")
  selected = _selector(include, exclude)
  data = _as_batches(batches)
  fractions = np.arange(1, num_candidates + 1, dtype=np.float64) / num_candidates
  first_method = "minmax" if method in ("mse", "ema") else method
  stats_fn = jax.jit(_batch_stats_fn(module, selected, act_config.granularity, first_method,
                                     percentile, act_config.bits, act_config.symmetric,
                                     fractions, apply_kwargs))

  def run(fn, i, x, ranges):
    try:
      return jax.device_get(fn(variables, x, ranges))
    except (ValueError, TypeError, flax.errors.FlaxError) as e:
      raise ValueError(f"calibration batch {i} of shape {tuple(x.shape)} is not a valid input of "
                       f"{type(module).__name__}: {e}") from e

  acc: dict[str, dict[str, np.ndarray]] = {}
  for i, x in enumerate(data):
    s = run(stats_fn, i, x, None)
    if i == 0 and not s:
      raise ValueError(f"include pattern '{include}' / exclude pattern '{exclude}' select no "
                       f"layer of {type(module).__name__}")
    for path, st in s.items():
      lo = np.asarray(st["min"], np.float64)
      hi = np.asarray(st["max"], np.float64)
      if path not in acc:
        acc[path] = {"min": lo, "max": hi}
      elif method in ("minmax", "mse"):
        acc[path] = {"min": np.minimum(acc[path]["min"], lo),
                     "max": np.maximum(acc[path]["max"], hi)}
      elif method == "percentile":
        acc[path] = {"min": acc[path]["min"] + lo, "max": acc[path]["max"] + hi}
      else:  # ema
        acc[path] = {"min": ema_decay * acc[path]["min"] + (1.0 - ema_decay) * lo,
                     "max": ema_decay * acc[path]["max"] + (1.0 - ema_decay) * hi}
  if method == "percentile":
    acc = {p: {k: v / len(data) for k, v in st.items()} for p, st in acc.items()}

  calib = {p: {k: np.asarray(v, np.float32) for k, v in st.items()} for p, st in acc.items()}
  if method == "mse":
    sse_fn = jax.jit(_batch_stats_fn(module, selected, act_config.granularity, "mse",
                                     percentile, act_config.bits, act_config.symmetric,
                                     fractions, apply_kwargs))
    total: dict[str, np.ndarray] = {}
    for i, x in enumerate(data):
      for path, st in run(sse_fn, i, x, calib).items():
        total[path] = total.get(path, 0.0) + np.asarray(st["sse"], np.float64)
    for path, sse in total.items():
      f = np.float32(fractions[np.argmin(sse, axis=0)])  # [] or [channels]
      calib[path] = {"min": (f * calib[path]["min"]).astype(np.float32),
                     "max": (f * calib[path]["max"]).astype(np.float32)}
  return calib


# ------------------------------------------------------------------------------------------------
# Save / load.


def save_calibration(calibration: Mapping[str, Mapping[str, Any]],
                     path: str | os.PathLike) -> None:
  """Writes a calibration as JSON, atomically (temporary file, fsync, rename); no pickle.

  Float32 values are written as the shortest decimal that reads back to the same float64, which
  holds every float32 exactly, so :func:`load_calibration` returns bit-identical arrays.

  Args:
    calibration: ``{layer_path: {"min": array, "max": array}}``, arrays of shape ``[]`` or
      ``[channels]`` (any float dtype, stored as float32).
    path: destination file, e.g. ``"calib.json"``.

  Raises:
    ValueError: an entry without ``min``/``max``, mismatched shapes, or non-finite values (naming
      the layer).
  """
  layers_out = {}
  for name, entry in calibration.items():
    _check_calibration_entry(name, entry)
    lo = np.asarray(entry["min"], np.float32)
    hi = np.asarray(entry["max"], np.float32)
    if lo.shape != hi.shape:
      raise ValueError(f"calibration of layer '{name}': min shape {lo.shape} != max shape "
                       f"{hi.shape}")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
      raise ValueError(f"calibration of layer '{name}' holds non-finite values")
    layers_out[str(name)] = {"shape": list(lo.shape),
                             "min": [float(v) for v in lo.ravel()],
                             "max": [float(v) for v in hi.ravel()]}
  text = json.dumps({"format": _CALIBRATION_FORMAT, "layers": layers_out}, indent=1,
                    allow_nan=False)
  atomic_write_text(path, text)


def load_calibration(path: str | os.PathLike) -> Calibration:
  """Reads a file written by :func:`save_calibration`.

  Returns:
    ``{layer_path: {"min": float32 ndarray, "max": float32 ndarray}}`` in the saved order.

  Raises:
    ValueError: not a jaxgc calibration file, or malformed.
  """
  with open(os.fspath(path), encoding="utf-8") as f:
    try:
      doc = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{os.fspath(path)} is not a JSON calibration file: {e}") from None
  if not isinstance(doc, dict) or doc.get("format") != _CALIBRATION_FORMAT:
    raise ValueError(f"{os.fspath(path)} is not a jaxgc activation calibration "
                     f"(format {_CALIBRATION_FORMAT!r})")
  out: Calibration = {}
  for name, entry in doc["layers"].items():
    shape = tuple(entry["shape"])
    size = math.prod(shape)
    if len(entry["min"]) != size or len(entry["max"]) != size:
      raise ValueError(f"calibration of layer '{name}' in {os.fspath(path)} is malformed")
    out[name] = {"min": np.asarray(entry["min"], np.float32).reshape(shape),
                 "max": np.asarray(entry["max"], np.float32).reshape(shape)}
  return out
