"""FID, KID and k-NN precision/recall/density/coverage (jaxgc.eval.metrics).

References: ``prdc.compute_prdc`` (the authors' package, Naeem et al. 2020) for prdc, and float64
numpy/scipy implementations written here, independently of the module, for FID and KID.
"""

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_on_fake_devices
from jaxgc.eval import metrics
from jaxgc.eval import npy_blocks

_KEYS = ("precision", "recall", "density", "coverage")


def _compute_prdc(real, fake, k):
  prdc_pkg = pytest.importorskip(
      "prdc", reason="the reference prdc package is in the `test` extra (pip install prdc)")
  with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the sample counts.
    out = prdc_pkg.compute_prdc(real, fake, nearest_k=k)
  return {key: float(out[key]) for key in _KEYS}


def _gaussians(n_real, n_fake, d, seed=0, scale=1.1, shift=0.1):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n_real, d)), rng.normal(size=(n_fake, d)) * scale + shift


# ---------------------------------------------------------------------------------------------
# prdc


@pytest.mark.parametrize(
    "n_real, n_fake, d, block_size, real_dtype, fake_dtype",
    [
        (600, 500, 64, 1024, np.float64, np.float64),  # one block per side
        (600, 500, 64, 128, np.float32, np.float32),  # 5 x 4 blocks, float32 distances
        (300, 260, 16, 100, np.float32, np.float64),  # mixed dtypes: float64 cross distances
    ])
def test_prdc_equals_compute_prdc(n_real, n_fake, d, block_size, real_dtype, fake_dtype):
  real, fake = _gaussians(n_real, n_fake, d)
  real, fake = real.astype(real_dtype), fake.astype(fake_dtype)
  expected = _compute_prdc(real, fake, 5)
  got = metrics.prdc(real, fake, nearest_k=5, block_size=block_size)
  for key in _KEYS:
    assert got[key] == pytest.approx(expected[key], abs=1e-6), key


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prdc_equals_compute_prdc_with_exact_ties(dtype):
  # Integer grid points: many exactly equal distances, duplicates, radii equal to distances.
  # The strict `<` tests must resolve every tie as compute_prdc does.
  rng = np.random.default_rng(3)
  real = rng.integers(0, 3, size=(400, 4)).astype(dtype)
  fake = rng.integers(0, 4, size=(300, 4)).astype(dtype)
  expected = _compute_prdc(real, fake, 3)
  got = metrics.prdc(real, fake, nearest_k=3, block_size=96)
  for key in _KEYS:
    assert got[key] == pytest.approx(expected[key], abs=1e-6), key


@pytest.mark.parametrize("offset", [0.0, 30.0, 300.0])  # no pair, pairs, whole blocks in the band
def test_prdc_float32_band_redecides_like_compute_prdc(offset):
  # A common offset makes ||a||^2 + ||b||^2 large against the distances: the float32 error band
  # then holds many pairs (the float64 pair re-decision and the whole-block fallback both run);
  # the results must still be compute_prdc's.
  real, fake = _gaussians(500, 420, 32, seed=7)
  real, fake = (real + offset).astype(np.float32), (fake + offset).astype(np.float32)
  expected = _compute_prdc(real, fake, 5)
  got = metrics.prdc(real, fake, nearest_k=5, block_size=128)
  for key in _KEYS:
    assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def test_prdc_npy_paths_equal_arrays(tmp_path):
  real, fake = _gaussians(300, 270, 8, seed=4)
  real = real.astype(np.float32)
  np.save(tmp_path / "real.npy", real)
  np.save(tmp_path / "fake.npy", fake)
  expected = metrics.prdc(real, fake, block_size=64)
  assert metrics.prdc(str(tmp_path / "real.npy"), tmp_path / "fake.npy", block_size=64) == expected
  x = npy_blocks.npy_to_device(tmp_path / "real.npy", 304, np.float32, "real", rows=7)
  np.testing.assert_array_equal(np.asarray(x), np.pad(real, ((0, 4), (0, 0))))
  # Many blocks in flight: each must be its own host array (JAX reads them asynchronously).
  big = np.random.default_rng(5).standard_normal((20000, 512), dtype=np.float32)
  np.save(tmp_path / "big.npy", big)
  x = npy_blocks.npy_to_device(tmp_path / "big.npy", 20000, np.float32, "big", rows=4096)
  np.testing.assert_array_equal(np.asarray(x), big)
  np.save(tmp_path / "bad.npy", np.where(np.eye(300, 8) > 0, np.inf, real))
  with pytest.raises(ValueError, match="bad.npy contains 8 NaN or Inf"):
    metrics.prdc(tmp_path / "bad.npy", fake)
  with pytest.raises(ValueError, match="missing.npy' does not exist"):
    metrics.prdc(str(tmp_path / "missing.npy"), fake)


