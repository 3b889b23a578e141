"""When and where to prune: sparsity schedules over training steps (one shot, iterative, the
polynomial schedule of Zhu and Gupta 2017) and sparsity distributions over leaves (uniform,
Erdos-Renyi-Kernel of Evci et al. 2020)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgc.compress import selection
from jaxgc.compress.prune_config import PruneConfig
from jaxgc.compress.prune_config import check_fraction

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
  check_fraction("sparsity", sparsity)
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


def selected_leaves(params: Any, config: PruneConfig) -> list[tuple[str, jax.Array]]:
  """``(path, leaf)`` of the leaves ``config`` prunes, in tree-flatten order, checked."""
  paths = set(selection.selected_paths(params, config.include, config.exclude))
  leaves, _ = selection.flatten_with_paths(params)
  chosen = [(p, w) for p, w in leaves if p in paths]
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
  return sparsity_targets(selected_leaves(params, config), config)


def sparsity_targets(leaves: Sequence[tuple[str, jax.Array]],
                     config: PruneConfig) -> dict[str, float]:
  """``{path: final sparsity in [0, 1)}`` of ``leaves``: ERK-distributed or uniform, as
  ``config.distribution`` says."""
  if config.distribution == "erk":
    return erk_sparsities({p: tuple(jnp.shape(w)) for p, w in leaves}, config.sparsity)
  return {p: float(config.sparsity) for p, _ in leaves}
