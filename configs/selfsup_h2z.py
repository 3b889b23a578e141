"""Channel-prune the GAN Compression horse->zebra generator and recover it by distillation.

The released sub-mobile CycleGAN generator (0.357M params, 2.5G MACs at 256 x 256) is slimmed
to half and to a quarter of its channels per group (residual trunk included), i.e. about 4x and
13x fewer MACs, and each student is trained to reproduce the teacher's outputs (MSE) on random
crops of scikit-image photos. Its trained discriminator was not released, so there is no
adversarial term (Yu and Pool's distillation half only). Report: MACs, params, CPU latency and
PSNR/SSIM against the teacher on four held-out photos at 256 x 256. About 6 minutes on 2 CPU
cores; add "unstructured" to `granularities` to compare with masks of the same sparsity.

  JAXGC_ASSETS=../shared/assets jaxgc selfsup --config configs/selfsup_h2z.py \
      --workdir runs/selfsup_h2z
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.generator = "cyclegan-h2z-gancompression/latest_net_G.pth"
  c.discriminator = ""
  c.distill = "mse"
  c.distill_weight = 1.0
  c.adv_weight = 0.0
  c.granularities = ("channel",)
  c.sparsities = (0.5, 0.75)
  c.learning_rate = 2e-4
  c.steps = 150
  c.batch_size = 4
  c.crop_size = 128
  c.checkpoint_every = 50
  c.sample_every = 100
  c.latency_batch = 1
  c.seed = 0
  return c
