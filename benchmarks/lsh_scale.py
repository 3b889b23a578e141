"""LSH precision/recall at scale: compilations, first call, a million samples, LSH + k-NN.

Prints one JSON object with the load average. Four figures, each selectable:

- ``compilations``: XLA compilations (``jax.monitoring`` backend-compile events) of
  ``lsh_precision_recall`` over a sweep of sample counts ``n = 1k .. 1M`` (``--sweep-points``
  values, geometric, 64-d: the count does not depend on ``d``), in one process.
- ``first_call``: in fresh processes, the first ``lsh_precision_recall`` at ``20k x 512``: cold
  (its compilations included), at a new ``n`` (compiled at another ``n`` first) and with JAX's
  persistent compilation cache filled by an earlier process (as CLI jobs run), against exact
  ``prdc`` at the same size (first call, and warm).
- ``million``: ``1M x 512`` float32 real and fake features saved as ``.npy`` files, LSH precision
  and recall from the paths in a fresh process: seconds and peak resident memory (``VmHWM``).
- ``lsh_knn``: ``method="lsh_knn"`` against exact ``prdc`` on 2048-d N(0, I) features (real
  seed 0, fake seed 1), each run in a fresh process: seconds (XLA compile time, from
  ``jax.monitoring``, reported and subtracted) at 10k / 50k / 200k for ``lsh_knn`` and 10k / 50k
  for exact (200k exact would take hours: extrapolated with exact's own measured exponent, and
  labelled so); the fitted exponents of time in ``n``; the precision/recall gaps to exact at
  2048-d, and at 10k x 64-d on Gaussians and on an 8-d manifold (the accuracy target).

  nice -n 10 python benchmarks/lsh_scale.py                    # all four
  nice -n 10 python benchmarks/lsh_scale.py --only million --tmp /tmp
  nice -n 10 python benchmarks/lsh_scale.py --only lsh_knn --knn-sizes 10000 50000 200000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

FIGURES = ("compilations", "first_call", "million", "lsh_knn")

_SWEEP = r"""
import json, sys
import jax, numpy as np
from jaxgc.eval import lsh
events = []
jax.monitoring.register_event_duration_secs_listener(
    lambda ev, d, **kw: events.append(ev) if ev == "/jax/core/compile/backend_compile_duration"
    else None)
ns = [int(v) for v in sys.argv[1:]]
rng = np.random.default_rng(0)
per_n = []
for n in ns:
  before = len(events)
  x = rng.standard_normal((n, 64), dtype=np.float32)
  lsh.lsh_precision_recall(x, x[::-1])
  per_n.append(len(events) - before)
print(json.dumps({"n": ns, "compilations_per_n": per_n, "total": len(events)}))
"""

_TIMED = r"""
import json, sys, time
import numpy as np
tool, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
if tool == "lsh_paths":
  from jaxgc.eval import lsh
  t = time.perf_counter(); out = lsh.lsh_precision_recall(a, b); dt = time.perf_counter() - t
  warm = None