def test_prdc_gaussian_sanity_and_jax_input():
  # Same distribution on both sides. METHODS.md's figure (prdc README, 10k vs 10k in 1000-d):
  # precision ~0.48, recall ~0.47, density ~1.06, coverage ~0.97. In 64-d with 2k samples the
  # k-NN balls cover more: precision and recall are higher, density stays ~1, coverage ~0.97.
  rng = np.random.default_rng(0)
  real = rng.normal(size=(2000, 64)).astype(np.float32)
  fake = rng.normal(size=(2000, 64)).astype(np.float32)
  got = metrics.prdc(jnp.asarray(real), jnp.asarray(fake), nearest_k=5)
  assert 0.6 < got["precision"] < 0.9
  assert 0.6 < got["recall"] < 0.9
  assert abs(got["precision"] - got["recall"]) < 0.05
  assert 0.85 < got["density"] < 1.15
  assert 0.9 < got["coverage"] <= 1.0


def test_identical_and_disjoint_sets():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(400, 32))
  same = metrics.prdc(x, x, nearest_k=5, block_size=128)
  assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
  assert same["density"] >= 1.0  # each sample lies in its own ball and k others on average.
  scale = np.trace(np.cov(x, rowvar=False))
  assert abs(metrics.fid(x, x)) < 1e-6 * scale
  # Two copies of one set are not independent samples: subsets share points, which raises the
  # cross term, so the unbiased estimate is slightly negative, O(k(x, x) / m); ~0 against the
  # kernel scale (k(x, x) ~ 8 here) and the disjoint case below.
  k = metrics.kid(x, x, num_subsets=20, subset_size=200)
  assert -0.1 < k["kid_mean"] <= 0.0

  far = x + 100.0
  apart = metrics.prdc(x, far, nearest_k=5, block_size=128)
  assert apart == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
  # Same covariance, means 100 * (1, ..., 1) apart: FID = ||shift||^2 = 32 * 100^2.
  assert metrics.fid(x, far) == pytest.approx(32 * 100.0**2, rel=1e-9)
  assert metrics.kid(x, far, num_subsets=5, subset_size=100)["kid_mean"] > 1e3


def test_prdc_does_not_recompile(caplog):
  real, fake = _gaussians(200, 150, 8, seed=5)
  first = metrics.prdc(real, fake, block_size=64)
  with jax.log_compiles(True), caplog.at_level("DEBUG"):
    caplog.clear()
    second = metrics.prdc(real + 0.5, fake, block_size=64)  # new values, same shapes
  compiles = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
  assert not compiles, compiles
  assert first != second


# ---------------------------------------------------------------------------------------------
# memory: blocks only, never an n x n matrix


