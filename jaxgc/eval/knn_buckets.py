"""k-NN radii and ball tests over data-dependent hash buckets: the engine of ``method="lsh_knn"``.

Improved precision/recall (Kynkäänniemi et al. 2019, Eq. 1-2) asks, for every query sample ``q``,
whether some reference sample ``r`` has ``|q - r| < NND_k(r)``, the distance from ``r`` to its
k-th nearest reference sample. Exactly, that is three ``n x n x d`` distance passes. Here the
candidates of every distance come from hash buckets, and only candidates are measured:

* **Hash table** (one per call): a balanced principal-axis partition tree (a PCA tree; Sproull
  1991, "Refinements to nearest-neighbor searching in k-dimensional trees"; Verma, Kpotufe and
  Dasgupta 2009, "Which spatial partition trees are adaptive to intrinsic dimension?"). Each
  node's samples are split at the median of their projection on the node's principal direction
  (a few power-iteration steps on up to 256 of them; features of more than 128 dims are split
  in a 128-d Gaussian sketch, a Johnson-Lindenstrauss projection), ``depth`` times:
  ``B = 2**depth`` buckets of equal size (to one sample). Unlike E2LSH's data-independent grid, the cells
  follow the data, so a bucket's neighbours are near it even where the data are dense, and the
  equal sizes give dense, fixed-shape blocks.
* **Multi-probe** (as in an inverted-file index): every bucket of queries probes the ``probes``
  reference buckets whose centroids are nearest its own centroid (its own bucket first, when the
  sets are the same). The distances from its ``c`` queries to the ``probes * c`` candidates are
  one dense ``[c, d] x [d, probes * c]`` matmul: no per-query gather of candidate rows.
* **Radii**: the k-th smallest candidate distance, an *upper bound* of the exact k-NN radius
  (a missed neighbour can only make it larger). **Ball test**: a query is inside when it lies
  in the (candidate) ball of a candidate. Errors are one-sided both ways: radii too large move
  precision/recall up, covering samples not probed move them down.

Cost, with ``n`` samples per set, ``d`` dims, ``B ~ sqrt(n)`` buckets of ``c = n / B``:
the tree ``O(n d s + n s log B)`` (the sketch, ``s = min(d, 128)``, then one gather and one
projection of ``[n, s]`` per level, one compiled loop body for all levels); each of the four
passes (two radii, two ball tests) ``2 n * probes * c * d`` FLOPs, i.e.
``O(n**1.5 d * probes)`` against the exact ``O(n**2 d)``: a fraction ``probes / B`` of exact
work per pass; memory ``O(n d)`` plus one block of ``probes * c * d`` floats per bucket in
flight.

Shapes are static per *size class*: a set of ``n`` rows is padded (masked) to
``padded_rows(n)``, four classes per octave (``{4, 5, 6, 7} * 2**e``, under 25% padding), and
``B`` depends on the class only, so a new ``n`` in the same class reuses the compiled code and a
sweep over ``n = 1k .. 1M`` compiles the tree, probe-list and radii programs once per class met
(``4 * log2(1000) ~ 40`` classes) and the ball test once per pair of classes met.

With a mesh, the buckets of queries are sharded over the ``"data"`` axis (every device measures
its own buckets against the replicated reference); results equal the single-device ones.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxgc.parallel import pad_rows
from jaxgc.parallel import put

__all__ = ["Buckets", "padded_rows", "auto_num_buckets", "build_buckets", "probe_lists",
           "bucket_kth_sqdist", "bucket_inside_count", "precision_recall"]

_SPLIT_ROWS = 256  # rows per tree node the principal direction is estimated on
_POWER_STEPS = 3   # power-iteration steps per node
_SKETCH_DIM = 128  # the tree splits features of more dims in a Gaussian sketch of this many


def padded_rows(n: int) -> int:
  """The size class of ``n`` rows: the smallest ``c * 2**e >= n`` with ``c`` in 4..8 and
  ``2**e > n / 8`` (at least 64): ``n <= padded_rows(n) < 1.25 n + 64``."""
  if n <= 64:
    return 64
  e = n.bit_length() - 3
  return -(-n // 2**e) * 2**e


def auto_num_buckets(n_pad: int) -> int:
  """``B``: the power of two nearest ``sqrt(n_pad)`` (at least 2); divides ``n_pad``."""
  return 2 ** max(1, round(math.log2(math.sqrt(n_pad))))


class Buckets(NamedTuple):
  """One set of samples hashed into the ``B`` equal buckets of a partition tree.

  Attributes:
    rows: ``[B, c, d]`` float32, the samples bucket by bucket (padding rows are zeros).
    valid: ``[B, c]`` bool, False on padding.
    centroids: ``[B, d]`` float32, mean of each bucket's valid samples.
  """

  rows: jax.Array
  valid: jax.Array
  centroids: jax.Array


def _level(level, order, y, valid, key, num_buckets):
  """One tree level, fixed shapes for every level (one compilation): the ``2**level`` groups
  of ``m = n_pad >> level`` consecutive positions of ``order`` each reordered so that its first
  and second halves are its two children: median split on the group's principal direction
  (power iteration on up to ``_SPLIT_ROWS`` of its rows), the valid rows divided as evenly as
  possible, padding rows filling up."""
  n_pad = order.shape[0]
  m = n_pad >> level
  num_groups = max(1, num_buckets // 2)  # groups that can split, at the deepest level
  pos = jnp.arange(n_pad, dtype=jnp.int32)
  group = pos // m
  # Principal direction of each group, from rows at a fixed stride through it.
  j = jnp.arange(_SPLIT_ROWS, dtype=jnp.int32)[None, :]
  gi = jnp.arange(num_groups, dtype=jnp.int32)[:, None]
  sub = jnp.minimum(gi * m + j * jnp.maximum(1, m // _SPLIT_ROWS), n_pad - 1)
  rows = order[sub]
  vs = (valid[rows] & (j < m) & (gi < (1 << level))).astype(jnp.float32)  # [G, S]
  ys = y[rows]                                                             # [G, S, s]
  # Batched matvecs as multiply + sum: XLA:CPU runs small batched dot_generals slowly.
  mu = jnp.sum(ys * vs[..., None], axis=1) / jnp.maximum(vs.sum(1), 1.0)[:, None]
  v = jax.random.normal(jax.random.fold_in(key, level), mu.shape, jnp.float32)
  for _ in range(_POWER_STEPS):
    t = (jnp.sum(ys * v[:, None, :], -1) - jnp.sum(mu * v, -1)[:, None]) * vs
    v = jnp.sum(ys * t[..., None], axis=1) - mu * t.sum(1)[:, None]
    v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-30)
  row_valid = valid[order]
  proj = jnp.where(row_valid, jnp.sum(y[order] * v[jnp.minimum(group, num_groups - 1)], -1),
                   jnp.inf)
  srt = order[jnp.lexsort((proj, group))]          # within each group: valid rows by projection
  r = jax.ops.segment_sum(row_valid.astype(jnp.int32), group, num_segments=num_groups)[
      jnp.minimum(group, num_groups - 1)]
  a, h, i = (r + 1) // 2, m // 2, pos - group * m
  ir = i - h
  src = jnp.where(i < h, jnp.where(i < a, i, r + i - a),
                  jnp.where(ir < r - a, a + ir, r + (h - a) + ir - (r - a)))
  return srt[group * m + src]


@functools.partial(jax.jit, static_argnames=("num_buckets",))
def _build(x, n_valid, key, *, num_buckets):
  n_pad, d = x.shape
  valid = jnp.arange(n_pad) < n_valid
  k_sketch, k_split = jax.random.split(key)
  y = x
  if d > _SKETCH_DIM:  # the tree is grown on a Gaussian sketch: O(n s) per level, not O(n d)
    y = x @ (jax.random.normal(k_sketch, (d, _SKETCH_DIM), jnp.float32) / math.sqrt(_SKETCH_DIM))
  order = jax.lax.fori_loop(
      0, int(math.log2(num_buckets)),
      lambda level, o: _level(level, o, y, valid, k_split, num_buckets),
      jnp.arange(n_pad, dtype=jnp.int32))
  rows = x[order].reshape(num_buckets, -1, d)
  vb = valid[order].reshape(num_buckets, -1)
  centroids = (jnp.sum(rows * vb[..., None], axis=1) / jnp.maximum(vb.sum(1), 1)[:, None])
  return Buckets(rows, vb, centroids)


def build_buckets(features: np.ndarray, num_buckets: int, key: jax.Array, mesh=None) -> Buckets:
  """Hashes ``features [n, d]`` (finite float32) into ``num_buckets`` equal buckets.

  Args:
    features: ``[n, d]`` finite float32 (host array).
    num_buckets: ``B``, a power of two dividing ``padded_rows(n)`` (:func:`check_sizes`).
    key: draws the sketch (``d > 128``) and the power-iteration starts.
    mesh: optional mesh; the rows and the tree are replicated on it (the tree is ``O(n d)``
      per level, small next to the passes).

  Returns:
    :class:`Buckets`, each holding ``floor(n / B)`` or ``ceil(n / B)`` valid samples. Compiled
    once per size class, ``B`` and ``d``.
  """
  n = features.shape[0]
  x = put(pad_rows(np.asarray(features, np.float32), padded_rows(n)), mesh, P())
  return _build(x, jnp.int32(n), key, num_buckets=num_buckets)


def check_sizes(name: str, n: int, num_buckets: Any, probes: int, k: int, n_dev: int) -> int:
  """The bucket count ``B`` of a set of ``n`` samples; one-line ValueErrors when ``num_buckets``
  is not a power of two in ``[2, padded_rows(n) / 2]``, when ``probes`` buckets cannot hold the
  ``k + 1`` candidates of a radius, or when ``B`` does not divide by ``n_dev`` devices."""
  n_pad = padded_rows(n)
  if num_buckets is None:
    b = auto_num_buckets(n_pad)
  else:
    b = num_buckets
    if (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 2 or b & (b - 1)
        or n_pad % b or n_pad // b < 2):
      raise ValueError(f"num_buckets must be None or a power of two in [2, {n_pad // 2}] for "
                       f"{name} ({n} samples, padded to {n_pad}), got {num_buckets!r}")
  if min(probes, b) * (n // b) < k + 1:
    raise ValueError(f"probes={probes} buckets of {n // b} {name} samples hold fewer than "
                     f"nearest_k + 1 = {k + 1} candidates; raise probes or lower num_buckets")
  if b % n_dev:
    raise ValueError(f"lsh_knn needs the bucket count of {name} ({b}) to be a multiple of the "
                     f"mesh's 'data' axis ({n_dev} devices)")
  return int(b)


@functools.partial(jax.jit, static_argnames=("probes",))
def probe_lists(query_centroids: jax.Array, ref_centroids: jax.Array, *, probes: int):
  """``[Bq, probes]`` int32: for each query bucket, the ``probes`` reference buckets of nearest
  centroid, nearest first (its own bucket first when the sets are the same). Ranking by the
  distance from the nearest *member* instead was measured worse (16-d Gaussians, 10k: -0.057
  vs -0.041 in precision at 16 probes)."""
  d2 = (jnp.sum(query_centroids**2, -1)[:, None] + jnp.sum(ref_centroids**2, -1)[None, :]
        - 2.0 * query_centroids @ ref_centroids.T)
  return jax.lax.top_k(-d2, probes)[1].astype(jnp.int32)


def _sqdist(q, r):
  d2 = jnp.sum(q * q, -1)[:, None] + jnp.sum(r * r, -1)[None, :] - 2.0 * (q @ r.T)
  return jnp.maximum(d2, 0.0)


_SELECT_GROUP = 16  # columns per group of the two-stage k-th selection


def _kth_smallest(d2: jax.Array, k: int) -> jax.Array:
  """``[R, C] -> [R]``: the ``(k+1)``-th smallest value of each row (ties counted), exactly.

  ``jax.lax.top_k`` on CPU costs about 40x more than a pass over the block, so no ``top_k``:
  group minima over ``_SELECT_GROUP`` columns, the ``k + 1`` groups of smallest minimum by
  repeated ``argmin`` (they hold the ``k + 1`` smallest values), then ``k + 1`` rounds of
  "remove the row minimum, count its copies" over their columns.
  """
  rows, cols = d2.shape
  if cols % _SELECT_GROUP == 0 and cols // _SELECT_GROUP > k + 1:
    g = d2.reshape(rows, cols // _SELECT_GROUP, _SELECT_GROUP)
    gmin, gid = jnp.min(g, axis=2), []
    for _ in range(k + 1):  # the k + 1 groups of smallest minimum, by repeated argmin
      gid.append(jnp.argmin(gmin, axis=1))
      gmin = jnp.where(jnp.arange(gmin.shape[1])[None, :] == gid[-1][:, None], jnp.inf, gmin)
    gid = jnp.stack(gid, axis=1)
    d2 = jnp.take_along_axis(g, gid[:, :, None], axis=1).reshape(rows, -1)
  count = jnp.zeros(rows, jnp.int32)
  kth = jnp.full(rows, jnp.inf, d2.dtype)
  for _ in range(k + 1):
    low = jnp.min(d2, axis=1)
    eq = d2 == low[:, None]
    new = count + jnp.sum(eq, axis=1, dtype=jnp.int32)
    kth = jnp.where((count <= k) & (new > k), low, kth)
    count, d2 = new, jnp.where(eq, jnp.inf, d2)
  return kth


def _candidates(ref: Buckets, probe1):
  """The ``[probes * c, d]`` rows of the probed buckets and ``[probes * c]`` validity."""
  return ref.rows[probe1].reshape(-1, ref.rows.shape[-1]), ref.valid[probe1].reshape(-1)


def _per_device(fn, mesh, replicated, sharded):
  """``fn(replicated, sharded)``; with a mesh, each device runs it on its share of the leading
  (bucket) axis of ``sharded`` (``jax.shard_map``), the reference ``replicated``."""
  if mesh is None:
    return fn(replicated, sharded)
  return jax.shard_map(fn, mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data"),
                       check_vma=False)(replicated, sharded)


@functools.partial(jax.jit, static_argnames=("k", "mesh"))
def _kth_pass(ref: Buckets, probe, *, k, mesh):
  """Squared distance of every reference slot to its k-th nearest candidate (self included, at
  0); ``-1`` on padding, so a padded slot covers nothing."""

  def local(ref, qs):
    def bucket(args):
      q, pr = args
      cand, cvalid = _candidates(ref, pr)
      return _kth_smallest(jnp.where(cvalid[None, :], _sqdist(q, cand), jnp.inf), k)

    return jax.lax.map(bucket, qs)

  out = _per_device(local, mesh, ref, (ref.rows, probe))
  return jnp.where(ref.valid, out, -1.0)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _inside_pass(qry: Buckets, ref: Buckets, ref_sqradii, probe, *, mesh):
  """``[Bq]`` int32: valid queries of each bucket inside some candidate's (open) ball."""

  def local(refs, qs):
    ref, r2 = refs

    def bucket(args):
      q, qv, pr = args
      cand, _ = _candidates(ref, pr)
      hit = jnp.any(_sqdist(q, cand) < r2[pr].reshape(-1)[None, :], axis=1)
      return jnp.sum(hit & qv, dtype=jnp.int32)

    return jax.lax.map(bucket, qs)

  return _per_device(local, mesh, (ref, ref_sqradii), (qry.rows, qry.valid, probe))


