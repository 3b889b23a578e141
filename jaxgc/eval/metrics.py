"""Sample-quality metrics on feature arrays: FID, KID and k-NN precision/recall/density/coverage.

Every metric takes feature arrays ``[n, d]`` (float32 or float64, numpy or JAX: Inception pool
features, or any embedding) and returns Python floats. All arithmetic is float64, inside a local
``jax.enable_x64`` scope (the global JAX setting is left as it is):

- :func:`feature_statistics`, :func:`frechet_distance`, :func:`fid`: Frechet Inception Distance
  (Heusel et al. 2017, eq. 6 of arXiv 1706.08500), with the numerics of pytorch-fid
  ``fid_score.calculate_frechet_distance`` (exact ``scipy.linalg.sqrtm``, ``eps * I`` retry,
  imaginary-part check).
- :func:`kid`: Kernel Inception Distance (Binkowski et al. 2018, arXiv 1801.01401, eq. 3 with the
  cubic polynomial kernel), the torch-fidelity subset protocol.
- :func:`prdc`: improved precision/recall (Kynkaanniemi et al. 2019, arXiv 1904.06991, eq. 1-2)
  and density/coverage (Naeem et al. 2020, arXiv 2002.09797, eq. 4-5), exactly as the ``prdc``
  package's ``compute_prdc`` defines them, computed in blocks: memory ``O(n * d + block**2)``,
  never an ``n x n`` matrix, and optionally sharded over the devices of a mesh.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgc.parallel import DATA_AXIS
from jaxgc.parallel import data_axis_size
from jaxgc.parallel import pad_rows
from jaxgc.parallel import put
from jaxgc.parallel import round_up
from jaxgc.parallel import to_host

__all__ = [
    "feature_statistics",
    "fid",
    "frechet_distance",
    "kid",
    "prdc",
]

_AXIS = DATA_AXIS


# ----------------------------------------------------------------------------------------------
# Validation and layout helpers.


def _as_features(x: Any, name: str, min_samples: int = 1) -> np.ndarray:
  """Host copy of a feature array, checked: 2-D, real, finite, at least ``min_samples`` rows."""
  arr = np.asarray(x)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be a 2-D array [n, d], got shape {arr.shape}")
  if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
    raise ValueError(f"{name} must have a real numeric dtype, got {arr.dtype}")
  if not np.issubdtype(arr.dtype, np.floating) or arr.dtype not in (np.float32, np.float64):
    arr = arr.astype(np.float64)
  if arr.shape[1] < 1:
    raise ValueError(f"{name} must have at least one feature column, got shape {arr.shape}")
  if arr.shape[0] < min_samples:
    raise ValueError(
        f"{name} has {arr.shape[0]} samples, at least {min_samples} are needed")
  if not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(f"{name} contains {bad} NaN or Inf values")
  return arr


def _check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(
        f"feature dimensions differ: {name_a} has d={a.shape[1]}, {name_b} has d={b.shape[1]}")


def _positive_int(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


# ----------------------------------------------------------------------------------------------
# Frechet distance.


@functools.lru_cache(maxsize=None)
def _statistics_fn(mesh: Mesh | None):
  """Jitted two-pass float64 mean and covariance of the valid rows of a padded ``[n_pad, d]``.

  With ``mesh``, each device sums its rows (``shard_map``) and ``psum`` adds the partial sums.
  """

  def stats(x, n_valid, row_offset, reduce):
    mask = (row_offset + jnp.arange(x.shape[0]) < n_valid)[:, None]
    n = n_valid.astype(jnp.float64)
    mu = reduce(jnp.sum(jnp.where(mask, x, 0.0), axis=0)) / n
    xc = jnp.where(mask, x - mu, 0.0)
    sigma = reduce(jnp.matmul(xc.T, xc, precision=jax.lax.Precision.HIGHEST)) / (n - 1.0)
    return mu, sigma

  if mesh is None:
    return jax.jit(lambda x, n: stats(x, n, 0, lambda s: s))

  def local(x, n):
    return stats(x, n, jax.lax.axis_index(_AXIS) * x.shape[0],
                 lambda s: jax.lax.psum(s, _AXIS))

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(_AXIS), P()), out_specs=(P(), P()))
  replicated = NamedSharding(mesh, P())
  return jax.jit(
      sharded,
      in_shardings=(NamedSharding(mesh, P(_AXIS)), replicated),
      out_shardings=(replicated, replicated))


def feature_statistics(features: Any, mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of a feature set, the statistics FID compares.

  Equals ``(np.mean(features, 0), np.cov(features, rowvar=False))`` (pytorch-fid
  ``fid_score.calculate_activation_statistics``): unbiased covariance (divides by ``n - 1``),
  computed in float64 in two passes (mean, then centred ``x^T x``).

  Args:
    features: ``[n, d]`` float32/float64 array (numpy or JAX), ``n >= 2``, finite.
    mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis (``jax.make_mesh((n_devices,),
      ("data",))``). The sample axis is sharded over it (padded to a multiple of the device
      count, padded rows masked); per-device partial sums are added with ``psum``. The result
      equals the single-device one up to float64 summation order.

  Returns:
    ``(mu, sigma)``: ``mu`` ``[d]`` float64, ``sigma`` ``[d, d]`` float64, symmetric positive
    semi-definite.

  Raises:
    ValueError: if ``features`` is not 2-D, has fewer than 2 rows, or holds NaN/Inf; if ``mesh``
      has no ``"data"`` axis.
  """
  x = _as_features(features, "features", min_samples=2)
  n_dev = data_axis_size(mesh)
  with jax.enable_x64(True):
    xp = pad_rows(x.astype(np.float64), round_up(x.shape[0], n_dev))
    mu, sigma = _statistics_fn(mesh)(put(xp, mesh, P(_AXIS)), put(
        np.asarray(x.shape[0], np.int64), mesh, P()))
    return np.asarray(mu, np.float64), np.asarray(sigma, np.float64)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
  """Frechet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

  ``d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})``
  (Heusel et al. 2017, arXiv 1706.08500, eq. 6; Dowson and Landau 1982). Follows pytorch-fid
  ``fid_score.calculate_frechet_distance``: float64, exact ``scipy.linalg.sqrtm`` of the product;
  if that square root is not finite (singular product), retried with ``eps * I`` added to both
  covariances; a complex square root is accepted only when its diagonal's imaginary part is
  within ``1e-3`` of 0, and its real part is used.

  Args:
    mu1: ``[d]`` mean of the first set (e.g. generated features).
    sigma1: ``[d, d]`` covariance of the first set.
    mu2: ``[d]`` mean of the second set (e.g. real features).
    sigma2: ``[d, d]`` covariance of the second set.
    eps: float > 0, diagonal offset of the singular-product retry.

  Returns:
    The squared Frechet distance as a Python float, ``>= 0`` up to rounding (units: squared
    feature units).

  Raises:
    ValueError: if the shapes are not ``[d]``/``[d, d]`` with one ``d``, if any entry is NaN/Inf,
      or if the square root has a significant imaginary component.
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.ndim != 1 or mu2.shape != (d,):
    raise ValueError(f"means must both have shape [d], got {mu1.shape} and {mu2.shape}")
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(
        f"covariances must have shape [{d}, {d}], got {sigma1.shape} and {sigma2.shape}")
  for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{name} contains NaN or Inf values")

  diff = mu1 - mu2
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # scipy's "singular matrix" notice.
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
      warnings.warn(
          f"fid calculation produces singular product; adding {eps} to diagonal of cov "
          "estimates", RuntimeWarning, stacklevel=2)
      offset = np.eye(d) * eps
      covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(
          f"sqrtm(sigma1 @ sigma2) has imaginary component {np.max(np.abs(covmean.imag))}")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(real_features: Any, fake_features: Any, mesh: Mesh | None = None) -> float:
  """Frechet Inception Distance between two feature sets.

  ``frechet_distance(*feature_statistics(fake), *feature_statistics(real))`` (Heusel et al.
  2017, eq. 6). The protocol (which images give ``real_features``) changes FID by several
  points: report it with the number.

  Args:
    real_features: ``[n_real, d]`` float array, ``n_real >= 2``, finite.
    fake_features: ``[n_fake, d]`` float array, ``n_fake >= 2``, finite.
    mesh: optional mesh with a ``"data"`` axis to shard the statistics (see
      :func:`feature_statistics`).

  Returns:
    FID as a Python float, ``>= 0`` up to rounding.

  Raises:
    ValueError: on invalid features (see :func:`feature_statistics`) or different ``d``.
  """
  real = _as_features(real_features, "real_features", min_samples=2)
  fake = _as_features(fake_features, "fake_features", min_samples=2)
  _check_same_dim(real, fake, "real_features", "fake_features")
  mu_r, sigma_r = feature_statistics(real, mesh=mesh)
  mu_f, sigma_f = feature_statistics(fake, mesh=mesh)
  return frechet_distance(mu_f, sigma_f, mu_r, sigma_r)


# ----------------------------------------------------------------------------------------------
# Kernel Inception Distance.


@jax.jit
def _kid_subsets(real, fake, real_idx, fake_idx):
  """Unbiased MMD^2 per subset. ``real_idx``/``fake_idx``: ``[num_subsets, m]`` int."""
  inv_d = 1.0 / real.shape[1]
  m = real_idx.shape[1]
  hi = jax.lax.Precision.HIGHEST

  def one(idx):
    x, y = real[idx[0]], fake[idx[1]]
    k_xx = (jnp.matmul(x, x.T, precision=hi) * inv_d + 1.0) ** 3
    k_yy = (jnp.matmul(y, y.T, precision=hi) * inv_d + 1.0) ** 3
    k_xy = (jnp.matmul(x, y.T, precision=hi) * inv_d + 1.0) ** 3
    # torch-fidelity kid.mmd2(..., mmd_est="unbiased").
    kt_xx = jnp.sum(jnp.sum(k_xx, axis=1) - jnp.diagonal(k_xx))
    kt_yy = jnp.sum(jnp.sum(k_yy, axis=1) - jnp.diagonal(k_yy))
    k_xy_sum = jnp.sum(jnp.sum(k_xy, axis=0))
    return (kt_xx + kt_yy) / (m * (m - 1)) - 2.0 * k_xy_sum / (m * m)

  return jax.lax.map(one, (real_idx, fake_idx))


def kid(real_features: Any,
        fake_features: Any,
        num_subsets: int = 100,
        subset_size: int = 1000,
        seed: int = 0) -> dict[str, float]:
  """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, over subsets.

  ``k(x, y) = (x . y / d + 1)^3`` and, for subsets ``X`` (real), ``Y`` (fake) of size ``m``,
  ``MMD^2_u = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j)
  / m^2`` (Binkowski et al. 2018, arXiv 1801.01401, eq. 3 and Sec. 4; numerics of
  torch-fidelity ``kid.mmd2`` and clean-fid ``kernel_distance``, in float64). For each of the
  ``num_subsets`` subsets, ``rng.choice(n_real, m, replace=False)`` then
  ``rng.choice(n_fake, m, replace=False)`` with ``rng = np.random.default_rng(seed)``.

  Args:
    real_features: ``[n_real, d]`` float array, ``n_real >= 2``, finite.
    fake_features: ``[n_fake, d]`` float array, ``n_fake >= 2``, finite.
    num_subsets: positive int, number of subsets averaged.
    subset_size: positive int, ``m``; clipped to ``min(n_real, n_fake)``.
    seed: int seed of the numpy ``Generator`` drawing the subsets.

  Returns:
    ``{"kid_mean": float, "kid_std": float}``: mean and (population, ``ddof=0``, as
    torch-fidelity) standard deviation of MMD^2 over subsets. Unbiased: the mean can be slightly
    negative when the distributions are equal.

  Raises:
    ValueError: on invalid features, different ``d``, or non-positive counts.
  """
  real = _as_features(real_features, "real_features", min_samples=2)
  fake = _as_features(fake_features, "fake_features", min_samples=2)
  _check_same_dim(real, fake, "real_features", "fake_features")
  num_subsets = _positive_int(num_subsets, "num_subsets")
  m = min(_positive_int(subset_size, "subset_size"), real.shape[0], fake.shape[0])
  if m < 2:
    raise ValueError(f"subset_size must be at least 2, got {subset_size}")
  rng = np.random.default_rng(seed)
  real_idx = np.empty((num_subsets, m), np.int64)
  fake_idx = np.empty((num_subsets, m), np.int64)
  for i in range(num_subsets):
    real_idx[i] = rng.choice(real.shape[0], m, replace=False)
    fake_idx[i] = rng.choice(fake.shape[0], m, replace=False)
  with jax.enable_x64(True):
    mmds = np.asarray(
        _kid_subsets(
            jnp.asarray(real, jnp.float64), jnp.asarray(fake, jnp.float64),
            jnp.asarray(real_idx), jnp.asarray(fake_idx)), np.float64)
  return {"kid_mean": float(np.mean(mmds)), "kid_std": float(np.std(mmds))}


# ----------------------------------------------------------------------------------------------
# Precision, recall, density, coverage.
#
# Two kernels over blocks of reference rows ("refs") for each block of query rows:
#   self pass ("knn"): each query's k+1 smallest distances to its own set (a running
#     top-(k+1), the self-distance 0 included): the k-NN radii;
#   cross pass (queries = real, refs = fake), one sweep over the real x fake distances giving
#     row reductions (per real: nearest fake distance, and whether some fake ball holds it) and
#     column reductions (per fake: how many real balls hold it), so the cross distances are
#     computed once, not twice.
# Distances follow sklearn's ``pairwise_distances(real, fake)`` (what ``prdc.compute_prdc``
# calls): squared distance ``(-2 a.b + ||a||^2) + ||b||^2`` in float64 (float32 inputs are upcast
# block by block, as sklearn's ``_euclidean_distances_upcast`` does, so the features stay float32
# in memory), clamped at 0, 0 on the diagonal of a self-distance matrix, cast to float32 when both
# inputs are float32, then ``sqrt``. Comparing the very same numbers makes the strict ``<`` tests
# (and their ties) match ``compute_prdc``.


def _squared_distances(qb, qq, rb, rr):
  """``[qblock, rblock]`` float64 squared distances (clamped at 0) from blocks and their norms."""
  d2 = -2.0 * jnp.matmul(qb, rb.T, precision=jax.lax.Precision.HIGHEST) + qq[:, None]
  return jnp.maximum(d2 + rr[None, :], 0.0)


def _norms(x):
  """``[n]`` float64 squared norms of the rows of ``x`` (the only float64 copy, ``8 n`` bytes)."""
  return jnp.sum(jnp.square(x.astype(jnp.float64)), axis=1)


def _block(x, norms, i, block):
  """Block ``i`` of ``x [n, d]`` upcast to float64, its norms, row ids and which rows are new.

  Blocks start at ``i * block``; the last one is shifted back to end at row ``n``, so no input
  is ever padded (a padded copy of 50k x 2048 features would cost 400 MB). Rows it shares with
  the previous block are flagged ``fresh = False`` and must not be counted twice.
  """
  n = x.shape[0]
  start = jnp.minimum(i * block, n - block)
  ids = start + jnp.arange(block)
  xb = jax.lax.dynamic_slice_in_dim(x, start, block).astype(jnp.float64)
  return xb, jax.lax.dynamic_slice_in_dim(norms, start, block), ids, ids >= i * block


def _num_blocks(n: int, block: int) -> int:
  return -(-n // block)


def _knn_reduce(q, r, n_refs, q_offset, *, k, qblock, rblock, dist_dtype):
  """Per-device ``r_k`` of queries ``q [nq, d]`` against their own set ``r`` (self pass)."""
  nq = q.shape[0]
  qq_all, rr_all = _norms(q), _norms(r)
  inf = jnp.asarray(jnp.inf, dist_dtype)

  def per_query_block(i):
    qb, qq, q_ids, _ = _block(q, qq_all, i, qblock)

    def step(best, j):
      rb, rr, r_ids, fresh = _block(r, rr_all, j, rblock)
      d2 = _squared_distances(qb, qq, rb, rr)
      d2 = jnp.where((q_offset + q_ids)[:, None] == r_ids[None, :], 0.0, d2)
      keep = (fresh & (r_ids < n_refs))[None, :]
      dist = jnp.where(keep, jnp.sqrt(d2.astype(dist_dtype)), inf)
      neg_best, _ = jax.lax.top_k(-jnp.concatenate([best, dist], axis=1), k + 1)
      return -neg_best, None

    best, _ = jax.lax.scan(step, jnp.full((qblock, k + 1), inf),
                           jnp.arange(_num_blocks(r.shape[0], rblock)))
    return best[:, k], q_ids

  radii, ids = jax.lax.map(per_query_block, jnp.arange(_num_blocks(nq, qblock)))
  # Rows shared by the last two blocks get the same value twice.
  return jnp.zeros((nq,), dist_dtype).at[ids.reshape(-1)].set(radii.reshape(-1))


def _cross_reduce(q, q_radius, r, r_radius, n_queries, n_refs, q_offset, *, qblock, rblock,
                  dist_dtype):
  """One sweep over the distances between queries ``q`` (real) and refs ``r`` (fake).

  Returns ``nearest [nq]`` (nearest ref distance), ``inside [nq]`` (some ref ball holds the
  query) and ``counts [nr]`` int32 (how many valid query balls hold each ref; this device's
  queries only).
  """
  nq, nr = q.shape[0], r.shape[0]
  qq_all, rr_all = _norms(q), _norms(r)
  q_radius, r_radius = q_radius.astype(dist_dtype), r_radius.astype(dist_dtype)
  inf = jnp.asarray(jnp.inf, dist_dtype)

  def per_query_block(counts, i):
    qb, qq, q_ids, q_fresh = _block(q, qq_all, i, qblock)
    qrad = jax.lax.dynamic_slice_in_dim(q_radius, q_ids[0], qblock)
    q_count = q_fresh & (q_offset + q_ids < n_queries)

    def step(row, j):
      nearest, inside = row
      rb, rr, r_ids, r_fresh = _block(r, rr_all, j, rblock)
      rad = jax.lax.dynamic_slice_in_dim(r_radius, r_ids[0], rblock)
      dist = jnp.sqrt(_squared_distances(qb, qq, rb, rr).astype(dist_dtype))
      r_valid = (r_ids < n_refs)[None, :]
      nearest = jnp.minimum(nearest, jnp.min(jnp.where(r_valid, dist, inf), axis=1))
      inside = inside | jnp.any(r_valid & (dist < rad[None, :]), axis=1)
      col = jnp.sum(q_count[:, None] & (dist < qrad[:, None]), axis=0, dtype=jnp.int32)
      return (nearest, inside), (jnp.where(r_fresh, col, 0), r_ids)

    (nearest, inside), (cols, r_ids) = jax.lax.scan(
        step, (jnp.full((qblock,), inf), jnp.zeros((qblock,), bool)),
        jnp.arange(_num_blocks(nr, rblock)))
    return counts.at[r_ids.reshape(-1)].add(cols.reshape(-1)), (nearest, inside, q_ids)

  counts, (nearest, inside, ids) = jax.lax.scan(
      per_query_block, jnp.zeros((nr,), jnp.int32), jnp.arange(_num_blocks(nq, qblock)))
  ids = ids.reshape(-1)
  nearest = jnp.zeros((nq,), dist_dtype).at[ids].set(nearest.reshape(-1))
  inside = jnp.zeros((nq,), bool).at[ids].set(inside.reshape(-1))
  return nearest, inside, counts


@functools.lru_cache(maxsize=None)
def _knn_pass_fn(mesh: Mesh | None, k: int, qblock: int, rblock: int, dist_dtype: str):
  """Jitted self pass; with ``mesh`` the query axis is sharded over ``"data"`` via ``shard_map``."""
  kernel = functools.partial(_knn_reduce, k=k, qblock=qblock, rblock=rblock,
                             dist_dtype=jnp.dtype(dist_dtype))
  if mesh is None:
    return jax.jit(lambda q, r, n: kernel(q, r, n, 0))

  def local(q, r, n):
    return kernel(q, r, n, jax.lax.axis_index(_AXIS) * q.shape[0])

  # check_vma=False: the scan carries start as constants and become per-device values; every
  # output is per-device (sharded on "data"), so there is nothing for the check to protect.
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(_AXIS), P(), P()), out_specs=P(_AXIS),
                          check_vma=False)
  rows, rep = NamedSharding(mesh, P(_AXIS)), NamedSharding(mesh, P())
  return jax.jit(sharded, in_shardings=(rows, rep, rep), out_shardings=rows)


@functools.lru_cache(maxsize=None)
def _cross_pass_fn(mesh: Mesh | None, qblock: int, rblock: int, dist_dtype: str):
  """Jitted cross pass; with ``mesh`` the real samples are sharded, column counts summed."""
  kernel = functools.partial(_cross_reduce, qblock=qblock, rblock=rblock,
                             dist_dtype=jnp.dtype(dist_dtype))
  if mesh is None:
    return jax.jit(lambda q, qrad, r, rad, nq, nr: kernel(q, qrad, r, rad, nq, nr, 0))

  def local(q, qrad, r, rad, nq, nr):
    nearest, inside, counts = kernel(
        q, qrad, r, rad, nq, nr, jax.lax.axis_index(_AXIS) * q.shape[0])
    return nearest, inside, jax.lax.psum(counts, _AXIS)

  sharded = jax.shard_map(
      local, mesh=mesh, in_specs=(P(_AXIS), P(_AXIS), P(), P(), P(), P()),
      out_specs=(P(_AXIS), P(_AXIS), P()), check_vma=False)
  rows, rep = NamedSharding(mesh, P(_AXIS)), NamedSharding(mesh, P())
  return jax.jit(sharded, in_shardings=(rows, rows, rep, rep, rep, rep),
                 out_shardings=(rows, rows, rep))


def _put_features(x: np.ndarray, mesh: Mesh | None) -> tuple[jax.Array, jax.Array | None]:
  """One device copy of ``x`` as queries (sharded rows) and, with a mesh, one replicated as refs.

  Without a mesh nothing is padded or copied twice. With one, rows are padded to a multiple of
  the device count (padded rows are never counted).
  """
  if mesh is None:
    return jnp.asarray(x), None
  xp = pad_rows(x, round_up(x.shape[0], data_axis_size(mesh)))
  return put(xp, mesh, P(_AXIS)), put(xp, mesh, P())


def _blocks_for(q: jax.Array, r: jax.Array, block_size: int, mesh: Mesh | None) -> tuple[int, int]:
  per_device = q.shape[0] // data_axis_size(mesh)
  return min(block_size, per_device), min(block_size, r.shape[0])


def _knn_radii(x, *, n: int, k: int, block_size: int, mesh: Mesh | None) -> jax.Array:
  """``[n_placed]`` distances to the k-th nearest neighbour (self excluded), on the device(s)."""
  rows, rep = x
  refs = rows if rep is None else rep
  qblock, rblock = _blocks_for(rows, refs, block_size, mesh)
  fn = _knn_pass_fn(mesh, k, qblock, rblock, rows.dtype.name)
  return fn(rows, refs, put(np.asarray(n, np.int64), mesh, P()))


def _cross(real, real_radius, fake, fake_radius, *, n_real, n_fake, block_size, mesh,
           dist_dtype):
  """Cross pass on placed arrays: ``nearest_fake``, ``in_fake_ball`` (per real sample) and
  ``counts`` (real balls holding each fake sample), as host arrays without padding."""
  rows = real[0]
  refs = fake[0] if fake[1] is None else fake[1]
  qblock, rblock = _blocks_for(rows, refs, block_size, mesh)
  fn = _cross_pass_fn(mesh, qblock, rblock, np.dtype(dist_dtype).name)
  if mesh is not None:
    fake_radius = jax.device_put(fake_radius, NamedSharding(mesh, P()))
  nearest, inside, counts = fn(
      rows, real_radius, refs, fake_radius, put(np.asarray(n_real, np.int64), mesh, P()),
      put(np.asarray(n_fake, np.int64), mesh, P()))
  return (to_host(nearest)[:n_real], to_host(inside)[:n_real], to_host(counts)[:n_fake])


def prdc(real_features: Any,
         fake_features: Any,
         nearest_k: int = 5,
         block_size: int = 1024,
         mesh: Mesh | None = None) -> dict[str, float]:
  """k-NN precision, recall, density and coverage of fake features against real ones.

  With ``r_k(x)`` the distance from ``x`` to its ``k``-th nearest neighbour in its own set,
  self excluded (the ``(k+1)``-th smallest distance, self-distance 0 included), and ``B(x, r)``
  the open ball:

  - precision (Kynkaanniemi et al. 2019, arXiv 1904.06991, eq. 1-2): fraction of fake samples
    inside ``B(x_i, r_k(x_i))`` for some real ``x_i``;
  - recall: fraction of real samples inside ``B(y_j, r_k(y_j))`` for some fake ``y_j``;
  - density (Naeem et al. 2020, arXiv 2002.09797, eq. 4): ``1/(k M) sum_j sum_i
    1[y_j in B(x_i, r_k(x_i))]`` (M fake samples; unbounded above, ~1 for equal distributions);
  - coverage (eq. 5): fraction of real ``x_i`` whose nearest fake sample lies in
    ``B(x_i, r_k(x_i))``.

  Identical to ``prdc.compute_prdc`` (the authors' package): same Euclidean distances as its
  sklearn call (float64 squared distances, float32 distances when both inputs are float32), same
  strict ``<``. Computed in blocks of ``block_size`` queries x ``block_size`` references by
  jitted kernels with a running top-(k+1) (``jax.lax.top_k``): memory ``O(n d + block_size^2)``,
  never an ``n x n`` matrix; compute ``3 n^2 d`` (two self passes and one cross pass whose
  distances serve both precision/density and recall/coverage). float32 features stay float32 in
  memory and are upcast block by block.

  Args:
    real_features: ``[n_real, d]`` float32/float64 array, ``n_real >= nearest_k + 1``, finite.
    fake_features: ``[n_fake, d]`` float32/float64 array, ``n_fake >= nearest_k + 1``, finite.
    nearest_k: positive int ``k`` of the k-NN radii (5 in both papers).
    block_size: positive int, rows per block on each side of a distance block (memory
      ``~block_size^2 * 8`` bytes per block; 1024 is a good default).
    mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis (``jax.make_mesh((n_devices,),
      ("data",))``): the query samples of every pass are sharded over its devices
      (``NamedSharding(mesh, P("data"))``, padded to a multiple of the device count, padded rows
      dropped), the references replicated. Results equal the single-device ones.

  Returns:
    ``{"precision", "recall", "density", "coverage"}`` as Python floats; precision, recall and
    coverage in ``[0, 1]``, density in ``[0, n_real / k]``.

  Raises:
    ValueError: if a feature array is not 2-D, has NaN/Inf or fewer than ``nearest_k + 1`` rows;
      if the feature dimensions differ; if ``nearest_k`` or ``block_size`` is not a positive
      int; if ``mesh`` has no ``"data"`` axis.
  """
  k = _positive_int(nearest_k, "nearest_k")
  block_size = _positive_int(block_size, "block_size")
  real = _as_features(real_features, "real_features", min_samples=k + 1)
  fake = _as_features(fake_features, "fake_features", min_samples=k + 1)
  _check_same_dim(real, fake, "real_features", "fake_features")
  data_axis_size(mesh)
  cross_dtype = np.float32 if real.dtype == fake.dtype == np.float32 else np.float64
  common = dict(k=k, block_size=block_size, mesh=mesh)

  n_real, n_fake = real.shape[0], fake.shape[0]
  with jax.enable_x64(True):
    real_placed, fake_placed = _put_features(real, mesh), _put_features(fake, mesh)
    real_radius = _knn_radii(real_placed, n=n_real, **common)
    fake_radius = _knn_radii(fake_placed, n=n_fake, **common)
    nearest_fake, in_fake_ball, counts = _cross(
        real_placed, real_radius, fake_placed, fake_radius, n_real=n_real, n_fake=n_fake,
        block_size=block_size, mesh=mesh, dist_dtype=cross_dtype)
    real_radius = to_host(real_radius)[:n_real]

  precision = (counts > 0).mean()
  recall = in_fake_ball.mean()
  density = (1.0 / float(k)) * counts.mean()
  coverage = (nearest_fake < real_radius).mean()
  return {
      "precision": float(precision),
      "recall": float(recall),
      "density": float(density),
      "coverage": float(coverage),
  }
