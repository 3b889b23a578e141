"""Post-training compression of the DCGAN DigiFace-64 face generator.

``$JAXGC_ASSETS/dcgan-digiface64/weights.tar`` (DCGAN, z of 100, 64x64 RGB), swept over
8/6/4/3/2-bit weights, with and without 99.9th-percentile clipping, per tensor and per output
channel, on 8 latents drawn from N(0, 1) with seed 0.

  JAXGC_ASSETS=../shared/assets jaxgc compress --config configs/dcgan_digiface_ptq.py \
      --workdir runs/digiface_ptq
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoint = "dcgan-digiface64/weights.tar"
  c.arch = "dcgan_generator"
  c.inputs = ml_collections.ConfigDict({"num_samples": 8, "seed": 0})
  c.sweep = ml_collections.ConfigDict({"weight_bits": (8, 6, 4, 3, 2),
                                       "granularities": ("per_tensor", "per_channel"),
                                       "clip": (False, True), "symmetric": True})
  c.clip = ml_collections.ConfigDict({"mode": "percentile", "value": 99.9})
  c.batch_size = 8
  c.sample_cell = 64
  return c
