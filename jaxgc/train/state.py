"""Train state: float shadow weights, optimizer state and frozen collections.

Flax examples' ``create_train_state`` / ``TrainState`` (``flax/training/train_state.py``), reduced
to what compression fine-tuning needs: no ``apply_fn`` (the module is an argument of the step),
and a ``frozen`` slot for collections that are never trained (``batch_stats``).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes.

  Invariants: ``params`` are float32 *shadow* weights (never quantized in place; a quantized
  model is ``fake_quantize(state.variables)``); ``opt_state`` is ``tx.init(params)`` advanced
  ``step`` times; ``frozen`` holds the other variable collections (e.g. ``batch_stats``), which no
  step changes. ``tx`` is static (part of the tree definition, not a leaf).

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: the trainable ``params`` collection, nested dicts of float arrays.
    opt_state: the optax state of ``tx``.
    frozen: the other collections, ``{name: tree}``; ``{}`` when the model has none.
    tx: the optax transformation (static).
  """

  step: jax.Array
  params: Any
  opt_state: optax.OptState
  frozen: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @property
  def variables(self) -> dict[str, Any]:
    """The full variables tree ``{"params": params, **frozen}`` for ``module.apply``."""
    return {"params": self.params, **self.frozen}

  def apply_gradients(self, grads: Any) -> "TrainState":
    """One optimizer update: returns a new state with ``step + 1``. Pure."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


def create_train_state(params: Any, tx: optax.GradientTransformation,
                       frozen: dict[str, Any] | None = None) -> TrainState:
  """A fresh :class:`TrainState` at step 0.

  The leaves are copied onto the default device, so a step that donates the state (``jax.jit``
  with ``donate_argnums=(0,)``) never invalidates the caller's arrays, e.g. the teacher's
  variables when the student starts from the same weights.

  Args:
    params: the ``params`` collection to train (float shadow weights), nested dicts of arrays.
    tx: an optax transformation, e.g. ``optax.adam(1e-4)``.
    frozen: other collections (``{"batch_stats": ...}``), kept as they are; None for none.

  Returns:
    The state with ``step == 0`` and ``opt_state == tx.init(params)``.
  """
  params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
  frozen = jax.tree.map(lambda x: jnp.array(x, copy=True), dict(frozen or {}))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    frozen=frozen, tx=tx)
