"""W8A8 recipe: 8-bit per-channel symmetric weights and 8-bit calibrated activations everywhere.

Andreev, Fritzler and Vetrov 2021 (arXiv 2108.13996): W8A8 post-training quantization keeps the
quality of the FP32 generator. Load with ``jaxgc.compress.load_recipe("w8a8")``.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "w8a8"
  c.default_weight_bits = 8
  c.default_act_bits = 8
  c.weight_symmetric = True
  c.weight_granularity = "per_channel"
  c.act_symmetric = False
  c.act_granularity = "per_tensor"
  c.calibration_method = "percentile"
  # (pattern, weight_bits, act_bits); first match wins; None = full precision.
  c.rules = ()
  return c
