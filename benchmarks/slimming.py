"""Masking vs physical slimming: CPU latency of the horse->zebra generator at 256x256.

Four models, from GAN Compression's released horse->zebra generator:
  * ``original``: as released (2.5G MACs).
  * ``masked_4x``: the same architecture with the channel masks of ``slimmed_4x`` applied
    (pruned weights zeroed): the zeros are still computed, so no speed-up is expected.
  * ``slimmed_2x`` / ``slimmed_4x``: ``jaxgc.compress.slim.slim_to_macs`` with MAC ratios 2 and 4
    (uniform channel sparsity, L1 filter scores, residual trunk included), every width rounded
    to a multiple of ``--multiple-of`` (8: the float32 lanes of an AVX2 register).
  * ``slimmed_4x_unaligned``: ratio 4 with widths not rounded (``multiple_of=1``), to show
    what the rounding is worth.

Prints one JSON object: ``original_s``, ``masked_4x_s``, ``slimmed_2x_s``, ``slimmed_4x_s``,
each ``{"batch_1": s, "batch_8": s}`` (median seconds per batch over ``--repeats`` calls of the
jitted forward pass, compilation and warm-up excluded, ``block_until_ready``; the models'
calls are interleaved, in a rotating order, so that load from other processes hits them
alike); MACs (torchprofile convention) and parameters of each; speed-ups over the original;
the slimmed widths; the check that ``slimmed_4x`` computes what ``masked_4x`` does; device,
jax version and repeats.

  JAXGC_ASSETS=../shared/assets python benchmarks/slimming.py [--repeats 10]
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU benchmark; set before jax starts

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxgc import convert  # noqa: E402
from jaxgc.compress.prune import apply_masks  # noqa: E402
from jaxgc.compress.slim import slim_to_macs  # noqa: E402
from jaxgc.stats import count_macs  # noqa: E402
from jaxgc.stats import count_params  # noqa: E402

CHECKPOINT = "cyclegan-h2z-gancompression/latest_net_G.pth"
TARGET_SPEEDUP = 2.5  # slimmed_4x over original, both batch sizes


def _time_interleaved(fns: dict, x: np.ndarray, repeats: int, warmup: int) -> dict[str, float]:
  """Median seconds per call of every ``fns[name](x)``, calls interleaved in rotating order."""
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn(x))
  names = list(fns)
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      t = time.perf_counter()
      jax.block_until_ready(fns[name](x))
      times[name].append(time.perf_counter() - t)
  return {n: statistics.median(ts) for n, ts in times.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per model and batch")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls after compiling")
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--size", type=int, default=256, help="image height and width")
  parser.add_argument("--multiple-of", type=int, default=8,
                      help="round slimmed widths to multiples of this")
  args = parser.parse_args()
  root = os.environ.get("JAXGC_ASSETS")
  if not root:
    sys.exit("set JAXGC_ASSETS to the assets folder (../shared/assets)")
  path = os.path.join(root, CHECKPOINT)
  if not os.path.isfile(path):
    sys.exit(f"JAXGC_ASSETS is set but the checkpoint is missing: {path}")

  module, variables = convert.load_torch_checkpoint(path)
  x1 = np.zeros((1, args.size, args.size, 3), np.float32)
  slimmed = {f"slimmed_{r}x": slim_to_macs(module, variables, float(r), x=x1,
                                            multiple_of=args.multiple_of) for r in (2, 4)}
  slimmed["slimmed_4x_unaligned"] = slim_to_macs(module, variables, 4.0, x=x1)
  masked_vars = apply_masks(variables, slimmed["slimmed_4x"].masks)
  models = {"original": (module, variables), "masked_4x": (module, masked_vars),
            **{name: (s.module, s.variables) for name, s in slimmed.items()}}
  apply = {name: jax.jit(m.apply) for name, (m, _) in models.items()}
  fns = {name: (lambda x, f=apply[name], v=v: f(v, x)) for name, (_, v) in models.items()}

  rng = np.random.default_rng(0)
  latency: dict[str, dict[str, float]] = {name: {} for name in models}
  max_abs = 0.0
  for bs in args.batch_sizes:
    x = rng.uniform(-1, 1, (bs, args.size, args.size, 3)).astype(np.float32)
    for name, t in _time_interleaved(fns, x, args.repeats, args.warmup).items():
      latency[name][f"batch_{bs}"] = t
    max_abs = max(max_abs, float(np.max(np.abs(
        np.asarray(fns["slimmed_4x"](x)) - np.asarray(fns["masked_4x"](x))))))

  speedup = {name: {b: latency["original"][b] / t for b, t in lat.items()}
             for name, lat in latency.items() if name != "original"}
  result = {
      **{f"{name}_s": {b: round(t, 5) for b, t in lat.items()} for name, lat in latency.items()},
      "speedup_vs_original": {n: {b: round(s, 3) for b, s in sp.items()}
                              for n, sp in speedup.items()},
      "macs": {name: count_macs(m, v, x1) for name, (m, v) in models.items()},
      "params": {name: count_params(v) for name, (_, v) in models.items()},
      "nonzero_params": {name: int(sum(np.count_nonzero(np.asarray(a))
                                       for a in jax.tree.leaves(v["params"])))
                         for name, (_, v) in models.items()},
      "slimmed": {name: {"sparsity": round(s.sparsity, 4), "stem": s.module.stem,
                         "down": s.module.down, "hidden": s.module.hidden, "up": s.module.up}
                  for name, s in slimmed.items()},
      "max_abs_slimmed_4x_vs_masked_4x": max_abs,
      "target": {"slimmed_4x_min_speedup": TARGET_SPEEDUP,
                 "met": all(s >= TARGET_SPEEDUP for s in speedup["slimmed_4x"].values())},
      "multiple_of": args.multiple_of,
      "image_size": args.size,
      "repeats": args.repeats,
      "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
  }
  text = json.dumps(result, indent=2)
  print(re.sub(r"\[[^\[\]{}]*\]", lambda m: json.dumps(json.loads(m.group(0))), text))


if __name__ == "__main__":
  main()
