"""The seed study's recipes on GAN Compression's horse->zebra CycleGAN generator (sub-mobile
ResNet, 0.357M params, released without its discriminator): W8A8 / W4A8 / W4A4 x min-max /
percentile / MSE / EMA calibration, PTQ and QAT (distillation to the FP32 generator plus a
PatchGAN trained online on its outputs), on 96 random 128x128 photo crops, in FID-Inception
feature space against the FP32 outputs on the same crops.

  JAXGC_ASSETS=../shared/assets jaxgc study --config configs/study_h2z.py \
      --workdir runs/study_h2z
"""

import ml_collections

from jaxgc.jobs import study


def get_config():
  return study.recipe_grid_config(
      checkpoint="cyclegan-h2z-gancompression/latest_net_G.pth",
      arch="sub_mobile_resnet_generator", inputs=ml_collections.ConfigDict({"size": 128}),
      qat=ml_collections.ConfigDict({"steps": 100, "batch_size": 8, "adv_weight": 0.1}),
      num_samples=96, batch_size=16)
