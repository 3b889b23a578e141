"""The seed study's recipes on the StyleGAN2 generator (mapping network, modulation affines and
to-RGB layers kept at W8A8): W8A8 / W4A8 / W4A4 x min-max / percentile / MSE /
EMA calibration, PTQ and QAT (distillation to the FP32 generator), in FID-Inception feature
space against the FP32 model's samples (other latents).

The generator is the teacher that `jaxgc gan` trains and keeps in the user cache
(model.source = "teacher"); without it, a random-init model of the same family runs the same
protocol: --config.model.source=registry --config.model.arch=stylegan2_generator.

  jaxgc study --config configs/study_stylegan2.py --workdir runs/study_stylegan2
"""

import ml_collections

from jaxgc.jobs import study


def get_config():
  return study.recipe_grid_config(
      model={"source": "teacher", "teacher": "stylegan2_fmnist"},
      qat=ml_collections.ConfigDict({"steps": 200, "batch_size": 16, "distill": "mse"}),
      num_samples=200, batch_size=50)
