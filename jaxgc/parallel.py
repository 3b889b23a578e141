"""Data parallelism shared by every layer: the ``'data'`` mesh, sharding, batched apply.

One place for what training, evaluation and the jobs all need: a 1-D ``'data'`` mesh
(:func:`data_mesh`), batch sharding and replication (:func:`shard_batch`, :func:`replicate`,
:func:`put`, :func:`pad_rows`), the data-parallel jitted train step (:func:`jit_step`), and
batched inference with one compiled shape (:func:`batched_apply`, :func:`generate`).

big_vision ``train.py``: the mesh comes from ``jax.make_mesh``, the batch is sharded over its
``'data'`` axis with ``NamedSharding(mesh, P('data'))`` and everything else is replicated; the
step is a ``jax.jit`` whose in/out shardings say so (no ``pmap``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxgc import _signals

DATA_AXIS = "data"


def data_mesh(devices: Any = None) -> jax.sharding.Mesh:
  """A 1-D mesh with the single axis ``'data'`` over ``devices`` (default: all).

  Built with ``jax.make_mesh`` and ``Auto`` axis types, so the sharding of the batch propagates
  through the model (GSPMD) without per-op annotations.
  """
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_mesh(mesh: jax.sharding.Mesh | None) -> None:
  """Raises ValueError when ``mesh`` is given but is not a mesh with a ``'data'`` axis."""
  if mesh is not None and (not isinstance(mesh, jax.sharding.Mesh)
                           or DATA_AXIS not in mesh.axis_names):
    raise ValueError(f"mesh must have a {DATA_AXIS!r} axis, got "
                     f"{getattr(mesh, 'axis_names', mesh)!r}")


def data_axis_size(mesh: jax.sharding.Mesh | None) -> int:
  """Devices along the ``'data'`` axis (1 without a mesh).

  Raises:
    ValueError: ``mesh`` has no ``'data'`` axis.
  """
  if mesh is None:
    return 1
  check_mesh(mesh)
  return int(mesh.shape[DATA_AXIS])


def round_up(x: int, multiple: int) -> int:
  """The smallest multiple of ``multiple`` (>= 1) that is >= ``x``."""
  return -(-int(x) // int(multiple)) * int(multiple)


def pad_rows(x: Any, rows: int) -> Any:
  """``x`` with zero rows appended up to ``rows``: the last batch padded to the compiled size.

  Args:
    x: a numpy or JAX array ``[n, ...]`` of any dtype.
    rows: the wanted number of rows, ``>= n``.

  Returns:
    ``[rows, ...]`` of ``x``'s type and dtype (``x`` itself when ``rows == n``).

  Raises:
    ValueError: ``rows < n``.
  """
  if rows < x.shape[0]:
    raise ValueError(f"cannot pad {x.shape[0]} rows down to {rows}")
  extra = rows - x.shape[0]
  if extra == 0:
    return x
  if isinstance(x, np.ndarray):
    return np.concatenate([x, np.zeros((extra,) + x.shape[1:], x.dtype)], axis=0)
  return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1))


def put(x: Any, mesh: jax.sharding.Mesh | None, spec: P) -> jax.Array:
  """``x`` on ``mesh`` with ``NamedSharding(mesh, spec)``, or on the default device.

  Args:
    x: a numpy or JAX array (any shape and dtype; with a mesh its sharded dimensions must divide
      by the mesh axes ``spec`` names, e.g. ``[batch, ...]`` with ``P("data")``).
    mesh: a ``jax.make_mesh`` mesh, or None for the default device.
    spec: the ``PartitionSpec`` of ``x`` over ``mesh`` (ignored without a mesh).

  Returns:
    A ``jax.Array`` holding ``x``.

  Raises:
    ValueError: a sharded dimension that does not divide by its mesh axis (from JAX).
  """
  if mesh is None:
    return jnp.asarray(x)
  return jax.device_put(x, NamedSharding(mesh, spec))


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
  batch = NamedSharding(mesh, P(DATA_AXIS))
  return jax.jit(
      step, donate_argnums=(0,),
      in_shardings=(replicated,) + (batch,) * num_batch_args + (replicated,) * num_replicated_args,
      out_shardings=(replicated, replicated))


def shard_batch(batch: Any, mesh: jax.sharding.Mesh | None) -> jax.Array:
  """Puts ``batch`` (a pytree of arrays) on the mesh, split over ``'data'`` (or on the default
  device).

  With several processes (``jax.distributed.initialize``) ``batch`` is this process's part of
  the global batch and the global arrays are assembled with
  ``jax.make_array_from_process_local_data``: process ``k``'s rows fill the slots of its own
  devices (``k * b .. (k + 1) * b`` when each process's devices are contiguous in the mesh, as
  on CPU and GPU hosts; interleaved on some TPU topologies). To place a global batch every
  process holds whole, use :func:`shard_global_batch`.
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, batch)
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  if jax.process_count() > 1:
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
  return jax.device_put(batch, sharding)


