"""Precision and recall with locality-sensitive hashing (LSH) instead of k-NN balls.

Mordido, Yang and Meinel 2021, "Evaluating Post-Training Compression in GANs using
Locality-Sensitive Hashing" (arXiv 2103.11912). The improved precision/recall of Kynkäänniemi et
al. 2019 calls a generated sample "inside" the real manifold when it lies within the k-NN radius
of some real sample; an outlier reference sample has a huge radius and covers many generated
samples, so heavily compressed generators (which make outliers) look better than they are. The
LSH manifold test replaces the k-NN balls by hash buckets:

* ``method="lsh"`` (O(1) per query sample): hash every reference feature into ``L`` tables of
  ``K`` concatenated E2LSH hashes; a query is inside when its bucket, in at least one table, holds
  at least ``m`` reference samples. ``m > 1`` is what makes the test robust to isolated outliers:
  an outlier sits alone in its buckets and covers nothing.
* ``method="lsh_knn"`` (O(sqrt(n) d) per query sample instead of O(n d)): data-dependent hash
  buckets (the equal leaves of a principal-axis partition tree) with multi-probe give candidate
  neighbours, and both the k-NN radii and the radius test of improved precision/recall run
  against those candidates only, in dense blocks (:mod:`jaxgc.eval.knn_buckets`).
* ``method="knn"``: the exact k-NN test, blocked (never an ``n x n`` matrix); the reference the
  two LSH methods are measured against.

Precision is the fraction of fake samples inside the real manifold; recall the same with the roles
swapped (fake reference, real queries).

Hashing (Datar et al. 2004, p-stable LSH): ``h(x) = floor((a . x + b) / w)`` with
``a ~ N(0, I_d)`` and ``b ~ U[0, w)``; all ``L * K`` projections are one ``[n, d] x [d, L*K]``
matmul. The ``K`` integers of a table are combined into one 32-bit bucket id,
``fmix32(sum_k r_k * h_k mod 2**32)`` with random odd multipliers ``r_k`` and the murmur3
finalizer ``fmix32``. Distinct K-tuples therefore share an id with probability about ``2**-32``
(not a strictly universal family: the collision rate is that of a random function, not a proven
bound). ``method="lsh"`` folds the id into ``table_size`` count slots (``id mod table_size``);
distinct buckets sharing a slot add their counts, which can only move a query from outside to
inside, so slot collisions bias precision and recall *up*, by at most the fraction of queries whose
slot is shared (see :func:`bucket_occupancy`, ``slot_collision_fraction``).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgc.eval import knn_buckets
from jaxgc.eval import npy_blocks
from jaxgc.parallel import check_mesh
from jaxgc.parallel import pad_rows
from jaxgc.parallel import put

METHODS = ("lsh", "lsh_knn", "knn")

# Auto bucket width (``bucket_width=None``), see :func:`lsh_precision_recall`.
LSH_WIDTH_FACTOR = 1.0

_MAD_TO_STD = 1.4826  # 1 / Phi^-1(3/4): MAD of a Gaussian times this is its std.
_INT_LIMIT = 2.0**30  # floor values are clipped to +-2**30 before the int32 cast.


class HashParams(NamedTuple):
  """E2LSH hash family for ``L`` tables of ``K`` hashes over ``d``-dim features.

  Attributes:
    projections: ``[d, L*K]`` float32, entries i.i.d. N(0, 1); column ``l*K + k`` is hash ``k`` of
      table ``l``.
    offsets: ``[L*K]`` float32 in ``[0, 1)``: ``b / w`` (so ``b ~ U[0, w)`` for any width ``w``).
    multipliers: ``[L, K]`` uint32, odd: combine the K hashes of a table into one bucket id.
  """

  projections: jax.Array
  offsets: jax.Array
  multipliers: jax.Array


def make_hash_params(key: jax.Array, dim: int, num_tables: int,
                     hashes_per_table: int) -> HashParams:
  """Draws an E2LSH family: ``L = num_tables`` tables of ``K = hashes_per_table`` hashes."""
  k_a, k_b, k_r = jax.random.split(key, 3)
  n_hash = num_tables * hashes_per_table
  projections = jax.random.normal(k_a, (dim, n_hash), jnp.float32)
  offsets = jax.random.uniform(k_b, (n_hash,), jnp.float32)
  multipliers = jax.random.bits(k_r, (num_tables, hashes_per_table), jnp.uint32) | jnp.uint32(1)
  return HashParams(projections, offsets, multipliers)


def _fmix32(h: jax.Array) -> jax.Array:
  """murmur3 32-bit finalizer: a bijection on uint32 that spreads every input bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def bucket_ids(features: jax.Array, params: HashParams,
               bucket_width: jax.Array | float) -> jax.Array:
  """Bucket id of every sample in every table.

  Args:
    features: ``[n, d]`` float.
    params: the hash family (:func:`make_hash_params`).
    bucket_width: ``w > 0``, scalar, in feature units.

  Returns:
    ``[n, L]`` uint32: ``fmix32(sum_k r_k * floor((a_k . x + b_k) / w) mod 2**32)``.
  """
  num_tables, k = params.multipliers.shape
  proj = features.astype(jnp.float32) @ params.projections  # the one matmul: [n, L*K]
  h = jnp.floor(proj / bucket_width + params.offsets)
  h = jnp.clip(h, -_INT_LIMIT, _INT_LIMIT).astype(jnp.int32)
  h = jax.lax.bitcast_convert_type(h, jnp.uint32).reshape(-1, num_tables, k)
  ids = jnp.sum(h * params.multipliers, axis=-1, dtype=jnp.uint32)  # wraps mod 2**32
  return _fmix32(ids)