def bucket_kth_sqdist(ref: Buckets, probes: int, k: int, mesh=None) -> jax.Array:
  """Squared k-NN radii among candidates.

  Args:
    ref: :class:`Buckets` of the reference set (``B`` buckets of ``c``).
    probes: buckets probed per bucket, ``1 <= probes <= B``.
    k: neighbour rank; the sample itself is its 0-th neighbour, as in ``prdc``.
    mesh: optional mesh; the buckets are divided over its ``"data"`` axis (``B`` must divide).

  Returns:
    ``[B, c]`` float32: the squared distance of every sample to its k-th nearest candidate of
    its bucket's ``probes`` nearest buckets, an upper bound of the exact one; ``-1`` on padding.
  """
  probe = probe_lists(ref.centroids, ref.centroids, probes=probes)
  return _kth_pass(ref, probe, k=k, mesh=mesh)


def bucket_inside_count(qry: Buckets, ref: Buckets, ref_sqradii: jax.Array, probes: int,
                        mesh=None) -> int:
  """How many valid queries lie inside the (open) candidate ball of a sample of their bucket's
  ``probes`` nearest reference buckets; ``ref_sqradii``: :func:`bucket_kth_sqdist` of ``ref``.
  ``mesh``: as :func:`bucket_kth_sqdist`, over the query buckets."""
  probe = probe_lists(qry.centroids, ref.centroids, probes=probes)
  return int(jnp.sum(_inside_pass(qry, ref, ref_sqradii, probe, mesh=mesh)))


