"""The precision/recall trade-off of the DCGAN DigiFace-64 generator: weight bits x activation
bits x clipping, in FID-Inception feature space, against the FP32 model's samples.

Inception on 64x64 faces resized to 299x299 costs about 0.2 s per image on a CPU core, so the
CPU default is 200 samples per setting; raise num_samples on an accelerator.

  JAXGC_ASSETS=../shared/assets jaxgc study --config configs/study_digiface.py \
      --workdir runs/study_digiface
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoint = "dcgan-digiface64/weights.tar"
  c.weight_bits = (8, 4, 3, 2)
  c.act_bits = (32, 8)
  c.clips = ("none", "percentile:99.9")
  c.num_samples = 200
  c.extractor = "inception"
  c.batch_size = 64
  return c
