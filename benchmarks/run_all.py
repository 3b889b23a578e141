"""Every speed figure of jaxgc on this machine, measured side by side in one run: one JSON.

jaxgc (``jax.jit``) and the tool a user would run instead (the PyTorch original, eager, no
grad, ``torch.set_num_threads(--threads)``) are timed in the same process with their calls
interleaved, so load that comes and goes falls on both; each figure is the ratio of medians
(``speedup`` > 1: jaxgc is faster). Also printed: the machine's float32 matmul rate (what
the MACs could cost at best), the load average before and after (run with nothing else on the
machine: load distorts PyTorch more than XLA), and the parity of every pair (max abs).

  JAXGC_ASSETS=../shared/assets python benchmarks/run_all.py            # JSON
  JAXGC_ASSETS=../shared/assets python benchmarks/run_all.py --markdown # the README table
  python benchmarks/run_all.py --only prdc lsh_first_call --markdown     # evaluation figures only

Models: the horse->zebra GAN Compression generator (2.5 GMACs) at batch 1 and 8, the
full-size vintage CycleGAN ResNet (56.8 GMACs) at batch 1, the DCGAN DigiFace generator at
batch 1 and 64, the FID Inception (images/s at batch 32, against its TorchScript), and the
horse->zebra generator slimmed to 4x fewer MACs against the original (both jaxgc).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxgc import convert  # noqa: E402
from jaxgc import stats  # noqa: E402
from jaxgc.compress.slim import slim_to_macs  # noqa: E402
from jaxgc.convert import torch_refs  # noqa: E402
from jaxgc.convert import torch_refs_zoo  # noqa: E402
from jaxgc.eval import fid_inception  # noqa: E402

H2Z = "cyclegan-h2z-gancompression/latest_net_G.pth"
VINTAGE = "cyclegan-vintage-resnet9/latest_net_G_A2B.pth"
DCGAN = "dcgan-digiface64/weights.tar"
INCEPTION = "fid-inception-v3/inception-2015-12-05.torchscript.pt"


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
  """Median seconds per call of each ``fns[name]()``, calls interleaved in rotating order. Each
  timed call follows an untimed call of the same function, so both frameworks are timed warm
  (their thread pools awake, the other's spin-waiting threads gone quiet)."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  names = list(fns)
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      fns[name]()   # untimed: wakes this framework's threads, outlasts the other's spinning
      t = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - t)
  return {n: statistics.median(ts) for n, ts in times.items()}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  """float32 matmul rate of ``jax.jit`` on this machine, GFLOP/s (``2 n**3`` per product)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  t = interleaved({"mm": lambda: f(a).block_until_ready()}, repeats)["mm"]
  return 2 * n**3 / t / 1e9


def _pair(name, module, variables, ref, x: np.ndarray, repeats: int, macs: int) -> dict:
  """jaxgc vs PyTorch on ``x`` (NHWC images or ``[n, z]`` latents); ``macs`` per sample in
  ``count_macs(..., convention="valid")`` (the work done: a transposed convolution's taps on
  inserted zeros are not counted), so ``jaxgc_gflops`` compares with the matmul rate."""
  f = jax.jit(module.apply)
  xt = torch.from_numpy(np.ascontiguousarray(
      x.transpose(0, 3, 1, 2) if x.ndim == 4 else x.reshape(len(x), -1, 1, 1)))
  with torch.no_grad():
    t = interleaved({"jaxgc": lambda: f(variables, x).block_until_ready(),
                     "torch": lambda: ref(xt)}, repeats)
    y_t = ref(xt).numpy()
  y_j = np.asarray(f(variables, x))
  y_t = y_t.transpose(0, 2, 3, 1) if y_t.ndim == 4 else y_t
  return {"model": name, "batch": int(len(x)), "jaxgc_ms": round(1e3 * t["jaxgc"], 2),
          "torch_ms": round(1e3 * t["torch"], 2),
          "speedup": round(t["torch"] / t["jaxgc"], 3),
          "jaxgc_gflops": round(2 * macs * len(x) / t["jaxgc"] / 1e9, 1),
          "max_abs_vs_torch": float(np.max(np.abs(y_j - y_t)))}


MODEL_FIGURES = ["h2z", "vintage", "dcgan", "inception", "slimmed"]
EVAL_FIGURES = ["prdc", "lsh_compilations", "lsh_first_call", "lsh_million", "lsh_knn"]


def evaluation_figures(names: list[str], tmp: str | None) -> dict:
  """The evaluation figures (benchmarks/prdc_bound.py, benchmarks/lsh_scale.py): exact prdc at
  10k x 2048 against its matmul bound and the prdc package, LSH compilations over n = 1k..1M,
  LSH's first call at 20k x 512 against exact, LSH on 1M x 512 .npy files, LSH + k-NN against
  exact at 10k / 50k / 200k x 2048 (exact at 200k extrapolated)."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import lsh_scale  # pylint: disable=import-outside-toplevel
  import prdc_bound  # pylint: disable=import-outside-toplevel
  out = {}
  if "prdc" in names:
    fig = prdc_bound.measure(10000, 2048, 5)
    fig["prdc_package"] = prdc_bound.package(10000, 2048, 5)
    if "seconds" in fig["prdc_package"]:
      fig["speedup_over_prdc_package"] = round(fig["prdc_package"]["seconds"] / fig["seconds"], 2)
    out["prdc"] = fig
  if "lsh_compilations" in names:
    out["lsh_compilations"] = lsh_scale.compilations(25)
  if "lsh_first_call" in names:
    out["lsh_first_call"] = lsh_scale.first_call()
  if "lsh_million" in names:
    out["lsh_million"] = lsh_scale.million(tmp)
  if "lsh_knn" in names:
    out["lsh_knn"] = lsh_scale.lsh_knn()
  return out


