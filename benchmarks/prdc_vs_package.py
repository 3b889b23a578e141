"""k-NN precision/recall/density/coverage: jaxgc.eval.prdc vs the `prdc` package, side by side.

Each tool runs in its own subprocess on the same seeded features, so peak resident memory
(``VmHWM``) is attributable. Prints one JSON object with seconds, peak MiB, the ratios and
the largest difference between the two results. Needs `pip install prdc`.

  python benchmarks/prdc_vs_package.py --n 10000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import numpy as np
tool, n, dim, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
real = rng.standard_normal((n, dim)).astype(np.float32)
fake = (rng.standard_normal((n, dim)) * 1.1 + 0.1).astype(np.float32)
if tool == "jaxgc":
  from jaxgc.eval import prdc
  prdc(real[:64], fake[:64], nearest_k=k)  # compile the kernels once for fairness
  t = time.perf_counter(); out = prdc(real, fake, nearest_k=k); dt = time.perf_counter() - t
else:
  from prdc import compute_prdc
  t = time.perf_counter(); out = compute_prdc(real, fake, k); dt = time.perf_counter() - t
hwm_kib = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
# VmHWM: this process image's own peak (ru_maxrss keeps the parent's across fork + exec)
print(json.dumps({"seconds": dt, "peak_mib": hwm_kib / 1024,
                  "result": {key: float(v) for key, v in out.items()}}))
"""


def _run(tool: str, n: int, dim: int, k: int) -> dict:
  out = subprocess.run([sys.executable, "-c", _CHILD, tool, str(n), str(dim), str(k)],
                       check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, default=10000)
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--k", type=int, default=5)
  args = parser.parse_args()
  ours = _run("jaxgc", args.n, args.dim, args.k)
  theirs = _run("prdc", args.n, args.dim, args.k)
  print(json.dumps({
      "n": args.n, "dim": args.dim, "nearest_k": args.k,
      "jaxgc": ours, "prdc_package": theirs,
      "speedup_prdc_over_jaxgc": round(theirs["seconds"] / ours["seconds"], 3),
      "memory_ratio_prdc_over_jaxgc": round(theirs["peak_mib"] / ours["peak_mib"], 3),
      "max_abs_difference": max(abs(ours["result"][k] - theirs["result"][k])
                                for k in ours["result"]),
  }, indent=2))


if __name__ == "__main__":
  main()
