"""Orbax checkpoints of a :class:`~jaxgc.train.state.TrainState`, for resumable training.

A checkpoint is the state's leaves ``{"step", "params", "opt_state", "frozen"}`` saved with
``ocp.CheckpointManager`` under ``<directory>/<step>/``; the optimizer transformation is not
saved (it is code, rebuilt from the config). Saves are synchronous, so a checkpoint on disk is
complete before the next (donating) step reuses the state's buffers.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxgc.train.state import TrainState


def checkpoint_manager(directory: str | os.PathLike, every: int, max_to_keep: int | None = 3
                       ) -> ocp.CheckpointManager:
  """A manager that keeps a checkpoint every ``every`` steps (the last ``max_to_keep``).

  Args:
    directory: the checkpoints folder; created if needed.
    every: int >= 1, ``save_interval_steps``: ``save`` writes when ``step % every == 0`` (or
      when forced), and also at the first save of a fresh directory (orbax's default
      ``InitialSavePolicy``), so a run killed before step ``every`` still resumes.
    max_to_keep: how many recent checkpoints to keep; None keeps all.
  """
  options = ocp.CheckpointManagerOptions(save_interval_steps=int(every), max_to_keep=max_to_keep,
                                         create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def _leaves(state: TrainState) -> dict[str, Any]:
  if hasattr(state, "checkpoint_tree"):   # a composite state (e.g. collab_step.CollabState)
    return state.checkpoint_tree()
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
          "frozen": state.frozen}


def save_state(manager: ocp.CheckpointManager, state: TrainState, force: bool = False) -> bool:
  """Saves ``state`` at its step if the manager's interval says so (or ``force``).

  Returns:
    Whether a checkpoint was written.
  """
  step = int(jax.device_get(state.step))
  if manager.latest_step() == step:
    return False
  saved = manager.save(step, args=ocp.args.StandardSave(_leaves(state)), force=force)
  manager.wait_until_finished()
  return bool(saved)


def restore_latest(manager: ocp.CheckpointManager, template: TrainState
                   ) -> TrainState | None:
  """The latest checkpoint restored into the structure, dtypes and shardings of ``template``.

  Args:
    manager: from :func:`checkpoint_manager`.
    template: a state of the same model and optimizer (e.g. a fresh one); its values are not
      used, only its tree structure, shapes, dtypes, shardings and ``tx``.

  Returns:
    The restored state, or None when the directory holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _leaves(template))
  leaves = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  if hasattr(template, "checkpoint_tree"):
    return template.from_checkpoint_tree(leaves)
  return template.replace(**leaves)