else:
  n, d = int(a), int(b)
  real = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
  fake = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
  if tool.startswith("lsh"):
    import jax
    from jaxgc.eval import lsh
    if tool == "lsh_cached":  # JAX's persistent cache, as the CLI jobs use it
      jax.config.update("jax_compilation_cache_dir", sys.argv[4])
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
      jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if tool == "lsh_new_n":  # compiled at another n first, in this process
      lsh.lsh_precision_recall(real[: n // 3], fake[: n // 4])
    run = lambda: lsh.lsh_precision_recall(real, fake)
  else:
    from jaxgc.eval import metrics
    run = lambda: metrics.prdc(real, fake)
  t = time.perf_counter(); out = run(); dt = time.perf_counter() - t
  t = time.perf_counter(); run(); warm = time.perf_counter() - t
hwm_kib = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
# VmHWM: this process image's own peak (ru_maxrss keeps the parent's across fork + exec)
print(json.dumps({"seconds_first_call": round(dt, 3),
                  "seconds_warm": None if warm is None else round(warm, 3),
                  "peak_rss_mib": round(hwm_kib / 1024),
                  "precision": float(out["precision"]), "recall": float(out["recall"])}))
"""


_KNN = r"""
import json, os, sys, time
import jax, numpy as np
compile_s = [0.0]
jax.monitoring.register_event_duration_secs_listener(
    lambda ev, d, **kw: compile_s.__setitem__(0, compile_s[0] + d)
    if ev == "/jax/core/compile/backend_compile_duration" else None)
tool, data, n, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if data == "gaussian":
  real = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
  fake = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
else:  # an 8-d manifold: tanh(z A) B + 0.05 noise, fake latents shifted by 0.1
  a = np.random.default_rng(123).standard_normal((8, d)) / np.sqrt(8)
  b = np.random.default_rng(124).standard_normal((d, d)) / np.sqrt(d)
  def make(seed, shift):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8)) + shift
    return (np.tanh(z @ a) @ b + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
  real, fake = make(0, 0.0), make(1, 0.1)
load = os.getloadavg()[0]
if tool == "lsh_knn":
  from jaxgc.eval import lsh
  run = lambda: lsh.lsh_precision_recall(real, fake, method="lsh_knn")
else:
  from jaxgc.eval import metrics
  run = lambda: metrics.prdc(real, fake, nearest_k=5)
t = time.perf_counter(); out = run(); dt = time.perf_counter() - t
hwm_kib = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])   # (see _TIMED)
print(json.dumps({"seconds_first_call": round(dt, 3), "compile_seconds": round(compile_s[0], 3),
                  "seconds": round(dt - compile_s[0], 3),
                  "peak_rss_mib": round(hwm_kib / 1024),
                  "load_average_before": round(load, 2), "load_average_after":
                  round(os.getloadavg()[0], 2),
                  "precision": float(out["precision"]), "recall": float(out["recall"])}))
