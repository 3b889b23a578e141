"""LSH precision/recall (Mordido, Yang, Meinel 2021, arXiv 2103.11912): behaviour and scale."""

import importlib.util
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxgc.eval import lsh

_HAS_PRDC = importlib.util.find_spec("jaxgc.eval.metrics") is not None
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gauss(rng, n, d=16, mean=0.0, std=1.0):
  return (mean + std * rng.standard_normal((n, d))).astype(np.float32)


def _exact_pr(real, fake):
  """Exact k-NN precision/recall (k=5): jaxgc.eval.metrics.prdc when present, else ours."""
  if _HAS_PRDC:
    from jaxgc.eval import metrics  # pylint: disable=g-import-not-at-top
    if hasattr(metrics, "prdc"):
      out = metrics.prdc(real, fake, nearest_k=5)
      return out["precision"], out["recall"]
  out = lsh.lsh_precision_recall(real, fake, method="knn")
  return out["precision"], out["recall"]


def test_bucket_ids_match_numpy_formula():
  rng = np.random.default_rng(0)
  x = _gauss(rng, 7, d=5)
  params = lsh.make_hash_params(jax.random.key(3), 5, num_tables=3, hashes_per_table=4)
  w = 0.7
  a, b, r = (np.asarray(p) for p in params)
  h = np.floor((x.astype(np.float64) @ a + b * w) / w).astype(np.int64).reshape(7, 3, 4)
  combined = (h.astype(np.uint64) * r.astype(np.uint64)).sum(-1) % 2**32

  def fmix(v):
    v = v ^ (v >> 16)
    v = (v * 0x85EBCA6B) % 2**32
    v = v ^ (v >> 13)
    v = (v * 0xC2B2AE35) % 2**32
    return v ^ (v >> 16)

  np.testing.assert_array_equal(np.asarray(lsh.bucket_ids(x, params, w)), fmix(combined))


def test_knn_radii_match_brute_force():
  rng = np.random.default_rng(1)
  x = _gauss(rng, 300, d=6)
  d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1))
  expected = np.sort(d, axis=1)[:, 5]  # self at index 0
  got = np.asarray(lsh.knn_radii(x, 5, block_size=64))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_min_occupancy_ignores_isolated_samples():
  rng = np.random.default_rng(2)
  cluster = _gauss(rng, 500, d=4, std=0.1)
  lone = np.full((1, 4), 30.0, np.float32)
  ref = np.concatenate([cluster, lone])
  for m, expected in ((1, 1.0), (2, 0.0)):
    out = lsh.lsh_precision_recall(ref, lone, min_occupancy=m, bucket_width=1.0)
    assert out["precision"] == expected, (m, out)


def test_identical_sets_score_near_one():
  x = _gauss(np.random.default_rng(3), 5000)
  # LSH only: a sample is always in its own bucket; with m = 2 it needs one more, which at
  # n = 5000 in 16-d happens for >= 95% of samples (about 0.92 at n = 2000: the count grows with n).
  out = lsh.lsh_precision_recall(x, x)
  assert out["precision"] >= 0.95 and out["recall"] >= 0.95, out
  out = lsh.lsh_precision_recall(x[:2000], x[:2000], method="lsh_knn")
  assert out["precision"] >= 0.95 and out["recall"] >= 0.95, out


@pytest.mark.parametrize("method", lsh.METHODS)
def test_disjoint_sets_score_near_zero(method):
  rng = np.random.default_rng(4)
  real, fake = _gauss(rng, 1000), _gauss(rng, 1000, mean=50.0)
  out = lsh.lsh_precision_recall(real, fake, method=method)
  assert out["precision"] <= 0.01 and out["recall"] <= 0.01, out


def test_lsh_precision_is_robust_to_reference_outliers():
  # The paper's point: 2% far outliers (norm ~10x) in the reference have huge k-NN radii and
  # cover much of a degraded fake set, so exact k-NN precision jumps; bucket occupancy does not.
  rng = np.random.default_rng(0)
  base = _gauss(rng, 2000)
  outliers = _gauss(rng, 40, std=10.0)
  with_outliers = np.concatenate([base, outliers])
  fake = _gauss(rng, 2000, mean=1.0)  # shifted by 4 (norm) in 16-d: a degraded generator
  knn0, _ = _exact_pr(base, fake)
  knn1, _ = _exact_pr(with_outliers, fake)
  lsh0 = lsh.lsh_precision_recall(base, fake)["precision"]
  lsh1 = lsh.lsh_precision_recall(with_outliers, fake)["precision"]
  d_knn, d_lsh = knn1 - knn0, lsh1 - lsh0
  print(f"outliers: knn {knn0:.4f}->{knn1:.4f} (d {d_knn:+.4f}); "
        f"lsh {lsh0:.4f}->{lsh1:.4f} (d {d_lsh:+.4f})")
  assert d_knn > 0.2
  assert abs(d_lsh) <= abs(d_knn) / 3


@pytest.mark.parametrize("method", ["lsh", "lsh_knn"])
def test_fixed_seed_is_deterministic_and_seed_changes_hashes(method):
  rng = np.random.default_rng(6)
  real, fake = _gauss(rng, 800), _gauss(rng, 800, mean=0.3)
  def pr(seed):  # lsh_knn's bucket widths are NaN (no width): compare the two values
    out = lsh.lsh_precision_recall(real, fake, method=method, seed=seed)
    return out["precision"], out["recall"]

  a = pr(1)
  assert pr(1) == a
  ids = [np.asarray(lsh.bucket_ids(real, lsh.make_hash_params(jax.random.key(s), 16, 4, 3), 2.0))
         for s in (0, 1)]
  assert np.mean(ids[0] == ids[1]) < 0.01
  assert pr(2) != a


