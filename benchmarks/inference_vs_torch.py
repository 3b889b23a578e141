"""CPU inference of converted generators: jaxgc (jax.jit) vs the PyTorch original, side by side.

Prints one JSON object: per model and batch size, the median latency of each framework in
milliseconds and their ratio (torch / jaxgc; > 1 means jaxgc is faster), plus checkpoint
sizes FP32 vs int8 vs int4 from jaxgc's real low-bit storage. Needs torch and JAXGC_ASSETS.

  JAXGC_ASSETS=../shared/assets python benchmarks/inference_vs_torch.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import torch

from jaxgc import compress  # noqa: E402
from jaxgc import convert  # noqa: E402
from jaxgc.convert import torch_refs_zoo  # noqa: E402

MODELS = {
    "cyclegan_h2z_sub_mobile": ("cyclegan-h2z-gancompression/latest_net_G.pth", (256, 256, 3)),
    "dcgan_digiface64": ("dcgan-digiface64/weights.tar", (100,)),
}


def _median_ms(fn, repeats: int) -> float:
  fn()  # warm-up (compilation for jax)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append((time.perf_counter() - t) * 1e3)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
  args = parser.parse_args()
  root = os.environ.get("JAXGC_ASSETS")
  if not root:
    sys.exit("set JAXGC_ASSETS to the assets folder (../shared/assets)")
  torch.set_num_threads(os.cpu_count() or 1)
  results = {"device": str(jax.devices()[0]), "torch_threads": torch.get_num_threads(),
             "jax": jax.__version__, "torch": torch.__version__, "models": {}}
  for name, (rel, in_shape) in MODELS.items():
    path = os.path.join(root, rel)
    module, variables = convert.load_torch_checkpoint(path)
    ref = torch_refs_zoo.build_reference(torch_refs_zoo.load_state_dict_file(path))
    apply_fn = jax.jit(module.apply)
    entry = {}
    for bs in args.batch_sizes:
      x = np.random.default_rng(0).uniform(-1, 1, (bs,) + in_shape).astype(np.float32)
      xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4
                            else x.reshape(bs, -1, 1, 1).copy())
      with torch.no_grad():
        t_ms = _median_ms(lambda: ref(xt), args.repeats)
      j_ms = _median_ms(lambda: apply_fn(variables, x).block_until_ready(), args.repeats)
      entry[f"batch_{bs}"] = {"jaxgc_ms": round(j_ms, 2), "torch_ms": round(t_ms, 2),
                              "speedup_torch_over_jaxgc": round(t_ms / j_ms, 3)}
    with tempfile.TemporaryDirectory() as d:
      sizes = {"fp32": compress.fp32_bytes(variables)}
      for bits in (8, 4):
        q = compress.quantize_variables(variables, compress.QuantConfig(bits))
        sizes[f"int{bits}"] = compress.save_quantized(q, os.path.join(d, f"w{bits}.npz"))
    entry["bytes_on_disk"] = sizes
    entry["size_ratio_int4_vs_fp32"] = round(sizes["int4"] / sizes["fp32"], 4)
    results["models"][name] = entry
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