"""


def _child(code: str, *args: str) -> dict:
  proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
  if proc.returncode != 0:
    return {"failed": (proc.stderr.strip().splitlines() or ["?"])[-1]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def compilations(points: int) -> dict:
  ns = sorted({int(round(v)) for v in np.geomspace(1000, 1_000_000, points)})
  return _child(_SWEEP, *map(str, ns))


def first_call(n: int = 20000, dim: int = 512) -> dict:
  """First call at ``n x dim`` in fresh processes: LSH cold (compiles), LSH at a new ``n`` (after
  a call at another ``n``), LSH with the persistent cache an earlier process filled, and exact
  ``prdc`` (first call and warm)."""
  with tempfile.TemporaryDirectory() as cache:
    _child(_TIMED, "lsh_cached", str(n // 2), str(dim), cache)  # fills the cache
    cached = _child(_TIMED, "lsh_cached", str(n), str(dim), cache)
  out = {"n": n, "dim": dim, "lsh_cold": _child(_TIMED, "lsh", str(n), str(dim)),
         "lsh_new_n": _child(_TIMED, "lsh_new_n", str(n), str(dim)),
         "lsh_persistent_cache": cached,
         "exact_prdc": _child(_TIMED, "exact", str(n), str(dim))}
  ex = out["exact_prdc"]
  for key in ("lsh_cold", "lsh_new_n", "lsh_persistent_cache"):
    if "seconds_first_call" in out[key] and "seconds_first_call" in ex:
      out[f"{key}_speedup_over_exact_first_call"] = round(
          ex["seconds_first_call"] / out[key]["seconds_first_call"], 1)
  return out


def million(tmp: str, n: int = 1_000_000, dim: int = 512) -> dict:
  with tempfile.TemporaryDirectory(dir=tmp) as d:
    for name, seed in (("real", 0), ("fake", 1)):  # written in blocks: this process stays small
      f = np.lib.format.open_memmap(os.path.join(d, f"{name}.npy"), "w+", np.float32, (n, dim))
      rng = np.random.default_rng(seed)
      for s in range(0, n, 65536):
        f[s:s + 65536] = rng.standard_normal((min(65536, n - s), dim), dtype=np.float32)
      f.flush()
      del f
    res = _child(_TIMED, "lsh_paths", os.path.join(d, "real.npy"), os.path.join(d, "fake.npy"))
  return {"n": n, "dim": dim, "input": ".npy paths", **res}


def _exponent(times: dict) -> float | None:
  """Least-squares slope of log(seconds) over log(n): time ~ n ** slope."""
  pts = [(int(n), t["seconds"]) for n, t in times.items() if "seconds" in t and t["seconds"] > 0]
  if len(pts) < 2:
    return None
  n, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
  return round(float(np.polyfit(n, t, 1)[0]), 3)


def _gap(approx: dict, exact: dict) -> dict:
  if "precision" not in approx or "precision" not in exact:
    return {}
  return {"precision_exact": exact["precision"], "recall_exact": exact["recall"],
          "precision_lsh_knn": approx["precision"], "recall_lsh_knn": approx["recall"],
          "precision_gap": round(approx["precision"] - exact["precision"], 4),
          "recall_gap": round(approx["recall"] - exact["recall"], 4)}


def lsh_knn(sizes=(10_000, 50_000, 200_000), exact_sizes=(10_000, 50_000), dim: int = 2048,
            accuracy_n: int = 10_000) -> dict:
  """``method="lsh_knn"`` against exact ``prdc``: seconds (compile excluded) at ``sizes`` x
  ``dim`` and ``exact_sizes`` x ``dim``, fitted exponents, exact extrapolated to the sizes it was
  not run at, speedups, and the precision/recall gaps (2048-d, and 64-d at ``accuracy_n``)."""
  out = {"dim": dim, "data": "N(0, I) float32, real seed 0 vs fake seed 1, k = 5",
         "lsh_knn": {str(n): _child(_KNN, "lsh_knn", "gaussian", str(n), str(dim)) for n in sizes},
         "exact_prdc": {str(n): _child(_KNN, "exact", "gaussian", str(n), str(dim))
                        for n in exact_sizes}}
  out["lsh_knn_exponent"] = _exponent(out["lsh_knn"])
  out["exact_exponent"] = _exponent(out["exact_prdc"])
  speed = {}
  for n in sizes:
    t = out["lsh_knn"][str(n)].get("seconds")
    ex = out["exact_prdc"].get(str(n), {}).get("seconds")
    row = {}
    if ex is None and out["exact_exponent"] is not None and exact_sizes:
      n0 = max(exact_sizes)
      ex0 = out["exact_prdc"][str(n0)].get("seconds")
      if ex0:
        ex = round(ex0 * (n / n0) ** out["exact_exponent"], 1)
        row["exact_seconds_extrapolated"] = ex
    elif ex is not None:
      row["exact_seconds"] = ex
      row["gap_2048d"] = _gap(out["lsh_knn"][str(n)], out["exact_prdc"][str(n)])
    if t and ex:
      row.update(lsh_knn_seconds=t, speedup=round(ex / t, 1))
    speed[str(n)] = row
  out["vs_exact"] = speed
  acc = {}
  for data in ("gaussian", "manifold"):
    a = _child(_KNN, "lsh_knn", data, str(accuracy_n), "64")
    e = _child(_KNN, "exact", data, str(accuracy_n), "64")
    acc[data] = {**_gap(a, e), "lsh_knn_seconds": a.get("seconds"), "exact_seconds": e.get("seconds")}
  out[f"accuracy_{accuracy_n}_x_64"] = acc
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES))
  parser.add_argument("--sweep-points", type=int, default=25)
  parser.add_argument("--tmp", default=None, help="folder for the 2 x 2 GB .npy files")
  parser.add_argument("--knn-sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
  parser.add_argument("--knn-exact-sizes", type=int, nargs="+", default=[10_000, 50_000])
  args = parser.parse_args()
  out = {"cpu_count": os.cpu_count(), "load_average_before": round(os.getloadavg()[0], 2)}
  if "compilations" in args.only:
    out["compilations"] = compilations(args.sweep_points)
  if "first_call" in args.only:
    out["first_call"] = first_call()
  if "million" in args.only:
    out["million"] = million(args.tmp)
  if "lsh_knn" in args.only:
    out["lsh_knn"] = lsh_knn(args.knn_sizes, args.knn_exact_sizes)
  out["load_average_after"] = round(os.getloadavg()[0], 2)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