def test_lsh_is_linear_scale_and_does_not_recompile():
  rng = np.random.default_rng(7)
  real, fake = _gauss(rng, 50_000), _gauss(rng, 50_000, mean=0.2)
  start = time.perf_counter()
  out = lsh.lsh_precision_recall(real, fake)
  first = time.perf_counter() - start
  sizes = (lsh._slot_counts._cache_size(), lsh._query_occupancy._cache_size())
  start = time.perf_counter()
  again = lsh.lsh_precision_recall(real, fake)
  second = time.perf_counter() - start
  print(f"50k lsh: first call {first:.2f}s (compiles), second {second:.2f}s")
  assert out == again
  assert (lsh._slot_counts._cache_size(), lsh._query_occupancy._cache_size()) == sizes
  assert second < 10.0  # an n x n float32 distance matrix alone would be 10 GB


def test_lsh_block_size_and_npy_paths_change_nothing(tmp_path, monkeypatch):
  rng = np.random.default_rng(11)
  real, fake = _gauss(rng, 700), _gauss(rng, 650, mean=0.3)
  expected = lsh.lsh_precision_recall(real, fake, table_size=2**16)
  np.save(tmp_path / "real.npy", real)
  np.save(tmp_path / "fake.npy", fake.astype(np.float64))
  assert lsh.lsh_precision_recall(tmp_path / "real.npy", str(tmp_path / "fake.npy"),
                                  table_size=2**16) == expected
  monkeypatch.setattr(lsh, "_STREAM_ROWS", 96)  # 8 blocks, the last one padded, not one
  assert lsh.lsh_precision_recall(real, fake, table_size=2**16) == expected
  assert lsh.lsh_precision_recall(tmp_path / "real.npy", tmp_path / "fake.npy",
                                  table_size=2**16) == expected


def test_lsh_new_sample_count_does_not_recompile(caplog):
  rng = np.random.default_rng(12)
  lsh.lsh_precision_recall(_gauss(rng, 1100), _gauss(rng, 1050))
  with jax.log_compiles(True), caplog.at_level("DEBUG"):
    caplog.clear()
    out = lsh.lsh_precision_recall(_gauss(rng, 9000), _gauss(rng, 300))  # new n, more blocks
  compiles = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
  assert not compiles, compiles
  assert 0.0 < out["precision"] <= 1.0


def test_bucket_occupancy_diagnostics():
  rng = np.random.default_rng(8)
  real, fake = _gauss(rng, 2000), _gauss(rng, 500)
  diag = lsh.bucket_occupancy(real, fake)
  out = lsh.lsh_precision_recall(real, fake)
  assert diag["max_occupancy"].shape == (500,)
  assert np.mean(diag["max_occupancy"] >= 2) == pytest.approx(out["precision"])
  assert diag["bucket_width"] == pytest.approx(out["bucket_width_real"])
  assert 0.0 <= diag["slot_collision_fraction"] < 0.05
  tiny = lsh.bucket_occupancy(real, fake, table_size=8)
  assert tiny["slot_collision_fraction"] > 0.5


def test_sharded_equals_single_device():
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, os.path.join(_REPO, "tests", "_sharded_lsh_check.py")],
                        capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr


_X = np.zeros((20, 4), np.float32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(real_features=np.zeros((20,), np.float32)), r"shape \[n, d\]"),
    (dict(fake_features=np.zeros((20, 3), np.float32)), "dims differ: 4 vs 3"),
    (dict(real_features=np.full((20, 4), np.nan, np.float32)), "finite, got 80 NaN"),
    (dict(fake_features=np.full((20, 4), np.inf, np.float32)), "finite"),
    (dict(min_occupancy=0), "min_occupancy must be an integer >= 1, got 0"),
    (dict(num_tables=0), "num_tables must be an integer >= 1, got 0"),
    (dict(hashes_per_table=0), "hashes_per_table must be an integer >= 1, got 0"),
    (dict(method="cosine"), "method must be one of .* got 'cosine'"),
    (dict(bucket_width=-1.0), "bucket_width must be None or a finite number > 0, got -1.0"),
    (dict(table_size=0), "table_size must be an integer >= 1, got 0"),
    (dict(method="knn", nearest_k=20), "more than nearest_k=20 samples, got 20"),
    (dict(mesh="cpu"), "mesh must have a 'data' axis"),
    (dict(method="lsh_knn", probes=0), "probes must be an integer >= 1, got 0"),
    (dict(method="lsh_knn", num_buckets=3), r"num_buckets must be None or a power of two in "
     r"\[2, 32\] for real_features \(20 samples, padded to 64\), got 3"),
    (dict(method="lsh_knn", num_buckets=64), r"power of two in \[2, 32\].* got 64"),
    (dict(method="lsh_knn", num_buckets=16, probes=2),
     "probes=2 buckets of 1 real_features samples hold fewer than nearest_k"),
])
def test_bad_inputs_raise_one_line_value_errors(kwargs, match):
  args = dict(real_features=_X, fake_features=_X)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match) as err:
    lsh.lsh_precision_recall(**args)
  assert "\n" not in str(err.value)