def shard_global_batch(batch: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Puts ``batch``, the whole global batch, on the mesh split over ``'data'`` (or on the
  default device): a pytree of ``[n, ...]`` host or device arrays, the same on every process,
  ``n`` a multiple of the mesh's ``'data'`` size.

  With several processes (``jax.distributed.initialize``) each process copies, from its own
  copy of the batch, the rows of the slots its devices hold (``jax.make_array_from_callback``),
  whatever the order of the mesh's devices (on some TPU topologies the hosts' devices
  interleave). A job whose batches are a function of ``(seed, step)`` builds each global batch
  on every process and passes it here, so a multi-process run trains on exactly the batches of
  a single-process one. Returns global ``jax.Array`` leaves of the same shapes and dtypes.
  """
  if mesh is None or jax.process_count() == 1:
    return shard_batch(batch, mesh)
  sharding = NamedSharding(mesh, P(DATA_AXIS))

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, batch)


def is_primary() -> bool:
  """Whether this is process 0, the one that writes a job's files in a multi-process run (the
  only process of a single-process run)."""
  return jax.process_index() == 0


def primary_value(value: Any) -> Any:
  """Process 0's ``value`` on every process: a decision every process must take the same way
  (whether a setting is finished, read from a file process 0 may be writing).

  ``value`` is a pytree of NumPy arrays or scalars with the same structure, shapes and dtypes on
  every process. Every process must call it (a collective). With several processes it returns
  NumPy arrays; with one process ``value`` itself."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(value))