# --------------------------------------------------------------------------------------------
# Blocking and sharding of the query axis.


def _block_layout(n: int, block_size: int, n_dev: int) -> tuple[int, int]:
  """``(num_blocks, block)`` with ``num_blocks * block >= n`` and ``block % n_dev == 0``."""
  num_blocks = max(1, math.ceil(n / block_size))
  block = math.ceil(math.ceil(n / num_blocks) / n_dev) * n_dev
  return num_blocks, block


def _to_blocks(x: jax.Array, num_blocks: int, block: int, spec: Any) -> jax.Array:
  """``[num_blocks*block, ...] -> [num_blocks, block, ...]``, row ``i*num_blocks+j`` at ``[j, i]``.

  The interleaved layout keeps the contiguous device shards of the sample axis on the ``block``
  axis, so every block is spread over all devices and the loop over blocks is not.
  """
  xb = jnp.swapaxes(x.reshape(block, num_blocks, *x.shape[1:]), 0, 1)
  if spec is not None:
    xb = jax.lax.with_sharding_constraint(xb, spec)
  return xb


def _from_blocks(xb: jax.Array) -> jax.Array:
  return jnp.swapaxes(xb, 0, 1).reshape(-1, *xb.shape[2:])


def _block_spec(mesh, ndim: int):
  if mesh is None:
    return None
  return NamedSharding(mesh, P(None, "data", *([None] * (ndim - 2))))


def _sqdist(q: jax.Array, r: jax.Array) -> jax.Array:
  """``[B, d] x [C, d] -> [B, C]`` squared Euclidean distances, ``|q|^2 + |r|^2 - 2 q.r >= 0``."""
  d2 = jnp.sum(q * q, -1)[:, None] + jnp.sum(r * r, -1)[None, :] - 2.0 * (q @ r.T)
  return jnp.maximum(d2, 0.0)


# --------------------------------------------------------------------------------------------
# Exact k-NN (blocked).


@functools.partial(jax.jit, static_argnames=("k", "num_blocks", "block", "ref_blocks", "spec"))
def _kth_sqdist(x, x_mask, *, k, num_blocks, block, ref_blocks, spec):
  """Squared distance of every row of ``x`` to its k-th nearest row (self at index 0)."""
  d = x.shape[1]
  rb = x.reshape(ref_blocks, -1, d)
  rmask = x_mask.reshape(ref_blocks, -1)
  qb = _to_blocks(x, num_blocks, block, spec)

  def one_block(q):
    def step(best, ref):
      r, m = ref
      d2 = jnp.where(m[None, :], _sqdist(q, r), jnp.inf)
      merged = jnp.concatenate([best, d2], axis=1)
      return -jax.lax.top_k(-merged, k + 1)[0], None

    best0 = jnp.full((q.shape[0], k + 1), jnp.inf, jnp.float32)
    best, _ = jax.lax.scan(step, best0, (rb, rmask))
    return best[:, k]

  return _from_blocks(jax.lax.map(one_block, qb))


