"""Data parallelism for train steps: a 1-D ``'data'`` mesh, batch sharding, replication.

big_vision ``train.py``: the mesh comes from ``jax.make_mesh``, the batch is sharded over its
``'data'`` axis with ``NamedSharding(mesh, P('data'))`` and everything else is replicated; the
step is a ``jax.jit`` whose in/out shardings say so (no ``pmap``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(devices: Any = None) -> jax.sharding.Mesh:
  """A 1-D mesh with the single axis ``'data'`` over ``devices`` (default: all).

  Built with ``jax.make_mesh`` and ``Auto`` axis types, so the sharding of the batch propagates
  through the model (GSPMD) without per-op annotations.
  """
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), ("data",), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_mesh(mesh: jax.sharding.Mesh | None) -> None:
  """Raises ValueError when ``mesh`` is given but has no ``'data'`` axis."""
  if mesh is not None and "data" not in mesh.axis_names:
    raise ValueError(f"the mesh needs a 'data' axis, got axes {mesh.axis_names}")


def jit_step(step: Any, mesh: jax.sharding.Mesh | None, num_batch_args: int = 1,
             num_replicated_args: int = 2) -> Any:
  """``jax.jit(step, donate_argnums=(0,))`` with data-parallel shardings.

  ``step(state, *batch_args, *replicated_args) -> (state, metrics)``: with a ``mesh`` the state,
  the replicated arguments and the outputs are replicated and the ``num_batch_args`` batch
  arguments are sharded over ``'data'`` (their leading axis must be a multiple of its size).

  Raises:
    ValueError: a ``mesh`` without a ``'data'`` axis.
  """
  if mesh is None:
    return jax.jit(step, donate_argnums=(0,))
  check_mesh(mesh)
  replicated = NamedSharding(mesh, P())
  batch = NamedSharding(mesh, P("data"))
  return jax.jit(
      step, donate_argnums=(0,),
      in_shardings=(replicated,) + (batch,) * num_batch_args + (replicated,) * num_replicated_args,
      out_shardings=(replicated, replicated))


def shard_batch(batch: Any, mesh: jax.sharding.Mesh | None) -> jax.Array:
  """Puts ``batch`` (a pytree of arrays) on the mesh, split over ``'data'`` (or on the default
  device).

  With several processes (``jax.distributed.initialize``) ``batch`` is this process's part of
  the global batch and the global arrays are assembled with
  ``jax.make_array_from_process_local_data`` (process ``k`` holds rows ``k * b .. (k + 1) * b``).
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, batch)
  sharding = NamedSharding(mesh, P("data"))
  if jax.process_count() > 1:
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
  return jax.device_put(batch, sharding)


def replicate(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Puts every leaf of ``tree`` on every device of ``mesh`` (or on the default device)."""
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)
  return jax.device_put(tree, NamedSharding(mesh, P()))


def host_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
  """Device metrics -> Python floats (one transfer)."""
  return {k: float(v) for k, v in jax.device_get(metrics).items()}
