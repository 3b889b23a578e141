"""The seed study's recipes on the Self-Attention GAN generator (the 32x32 Fashion-MNIST teacher of `jaxgc gan`; attention q/k/v kept
at W8A8, gamma in float32; spectrally normalised kernels quantized after normalisation):
W8A8 / W4A8 / W4A4 x min-max / percentile / MSE /
EMA calibration, PTQ and QAT (distillation to the FP32 generator), in FID-Inception feature
space against the FP32 model's samples (other latents).

The generator is the teacher that `jaxgc gan` trains and keeps in the user cache
(model.source = "teacher"); without it, a random-init model of the same family runs the same
protocol: --config.model.source=registry --config.model.arch=sagan_generator.

  jaxgc study --config configs/study_sagan.py --workdir runs/study_sagan
"""

import ml_collections

from jaxgc.jobs import study


def get_config():
  return study.recipe_grid_config(
      model={"source": "teacher", "teacher": "sagan_fmnist"},
      qat=ml_collections.ConfigDict({"steps": 200, "batch_size": 16, "distill": "mse"}),
      num_samples=200, batch_size=50)
