"""Bytes of the ``jax.export`` artifact of the horse->zebra generator: FP32, W8 and W4.

GAN Compression's released horse->zebra generator (``$JAXGC_ASSETS``), exported by
``jaxgc.export.save`` for 256x256 inputs with a symbolic batch, for CPU, CUDA and TPU in one
artifact. W8 / W4: every conv kernel quantized per channel, symmetric (``QuantConfig(bits)``),
stored as int8 codes or 4-bit codes packed two per byte, biases in float32. For comparison, the
bytes of the same weights in ``weights.npz`` (``jaxgc.compress.save_quantized``, what
``jaxgc compress`` writes).

Prints one JSON object: per setting ``artifact_bytes``, ``artifact_ratio`` (to FP32),
``weights_npz_bytes``, ``weights_in_artifact_bytes`` (codes, scales, zero points and float
leaves) and the max abs difference between the artifact's outputs (batch 2, CPU) and the
fake-quantized model's; plus platforms, jax version.

  JAXGC_ASSETS=../shared/assets python benchmarks/export_sizes.py
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # set before jax starts

import json  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxgc import compress  # noqa: E402
from jaxgc import convert  # noqa: E402
from jaxgc import export  # noqa: E402
from jaxgc.data import inputs as inputs_lib  # noqa: E402

CHECKPOINT = "cyclegan-h2z-gancompression/latest_net_G.pth"
SETTINGS = {"fp32": None, "w8": 8, "w4": 4}


def main() -> None:
  module, variables = convert.load_torch_checkpoint(inputs_lib.resolve_asset(CHECKPOINT))
  x = np.asarray(jax.random.uniform(jax.random.key(0), (2, 256, 256, 3), minval=-1.0,
                                    maxval=1.0))
  rows, platforms = {}, None
  with tempfile.TemporaryDirectory() as tmp:
    for name, bits in SETTINGS.items():
      tree = variables if bits is None else compress.quantize_variables(
          variables, compress.QuantConfig(bits))
      meta = export.save(module, tree, os.path.join(tmp, name), size=256)
      platforms = meta["platforms"]
      npz = compress.save_quantized(tree, os.path.join(tmp, f"{name}.npz"))
      y = np.asarray(export.load(os.path.join(tmp, name))(x))
      ref = np.asarray(jax.jit(module.apply)(compress.dequantize_variables(tree), x))
      rows[name] = {"artifact_bytes": meta["artifact_bytes"],
                    "weights_npz_bytes": npz,
                    "weights_in_artifact_bytes": sum(v["bytes"] for v in meta["weights"].values()),
                    "max_abs_diff_vs_model": float(np.max(np.abs(y - ref)))}
  for row in rows.values():
    row["artifact_ratio"] = row["artifact_bytes"] / rows["fp32"]["artifact_bytes"]
  print(json.dumps({"model": "sub_mobile_resnet_generator (horse->zebra, GAN Compression)",
                    "input": "[batch, 256, 256, 3] float32, batch symbolic",
                    "platforms": platforms, "jax": jax.__version__, "settings": rows},
                   indent=2))


if __name__ == "__main__":
  main()
