"""Subprocess body of tests/test_metrics.py::test_sharded_equals_single_device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` in the environment: the flag must
be set before JAX is imported, which is why this runs in its own interpreter. Exits non-zero
(an AssertionError) when the 8-device results differ from the single-device ones.
"""

import os
import sys

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), (
    "set XLA_FLAGS=--xla_force_host_platform_device_count=8 before running")

import jax  # noqa: E402  (after the environment check, on purpose)
import numpy as np  # noqa: E402

from jaxgc.eval import metrics  # noqa: E402


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  mesh = jax.make_mesh((8,), ("data",))
  rng = np.random.default_rng(0)
  # Sizes that are not multiples of 8 exercise the padding and masking of the query axis.
  real = rng.normal(size=(301, 12))
  fake = rng.normal(size=(257, 12)) * 1.2 + 0.1
  for dtype in (np.float64, np.float32):
    for block_size in (1024, 16):
      r, f = real.astype(dtype), fake.astype(dtype)
      single = metrics.prdc(r, f, nearest_k=5, block_size=block_size)
      sharded = metrics.prdc(r, f, nearest_k=5, block_size=block_size, mesh=mesh)
      assert single == sharded, (dtype, block_size, single, sharded)

  # Integer grid points: ties and duplicates, so k-NN rows fail the float32 certificate and are
  # redone in float64 (the fallback), on the mesh too.
  grid = np.random.default_rng(3)
  r, f = (grid.integers(0, 3, size=(150, 4)).astype(np.float32),
          grid.integers(0, 4, size=(130, 4)).astype(np.float32))
  single = metrics.prdc(r, f, nearest_k=3, block_size=16)
  assert single == metrics.prdc(r, f, nearest_k=3, block_size=16, mesh=mesh), single

  mu, sigma = metrics.feature_statistics(real)
  mu_s, sigma_s = metrics.feature_statistics(real, mesh=mesh)
  np.testing.assert_allclose(mu_s, mu, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(sigma_s, sigma, rtol=1e-12, atol=1e-14)
  fid_single = metrics.fid(real, fake)
  fid_sharded = metrics.fid(real, fake, mesh=mesh)
  assert abs(fid_single - fid_sharded) <= 1e-9 * max(1.0, abs(fid_single)), (
      fid_single, fid_sharded)
  print("OK", single)


if __name__ == "__main__":
  main()
  sys.exit(0)
