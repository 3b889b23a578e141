"""Precision/recall at scale: jaxgc exact k-NN, LSH + k-NN and LSH only vs the `prdc` package.

For every n, real and fake are two independent N(0, I) samples of ``--dim`` dimensions (2048, the
Inception pool3 width, by default; the prdc README's sanity setting, where exact precision and
recall come out near 0.5), drawn from fixed seeds inside a fresh
subprocess per tool, so that each one's seconds and peak resident memory (``VmHWM``) are
its own. The `prdc` package builds n x n distance matrices; it runs only where they fit in
``--max-prdc-gib``; the O(n^2) jaxgc tools (exact k-NN, LSH + k-NN) only up to ``--max-quadratic-n``
(exact at 200k would take hours on 2 cores). A tool that exceeds ``--timeout`` seconds is
reported as such. Prints one JSON object, with the machine's load average: run it on an idle
machine, the tools run one after another.

  python benchmarks/precision_recall.py --n 10000 50000 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import numpy as np
tool, n, dim, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
real = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
fake = np.random.default_rng(1).standard_normal((n, dim), dtype=np.float32)
if tool == "prdc_package":
  from prdc import compute_prdc
  t = time.perf_counter(); out = compute_prdc(real, fake, k)
else:
  from jaxgc.eval import lsh_precision_recall, prdc
  if tool == "jaxgc_exact":
    run = lambda a, b: prdc(a, b, nearest_k=k)
  else:
    run = lambda a, b: lsh_precision_recall(a, b, method=tool[len("jaxgc_"):], nearest_k=k)
  run(real[:256], fake[:256])  # compile once (shapes of the block kernels do not depend on n)
  t = time.perf_counter(); out = run(real, fake)
dt = time.perf_counter() - t
hwm_kib = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
# VmHWM: this process image's own peak (ru_maxrss keeps the parent's across fork + exec)
print(json.dumps({"seconds": round(dt, 3),
                  "peak_mib": round(hwm_kib / 1024),
                  "precision": float(out["precision"]), "recall": float(out["recall"])}))
"""

TOOLS = ("jaxgc_exact", "jaxgc_lsh_knn", "jaxgc_lsh", "prdc_package")


def _run(tool: str, n: int, dim: int, k: int, timeout: float) -> dict:
  try:
    proc = subprocess.run([sys.executable, "-c", _CHILD, tool, str(n), str(dim), str(k)],
                          capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"skipped": f"over the {timeout:.0f} s timeout"}
  if proc.returncode != 0:
    return {"skipped": f"failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, nargs="+", default=[10000, 50000, 200000])
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--k", type=int, default=5)
  parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
  parser.add_argument("--timeout", type=float, default=1800.0)
  parser.add_argument("--max-quadratic-n", type=int, default=50000,
                      help="skip jaxgc exact and LSH + k-NN above this n (O(n^2) compute)")
  parser.add_argument("--max-prdc-gib", type=float, default=12.0,
                      help="skip the prdc package when its n x n float32 matrices exceed this")
  args = parser.parse_args()
  results = {"dim": args.dim, "nearest_k": args.k, "cpu_count": os.cpu_count(),
             "machine": platform.processor() or platform.machine(),
             "load_average_before": [round(x, 2) for x in os.getloadavg()], "runs": {}}
  for n in args.n:
    row = {}
    for tool in args.tools:
      need_gib = 3 * n * n * 4 / 2**30  # real-real, fake-fake, real-fake distance matrices
      if tool == "prdc_package" and need_gib > args.max_prdc_gib:
        row[tool] = {"skipped": f"needs ~{need_gib:.0f} GiB for n x n distance matrices"}
        continue
      if tool == "jaxgc_exact" and n > args.max_quadratic_n:  # lsh_knn: O(n^1.5 d), runs
        row[tool] = {"skipped": f"n > --max-quadratic-n {args.max_quadratic_n} (O(n^2) time)"}
        continue
      row[tool] = _run(tool, n, args.dim, args.k, args.timeout)
      print(f"n={n} {tool}: {row[tool]}", file=sys.stderr, flush=True)
    ex, lsh = row.get("jaxgc_exact", {}), row.get("jaxgc_lsh", {})
    if "seconds" in ex and "seconds" in lsh:
      row["lsh_speedup_over_exact"] = round(ex["seconds"] / lsh["seconds"], 1)
    pk = row.get("prdc_package", {})
    if "seconds" in ex and "seconds" in pk:
      row["exact_speedup_over_prdc"] = round(pk["seconds"] / ex["seconds"], 2)
      row["prdc_memory_over_exact"] = round(pk["peak_mib"] / ex["peak_mib"], 2)
    results["runs"][str(n)] = row
  results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
  lsh = {n: r["jaxgc_lsh"]["seconds"] for n, r in results["runs"].items()
         if "seconds" in r.get("jaxgc_lsh", {})}
  if len(lsh) > 1:
    lo, hi = min(lsh, key=int), max(lsh, key=int)
    results["lsh_seconds_growth"] = {"n_ratio": int(hi) / int(lo),
                                     "time_ratio": round(lsh[hi] / lsh[lo], 2)}
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