def evaluation_markdown(ev: dict) -> str:
  """README rows of the evaluation figures."""
  rows = ["", "| evaluation | size | jaxgc | reference | ratio |", "|---|---|---:|---:|---:|"]
  if "prdc" in ev:
    p = ev["prdc"]
    rows.append(f"| exact prdc vs 6 n^2 d FLOPs at the matmul rate | {p['n']} x {p['dim']} | "
                f"{p['seconds']} s | {p['bound_seconds_6n2d']} s | {p['ratio_to_bound']}x |")
    if "seconds" in p["prdc_package"]:
      rows.append(f"| exact prdc vs the prdc package | {p['n']} x {p['dim']} | {p['seconds']} s "
                  f"| {p['prdc_package']['seconds']:.2f} s | "
                  f"{p['speedup_over_prdc_package']}x faster |")
  for key, what in (("lsh_cold", "cold process"), ("lsh_new_n", "at a new n"),
                    ("lsh_persistent_cache", "persistent cache")):
    f = ev.get("lsh_first_call", {})
    if f"{key}_speedup_over_exact_first_call" in f:
      rows.append(f"| LSH first call ({what}) vs exact prdc first call | {f['n']} x {f['dim']} | "
                  f"{f[key]['seconds_first_call']} s | {f['exact_prdc']['seconds_first_call']} s"
                  f" | {f[f'{key}_speedup_over_exact_first_call']}x faster |")
  if "lsh_compilations" in ev and "total" in ev["lsh_compilations"]:
    c = ev["lsh_compilations"]
    rows.append(f"| LSH compilations, {len(c['n'])} sample counts 1k..1M | 64-d | {c['total']} "
                f"| | |")
  if "lsh_million" in ev and "seconds_first_call" in ev["lsh_million"]:
    m = ev["lsh_million"]
    rows.append(f"| LSH from .npy paths | {m['n']} x {m['dim']} | {m['seconds_first_call']} s, "
                f"peak RSS {m['peak_rss_mib']} MiB | | |")
  rows += _lsh_knn_rows(ev.get("lsh_knn", {}))
  return "\n".join(rows)