def precision_recall(real: np.ndarray, fake: np.ndarray, *, nearest_k: int, probes: int,
                     num_buckets: int | None, key: jax.Array, mesh=None) -> dict[str, float]:
  """Improved precision/recall (Kynkäänniemi et al. 2019) over buckets (module docstring).

  Args:
    real: ``[n_real, d]`` finite float32 (checked by the caller, ``lsh.lsh_precision_recall``).
    fake: ``[n_fake, d]``, likewise.
    nearest_k: ``k`` of the k-NN radius.
    probes: buckets probed per bucket of queries (capped at the bucket count).
    num_buckets: ``B`` of both sets, or ``None``: :func:`auto_num_buckets` of each.
    key: draws the trees (the same sketch and power-iteration starts for both sets).
    mesh: optional mesh (:func:`bucket_kth_sqdist`).

  Returns:
    ``{"precision", "recall"}`` floats in ``[0, 1]``.
  """
  n_dev = 1 if mesh is None else int(mesh.shape["data"])
  sets = []
  for name, x in (("real", real), ("fake", fake)):
    b = check_sizes(name, x.shape[0], num_buckets, probes, nearest_k, n_dev)
    # One key for both trees: identical sets get identical buckets, each query's own copy is
    # then a candidate, and precision = recall = 1 exactly as with exact k-NN.
    buckets = build_buckets(x, b, key, mesh)
    sets.append((buckets, bucket_kth_sqdist(buckets, min(probes, b), nearest_k, mesh)))
  (rb, rr2), (fb, fr2) = sets
  p_real, p_fake = min(probes, rb.rows.shape[0]), min(probes, fb.rows.shape[0])
  return {"precision": bucket_inside_count(fb, rb, rr2, p_real, mesh) / fake.shape[0],
          "recall": bucket_inside_count(rb, fb, fr2, p_fake, mesh) / real.shape[0]}
