"""W4A8 recipe: 4-bit per-channel weights and 8-bit activations, first and last layers at W8A8.

Andreev, Fritzler and Vetrov 2021 (arXiv 2108.13996): 4-bit weights with 8-bit activations keep
GAN quality when the first and last layers stay at 8 bits. ``"@first"`` / ``"@last"`` are the
first and last conv / transposed-conv / dense layers in execution order
(``jaxgc.compress.rules.first_last_layers``): ``conv_in``/``conv_out`` in the ResNet generators,
``convt_0``/``convt_4`` in the DCGAN generator, ``dense_0``/``dense_2`` in the MLP GAN.
Load with ``jaxgc.compress.load_recipe("w4a8")``.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "w4a8"
  c.default_weight_bits = 4
  c.default_act_bits = 8
  c.weight_symmetric = True
  c.weight_granularity = "per_channel"
  c.act_symmetric = False
  c.act_granularity = "per_tensor"
  c.calibration_method = "percentile"
  # (pattern, weight_bits, act_bits); first match wins; None = full precision.
  c.rules = (("@first", 8, 8), ("@last", 8, 8))
  return c
