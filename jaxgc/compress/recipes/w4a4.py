"""W4A4 stress case: 4-bit weights and 4-bit activations in every layer, first and last too.

Below the operating points of Andreev, Fritzler and Vetrov 2021 (arXiv 2108.13996); used to
show where quantization breaks a generator and that the metrics detect it. MSE-optimal
activation ranges matter most at 4 bits. Load with ``jaxgc.compress.load_recipe("w4a4")``.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "w4a4"
  c.default_weight_bits = 4
  c.default_act_bits = 4
  c.weight_symmetric = True
  c.weight_granularity = "per_channel"
  c.act_symmetric = False
  c.act_granularity = "per_tensor"
  c.calibration_method = "mse"
  # (pattern, weight_bits, act_bits); first match wins; None = full precision.
  c.rules = ()
  return c
