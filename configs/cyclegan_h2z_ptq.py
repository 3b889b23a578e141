"""Post-training compression of GAN Compression's horse->zebra CycleGAN generator.

The released compressed generator (sub_mobile_resnet_9blocks, 0.357M params) from
``$JAXGC_ASSETS/cyclegan-h2z-gancompression``, swept over 8/6/4/3/2-bit weights, with and
without 99.9th-percentile clipping, per tensor and per output channel, on four scikit-image
photos at 256x256.

  JAXGC_ASSETS=../shared/assets jaxgc compress --config configs/cyclegan_h2z_ptq.py \
      --workdir runs/h2z_ptq
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoint = "cyclegan-h2z-gancompression/latest_net_G.pth"
  c.arch = "sub_mobile_resnet_generator"
  c.inputs = ml_collections.ConfigDict({"names": ("astronaut", "chelsea", "coffee", "rocket"),
                                        "size": 256})
  c.sweep = ml_collections.ConfigDict({"weight_bits": (8, 6, 4, 3, 2),
                                       "granularities": ("per_tensor", "per_channel"),
                                       "clip": (False, True), "symmetric": True})
  c.clip = ml_collections.ConfigDict({"mode": "percentile", "value": 99.9})
  c.batch_size = 4
  return c
