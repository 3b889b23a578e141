"""Pruning masks from scores: unstructured, N:M and channel granularity with exact ranking, and
applying, checking and measuring masks (jaxpruner ``mask_calculator.py``)."""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxgc.compress import selection
from jaxgc.compress.prune_config import PruneConfig
from jaxgc.compress.prune_schedules import selected_leaves
from jaxgc.compress.prune_schedules import sparsity_targets
from jaxgc.compress.prune_scores import leaf_scores
from jaxgc.compress.prune_scores import leaves_by_path
from jaxgc.compress.prune_scores import tree_from_paths

def _num_pruned(sparsity: Any, size: int) -> jax.Array:
  """``floor(sparsity * size + 1/2)``, int32, computed in float32 (exact for size < 2**24)."""
  s = jnp.asarray(sparsity, jnp.float32)
  return jnp.floor(s * np.float32(size) + np.float32(0.5)).astype(jnp.int32)


def _keep_top(scores: jax.Array, num_pruned: jax.Array) -> jax.Array:
  """Bool mask of a 1-D ``scores``: False at the ``num_pruned`` lowest, ties by position."""
  order = jnp.argsort(scores, stable=True)
  keep_sorted = jnp.arange(scores.size) >= num_pruned
  return jnp.zeros(scores.shape, bool).at[order].set(keep_sorted, unique_indices=True)


def _demote(scores: jax.Array, kept: jax.Array | None) -> jax.Array:
  """``scores`` with ``-inf`` where ``kept`` is False: what an earlier mask pruned goes first."""
  return scores if kept is None else jnp.where(kept, scores, -jnp.inf)