def _lsh_knn_rows(k: dict) -> list[str]:
  """README rows of the ``lsh_knn`` figure (LSH + k-NN against exact prdc)."""
  rows = []
  for n, v in k.get("vs_exact", {}).items():
    if "speedup" not in v:
      continue
    ex = (f"{v['exact_seconds']} s" if "exact_seconds" in v
          else f"{v['exact_seconds_extrapolated']} s (extrapolated, n^{k['exact_exponent']})")
    gap = v.get("gap_2048d", {})
    gap = (f"; P/R gap {gap['precision_gap']:+.4f} / {gap['recall_gap']:+.4f}" if gap else "")
    rows.append(f"| LSH + k-NN vs exact prdc (compile excluded{gap}) | {n} x {k['dim']} | "
                f"{v['lsh_knn_seconds']} s | {ex} | {v['speedup']}x faster |")
  if k.get("lsh_knn_exponent") is not None:
    rows.append(f"| LSH + k-NN time exponent in n (exact: {k['exact_exponent']}) | "
                f"{', '.join(k['lsh_knn'])} x {k['dim']} | n^{k['lsh_knn_exponent']} | | |")
  for data, a in k.get("accuracy_10000_x_64", {}).items():
    if "precision_gap" in a:
      rows.append(f"| LSH + k-NN P/R gap to exact, {data} | 10000 x 64 | "
                  f"{a['precision_gap']:+.4f} / {a['recall_gap']:+.4f} | | |")
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per framework")
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                      help="PyTorch intra-op threads (default: the CPU count)")
  parser.add_argument("--skip", nargs="*", default=[],
                      help="figures to leave out: h2z vintage dcgan inception slimmed")
  parser.add_argument("--only", nargs="+", default=None, choices=MODEL_FIGURES + EVAL_FIGURES,
                      help="run only these figures (the evaluation ones run only when named "
                      "here or with --eval)")
  parser.add_argument("--eval", action="store_true",
                      help="also the evaluation figures: " + " ".join(EVAL_FIGURES))
  parser.add_argument("--tmp", default=None, help="folder for lsh_million's 2 x 2 GB .npy files")
  parser.add_argument("--markdown", action="store_true", help="print the README table too")
  args = parser.parse_args()
  if args.only is not None:
    args.skip = [f for f in MODEL_FIGURES if f not in args.only]
  evals = [f for f in EVAL_FIGURES if (args.only and f in args.only) or args.eval]
  root = os.environ.get("JAXGC_ASSETS")
  if not root and len(args.skip) < len(MODEL_FIGURES):
    sys.exit("set JAXGC_ASSETS to the assets folder (../shared/assets)")
  torch.set_num_threads(args.threads)
  rng = np.random.default_rng(0)
  load_before = os.getloadavg()
  out = {"device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
         "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
         "jax": jax.__version__, "torch": torch.__version__,
         "matmul_gflops_float32": round(matmul_gflops(), 1), "figures": []}
  figs = out["figures"]

  if "h2z" not in args.skip or "slimmed" not in args.skip:
    path = os.path.join(root, H2Z)
    module, variables = convert.load_torch_checkpoint(path)
    x1 = rng.uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    macs = stats.count_macs(module, variables, x1, "valid")
    if "h2z" not in args.skip:
      ref = torch_refs_zoo.build_reference(torch_refs_zoo.load_state_dict_file(path))
      for bs in (1, 8):
        x = rng.uniform(-1, 1, (bs, 256, 256, 3)).astype(np.float32)
        figs.append({**_pair("horse->zebra (GAN Compression, 2.5 GMACs)", module, variables,
                             ref, x, args.repeats, macs), "vs": "PyTorch"})
    if "slimmed" not in args.skip:
      slim = slim_to_macs(module, variables, 4.0, x=x1, multiple_of=8)
      f, g = jax.jit(module.apply), jax.jit(slim.module.apply)
      for bs in (1, 8):
        x = rng.uniform(-1, 1, (bs, 256, 256, 3)).astype(np.float32)
        t = interleaved({"orig": lambda: f(variables, x).block_until_ready(),
                         "slim": lambda: g(slim.variables, x).block_until_ready()}, args.repeats)
        figs.append({"model": "horse->zebra slimmed to 1/4 of the MACs", "batch": bs,
                     "vs": "the original, jaxgc", "jaxgc_ms": round(1e3 * t["slim"], 2),
                     "original_ms": round(1e3 * t["orig"], 2),
                     "speedup": round(t["orig"] / t["slim"], 3),
                     "macs": stats.count_macs(slim.module, slim.variables, x1)})

  if "vintage" not in args.skip:
    path = os.path.join(root, VINTAGE)
    module, variables = convert.load_torch_checkpoint(path)
    sd = convert.unwrap_state_dict(convert.read_torch_file(path), path)
    ref = torch_refs.build_reference(sd)
    x = rng.uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    figs.append({**_pair("vintage CycleGAN ResNet-9 (56.8 GMACs)", module, variables, ref, x,
                         max(3, args.repeats // 3),
                         stats.count_macs(module, variables, x, "valid")),
                 "vs": "PyTorch"})

  if "dcgan" not in args.skip:
    path = os.path.join(root, DCGAN)
    module, variables = convert.load_torch_checkpoint(path)
    ref = torch_refs_zoo.build_reference(torch_refs_zoo.load_state_dict_file(path))
    z1 = np.zeros((1, 100), np.float32)
    macs = stats.count_macs(module, variables, z1, "valid")
    for bs in (1, 64):
      z = rng.standard_normal((bs, 100)).astype(np.float32)
      figs.append({**_pair("DCGAN DigiFace 64x64", module, variables, ref, z, args.repeats,
                           macs), "vs": "PyTorch"})

  if "inception" not in args.skip:
    path = os.path.join(root, INCEPTION)
    ts = torch.jit.load(path, map_location="cpu").eval()
    imgs = rng.integers(0, 256, (32, 299, 299, 3), dtype=np.uint8)
    xt = torch.from_numpy((imgs.transpose(0, 3, 1, 2).astype(np.float32) - 128) / 128)
    fid_inception.inception_features(imgs, batch_size=32, progress=False)   # load, compile
    with torch.no_grad():
      t = interleaved({"jaxgc": lambda: fid_inception.inception_features(
                           imgs, batch_size=32, progress=False),
                       "torch": lambda: ts(xt)}, max(3, args.repeats // 2), warmup=1)
      diff = float(np.max(np.abs(fid_inception.inception_features(imgs, batch_size=32,
                                                                   progress=False)
                                 - ts(xt).numpy())))
    figs.append({"model": "FID Inception (pool3)", "batch": 32, "vs": "its TorchScript",
                 "jaxgc_images_per_s": round(32 / t["jaxgc"], 2),
                 "torch_images_per_s": round(32 / t["torch"], 2),
                 "speedup": round(t["torch"] / t["jaxgc"], 3), "max_abs_vs_torch": diff})

  if evals:
    out["evaluation"] = evaluation_figures(evals, args.tmp)
  out["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
  print(json.dumps(out, indent=2))
  if args.markdown:
    print("\n| model | batch | jaxgc | other | speedup |\n|---|---:|---:|---:|---:|")
    for f in figs:
      a = f.get("jaxgc_ms", f.get("jaxgc_images_per_s"))
      b = f.get("torch_ms", f.get("original_ms", f.get("torch_images_per_s")))
      unit = " img/s" if "jaxgc_images_per_s" in f else " ms"
      print(f"| {f['model']} | {f['batch']} | {a}{unit} | {b}{unit} ({f['vs']}) | "
            f"{f['speedup']:.2f}x |")
    if evals:
      print(evaluation_markdown(out["evaluation"]))


if __name__ == "__main__":
  main()