def replicate(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Puts every leaf of ``tree`` on every device of ``mesh`` (or on the default device).

  With several processes (``jax.distributed.initialize``) every process passes the same
  ``tree`` of host values or arrays this process holds whole; its leaves go through host memory
  (a device array of one process cannot be put on the others' devices), PRNG key arrays as their
  key data. Returns the tree with ``jax.Array`` leaves, replicated, of the same shapes and
  dtypes.
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)

  return jax.tree.map(put, tree)


def to_host(x: Any) -> np.ndarray:
  """``x`` as a host NumPy array, whole: ``np.asarray`` for an array this process holds
  entirely, ``multihost_utils.process_allgather`` for a global array sharded over devices of
  several processes (after ``jax.distributed.initialize``; every process must call it)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def gather_rows(local: Any) -> np.ndarray:
  """The rows every process holds, concatenated in process order, on every process.

  With several processes (``jax.distributed.initialize``), process ``k`` passes its own
  ``[n_k, ...]`` array (the same trailing shape and dtype everywhere, and the same ``n_k`` on
  every process) and every process gets the ``[sum n_k, ...]`` array: features computed where
  their samples live, then measured on the global mesh by :mod:`jaxgc.eval.metrics` or
  :mod:`jaxgc.eval.lsh`. With one process it returns ``np.asarray(local)``. Every process must
  call it (a collective).
  """
  if jax.process_count() == 1:
    return np.asarray(local)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(np.asarray(local), tiled=True))


def host_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
  """Device metrics -> Python floats (one transfer)."""
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


@functools.lru_cache(maxsize=64)
def _jitted(fn: Callable[..., Any], mesh: jax.sharding.Mesh | None) -> Callable[..., Any]:
  if mesh is None:
    return jax.jit(fn)
  data = NamedSharding(mesh, P(DATA_AXIS))
  return jax.jit(fn, in_shardings=(NamedSharding(mesh, P()), data), out_shardings=data)


def _is_stable(fn) -> bool:
  """Whether ``fn`` is worth caching: a module-level function, a bound method or a callable
  object, not a lambda or a closure (new objects at every call)."""
  if inspect.ismethod(fn):
    return True
  return getattr(fn, "__closure__", None) is None and getattr(fn, "__name__", "") != "<lambda>"


def _call_without_variables(fn):
  return lambda _, batch: fn(batch)


def batched_apply(fn: Callable[..., jax.Array], x: np.ndarray, batch_size: int,
                  mesh: jax.sharding.Mesh | None = None, progress: bool = True,
                  desc: str = "features", variables: Any = None,
                  preprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
  """Applies a jitted ``fn`` to ``x`` in batches of one fixed shape (the last one padded).

  One compiled function serves every batch. With ``mesh``, every batch is sharded over the
  mesh's ``"data"`` axis (the batch size is rounded up to a multiple of its size) and
  ``variables`` are replicated, so each device computes its slice. When ``variables`` is given
  and ``fn`` is a module-level function or a bound method (not a lambda or closure), the jitted
  ``fn`` is cached per ``(fn, mesh)``: calling again with new variables of the same shapes
  reuses its compilation.

  Args:
    fn: ``fn(batch)``, or ``fn(variables, batch)`` when ``variables`` is given; maps
      ``[batch, ...]`` to ``[batch, ...]``; jitted here.
    x: numpy ``[n, ...]``.
    batch_size: samples per call (>= 1).
    mesh: optional mesh with a ``"data"`` axis.
    progress: show a tqdm bar (counting samples).
    desc: the bar's label.
    variables: optional pytree passed as ``fn``'s first argument (replicated over the mesh).
    preprocess: optional host function applied to each raw batch before padding (e.g. a
      resize), so that only one batch of preprocessed data is ever in memory.

  Returns:
    numpy ``[n, ...]`` outputs, in order.

  Raises:
    ValueError: ``batch_size < 1`` or a mesh without a ``"data"`` axis.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n = len(x)
  check_mesh(mesh)
  if variables is None:
    jfn = _jitted.__wrapped__(_call_without_variables(fn), mesh)
  elif _is_stable(fn):
    jfn = _jitted(fn, mesh)
  else:  # a lambda or closure is new at every call: caching it would only hold memory
    jfn = _jitted.__wrapped__(fn, mesh)
  if mesh is not None:
    batch_size = round_up(min(batch_size, n), data_axis_size(mesh))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
  else:
    batch_size = max(1, min(batch_size, n))
  outs = []
  with tqdm(total=n, desc=desc, disable=not progress, unit="sample") as bar:
    for start in range(0, n, batch_size):
      _signals.check()
      chunk = x[start:start + batch_size]
      if preprocess is not None:
        chunk = preprocess(chunk)
      m = len(chunk)
      if m < batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, axis=0)])
      outs.append(np.asarray(jfn(variables, put(chunk, mesh, P(DATA_AXIS))))[:m])
      bar.update(m)
  return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def generate(module: nn.Module, variables: Any, inputs: np.ndarray, batch_size: int = 256,
             mesh: jax.sharding.Mesh | None = None, progress: bool = False,
             desc: str = "generate") -> np.ndarray:
  """``module.apply(variables, x)`` over ``inputs`` in batches, as a numpy array.

  The one batched generation of jaxgc (evaluation, the jobs' sample grids and reports). Batches
  have one shape (the last is padded) and the jitted apply is cached per module, so a training
  job that samples every few steps compiles once.

  Args:
    module: a generator module (any Flax module mapping ``[batch, ...]`` to ``[batch, ...]``).
    variables: its variables.
    inputs: float32 ``[n, z_dim]`` latents, or ``[n, height, width, channels]`` images in
      [-1, 1] for an image-to-image generator.
    batch_size: inputs per jitted call (>= 1).
    mesh: optional mesh with a ``'data'`` axis to shard each batch over.
    progress: show a tqdm bar.
    desc: the bar's label.

  Returns:
    float32 outputs ``[n, ...]`` (images in [-1, 1] for the zoo's generators).

  Raises:
    ValueError: ``batch_size < 1`` or a mesh without a ``'data'`` axis.
  """
  return batched_apply(module.apply, np.asarray(inputs), batch_size, mesh, progress, desc,
                       variables=variables)
