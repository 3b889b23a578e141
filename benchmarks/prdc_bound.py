"""Exact k-NN precision/recall/density/coverage against the matmul bound: one JSON.

The bound is the time of ``6 n^2 d`` FLOPs (the three ``n x n x d`` distance matmuls: real-real,
fake-fake, real-fake) at the float32 matmul rate measured in the same run (``2048^3`` products).
jaxgc's ``prdc`` computes ``4 n^2 d`` (the self passes are symmetric) in float32 and re-decides
the few pairs within the float32 error band in float64. Reported: seconds (warm: after an
untimed call at the same ``n``, which compiles), the phases (self passes, cross pass), the share
of the self passes that is not matmul (the k-th-neighbour selection and its float64 check, an
upper bound on the selection share), and, with ``--package``, the ``prdc`` package on the same
features in a subprocess. Real and fake: two seeded N(0, I) samples.

  nice -n 10 python benchmarks/prdc_bound.py --n 10000 --dim 2048 --package
  nice -n 10 python benchmarks/prdc_bound.py --n 50000 --dim 2048 --paths   # peak RSS
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxgc.eval import metrics

_PACKAGE = r"""
import contextlib, io, json, sys, time
import numpy as np
from prdc import compute_prdc
n, dim, k = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
real = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
fake = np.random.default_rng(1).standard_normal((n, dim), dtype=np.float32)
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
  out = compute_prdc(real, fake, k)
print(json.dumps({"seconds": time.perf_counter() - t, **{a: float(b) for a, b in out.items()}}))
"""


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  """Best-of-``repeats`` float32 ``n x n`` matmul rate of ``jax.jit``, GFLOP/s."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best / 1e9


def _timed(fn):
  t = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t


def measure(n: int, dim: int, k: int, block_size: int = 1024) -> dict:
  """jaxgc ``prdc`` at ``n x dim`` float32, warm, with its phases and the bound."""
  real = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
  fake = np.random.default_rng(1).standard_normal((n, dim), dtype=np.float32)
  rate = matmul_gflops()
  t0 = time.perf_counter()
  metrics.prdc(real, fake, nearest_k=k, block_size=block_size)
  first = time.perf_counter() - t0
  out, total = _timed(lambda: metrics.prdc(real, fake, nearest_k=k, block_size=block_size))
  with jax.enable_x64(True):
    placed = metrics._put_features(real, block_size, None)
    fplaced = metrics._put_features(fake, block_size, None)
    r_rad, t_self = _timed(lambda: metrics._knn_radii(placed, k=k, mesh=None))
    f_rad = metrics._knn_radii(fplaced, k=k, mesh=None)
    _, t_cross = _timed(lambda: metrics._cross(placed, r_rad, fplaced, f_rad, mesh=None,
                                               dist_dtype=np.float32))
  flops_bound = 6 * n * n * dim
  bound_s = flops_bound / (rate * 1e9)
  self_matmul_s = n * n * dim / (rate * 1e9)  # the symmetric half of 2 n^2 d
  return {
      "n": n, "dim": dim, "nearest_k": k, "matmul_gflops_float32": round(rate, 1),
      "bound_seconds_6n2d": round(bound_s, 3), "seconds": round(total, 3),
      "first_call_seconds": round(first, 3), "ratio_to_bound": round(total / bound_s, 3),
      "self_pass_seconds": round(t_self, 3), "cross_pass_seconds": round(t_cross, 3),
      "self_pass_non_matmul_share": round(max(0.0, 1 - self_matmul_s / t_self), 3),
      "result": out,
  }


_PATHS = r"""
import json, sys, time
from jaxgc.eval import metrics
t = time.perf_counter()
out = metrics.prdc(sys.argv[1], sys.argv[2], nearest_k=int(sys.argv[3]))
hwm_kib = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
# VmHWM: this process image's own peak (ru_maxrss keeps the parent's across fork + exec)
print(json.dumps({"seconds_first_call": round(time.perf_counter() - t, 3),
                  "peak_rss_mib": round(hwm_kib / 1024),
                  **out}))
"""


def from_paths(n: int, dim: int, k: int, tmp: str | None = None) -> dict:
  """``prdc`` of ``n x dim`` float32 features given as ``.npy`` paths, in a fresh process: its
  seconds (compilation included) and peak resident memory (``VmHWM``)."""
  import tempfile  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory(dir=tmp) as d:
    paths = []
    for name, seed in (("real", 0), ("fake", 1)):
      path = os.path.join(d, f"{name}.npy")
      f = np.lib.format.open_memmap(path, "w+", np.float32, (n, dim))
      rng = np.random.default_rng(seed)
      for s in range(0, n, 8192):
        f[s:s + 8192] = rng.standard_normal((min(8192, n - s), dim), dtype=np.float32)
      f.flush()
      del f
      paths.append(path)
    proc = subprocess.run([sys.executable, "-c", _PATHS, *paths, str(k)], capture_output=True,
                          text=True)
  if proc.returncode != 0:
    return {"failed": (proc.stderr.strip().splitlines() or ["?"])[-1]}
  return {"n": n, "dim": dim, "input": ".npy paths", **json.loads(proc.stdout.splitlines()[-1])}


def package(n: int, dim: int, k: int) -> dict:
  proc = subprocess.run([sys.executable, "-c", _PACKAGE, str(n), str(dim), str(k)],
                        capture_output=True, text=True)
  if proc.returncode != 0:
    return {"skipped": (proc.stderr.strip().splitlines() or ["?"])[-1]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10000)
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--k", type=int, default=5)
  parser.add_argument("--package", action="store_true", help="also time the prdc package")
  parser.add_argument("--paths", action="store_true",
                      help="only: features saved as .npy files, prdc from the paths in a fresh "
                      "process (seconds, peak RSS)")
  parser.add_argument("--tmp", default=None, help="folder for the --paths .npy files")
  args = parser.parse_args()
  load = os.getloadavg()
  if args.paths:
    out = from_paths(args.n, args.dim, args.k, args.tmp)
    out["load_average_before_after"] = [round(load[0], 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(out, indent=2))
    return
  out = measure(args.n, args.dim, args.k)
  if args.package:
    pk = package(args.n, args.dim, args.k)
    out["prdc_package"] = pk
    if "seconds" in pk:
      out["speedup_over_prdc_package"] = round(pk["seconds"] / out["seconds"], 2)
      out["max_abs_difference"] = max(abs(pk[key] - out["result"][key]) for key in out["result"])
  out["load_average_before_after"] = [round(load[0], 2), round(os.getloadavg()[0], 2)]
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