@pytest.mark.parametrize("kind", ["knn", "cross"])
def test_prdc_kernels_memory_is_blockwise(kind):
  # Compile (do not run) each pass for n = 50,000 float32 samples in 16-d: an n x n float32
  # distance matrix would take 10 GB. XLA's buffer assignment must stay at O(block^2 + n d), and
  # the features must stay float32 (no float64 copy of the inputs).
  n_pad, d, block = 50176, 16, 1024
  with jax.enable_x64(True):
    rows = jax.ShapeDtypeStruct((n_pad, d), jnp.float32)
    radius = jax.ShapeDtypeStruct((n_pad,), jnp.float64)
    count = jax.ShapeDtypeStruct((), jnp.int64)
    if kind == "knn":
      fn = metrics._knn_pass_fn(None, 5, block, "float32")
      compiled = fn.lower(rows, count).compile()
    else:
      fn = metrics._cross_pass_fn(None, block, block, "float32")
      compiled = fn.lower(rows, radius, rows, radius, count, count).compile()
  mem = compiled.memory_analysis()
  # measured: ~13 MB (knn), ~15 MB (cross), i.e. float64 norms and a few block^2 buffers.
  assert mem.temp_size_in_bytes < 64 * 2**20
  assert mem.argument_size_in_bytes < 2 * n_pad * (d * 4 + 8) + 1024
  assert mem.output_size_in_bytes <= 3 * n_pad * 8


def test_prdc_runs_on_20k_by_20k():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(20_000, 16)).astype(np.float32)
  fake = rng.normal(size=(20_000, 16)).astype(np.float32)
  got = metrics.prdc(real, fake, nearest_k=5, block_size=1024)
  assert abs(got["precision"] - got["recall"]) < 0.02
  assert 0.9 < got["density"] < 1.1 and got["coverage"] > 0.9


# ---------------------------------------------------------------------------------------------
# sharding


def test_sharded_equals_single_device():
  run_on_fake_devices("_sharded_metrics_check.py")


# ---------------------------------------------------------------------------------------------
# FID


def _reference_fid(x, y):
  """tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2) + ||mu1 - mu2||^2, via eigendecompositions."""
  mu1, mu2 = x.mean(0), y.mean(0)
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  w, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  tr_covmean = np.sum(np.sqrt(np.clip(inner, 0, None)))
  return float(np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fid_equals_eigendecomposition_reference(dtype):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(500, 32)).astype(dtype)
  mix = np.eye(32) + 0.3 * rng.normal(size=(32, 32))
  y = (rng.normal(size=(400, 32)) @ mix + 0.5).astype(dtype)
  expected = _reference_fid(x.astype(np.float64), y.astype(np.float64))
  assert metrics.fid(x, y) == pytest.approx(expected, rel=1e-6)
  assert metrics.fid(jnp.asarray(y), jnp.asarray(x)) == pytest.approx(expected, rel=1e-6)


def test_feature_statistics_equal_numpy():
  x = np.random.default_rng(6).normal(size=(300, 10)) * 3 + 7
  mu, sigma = metrics.feature_statistics(x.astype(np.float32))
  assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (10,) and sigma.shape == (10, 10)
  x32 = x.astype(np.float32).astype(np.float64)
  np.testing.assert_allclose(mu, x32.mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x32, rowvar=False), rtol=1e-10, atol=1e-12)


def test_frechet_distance_closed_form_for_diagonal_covariances():
  # Commuting (diagonal) covariances: sum (m1 - m2)^2 + (sqrt(s1) - sqrt(s2))^2.
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
  s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(s1) - np.sqrt(s2))**2)  # 10 + 5
  got = metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
  assert got == pytest.approx(expected, rel=1e-12)
  assert isinstance(got, float)


def test_frechet_distance_singular_product_retries_with_offset():
  # Rank-1 covariances in 2-d: sqrtm of the singular product may fail; the result is finite
  # and matches the closed form for these commuting matrices (up to the eps offset).
  s1, s2 = np.diag([1.0, 0.0]), np.diag([0.0, 1.0])
  with _maybe_warns():
    got = metrics.frechet_distance(np.zeros(2), s1, np.zeros(2), s2)
  assert got == pytest.approx(2.0, abs=1e-2)


