"""Pruning masks: scores, granularities, sparsity distributions and schedules, and an optax transform.

A *pruning* mask is a pytree with the structure of the parameters: a boolean array of the leaf's
shape for every pruned leaf (``True`` = keep) and ``None`` for every other leaf (jaxpruner
``mask_calculator.py``). Which leaves are pruned is decided by regexes on "/"-joined paths
(:mod:`jaxgc.compress.selection`); what is pruned within a leaf is decided in four steps, one
function each:

1. a *score* per weight (:func:`compute_scores`): magnitude ``|w|``, random, or first-order
   Taylor saliency ``|w * dL/dw|``; low scores are pruned first;
2. a *sparsity* per leaf (:func:`target_sparsities`): the same everywhere (``"uniform"``) or
   Erdos-Renyi-Kernel (``"erk"``, Evci et al. 2020, :func:`erk_sparsities`);
3. a *granularity* (:func:`compute_masks`): single weights (``"unstructured"``), N of every M
   consecutive input channels (``"n:m"``), or whole output filters (``"channel"``);
4. a *schedule* over training steps (:func:`sparsity_at`): one shot, iterative, or the
   polynomial schedule of Zhu and Gupta 2017.

:func:`pruning` puts the four together as an optax transformation that keeps the masks in its
state and masks the parameters after every update (jaxpruner ``base_updater.py: wrap_optax``).

Ranking is exact: a leaf of ``size`` weights at sparsity ``s`` loses exactly
``floor(s * size + 1/2)`` weights (filters for ``"channel"``), ties broken by position (the
earlier weight is pruned first), so the achieved sparsity is within ``1 / (2 size)`` of ``s``
whatever the scores. With the ``"layer"`` scope at least one weight (one filter) of every leaf is
kept.

Kernel layout: conv and transposed-conv kernels ``[kh, kw, in, out]``, dense kernels
``[in, out]``: the input channel is axis -2, the output channel (filter) axis -1. Channel masks
zero a filter's kernel weights only; its bias, and the scale and bias of a norm that follows,
still add a constant to that channel: removing the channel from the network is a separate step.

Example, gradual magnitude pruning to 80% over steps 1000-5000 of fine-tuning::

  config = PruneConfig(0.8, schedule="polynomial", begin_step=1000, end_step=5000,
                       frequency=100, exclude="conv_in|conv_out")
  tx = optax.chain(optax.adam(1e-4), pruning(config))   # pruning last
  state = create_train_state(variables["params"], tx)   # masks live in the optax state
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgc.compress import selection

# Every ``kernel`` leaf, with or without a leading "params/": the optax transform sees the
# ``params`` collection itself (paths ``dense_0/kernel``), where ``selection.DEFAULT_INCLUDE``
# (which needs the "params/" component of a full variables tree) would select nothing.
DEFAULT_INCLUDE = r"(^|/)kernel$"

GRANULARITIES = ("unstructured", "n:m", "channel")
SCORES = ("magnitude", "random", "saliency")
SCOPES = ("layer", "global")
DISTRIBUTIONS = ("uniform", "erk")
NORMS = ("l1", "l2")
SCHEDULES = ("one_shot", "iterative", "polynomial")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _is_real(value: Any) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _check_fraction(name: str, value: Any) -> None:
  if not _is_real(value) or not 0 <= value < 1:
    raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_regex(name: str, pattern: str | None) -> None:
  if pattern is None:
    return
  try:
    re.compile(pattern)
  except (re.error, TypeError) as e:
    raise ValueError(f"{name} is not a valid regex: {pattern!r} ({e})") from None


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  """What to prune, how much, how, and when. Hashable, so it can be static under ``jax.jit``.

  Attributes:
    sparsity: float in [0, 1), the target fraction of weights set to zero in the pruned leaves
      (param-weighted over all of them under ``"erk"``). For ``"n:m"`` it must equal
      ``1 - n / m`` (0.5 for 2:4 and 4:8), the only sparsity N:M can have.
    granularity: ``"unstructured"`` (single weights), ``"n:m"`` (keep ``n`` of every ``m``
      consecutive weights along the input-channel axis -2; Mishra et al. 2021, "Accelerating
      Sparse Deep Neural Networks", arXiv 2104.08378) or ``"channel"`` (whole output filters,
      the last axis; Li et al. 2017, "Pruning Filters for Efficient ConvNets").
    n: int >= 1, weights kept per group for ``"n:m"``.
    m: int > n, group size for ``"n:m"``; must divide axis -2 of every pruned leaf.
    score: ``"magnitude"`` (``|w|``), ``"random"`` (uniform, needs a key) or ``"saliency"``
      (``|w * grad|``, the first-order Taylor estimate of the loss change when ``w`` is zeroed;
      needs gradients). The lowest scores are pruned.
    scope: ``"layer"`` (each leaf pruned to its own sparsity) or ``"global"`` (one ranking over
      all pruned leaves, so leaves end up with different sparsities; ``"unstructured"`` and
      ``"uniform"`` only; a leaf may then lose every weight).
    distribution: ``"uniform"`` (every leaf at ``sparsity``) or ``"erk"`` (Erdos-Renyi-Kernel,
      see :func:`erk_sparsities`; needs ``sparsity > 0``).
    norm: ``"l1"`` or ``"l2"``, the norm of a filter's weight scores for ``"channel"``
      (``"l1"`` of magnitudes is Li et al.'s ``sum |w|``).
    norm_scales: pairs ``(kernel_path, scale_path)`` of paths in the same tree: the filters of
      ``kernel_path`` are scored by ``|scale|`` of the normalisation layer that follows it (the
      scaling factors of Liu et al. 2017, "Learning Efficient Convolutional Networks through
      Network Slimming") instead of their weight norm. ``"channel"`` only. The pairing is
      explicit because a generic tree does not say which norm follows which layer (in the DCGAN
      generator ``convt_i`` feeds ``bn_i``).
    include: regex a "/"-joined path must match to be pruned (:func:`re.search`); by default
      every ``kernel``, with or without a leading "params/".
    exclude: optional regex of paths never pruned (e.g. ``"conv_in|conv_out"``).
    schedule: ``"one_shot"``, ``"iterative"`` or ``"polynomial"``, see :func:`sparsity_at`.
    begin_step: int >= 0, first step of the schedule.
    end_step: int >= begin_step, step at which ``"iterative"`` and ``"polynomial"`` reach
      ``sparsity``; ``end_step - begin_step`` must be a multiple of ``frequency``. Ignored by
      ``"one_shot"``.
    frequency: int >= 1, steps between mask updates for ``"iterative"`` and ``"polynomial"``
      (Zhu and Gupta's ``Δt``). Ignored by ``"one_shot"``.
    power: float > 0, exponent of the polynomial schedule (3 in Zhu and Gupta 2017).
    initial_sparsity: float in [0, sparsity], the sparsity before ``begin_step`` (and at
      ``begin_step`` for ``"polynomial"``); 0 for ``"n:m"``.

  Raises:
    ValueError: any field out of its range or an unsupported combination (one line naming the
      field and the value).
  """

  sparsity: float
  granularity: str = "unstructured"
  n: int = 2
  m: int = 4
  score: str = "magnitude"
  scope: str = "layer"
  distribution: str = "uniform"
  norm: str = "l1"
  norm_scales: tuple[tuple[str, str], ...] = ()
  include: str = DEFAULT_INCLUDE
  exclude: str | None = None
  schedule: str = "one_shot"
  begin_step: int = 0
  end_step: int = 0
  frequency: int = 1
  power: float = 3.0
  initial_sparsity: float = 0.0

  def __post_init__(self):
    _check_fraction("sparsity", self.sparsity)
    _check_choice("granularity", self.granularity, GRANULARITIES)
    _check_choice("score", self.score, SCORES)
    _check_choice("scope", self.scope, SCOPES)
    _check_choice("distribution", self.distribution, DISTRIBUTIONS)
    _check_choice("norm", self.norm, NORMS)
    _check_choice("schedule", self.schedule, SCHEDULES)
    _check_regex("include", self.include)
    _check_regex("exclude", self.exclude)
    _check_int("begin_step", self.begin_step, 0)
    _check_int("frequency", self.frequency, 1)
    _check_int("n", self.n, 1)
    _check_int("m", self.m, 2)
    if not _is_real(self.power) or not self.power > 0:
      raise ValueError(f"power must be a number > 0, got {self.power!r}")
    if not _is_real(self.initial_sparsity) or not 0 <= self.initial_sparsity <= self.sparsity:
      raise ValueError(f"initial_sparsity must be in [0, sparsity={self.sparsity}], "
                       f"got {self.initial_sparsity!r}")
    if self.schedule != "one_shot":
      _check_int("end_step", self.end_step, self.begin_step)
      if (self.end_step - self.begin_step) % self.frequency:
        raise ValueError(f"end_step - begin_step must be a multiple of frequency for schedule "
                         f"{self.schedule!r}, got {self.end_step} - {self.begin_step} and "
                         f"frequency {self.frequency}")
    if self.granularity == "n:m":
      if self.n >= self.m:
        raise ValueError(f"n:m needs n < m, got {self.n}:{self.m}")
      if not math.isclose(self.sparsity, 1 - self.n / self.m, abs_tol=1e-9):
        raise ValueError(f"sparsity must be 1 - n/m = {1 - self.n / self.m:g} for n:m "
                         f"granularity {self.n}:{self.m}, got {self.sparsity!r}")
      if self.schedule != "one_shot" or self.initial_sparsity != 0:
        raise ValueError(f"n:m granularity needs schedule 'one_shot' with initial_sparsity 0, "
                         f"got {self.schedule!r} with {self.initial_sparsity!r}")
    if self.granularity != "unstructured" and self.scope == "global":
      raise ValueError(f"scope 'global' needs granularity 'unstructured', "
                       f"got {self.granularity!r}")
    if self.distribution == "erk":
      if self.scope == "global" or self.granularity == "n:m":
        raise ValueError(f"distribution 'erk' needs scope 'layer' and no n:m granularity, got "
                         f"scope {self.scope!r} and granularity {self.granularity!r}")
      if self.sparsity == 0:
        raise ValueError("distribution 'erk' needs sparsity > 0, got 0")
    pairs = tuple(tuple(p) for p in self.norm_scales)
    if not all(len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs):
      raise ValueError(f"norm_scales must be (kernel_path, scale_path) pairs of str, "
                       f"got {self.norm_scales!r}")
    if pairs and self.granularity != "channel":
      raise ValueError(f"norm_scales needs granularity 'channel', got {self.granularity!r}")
    object.__setattr__(self, "norm_scales", pairs)


# --------------------------------------------------------------------------- schedules


def sparsity_at(config: PruneConfig, step: int | jax.Array) -> jax.Array:
  """The scheduled overall sparsity at training step ``step``.

  With ``s_i = initial_sparsity``, ``s_f = sparsity``, ``t0 = begin_step``, ``t1 = end_step``
  and ``Δt = frequency``, for ``step < t0`` the value is ``s_i``, and from ``t0`` on:

  * ``"one_shot"``: ``s_f``.
  * ``"iterative"``: ``n = (t1 - t0) / Δt + 1`` equal increments, one at each of the steps
    ``t0, t0 + Δt, ..., t1``: ``s_i + (s_f - s_i) k / n`` after the ``k``-th (iterative
    magnitude pruning, Han et al. 2015, "Learning both Weights and Connections for Efficient
    Neural Networks"). With ``t1 == t0`` it is one shot.
  * ``"polynomial"``: Zhu and Gupta 2017, "To prune, or not to prune" (arXiv 1710.01878),
    eq. 1: ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))**power`` with ``n Δt = t1 - t0``,
    ``t`` floored to the last update step ``t0 + j Δt`` and clipped at ``t1``; so it is ``s_i``
    at ``t0`` and ``s_f`` from ``t1`` on (jaxpruner ``sparsity_schedules.py``).

  Jit-friendly: ``step`` may be traced; no Python branch depends on it.

  Args:
    config: the :class:`PruneConfig` (its schedule fields).
    step: int or int32 scalar array >= 0, the optimizer step (0 for the first update).

  Returns:
    float32 scalar in ``[initial_sparsity, sparsity]``, non-decreasing in ``step``.
  """
  t = jnp.asarray(step, jnp.int32)
  s_i, s_f = np.float32(config.initial_sparsity), np.float32(config.sparsity)
  t0, t1, dt = config.begin_step, config.end_step, config.frequency
  if config.schedule == "one_shot":
    s = jnp.asarray(s_f)
  elif config.schedule == "iterative":
    n = (t1 - t0) // dt + 1
    done = jnp.clip((t - t0) // dt + 1, 0, n).astype(jnp.float32)
    s = s_i + (s_f - s_i) * (done / np.float32(n))
  else:
    n = (t1 - t0) // dt
    if n == 0:
      progress = jnp.ones((), jnp.float32)
    else:
      progress = jnp.clip((t - t0) // dt, 0, n).astype(jnp.float32) / np.float32(n)
    s = s_f + (s_i - s_f) * (1 - progress) ** np.float32(config.power)
  return jnp.where(t >= t0, s, s_i).astype(jnp.float32)


def is_update_step(config: PruneConfig, step: int | jax.Array) -> jax.Array:
  """Whether the masks are recomputed at ``step``.

  ``"one_shot"``: ``step == begin_step``; ``"iterative"`` and ``"polynomial"``: the steps
  ``begin_step + j * frequency`` up to ``end_step`` (jaxpruner ``PeriodicSchedule``).

  Args:
    config: the :class:`PruneConfig`.
    step: int or traced int32 scalar.

  Returns:
    bool scalar array.
  """
  t = jnp.asarray(step, jnp.int32)
  if config.schedule == "one_shot":
    return t == config.begin_step
  return ((t >= config.begin_step) & (t <= config.end_step)
          & ((t - config.begin_step) % config.frequency == 0))


# --------------------------------------------------------------------------- distributions


def erk_sparsities(shapes: Mapping[str, Sequence[int]], sparsity: float) -> dict[str, float]:
  """Erdos-Renyi-Kernel sparsity per leaf (Evci et al. 2020, "Rigging the Lottery", sec. 3).

  Leaf ``l`` of shape ``d`` gets density ``eps * sum(d) / prod(d)`` (for a conv kernel
  ``(kh + kw + in + out) / (kh kw in out)``), so small layers stay denser. ``eps`` is solved so
  that the kept weights total ``(1 - sparsity) * sum(prod(d))``: the param-weighted mean
  sparsity is exactly ``sparsity``. A leaf whose density would exceed 1 is kept dense and the
  others share its budget; ``eps`` is solved again until no density exceeds 1 (jaxpruner
  ``sparsity_distributions.py: get_sparsities_erdos_renyi``, rigl ``sparse_utils.py``).

  Args:
    shapes: "/"-joined path -> leaf shape, for the leaves to prune; not empty.
    sparsity: float in [0, 1), the target param-weighted sparsity.

  Returns:
    path -> sparsity, Python floats in [0, 1), with ``sum(s * size) == sparsity * sum(size)`` up
    to float rounding.

  Raises:
    ValueError: ``shapes`` empty, a leaf with no element, or ``sparsity`` outside [0, 1).
  """
  _check_fraction("sparsity", sparsity)
  if not shapes:
    raise ValueError("erk_sparsities needs at least one leaf shape")
  sizes = {p: float(np.prod(s, dtype=np.float64)) for p, s in shapes.items()}
  empty = [p for p, n in sizes.items() if n == 0]
  if empty:
    raise ValueError(f"cannot distribute sparsity over '{empty[0]}': it has no element")
  raw = {p: float(np.sum(s)) / sizes[p] for p, s in shapes.items()}
  kept = (1.0 - sparsity) * sum(sizes.values())
  dense: set[str] = set()
  while True:
    sparse = [p for p in shapes if p not in dense]
    if not sparse:
      break
    budget = kept - sum(sizes[p] for p in dense)
    eps = budget / sum(raw[p] * sizes[p] for p in sparse)
    over = {p for p in sparse if eps * raw[p] > 1.0}
    if not over:
      break
    dense |= over  # eps only grows as leaves are capped, so every capped leaf stays capped
  return {p: 0.0 if p in dense else max(0.0, 1.0 - eps * raw[p]) for p in shapes}


def _selected_leaves(params: Any, config: PruneConfig) -> list[tuple[str, jax.Array]]:
  """``(path, leaf)`` of the leaves ``config`` prunes, in tree-flatten order, checked."""
  paths = set(selection.selected_paths(params, config.include, config.exclude))
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  chosen = [(selection.path_str(kp), w) for kp, w in leaves if selection.path_str(kp) in paths]
  for path, w in chosen:
    selection.check_weight(path, w)
    if config.granularity == "n:m":
      shape = tuple(jnp.shape(w))
      if len(shape) < 2 or shape[-2] % config.m:
        raise ValueError(f"n:m {config.n}:{config.m} needs axis -2 (input channels) of '{path}' "
                         f"to be a multiple of {config.m}, got shape {shape}; exclude it")
    if config.granularity == "channel" and jnp.ndim(w) == 0:
      raise ValueError(f"channel granularity needs an output-channel axis, '{path}' is a scalar")
  return chosen


def target_sparsities(params: Any, config: PruneConfig) -> dict[str, float]:
  """The sparsity of every pruned leaf at the target ``config.sparsity``.

  ``"uniform"``: ``sparsity`` for every leaf (``1 - n/m`` for ``"n:m"``); ``"erk"``:
  :func:`erk_sparsities` of the leaf shapes. Static: depends on shapes only.

  Args:
    params: a pytree of float arrays (or ``jax.ShapeDtypeStruct``-like leaves with a shape).
    config: the :class:`PruneConfig`.

  Returns:
    "/"-joined path -> float in [0, 1), for the selected leaves in tree-flatten order.

  Raises:
    ValueError: nothing selected, or a selected leaf is not float or does not fit the
      granularity (naming its path).
  """
  return _targets(_selected_leaves(params, config), config)


def _targets(leaves: Sequence[tuple[str, jax.Array]], config: PruneConfig) -> dict[str, float]:
  if config.distribution == "erk":
    return erk_sparsities({p: tuple(jnp.shape(w)) for p, w in leaves}, config.sparsity)
  return {p: float(config.sparsity) for p, _ in leaves}


# --------------------------------------------------------------------------- scores


def _leaf_scores(leaves: Sequence[tuple[str, jax.Array]], config: PruneConfig, grads: Any,
                 key: jax.Array | None) -> dict[str, jax.Array]:
  if config.score == "random":
    if key is None:
      raise ValueError("score 'random' needs a PRNG key: pass key=jax.random.key(seed)")
    # One key per leaf, from its position: the same scores at every call, so masks computed at
    # growing sparsities are nested.
    return {p: jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(w), jnp.float32)
            for i, (p, w) in enumerate(leaves)}
  if config.score == "magnitude":
    return {p: jnp.abs(jnp.asarray(w, jnp.float32)) for p, w in leaves}
  if grads is None:
    raise ValueError("score 'saliency' needs grads: pass grads, a tree like params")
  by_path = _leaves_by_path(grads)
  scores = {}
  for p, w in leaves:
    if p not in by_path:
      raise ValueError(f"grads have no leaf '{p}'")
    g = by_path[p]
    if jnp.shape(g) != jnp.shape(w):
      raise ValueError(f"grads '{p}' has shape {tuple(jnp.shape(g))}, the parameter "
                       f"{tuple(jnp.shape(w))}")
    scores[p] = jnp.abs(jnp.asarray(w, jnp.float32) * jnp.asarray(g, jnp.float32))
  return scores


def _leaves_by_path(tree: Any) -> dict[str, Any]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {selection.path_str(kp): x for kp, x in leaves}


def _to_tree(params: Any, by_path: Mapping[str, Any]) -> Any:
  """A tree like ``params`` with ``by_path[path]`` at the listed leaves and ``None`` elsewhere."""
  return jax.tree_util.tree_map_with_path(
      lambda kp, _: by_path.get(selection.path_str(kp)), params)


def compute_scores(params: Any, config: PruneConfig, *, grads: Any = None,
                   key: jax.Array | None = None) -> Any:
  """Per-weight importance scores of the pruned leaves; the lowest are pruned first.

  * ``"magnitude"``: ``|w|`` (Han et al. 2015; Zhu and Gupta 2017).
  * ``"random"``: ``uniform[0, 1)`` from ``fold_in(key, i)`` for the ``i``-th pruned leaf, the
    same at every call (a baseline; Liu et al. 2022, "The Unreasonable Effectiveness of Random
    Pruning").
  * ``"saliency"``: ``|w * g|`` with ``g = dL/dw``, the first-order Taylor estimate of the loss
    change when ``w`` is zeroed (Molchanov et al. 2019, "Importance Estimation for Neural Network
    Pruning").

  Args:
    params: a pytree of float arrays, e.g. ``{"dense_0": {"kernel": [in, out], ...}}``.
    config: the :class:`PruneConfig` (``score``, ``include``, ``exclude``).
    grads: for ``"saliency"``: a tree with the pruned leaves of ``params`` at the same paths and
      shapes (usually the gradient tree of ``params``).
    key: for ``"random"``: a PRNG key.

  Returns:
    A tree with the structure of ``params``: float32 scores of the leaf's shape, >= 0, at the
    pruned leaves, ``None`` elsewhere.

  Raises:
    ValueError: nothing selected; a selected leaf not float, or NaN/Inf outside ``jit``;
      ``"random"`` without ``key``; ``"saliency"`` without ``grads`` or with grads missing a
      leaf or of another shape (naming the path).
  """
  leaves = _selected_leaves(params, config)
  return _to_tree(params, _leaf_scores(leaves, config, grads, key))


# --------------------------------------------------------------------------- masks


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


def _check_channels(path: str, out: int, sparsity: Any) -> None:
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
    params: a pytree of float arrays, e.g. the ``params`` collection; kernels ``[kh, kw, in,
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
  leaves = _selected_leaves(params, config)
  sparsity = config.sparsity if sparsity is None else sparsity
  _check_sparsity_arg(sparsity)
  channel_scores = dict(channel_scores or {})
  unknown = sorted(set(channel_scores) - {p for p, _ in leaves})
  if unknown:
    raise ValueError(f"channel_scores names '{unknown[0]}', which is not a pruned leaf")
  if channel_scores and config.granularity != "channel":
    raise ValueError(f"channel_scores needs granularity 'channel', got {config.granularity!r}")
  if config.granularity == "channel":
    targets = _targets(leaves, config)
    for path, w in leaves:
      _check_channels(path, jnp.shape(w)[-1], _leaf_sparsity(config, targets, path, sparsity))
  if previous_masks is not None:
    _check_masks(params, previous_masks)
  return _masks(params, config, jnp.asarray(sparsity, jnp.float32), grads, key, channel_scores,
                previous_masks)


@functools.partial(jax.jit, static_argnames="config")
def _masks(params: Any, config: PruneConfig, sparsity: jax.Array, grads: Any,
           key: jax.Array | None, channel_scores: dict[str, Any], previous_masks: Any) -> Any:
  """The body of :func:`compute_masks` after its checks; compiled once per config and shapes."""
  leaves = _selected_leaves(params, config)
  targets = _targets(leaves, config)
  scores = {p: _gathered(s) for p, s in _leaf_scores(leaves, config, grads, key).items()}
  previous = {}
  if previous_masks is not None:
    previous = {p: _gathered(m) for p, m in _leaves_by_path(previous_masks).items()
                if m is not None}
  masks = {}

  if config.granularity == "n:m":
    for path, w in leaves:
      sc = _demote(scores[path], previous.get(path))
      masks[path] = _nm_keep(sc, config.n, config.m) | (sparsity <= 0)
  elif config.granularity == "channel":
    params_by_path = _leaves_by_path(params)
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
  return _to_tree(params, {p: _sharded_like(masks[p], w) for p, w in leaves})


def _check_masks(params: Any, masks: Any) -> None:
  """Raises ``ValueError`` naming the path unless ``masks`` fits ``params``."""
  is_none = lambda x: x is None  # noqa: E731
  param_leaves = _leaves_by_path(params)
  mask_flat, mask_def = jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)
  mask_leaves = {selection.path_str(kp): m for kp, m in mask_flat}
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


def _map_masked(fn: Any, masks: Any, *trees: Any) -> Any:
  """``fn(mask, *leaves)`` at masked leaves; the first of ``trees`` elsewhere."""
  return jax.tree.map(lambda m, x, *rest: x if m is None else fn(m, x, *rest),
                      masks, *trees, is_leaf=lambda x: x is None)


def apply_masks(params: Any, masks: Any) -> Any:
  """Zeroes the pruned weights: ``where(mask, w, 0)`` at every masked leaf. Pure and jittable.

  Args:
    params: a pytree of arrays.
    masks: a tree with the structure of ``params``: a bool array of the leaf's shape or
      ``None`` (leaf untouched) at every leaf, e.g. from :func:`compute_masks`.

  Returns:
    A new tree; masked leaves keep their shape and dtype, with exact zeros where the mask is
    False.

  Raises:
    ValueError: the mask tree does not match ``params`` (a path missing or extra), or a mask
      has another shape than its parameter or is not bool (naming the path).
  """
  _check_masks(params, masks)
  return _map_masked(lambda m, w: jnp.where(m, w, jnp.zeros((), jnp.result_type(w))),
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
  by_path = {p: m for p, m in _leaves_by_path(jax.device_get(masks)).items() if m is not None}
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


# --------------------------------------------------------------------------- optax


class PruneState(NamedTuple):
  """State of :func:`pruning`.

  Invariant: after every ``update``, ``optax.apply_updates(params, updates)`` is zero wherever
  ``masks`` is False.

  Attributes:
    count: int32 scalar, number of updates applied (the schedule's step).
    masks: the current mask tree (bool arrays at pruned leaves, ``None`` elsewhere).
  """

  count: jax.Array
  masks: Any


def pruning(config: PruneConfig, *, key: jax.Array | None = None
            ) -> optax.GradientTransformationExtraArgs:
  """Pruning during training as an optax transformation (jaxpruner ``wrap_optax``).

  Put it **last** in the chain, e.g. ``optax.chain(optax.adam(1e-4), pruning(config))``: it
  turns the finished updates ``u`` into ``u'`` such that ``optax.apply_updates(params, u')``
  equals ``apply_masks(params + u, masks)`` exactly (``u' = where(mask, u, -params)``), so the
  parameters are masked after every step; a transformation after it would break that.

  * ``init(params)`` computes the masks at ``sparsity_at(config, 0)`` from ``params`` (all
    ``True`` when that is 0). It does not change ``params``: the first update masks them.
  * ``update(updates, state, params, *, grads=None)``: at the steps where
    :func:`is_update_step` holds, the masks are recomputed by :func:`compute_masks` from the
    post-update parameters ``params + updates`` at :func:`sparsity_at` of the step, with the
    current masks as ``previous_masks`` (so a pruned weight stays pruned and the sparsity
    follows the schedule); otherwise they are kept. The choice is a ``jax.lax.cond`` on the
    traced step count, so a jitted train step compiles once, and no host callback is used, so it
    runs on sharded or replicated parameters. ``grads`` (the raw gradients) is needed for
    ``score="saliency"``; ``optax.chain`` forwards it: ``tx.update(g, state, params, grads=g)``.

  Example::

    tx = optax.chain(optax.sgd(0.1), pruning(PruneConfig(0.5)))
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)        # half of every kernel is now 0
    mask_sparsity(opt_state[-1].masks)["sparsity"]        # 0.5

  Args:
    config: the :class:`PruneConfig`.
    key: PRNG key for ``score="random"`` (the same random scores at every mask update).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`PruneState`.

  Raises:
    ValueError: ``score="random"`` without ``key``; at ``init``, the errors of
      :func:`compute_masks` (at the target sparsity: N:M not dividing a leaf, every filter of a
      leaf pruned), or ``score="saliency"`` with a sparsity above 0 at step 0 (``init`` has no
      gradients); at ``update``, ``params`` missing or ``"saliency"`` without ``grads``.
  """
  if config.score == "random" and key is None:
    raise ValueError("score 'random' needs a PRNG key: pass key=jax.random.key(seed)")

  def init_fn(params):
    leaves = _selected_leaves(params, config)  # checks the leaves against the granularity
    if config.granularity == "channel":
      targets = _targets(leaves, config)
      for path, w in leaves:
        _check_channels(path, jnp.shape(w)[-1], targets[path])
    with jax.ensure_compile_time_eval():
      s0 = float(sparsity_at(config, 0))
    if s0 == 0:
      masks = _to_tree(params, {p: jnp.ones_like(w, dtype=bool) for p, w in leaves})
    elif config.score == "saliency":
      raise ValueError(f"score 'saliency' needs gradients, which init does not have: the "
                       f"schedule must be at sparsity 0 at step 0, got {s0:g}")
    else:
      masks = compute_masks(params, config, sparsity=s0, key=key)
    return PruneState(count=jnp.zeros([], jnp.int32), masks=masks)

  def update_fn(updates, state, params=None, *, grads=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("pruning needs params: call update(updates, state, params)")
    step = state.count

    def recompute(new_params):
      return compute_masks(new_params, config, sparsity=sparsity_at(config, step), grads=grads,
                           key=key, previous_masks=state.masks)

    masks = jax.lax.cond(is_update_step(config, step), recompute, lambda _: state.masks,
                         optax.apply_updates(params, updates))
    updates = _map_masked(lambda m, u, w: jnp.where(m, u, -w), masks, updates, params)
    return updates, PruneState(count=optax.safe_increment(step), masks=masks)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def keep_masks(masks: Any) -> optax.GradientTransformation:
  """Fixed pruning masks as an optax transformation: pruned weights stay exactly zero.

  For masks chosen once before training (one-shot pruning, or group-aware channel masks from
  :func:`jaxgc.compress.slim.channel_masks`). Put it **last** in the chain, e.g.
  ``optax.chain(optax.adam(1e-4), keep_masks(masks))``: ``optax.apply_updates(params, u')``
  equals ``apply_masks(params + u, masks)`` (``u' = where(mask, u, -params)``). The masks are
  constants of the transformation, not state (its state is ``optax.EmptyState``), so
  checkpoints hold no masks; rebuild them from the same config to resume.

  Args:
    masks: a mask tree over the parameters (bool arrays, ``True`` = keep, or ``None``).

  Returns:
    An ``optax.GradientTransformation``.

  Raises:
    ValueError: at ``init``, the masks do not match the parameters (naming the path); at
      ``update``, ``params`` missing.
  """
  def init_fn(params):
    _check_masks(params, masks)
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("keep_masks needs params: call update(updates, state, params)")
    return _map_masked(lambda m, u, w: jnp.where(m, u, -w), masks, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)