def _nm_keep(scores: jax.Array, n: int, m: int) -> jax.Array:
  """Keeps the ``n`` highest of every ``m`` consecutive scores along axis -2."""
  x = jnp.moveaxis(scores, -2, -1)  # [..., out, in]
  groups = x.reshape(x.shape[:-1] + (x.shape[-1] // m, m))
  ranks = jnp.argsort(jnp.argsort(groups, axis=-1, stable=True), axis=-1)
  return jnp.moveaxis((ranks >= m - n).reshape(x.shape), -1, -2)


def _filter_scores(scores: jax.Array, norm: str) -> jax.Array:
  """``[out]`` norms of the per-weight scores of every output filter (the last axis)."""
  axes = tuple(range(scores.ndim - 1))
  if norm == "l1":
    return jnp.sum(scores, axis=axes)
  return jnp.sqrt(jnp.sum(scores * scores, axis=axes))


def _explicitly_sharded(x: Any) -> bool:
  spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
  return spec is not None and any(axis is not None for axis in spec)


def _gathered(x: jax.Array) -> jax.Array:
  """``x`` replicated when it is sharded over ``AxisType.Explicit`` mesh axes, whose flattening
  reshapes need an explicit output sharding; as is otherwise (GSPMD places auto-sharded arrays)."""
  if not _explicitly_sharded(x):
    return x
  return jax.sharding.reshard(x, jax.sharding.NamedSharding(jax.typeof(x).sharding.mesh,
                                                            jax.sharding.PartitionSpec()))


def _sharded_like(mask: jax.Array, w: jax.Array) -> jax.Array:
  """``mask`` with the explicit sharding of its parameter ``w`` (as is when ``w`` has none)."""
  if not _explicitly_sharded(w):
    return mask
  return jax.sharding.reshard(mask, jax.typeof(w).sharding)


def _concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_sparsity_arg(sparsity: Any) -> None:
  if _concrete(sparsity) and not 0 <= float(sparsity) < 1:
    raise ValueError(f"sparsity must be in [0, 1), got {float(sparsity)!r}")


def check_channels(path: str, out: int, sparsity: Any) -> None:
  """Raises if a concrete ``sparsity`` would prune all ``out`` filters of ``path``."""
  with jax.ensure_compile_time_eval():
    k = _num_pruned(sparsity, out)
  if _concrete(k) and int(k) >= out:
    raise ValueError(f"channel pruning at sparsity {float(sparsity):g} would remove all {out} "
                     f"output channels of '{path}'; lower the sparsity or exclude it")


def _leaf_sparsity(config: PruneConfig, targets: Mapping[str, float], path: str,
                   sparsity: Any) -> Any:
  """Sparsity of one leaf when the overall sparsity is ``sparsity`` (float or traced).

  Under ERK the target allocation is scaled so that the param-weighted mean is ``sparsity``
  (jaxpruner's schedules scale target sparsities the same way); a value above 1 (``sparsity``
  above the target) is left to the callers, which keep at least one weight or filter.
  """
  if config.distribution == "uniform":
    return sparsity
  return targets[path] * (sparsity / config.sparsity)


def _channel_scores(path: str, w: jax.Array, scores: jax.Array, config: PruneConfig,
                    params_by_path: Mapping[str, Any], channel_scores: Mapping[str, Any]
                    ) -> jax.Array:
  out = jnp.shape(w)[-1]
  norm_scales = dict(config.norm_scales)
  if path in channel_scores:
    fs, what = jnp.asarray(channel_scores[path], jnp.float32), f"channel_scores['{path}']"
  elif path in norm_scales:
    scale_path = norm_scales[path]
    if scale_path not in params_by_path:
      raise ValueError(f"norm_scales pairs '{path}' with '{scale_path}', which is not in params")
    fs, what = jnp.abs(jnp.asarray(params_by_path[scale_path], jnp.float32)), f"'{scale_path}'"
  else:
    return _filter_scores(scores, config.norm)
  fs = _gathered(fs)
  if jnp.shape(fs) != (out,):
    raise ValueError(f"{what} has shape {tuple(jnp.shape(fs))}, '{path}' has {out} output "
                     f"channels: expected ({out},)")
  return fs


def compute_masks(
    params: Any,
    config: PruneConfig,
    *,
    sparsity: float | jax.Array | None = None,
    grads: Any = None,
    key: jax.Array | None = None,
    channel_scores: Mapping[str, Any] | None = None,
    previous_masks: Any = None,
) -> Any:
  """Pruning masks of ``params``: ``True`` keeps a weight.

  Scores come from :func:`compute_scores`, per-leaf sparsities from :func:`target_sparsities`,
  then by granularity (jaxpruner ``mask_calculator.py``):

  * ``"unstructured"``, scope ``"layer"``: the ``floor(s_l * size + 1/2)`` lowest scores of
    each leaf are pruned, at least one weight is kept; scope ``"global"``: one ranking over
    the concatenated scores of all pruned leaves, ``floor(s * total + 1/2)`` pruned.
  * ``"n:m"``: in every group of ``m`` consecutive weights along axis -2 (the input channels
    of ``[kh, kw, in, out]`` / ``[in, out]``) the ``n`` highest scores are kept (Mishra et al.
    2021, 2:4 sparse tensor cores). The sparsity is ``1 - n/m`` whenever ``s > 0``; at ``s == 0``
    every weight is kept.
  * ``"channel"``: every output filter ``w[..., j]`` is scored by the ``norm`` of its weight
    scores (Li et al. 2017 use the L1 norm of magnitudes), by ``|scale|`` of a paired norm
    layer (``config.norm_scales``), or by ``channel_scores``; the ``floor(s_l * out + 1/2)``
    lowest filters are zeroed whole, and never all of them.

  Jittable with ``config`` static; ``sparsity`` may be traced (e.g. :func:`sparsity_at` of a
  traced step). Ties are broken by position: the earlier weight is pruned first.

  Args:
    params: a pytree of float arrays, e.g. the ``params`` collection, or an ``nnx.State``
      (Linen-style paths, masks returned in its structure); kernels ``[kh, kw, in,
      out]`` or ``[in, out]``.
    config: the :class:`PruneConfig`.
    sparsity: overall sparsity in [0, 1) instead of ``config.sparsity``: every leaf sparsity
      is scaled by ``sparsity / config.sparsity`` under ``"erk"``, is ``sparsity`` under
      ``"uniform"``, and only switches N:M on (``> 0``) or off for ``"n:m"``. Traced values
      are clipped so that a leaf keeps a weight (a filter); concrete ones are checked.
    grads: gradient tree for ``score="saliency"`` (see :func:`compute_scores`).
    key: PRNG key for ``score="random"``.
    channel_scores: ``"channel"`` only: path -> float ``[out]`` filter scores that replace the
      computed ones for those leaves (e.g. accumulated importances).
    previous_masks: masks from an earlier call (same tree structure): weights (filters) they
      prune rank below every other, so that masks computed at a non-decreasing sparsity are
      nested and a pruned weight stays pruned (Zhu and Gupta 2017).

  Returns:
    A tree with the structure of ``params``: a bool array of the leaf's shape at every pruned
    leaf (for ``"channel"`` the per-filter keep vector broadcast over the kernel), ``None``
    elsewhere.

  Raises:
    ValueError: nothing selected; a selected leaf not float (or NaN/Inf outside ``jit``); a
      concrete ``sparsity`` outside [0, 1); ``"n:m"`` with ``m`` not dividing axis -2 of a leaf;
      ``"channel"`` at a concrete sparsity that would remove every filter of a leaf, or
      channel scores of the wrong shape; ``"random"`` without ``key``; ``"saliency"`` without
      ``grads``; ``previous_masks`` not matching ``params``. Messages name the path.
  """
  leaves = selected_leaves(params, config)
  sparsity = config.sparsity if sparsity is None else sparsity
  _check_sparsity_arg(sparsity)
  channel_scores = dict(channel_scores or {})
  unknown = sorted(set(channel_scores) - {p for p, _ in leaves})
  if unknown:
    raise ValueError(f"channel_scores names '{unknown[0]}', which is not a pruned leaf")
  if channel_scores and config.granularity != "channel":
    raise ValueError(f"channel_scores needs granularity 'channel', got {config.granularity!r}")
  if config.granularity == "channel":
    targets = sparsity_targets(leaves, config)
    for path, w in leaves:
      check_channels(path, jnp.shape(w)[-1], _leaf_sparsity(config, targets, path, sparsity))
  if previous_masks is not None:
    check_masks(params, previous_masks)
  return _masks(params, config, jnp.asarray(sparsity, jnp.float32), grads, key, channel_scores,
                previous_masks)


@functools.partial(jax.jit, static_argnames="config")
def _masks(params: Any, config: PruneConfig, sparsity: jax.Array, grads: Any,
           key: jax.Array | None, channel_scores: dict[str, Any], previous_masks: Any) -> Any:
  """The body of :func:`compute_masks` after its checks; compiled once per config and shapes."""
  leaves = selected_leaves(params, config)
  targets = sparsity_targets(leaves, config)
  scores = {p: _gathered(s) for p, s in leaf_scores(leaves, config, grads, key).items()}
  previous = {}
  if previous_masks is not None:
    previous = {p: _gathered(m) for p, m in leaves_by_path(previous_masks).items()
                if m is not None}
  masks = {}

  if config.granularity == "n:m":
    for path, w in leaves:
      sc = _demote(scores[path], previous.get(path))
      masks[path] = _nm_keep(sc, config.n, config.m) | (sparsity <= 0)
  elif config.granularity == "channel":
    params_by_path = leaves_by_path(params)
    for path, w in leaves:
      out = jnp.shape(w)[-1]
      fs = _channel_scores(path, w, scores[path], config, params_by_path, channel_scores)
      if path in previous:
        fs = _demote(fs, jnp.any(previous[path], axis=tuple(range(jnp.ndim(w) - 1))))
      k = _num_pruned(_leaf_sparsity(config, targets, path, sparsity), out)
      masks[path] = jnp.broadcast_to(_keep_top(fs, jnp.clip(k, 0, out - 1)), jnp.shape(w))
  elif config.scope == "global":
    flat = jnp.concatenate([_demote(scores[p], previous.get(p)).ravel() for p, _ in leaves])
    k = jnp.clip(_num_pruned(sparsity, flat.size), 0, flat.size - 1)
    splits = np.cumsum([jnp.size(w) for _, w in leaves])[:-1]
    for (path, w), keep in zip(leaves, jnp.split(_keep_top(flat, k), splits)):
      masks[path] = keep.reshape(jnp.shape(w))
  else:
    for path, w in leaves:
      sc = _demote(scores[path], previous.get(path))
      k = _num_pruned(_leaf_sparsity(config, targets, path, sparsity), sc.size)
      masks[path] = _keep_top(sc.ravel(), jnp.clip(k, 0, sc.size - 1)).reshape(sc.shape)
  return tree_from_paths(params, {p: _sharded_like(masks[p], w) for p, w in leaves})


def check_masks(params: Any, masks: Any) -> None:
  """Raises ``ValueError`` naming the path unless ``masks`` fits ``params``."""
  is_none = lambda x: x is None  # noqa: E731
  param_leaves = leaves_by_path(params)
  mask_flat, mask_def = selection.flatten_with_paths(masks, is_leaf=is_none)
  mask_leaves = {p: m for p, m in mask_flat if p is not None}
  missing = [p for p in param_leaves if p not in mask_leaves]
  if missing:
    raise ValueError(f"mask tree does not match params: no mask entry for '{missing[0]}'")
  extra = [p for p in mask_leaves if p not in param_leaves]
  if extra:
    raise ValueError(f"mask tree does not match params: '{extra[0]}' is not a parameter")
  if mask_def != jax.tree.structure(params):
    raise ValueError(f"mask tree does not match params: structure {mask_def} is not "
                     f"{jax.tree.structure(params)}")
  for path, m in mask_leaves.items():
    if m is None:
      continue
    if jnp.shape(m) != jnp.shape(param_leaves[path]):
      raise ValueError(f"mask for '{path}' has shape {tuple(jnp.shape(m))}, the parameter "
                       f"{tuple(jnp.shape(param_leaves[path]))}")
    if jnp.result_type(m) != jnp.bool_:
      raise ValueError(f"mask for '{path}' has dtype {jnp.result_type(m)}, expected bool")


def map_masked(fn: Any, masks: Any, *trees: Any) -> Any:
  """``fn(mask, *leaves)`` at masked leaves; the first of ``trees`` elsewhere."""
  return jax.tree.map(lambda m, x, *rest: x if m is None else fn(m, x, *rest),
                      masks, *trees, is_leaf=lambda x: x is None)


def apply_masks(params: Any, masks: Any) -> Any:
  """Zeroes the pruned weights: ``where(mask, w, 0)`` at every masked leaf. Pure and jittable.

  Args:
    params: a pytree of arrays (or an ``nnx.State``, with masks of its structure).
    masks: a tree with the structure of ``params``: a bool array of the leaf's shape or
      ``None`` (leaf untouched) at every leaf, e.g. from :func:`compute_masks`.

  Returns:
    A new tree; masked leaves keep their shape and dtype, with exact zeros where the mask is
    False.

  Raises:
    ValueError: the mask tree does not match ``params`` (a path missing or extra), or a mask
      has another shape than its parameter or is not bool (naming the path).
  """
  check_masks(params, masks)
  return map_masked(lambda m, w: jnp.where(m, w, jnp.zeros((), jnp.result_type(w))),
                     masks, params)


def mask_sparsity(masks: Any) -> dict[str, Any]:
  """Fractions of pruned weights, per leaf and over all masked leaves, for reports.

  Args:
    masks: a mask tree (bool arrays and ``None``), e.g. ``PruneState.masks``.

  Returns:
    ``{"sparsity": float, "nonzero": int, "size": int, "leaves": {path: {"sparsity": float,
    "nonzero": int, "size": int}}}``: ``nonzero`` counts kept weights (``True``), ``size`` all
    masked weights, ``sparsity = 1 - nonzero / size`` (0.0 when nothing is masked). Host Python
    values (one transfer).
  """
  by_path = {p: m for p, m in leaves_by_path(jax.device_get(masks)).items() if m is not None}
  leaves = {}
  for path, m in by_path.items():
    m = np.asarray(m)
    nonzero = int(np.count_nonzero(m))
    leaves[path] = {"sparsity": 1.0 - nonzero / m.size if m.size else 0.0,
                    "nonzero": nonzero, "size": int(m.size)}
  nonzero = sum(v["nonzero"] for v in leaves.values())
  size = sum(v["size"] for v in leaves.values())
  return {"sparsity": 1.0 - nonzero / size if size else 0.0, "nonzero": nonzero, "size": size,
          "leaves": leaves}
