"""Pruning as optax transformations that compose with ``optax.chain``: :func:`pruning` keeps the
masks in its state and masks the parameters after every update (jaxpruner ``base_updater.py:
wrap_optax``); :func:`keep_masks` keeps fixed masks."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgc.compress import selection
from jaxgc.compress.prune_config import PruneConfig
from jaxgc.compress.prune_masks import check_channels
from jaxgc.compress.prune_masks import check_masks
from jaxgc.compress.prune_masks import map_masked
from jaxgc.compress.prune_masks import compute_masks
from jaxgc.compress.prune_schedules import selected_leaves
from jaxgc.compress.prune_schedules import sparsity_targets
from jaxgc.compress.prune_schedules import is_update_step
from jaxgc.compress.prune_schedules import sparsity_at
from jaxgc.compress.prune_scores import tree_from_paths

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

  NNX: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` calls ``init`` with the ``nnx.State`` of the
  parameters and ``update`` with pure arrays (``nnx.as_pure``). Both functions remove the
  ``Variable`` boxes first (:func:`jaxgc.compress.selection.unbox`), so the masks always have
  the pure structure and the paths matched by ``config.include`` are those of the parameters
  themselves, ``conv_in/kernel``, as for Linen's ``tx.init(variables["params"])``; the updates
  come back in the structure they were given.

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
    params = selection.unbox(params)
    leaves = selected_leaves(params, config)  # checks the leaves against the granularity
    if config.granularity == "channel":
      targets = sparsity_targets(leaves, config)
      for path, w in leaves:
        check_channels(path, jnp.shape(w)[-1], targets[path])
    with jax.ensure_compile_time_eval():
      s0 = float(sparsity_at(config, 0))
    if s0 == 0:
      masks = tree_from_paths(params, {p: jnp.ones_like(w, dtype=bool) for p, w in leaves})
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
    boxed, updates, params = updates, selection.unbox(updates), selection.unbox(params)
    grads = selection.unbox(grads)
    step = state.count

    def recompute(new_params):
      return compute_masks(new_params, config, sparsity=sparsity_at(config, step), grads=grads,
                           key=key, previous_masks=state.masks)

    masks = jax.lax.cond(is_update_step(config, step), recompute, lambda _: state.masks,
                         optax.apply_updates(params, updates))
    updates = map_masked(lambda m, u, w: jnp.where(m, u, -w), masks, updates, params)
    return (selection.rebox(boxed, updates),
            PruneState(count=optax.safe_increment(step), masks=masks))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def keep_masks(masks: Any) -> optax.GradientTransformation:
  """Fixed pruning masks as an optax transformation: pruned weights stay exactly zero.

  For masks chosen once before training (one-shot pruning, or group-aware channel masks from
  :func:`jaxgc.compress.slim.channel_masks`). Put it **last** in the chain, e.g.
  ``optax.chain(optax.adam(1e-4), keep_masks(masks))``: ``optax.apply_updates(params, u')``
  equals ``apply_masks(params + u, masks)`` (``u' = where(mask, u, -params)``). The masks are
  constants of the transformation, not state (its state is ``optax.EmptyState``), so
  checkpoints hold no masks; rebuild them from the same config to resume.

  NNX: the masks, parameters and updates may be ``nnx.State`` trees (e.g. masks from
  :func:`compute_masks` of ``nnx.state(model, nnx.Param)``); their ``Variable`` boxes are
  removed before they are matched, as in :func:`pruning`.

  Args:
    masks: a mask tree over the parameters (bool arrays, ``True`` = keep, or ``None``).

  Returns:
    An ``optax.GradientTransformation``.

  Raises:
    ValueError: at ``init``, the masks do not match the parameters (naming the path); at
      ``update``, ``params`` missing.
  """
  pure_masks = selection.unbox(masks)

  def init_fn(params):
    check_masks(selection.unbox(params), pure_masks)
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("keep_masks needs params: call update(updates, state, params)")
    new = map_masked(lambda m, u, w: jnp.where(m, u, -w), pure_masks, selection.unbox(updates),
                      selection.unbox(params))
    return selection.rebox(updates, new), state

  return optax.GradientTransformation(init_fn, update_fn)