@contextlib.contextmanager
def _maybe_warns():
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    yield


# ---------------------------------------------------------------------------------------------
# KID


def _reference_kid(x, y, num_subsets, m, seed):
  rng = np.random.default_rng(seed)
  d = x.shape[1]
  values = []
  for _ in range(num_subsets):
    a = x[rng.choice(len(x), m, replace=False)]
    b = y[rng.choice(len(y), m, replace=False)]
    k_aa, k_bb, k_ab = [(p @ q.T / d + 1.0)**3 for p, q in ((a, a), (b, b), (a, b))]
    off_diag = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    values.append(off_diag - 2.0 * k_ab.sum() / m**2)
  return np.mean(values), np.std(values)


def test_kid_equals_direct_numpy_implementation():
  x, y = _gaussians(60, 70, 8, seed=7, scale=1.3, shift=0.2)
  got = metrics.kid(x, y, num_subsets=10, subset_size=50, seed=3)
  mean, std = _reference_kid(x, y, 10, 50, seed=3)
  assert got["kid_mean"] == pytest.approx(mean, rel=1e-10, abs=1e-14)
  assert got["kid_std"] == pytest.approx(std, rel=1e-10, abs=1e-14)
  # subset_size is clipped to min(n_real, n_fake) = 60.
  clipped = metrics.kid(x, y, num_subsets=4, subset_size=10**6, seed=1)
  assert clipped == metrics.kid(x, y, num_subsets=4, subset_size=60, seed=1)


def test_kid_is_unbiased_for_equal_distributions():
  rng = np.random.default_rng(8)
  x = rng.normal(size=(1000, 16))
  y = rng.normal(size=(1000, 16))
  same = metrics.kid(x, y, num_subsets=50, subset_size=200)
  assert abs(same["kid_mean"]) < 3 * same["kid_std"]
  shifted = metrics.kid(x, y + 0.5, num_subsets=50, subset_size=200)
  assert shifted["kid_mean"] > 10 * abs(same["kid_mean"]) + 3 * same["kid_std"]


# ---------------------------------------------------------------------------------------------
# validation


_OK = np.zeros((10, 4))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.prdc(np.zeros(10), _OK), r"real_features must be a 2-D array.*\(10,\)"),
        (lambda: metrics.prdc(_OK, np.zeros((10, 5))), r"real_features has d=4.*d=5"),
        (lambda: metrics.prdc(_OK, np.zeros((5, 4)), nearest_k=5),
         r"fake_features has 5 samples, at least 6"),
        (lambda: metrics.prdc(np.where(np.eye(10, 4) > 0, np.nan, 0.0), _OK),
         r"real_features contains 4 NaN or Inf"),
        (lambda: metrics.prdc(_OK, np.full((10, 4), np.inf)), r"fake_features contains 40 NaN"),
        (lambda: metrics.prdc(_OK, _OK, nearest_k=0), r"nearest_k must be a positive integer"),
        (lambda: metrics.prdc(_OK, _OK, block_size=0), r"block_size must be a positive integer"),
        (lambda: metrics.fid(_OK, np.zeros((10, 3))), r"d=4.*d=3"),
        (lambda: metrics.fid(np.zeros((1, 4)), _OK), r"real_features has 1 samples"),
        (lambda: metrics.feature_statistics(np.zeros((2, 3, 4))), r"features must be a 2-D"),
        (lambda: metrics.kid(_OK, _OK, num_subsets=0), r"num_subsets must be a positive"),
        (lambda: metrics.kid(np.full((10, 4), np.nan), _OK), r"real_features contains 40"),
        (lambda: metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2)),
         r"covariances must have shape \[3, 3\]"),
        (lambda: metrics.frechet_distance(np.zeros(2), np.eye(2), np.full(2, np.nan), np.eye(2)),
         r"mu2 contains NaN"),
    ])
def test_bad_inputs_raise_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()
