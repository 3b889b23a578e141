"""Subprocess for tests/test_lsh.py: LSH precision/recall on 8 fake CPU devices vs one.

XLA_FLAGS must be set before jax is imported, hence a separate process. Prints one JSON line
and exits 1 when a sharded result differs from the single-device one.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxgc.eval import lsh  # noqa: E402


def main() -> int:
  assert jax.device_count() == 8, jax.devices()
  mesh = jax.make_mesh((8,), ("data",))
  rng = np.random.default_rng(0)
  # Sizes not divisible by 8 or by the block size, so padding and masking are exercised.
  real = rng.standard_normal((1003, 8)).astype(np.float32)
  fake = (0.3 + rng.standard_normal((997, 8))).astype(np.float32)
  out, ok = {}, True
  for method in lsh.METHODS:
    kw = dict(method=method, block_size=256, num_tables=8, max_candidates=64)
    single = lsh.lsh_precision_recall(real, fake, **kw)
    sharded = lsh.lsh_precision_recall(real, fake, mesh=mesh, **kw)
    out[method] = {"single": single, "sharded": sharded}
    ok &= all(single[k] == sharded[k] or (np.isnan(single[k]) and np.isnan(sharded[k]))
              for k in single)
  radii = lsh.knn_radii(real, 5, block_size=256)
  radii_sharded = lsh.knn_radii(real, 5, block_size=256, mesh=mesh)
  out["radii_max_abs_diff"] = float(np.max(np.abs(np.asarray(radii) - np.asarray(radii_sharded))))
  ok &= out["radii_max_abs_diff"] <= 1e-5
  print(json.dumps(out))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
