"""The seed study's recipes on the full-size vintage CycleGAN generator (ResNet, 9 blocks,
11.39M params): W8A8 / W4A8 (first and last layers W8A8) / W4A4 x min-max / percentile / MSE /
EMA calibration, PTQ (add "qat" to modes for QAT with an online PatchGAN), on random photo
crops, in FID-Inception feature space against the FP32 outputs on the same crops.

The generator costs 56.8 GMACs per 256x256 image, 3.55 GMACs per 64x64 crop: the CPU default is
96 crops of 64x64 per setting (calibration: 2 batches of 16 other crops of the same photos).
On an accelerator raise num_samples and inputs.size (e.g. 1000 crops of 256x256).

  JAXGC_ASSETS=../shared/assets jaxgc study --config configs/study_cyclegan_vintage.py \
      --workdir runs/study_cyclegan_vintage
"""

import ml_collections

from jaxgc.jobs import study


def get_config():
  return study.recipe_grid_config(
      checkpoint="cyclegan-vintage-resnet9/latest_net_G_A2B.pth", arch="resnet_generator",
      inputs=ml_collections.ConfigDict({"size": 64}), modes=("ptq",),
      qat=ml_collections.ConfigDict({"steps": 100, "batch_size": 8, "adv_weight": 0.1}),
      num_samples=96, batch_size=16)