@functools.partial(jax.jit, static_argnames=("num_blocks", "block", "ref_blocks", "spec"))
def _knn_inside(ref, radii2, qry, *, num_blocks, block, ref_blocks, spec):
  """Exact k-NN manifold test: ``any_i |q - r_i|^2 < radius_i^2`` (open balls; padded refs: -1)."""
  d = ref.shape[1]
  rb = ref.reshape(ref_blocks, -1, d)
  r2b = radii2.reshape(ref_blocks, -1)
  qb = _to_blocks(qry, num_blocks, block, spec)

  def one_block(q):
    def step(hit, ref):
      r, r2 = ref
      return hit | jnp.any(_sqdist(q, r) < r2[None, :], axis=1), None

    hit, _ = jax.lax.scan(step, jnp.zeros(q.shape[0], bool), (rb, r2b))
    return hit

  return _from_blocks(jax.lax.map(one_block, qb))


def _auto_mesh(mesh):
  """The same devices and axis names with ``Auto`` axis types (``jax.make_mesh`` defaults to
  ``Explicit``): sharding then propagates through the gathers and scatters below (GSPMD)."""
  if mesh is None:
    return None
  auto = jax.sharding.AxisType.Auto
  return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))


def _n_dev(mesh) -> int:
  return 1 if mesh is None else int(mesh.shape["data"])


def _padded_rows_and_layout(n: int, block_size: int, mesh) -> tuple[int, int, int]:
  num_blocks, block = _block_layout(n, block_size, _n_dev(mesh))
  return num_blocks * block, num_blocks, block


def _sqradii(features: jax.Array, k: int, block_size: int, mesh) -> jax.Array:
  """Padded squared k-NN radii: ``[n_pad]`` float32, ``-1`` on padded rows (they cover nothing)."""
  n = features.shape[0]
  n_pad, num_blocks, block = _padded_rows_and_layout(n, block_size, mesh)
  x = put(pad_rows(features, n_pad), mesh, P("data", None))
  mask = put(jnp.arange(n_pad) < n, mesh, P("data"))
  r2 = _kth_sqdist(x, mask, k=k, num_blocks=num_blocks, block=block, ref_blocks=num_blocks,
                   spec=_block_spec(mesh, 3))
  return jnp.where(jnp.arange(n_pad) < n, r2, -1.0)


def knn_radii(features: Any, k: int = 5, block_size: int = 1024, mesh=None) -> jax.Array:
  """Exact Euclidean distance of every sample to its k-th nearest other sample.

  Blocked: memory ``O(block_size**2 + n * d)``, never ``n x n``; compute ``O(n**2 d)``. The sample
  itself counts as its own 0-th neighbour (the convention of Kynkäänniemi et al. 2019 and the
  ``prdc`` package): the radius is the ``(k+1)``-th smallest distance including self.

  Args:
    features: ``[n, d]`` finite floats, ``n > k``.
    k: neighbour rank, ``>= 1``.
    block_size: samples per block.
    mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis; the sample axis is sharded.

  Returns:
    ``[n]`` float32 radii.

  Raises:
    ValueError: see :func:`lsh_precision_recall`.
  """
  x = _check_features("features", features)
  _check_int("nearest_k", k, 1)
  _check_int("block_size", block_size, 1)
  _check_mesh(mesh)
  if x.shape[0] <= k:
    raise ValueError(f"k-NN radii need more than nearest_k={k} samples, got {x.shape[0]}")
  r2 = _sqradii(x, k, block_size, _auto_mesh(mesh))
  return jnp.sqrt(jnp.maximum(r2[: x.shape[0]], 0.0))


# --------------------------------------------------------------------------------------------
# LSH manifold tests.


@functools.partial(jax.jit, static_argnames=("table_size",))
def _slot_counts(ref, ref_mask, params, w, *, table_size):
  """``[L, table_size]`` int32: reference samples per count slot (padded rows add 0)."""
  num_tables = params.multipliers.shape[0]
  slots = (bucket_ids(ref, params, w) % jnp.uint32(table_size)).astype(jnp.int32)
  counts = jnp.zeros((num_tables, table_size), jnp.int32)
  return counts.at[jnp.arange(num_tables)[None, :], slots].add(ref_mask[:, None].astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("table_size",))
