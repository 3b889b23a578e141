"""What to prune first: per-weight scores (magnitude ``|w|``, random, first-order Taylor saliency
``|w * dL/dw|``); low scores are pruned first."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxgc.compress import selection
from jaxgc.compress.prune_config import PruneConfig
from jaxgc.compress.prune_schedules import selected_leaves

def leaf_scores(leaves: Sequence[tuple[str, jax.Array]], config: PruneConfig, grads: Any,
                key: jax.Array | None) -> dict[str, jax.Array]:
  """``{path: importance, shaped like the leaf}`` by ``config.score`` (magnitude, random or
  gradient saliency).

  Raises:
    ValueError: ``random`` without ``key``, or ``saliency`` without ``grads``.
  """
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
  by_path = leaves_by_path(grads)
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


def leaves_by_path(tree: Any) -> dict[str, Any]:
  """``{"/"-joined path: leaf}`` of every leaf of ``tree`` that has a path."""
  return {p: x for p, x in selection.flatten_with_paths(tree)[0] if p is not None}


def tree_from_paths(params: Any, by_path: Mapping[str, Any]) -> Any:
  """A tree like ``params`` with ``by_path[path]`` at the listed leaves and ``None`` elsewhere."""
  return selection.map_with_paths(lambda p, _: by_path.get(p), params, rng_leaves="none")


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
  leaves = selected_leaves(params, config)
  return tree_from_paths(params, leaf_scores(leaves, config, grads, key))