def _query_occupancy(counts, qry, params, w, *, table_size):
  """``[n_q, L]`` int32: reference samples in each query's slot, table by table."""
  num_tables = params.multipliers.shape[0]
  slots = (bucket_ids(qry, params, w) % jnp.uint32(table_size)).astype(jnp.int32)
  return counts[jnp.arange(num_tables)[None, :], slots]


_SCALE_SAMPLES = 2048


_STREAM_ROWS = 8192
_PRIO_ROWS = 65536


def _scale_rows(n: int, key: jax.Array) -> np.ndarray:
  """Sorted indices of the at most ``_SCALE_SAMPLES`` rows (of ``n``) the width is estimated on:
  the smallest random uint32 priorities (stable ties), drawn in fixed chunks of
  ``_PRIO_ROWS`` rows: row ``i``'s priority does not depend on ``n``, and a new ``n``
  compiles nothing."""
  prio = np.concatenate([np.asarray(_priorities(key, c)) for c in range(-(-n // _PRIO_ROWS))])
  return np.sort(np.argsort(prio[:n], kind="stable")[:_SCALE_SAMPLES])


@jax.jit
def _priorities(key, chunk):
  """Random uint32 priorities of rows ``chunk * _PRIO_ROWS ..`` (one compilation)."""
  return jax.random.bits(jax.random.fold_in(key, chunk), (_PRIO_ROWS,), jnp.uint32)


@jax.jit
def _robust_projection_scale(rows, n_valid, params):
  """Median over the ``L*K`` hashes of ``1.4826 * MAD`` of the projections of the first
  ``n_valid`` of ``rows [_SCALE_SAMPLES, d]`` (the rest is padding)."""
  proj = rows.astype(jnp.float32) @ params.projections
  proj = jnp.where((jnp.arange(rows.shape[0]) < n_valid)[:, None], proj, jnp.nan)
  mad = jnp.nanmedian(jnp.abs(proj - jnp.nanmedian(proj, axis=0)), axis=0)
  return jnp.median(_MAD_TO_STD * mad)


def _lsh_width(reference, params, bucket_width, key) -> jax.Array:
  """The ``"lsh"`` bucket width: given, or ``LSH_WIDTH_FACTOR *`` the robust projection scale
  of at most ``_SCALE_SAMPLES`` reference rows drawn by ``key`` (:func:`_scale_rows`).
  ``reference``: an array or a :class:`_NpyRows` file."""
  if bucket_width is not None:
    return jnp.float32(bucket_width)
  idx = _scale_rows(reference.shape[0], key)
  rows = reference.take(idx) if isinstance(reference, _NpyRows) else np.asarray(reference)[idx]
  rows = pad_rows(np.asarray(rows, np.float32), _SCALE_SAMPLES)
  return LSH_WIDTH_FACTOR * _robust_projection_scale(rows, len(idx), params)


class _NpyRows(NamedTuple):
  """A 2-D ``.npy`` feature file, checked from its header (values: block by block)."""

  path: str
  shape: tuple[int, int]
  name: str

  def take(self, idx: np.ndarray) -> np.ndarray:
    rows = np.asarray(np.load(self.path, mmap_mode="r")[idx], np.float32)
    if not np.all(np.isfinite(rows)):
      raise ValueError(f"{self.name} must be finite, got NaN/Inf entries in {self.path!r}")
    return rows


def _row_blocks(x, rows: int):
  """``(block [<= rows, d] float32, n_valid)`` over an array or a :class:`_NpyRows` file (read
  with ``readinto``, each block checked finite)."""
  if not isinstance(x, _NpyRows):
    for start in range(0, x.shape[0], rows):
      blk = x[start:start + rows]
      yield blk, blk.shape[0]
    return
  for start, blk in npy_blocks.iter_npy_rows(x.path, rows):
    if not np.all(np.isfinite(blk)):
      raise ValueError(f"{x.name} must be finite, got NaN/Inf entries in {x.path!r} "
                       f"(rows from {start})")
    yield blk.astype(np.float32), blk.shape[0]


def _zero_counts(num_tables: int, table_size: int, mesh) -> jax.Array:
  """``[L, table_size]`` int32 zeros made on the device(s) (replicated with a mesh)."""
  shape = (num_tables, table_size)
  if mesh is None:
    return jnp.zeros(shape, jnp.int32)
  return jax.jit(lambda: jnp.zeros(shape, jnp.int32),
                 out_shardings=NamedSharding(mesh, P()))()


@functools.partial(jax.jit, static_argnames=("table_size",))
def _block_slots(blk, n_valid, params, w, *, table_size):
  """``[rows, L]`` int32 count slot of every row of a block in every table; ``-1`` on padding."""
  slots = (bucket_ids(blk, params, w) % jnp.uint32(table_size)).astype(jnp.int32)
  return jnp.where((jnp.arange(blk.shape[0]) < n_valid)[:, None], slots, -1)


@functools.partial(jax.jit, static_argnames=("table_size",), donate_argnums=(0,))
def _add_slot_counts(counts, slots, *, table_size):
  """``counts [L, table_size]`` plus one block of slots (padding, ``-1``, adds nothing)."""
  del table_size
  tables = jnp.arange(counts.shape[0])[None, :]
  return counts.at[tables, jnp.maximum(slots, 0)].add((slots >= 0).astype(jnp.int32))


@jax.jit
def _inside_count(counts, slots, min_occupancy):
  """How many valid rows of a block of slots have ``>= min_occupancy`` in some table's slot."""
  occ = counts[jnp.arange(counts.shape[0])[None, :], jnp.maximum(slots, 0)]
  inside = jnp.any(occ >= min_occupancy, axis=1) & (slots[:, 0] >= 0)
  return jnp.sum(inside, dtype=jnp.int32)


def _lsh_streamed(real, fake, params, w, min_occupancy, table_size, mesh) -> tuple[float, float]:
  """``method="lsh"`` precision and recall, each set read and hashed once, in row blocks.

  Blocks of ``_STREAM_ROWS`` rows (the last one padded and masked; sharded over ``"data"`` with
  a mesh): one shape for every ``n``, so a new ``n`` compiles nothing. Memory: two
  ``[L, table_size]`` count tables, the int32 slots of both sets (``4 L`` bytes per sample) and
  at most two blocks of features (the loop waits for block ``i - 1`` after dispatching ``i``).
  """
  n_dev = _n_dev(mesh)

  def slots_and_counts(x):
    rows = -(-_STREAM_ROWS // n_dev) * n_dev
    counts = _zero_counts(params.multipliers.shape[0], table_size, mesh)
    slots = []
    for blk, n in _row_blocks(x, rows):
      blk = put(pad_rows(blk, rows), mesh, P("data", None))
      slots.append(_block_slots(blk, jnp.int32(n), params, w, table_size=table_size))
      counts = _add_slot_counts(counts, slots[-1], table_size=table_size)
      if len(slots) > 1:   # back-pressure: at most two blocks of features in flight (the reader
        slots[-2].block_until_ready()   # outran the hashing: 1M x 512 held 3.7 GB resident)
    return slots, counts

  real_slots, real_counts = slots_and_counts(real)
  fake_slots, fake_counts = slots_and_counts(fake)
  m = jnp.int32(min_occupancy)
  precision = sum(int(_inside_count(real_counts, s, m)) for s in fake_slots) / fake.shape[0]
  recall = sum(int(_inside_count(fake_counts, s, m)) for s in real_slots) / real.shape[0]
  return precision, recall


# --------------------------------------------------------------------------------------------
# Validation.


def _check_int(name: str, value: Any, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_features(name: str, x: Any, allow_path: bool = False):
  if npy_blocks.is_path(x):
    shape, dtype = npy_blocks.npy_shape(x)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
      raise ValueError(f"{name} must have shape [n, d] with n, d >= 1, got shape {shape} in {x!r}")
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
      raise ValueError(f"{name} must be real numbers, got dtype {dtype} in {x!r}")
    if allow_path:
      return _NpyRows(os.fspath(x), tuple(shape), name)
    x = np.load(x)
  arr = np.asarray(x) if not isinstance(x, jax.Array) else x
  if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
    raise ValueError(f"{name} must have shape [n, d] with n, d >= 1, got shape {tuple(arr.shape)}")
  if not jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(arr.dtype, jnp.complexfloating):
    raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
  arr = np.asarray(arr, np.float32)  # host checks: no compilation per sample count
  if not np.all(np.isfinite(arr)):
    bad = int(np.sum(~np.isfinite(arr)))
    raise ValueError(f"{name} must be finite, got {bad} NaN/Inf entries")
  return arr


def _check_mesh(mesh) -> None:
  check_mesh(mesh)


def _check_width(bucket_width: Any) -> None:
  if bucket_width is None:
    return
  if (isinstance(bucket_width, bool) or not isinstance(bucket_width, (int, float, np.number))
      or not math.isfinite(bucket_width) or bucket_width <= 0):
    raise ValueError(f"bucket_width must be None or a finite number > 0, got {bucket_width!r}")


# --------------------------------------------------------------------------------------------
# Public API.


def _knn_coverage(reference, queries, *, nearest_k, block_size, mesh) -> float:
  """Exact k-NN: the fraction of ``queries`` inside the manifold of ``reference``."""
  n_ref, n_q = reference.shape[0], queries.shape[0]
  nq_pad, num_blocks, block = _padded_rows_and_layout(n_q, block_size, mesh)
  qry = put(pad_rows(queries, nq_pad), mesh, P("data", None))
  r2 = _sqradii(reference, nearest_k, block_size, mesh)  # [nr_pad], -1 on padding
  ref = put(pad_rows(reference, r2.shape[0]), mesh, P())
  r2 = put(r2, mesh, P())
  ref_blocks = _block_layout(n_ref, block_size, _n_dev(mesh))[0]
  inside = _knn_inside(ref, r2, qry, num_blocks=num_blocks, block=block,
                       ref_blocks=ref_blocks, spec=_block_spec(mesh, 3))[:n_q]
  return float(jnp.mean(inside))


def _check_pair(name_a: str, a: Any, name_b: str, b: Any, suffix: str = "_features",
                allow_path: bool = False) -> tuple[Any, Any]:
  """Both feature arrays checked (:func:`_check_features`), with the same dimension."""
  a = _check_features(name_a + suffix, a, allow_path)
  b = _check_features(name_b + suffix, b, allow_path)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"{name_a} and {name_b} feature dims differ: {a.shape[1]} vs {b.shape[1]}")
  return a, b


def _check_hashing(num_tables: Any, hashes_per_table: Any, table_size: Any, seed: Any,
                   bucket_width: Any) -> None:
  """The hash-family arguments shared by every entry point (one-line ValueErrors)."""
  _check_int("num_tables", num_tables, 1)
  _check_int("hashes_per_table", hashes_per_table, 1)
  _check_int("table_size", table_size, 1)
  _check_int("seed", seed, 0)
  if table_size > 2**31:
    raise ValueError(f"table_size must be <= 2**31, got {table_size!r}")
  _check_width(bucket_width)


def lsh_precision_recall(
    real_features: Any,
    fake_features: Any,
    *,
    method: str = "lsh",
    num_tables: int = 30,
    hashes_per_table: int = 8,
    bucket_width: float | None = None,
    min_occupancy: int = 2,
    nearest_k: int = 5,
    max_candidates: int = 256,
    seed: int = 0,
    table_size: int = 2**20,
    block_size: int = 1024,
    mesh=None,
    probes: int = 12,
    num_buckets: int | None = None,
) -> dict[str, float]:
  """Precision (quality) and recall (diversity) of ``fake`` against ``real``, by LSH.

  Args:
    real_features: ``[n_real, d]`` finite floats (e.g. Inception pool features), or the path
      of a 2-D ``.npy`` file of them. ``method="lsh"`` streams both sets (arrays and files,
      read with ``readinto``) in fixed-shape blocks of 8192 rows: memory is the count tables,
      the slots and one block (1M x 512 float32 files: well below the 4 GB of the two arrays),
      and a new ``n`` reuses the compiled code. Other methods load files whole.
    fake_features: ``[n_fake, d]``, likewise, same ``d``.
    method: ``"lsh"`` (bucket occupancy, O(1) per sample), ``"lsh_knn"`` (k-NN radii and radius
      test against the candidates of ``probes`` data-dependent buckets of about ``sqrt(n)``
      samples: ``O(n**1.5 d probes)`` compute in all, see :mod:`jaxgc.eval.knn_buckets`) or
      ``"knn"`` (exact k-NN test, Kynkäänniemi et al. 2019; blocked, O(n^2 d) compute,
      O(block_size^2) memory).
    num_tables: ``L >= 1`` hash tables (``"lsh"``); more tables find more neighbours (higher
      values).
    hashes_per_table: ``K >= 1`` hashes concatenated per table (``"lsh"``); more hashes make
      smaller buckets.
    bucket_width: ``w > 0`` in feature units, or ``None`` for a width relative to the data scale
      (``"lsh"``): ``LSH_WIDTH_FACTOR (1.0) *`` the robust spread of the real features'
      projections (median over the ``L*K`` hashes of ``1.4826 * MAD`` of ``a . x``; about
      ``sqrt(trace(cov))``, insensitive to a few percent of outliers), one width for precision
      and recall, so that a collapsed generator cannot change the buckets that judge it.
    min_occupancy: ``m >= 1`` (``"lsh"``): a query is inside when its bucket holds at least ``m``
      reference samples in at least one table. Default 2, the smallest value that ignores an
      isolated outlier. The bucket counts grow with the reference size ``n``, so compare
      ``"lsh"`` values only at equal ``n`` (identical 16-d Gaussian sets: 0.92 at ``n = 2000``,
      0.99 at ``n = 5000``, 0.997 at ``n = 10000``).
    nearest_k: ``k >= 1`` of the k-NN radius (``"lsh_knn"``, ``"knn"``); each reference set needs
      more than ``k`` samples.
    max_candidates: ``C >= 1``: checked but unused since ``"lsh_knn"`` measures whole buckets
      (it capped the members tested per E2LSH bucket); kept so that existing calls still run.
    seed: fixes the hash family (and the partition trees of ``"lsh_knn"``); the same seed gives
      the same result.
    table_size: count slots per table (``"lsh"``), ``1 <= table_size <= 2**31``. Memory is
      ``4 * L * table_size`` bytes (80 MiB at the defaults). See the module docstring for the
      effect of slot collisions.
    block_size: query samples per block (``"knn"`` and its exact radii).
    mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis: the sample axis of the queries
      (and of the reference, for the count tables and radii) is sharded with ``NamedSharding``
      (padded, padding masked out); ``"lsh_knn"`` shards its buckets of queries (the bucket
      count must divide by the axis size). Results equal the single-device ones.
    probes: ``>= 1`` (``"lsh_knn"``): buckets probed per bucket of queries (nearest centroids
      first), at most the bucket count; each pass costs ``probes / B`` of its exact counterpart.
      The default 12 was within 0.006 of exact precision/recall on 10k vs 10k samples in 64-d
      (Gaussians, and an 8-d manifold; benchmarks/lsh_scale.py; 0.02 asserted at 4000 in
      tests/test_knn_buckets.py), 0.12-0.13 high on 2048-d Gaussians (10k, 50k); 16 probes
      were 0.04 low on 16-d Gaussians (32 probes: 0.02). Fewer probes are faster and err more
      (errors are one-sided both ways: radii too large push values up, covering samples not
      probed push them down).
    num_buckets: ``B`` (``"lsh_knn"``), a power of two ``>= 2``, at most half the padded set
      size, or ``None``: the power of two nearest ``sqrt(n)`` (per set).

  Returns:
    ``{"precision": float in [0, 1], "recall": float in [0, 1], "bucket_width_real": w used for
    precision, "bucket_width_fake": w used for recall}`` (widths are NaN for ``"knn"`` and
    ``"lsh_knn"``, which have no bucket width).

  Raises:
    ValueError: features not ``[n, d]``, different ``d``, NaN/Inf entries, unknown ``method``,
      ``L``, ``K``, ``m``, ``k``, ``C``, ``block_size``, ``probes`` below 1, ``bucket_width <= 0``,
      a bad ``table_size`` or ``num_buckets``, too few samples for ``nearest_k`` (or, with
      ``"lsh_knn"``, too few in ``probes`` buckets), or a mesh without a ``"data"`` axis (or,
      with ``"lsh_knn"``, whose axis does not divide the bucket count).

  Examples:
    >>> out = lsh_precision_recall(real, fake)                      # LSH only
    >>> out = lsh_precision_recall(real, fake, method="lsh_knn")    # LSH + k-NN
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  real, fake = _check_pair("real", real_features, "fake", fake_features,
                           allow_path=method == "lsh")
  _check_hashing(num_tables, hashes_per_table, table_size, seed, bucket_width)
  _check_int("min_occupancy", min_occupancy, 1)
  _check_int("nearest_k", nearest_k, 1)
  _check_int("max_candidates", max_candidates, 1)
  _check_int("block_size", block_size, 1)
  _check_int("probes", probes, 1)
  _check_mesh(mesh)
  if method != "lsh":
    for name, x in (("real_features", real), ("fake_features", fake)):
      if x.shape[0] <= nearest_k:
        raise ValueError(f"{name} needs more than nearest_k={nearest_k} samples, got {x.shape[0]}")
      if method == "lsh_knn":
        knn_buckets.check_sizes(name, x.shape[0], num_buckets, probes, nearest_k, _n_dev(mesh))

  k_hash, k_perm_p, k_perm_r = jax.random.split(jax.random.key(seed), 3)
  if method == "lsh":   # the hash family: only "lsh" uses it
    params = make_hash_params(k_hash, real.shape[1], num_tables, hashes_per_table)
    if bucket_width is None:
      # One width, from the real (reference) features, for both directions: a collapsed fake
      # set (low-bit generators) must not shrink or blow up the buckets that measure its recall.
      bucket_width = float(_lsh_width(real, params, None, k_perm_p))
      if not bucket_width > 0:
        raise ValueError(f"real_features have no spread along the projections (automatic "
                         f"bucket_width {bucket_width}); pass bucket_width=")
    w = float(bucket_width)
    precision, recall = _lsh_streamed(real, fake, params, jnp.float32(w), min_occupancy,
                                      table_size, _auto_mesh(mesh))
    return {"precision": precision, "recall": recall, "bucket_width_real": w,
            "bucket_width_fake": w}
  if method == "lsh_knn":
    out = knn_buckets.precision_recall(real, fake, nearest_k=nearest_k, probes=probes,
                                       num_buckets=num_buckets, key=k_perm_r,
                                       mesh=_auto_mesh(mesh))
    precision, recall = out["precision"], out["recall"]
  else:
    common = dict(nearest_k=nearest_k, block_size=block_size, mesh=_auto_mesh(mesh))
    precision = _knn_coverage(real, fake, **common)
    recall = _knn_coverage(fake, real, **common)
  nan = float("nan")
  return {"precision": precision, "recall": recall, "bucket_width_real": nan,
          "bucket_width_fake": nan}


def bucket_occupancy(
    reference: Any,
    queries: Any,
    *,
    num_tables: int = 30,
    hashes_per_table: int = 8,
    bucket_width: float | None = None,
    seed: int = 0,
    table_size: int = 2**20,
) -> dict[str, Any]:
  """Diagnostics of the ``method="lsh"`` count tables, to choose ``L``, ``K``, ``w`` and ``m``.

  Uses the same hash family as :func:`lsh_precision_recall` with the same ``seed`` and
  arguments; ``(reference, queries) = (real, fake)`` describes precision, ``(fake, real)`` recall.

  Returns:
    ``{"bucket_width": w used, "max_occupancy": [n_q] int array, for each query the most
    reference samples sharing its slot in any table (a query is inside iff this is >= m),
    "empty_fraction": fraction of queries with max_occupancy 0, "mean_max_occupancy",
    "slot_collision_fraction": fraction of (table, occupied reference bucket) pairs whose count
    slot is shared with another bucket (the upward bias of folding ids into table_size slots)}``.

  Raises:
    ValueError: as :func:`lsh_precision_recall`.
  """
  ref, qry = _check_pair("reference", reference, "query", queries, suffix="")
  _check_hashing(num_tables, hashes_per_table, table_size, seed, bucket_width)
  k_hash, k_scale, _ = jax.random.split(jax.random.key(seed), 3)
  params = make_hash_params(k_hash, ref.shape[1], num_tables, hashes_per_table)
  mask = jnp.ones(ref.shape[0], bool)
  w = _lsh_width(ref, params, bucket_width, k_scale)
  counts = _slot_counts(ref, mask, params, w, table_size=table_size)
  occ = np.asarray(_query_occupancy(counts, qry, params, w, table_size=table_size)).max(axis=1)
  ids = np.asarray(bucket_ids(ref, params, w))
  shared = occupied = 0
  for col in ids.T:  # per table, host-side: O(n log n)
    uniq = np.unique(col)
    _, slot_counts = np.unique(uniq % np.uint32(table_size), return_counts=True)
    shared += int(slot_counts[slot_counts > 1].sum())
    occupied += uniq.size
  return {"bucket_width": float(w), "max_occupancy": occ,
          "empty_fraction": float(np.mean(occ == 0)), "mean_max_occupancy": float(occ.mean()),
          "slot_collision_fraction": shared / occupied}
