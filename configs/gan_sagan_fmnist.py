"""Train a SAGAN teacher on Fashion-MNIST at 32x32 grayscale: jaxgc's generalisation of
heykeetae/Self-Attention-GAN's 64x64 model (attention at 8x8 and 16x16 in G, 8x8 and 4x4 in D:
jaxgc.models.sagan), g_conv_dim = d_conv_dim = 32 (upstream 64, halved to fit a CPU), z 128.
Spectral normalisation in both networks (one power iteration per forward), hinge loss, TTUR as
upstream's defaults: Adam G 1e-4, D 4e-4, betas (0, 0.9); batch 32, 1,500 steps (142 s on
the 2-core CPU at load ~2; FID 67 on the domain classifier). FID on a LeNet-5 domain classifier
trained on the training split, against 2,000 held-out test images. Longer runs did not help
here: the same run carried on (batch for batch the same up to step 1,500: equal FIDs at 500,
1,000, 1,500) measured FID 83, 92, 89, 93, 87 at 2,000 .. 4,000 steps.

  JAXGC_ASSETS=../shared/assets jaxgc gan --config configs/gan_sagan_fmnist.py \
      --workdir runs/gan_sagan_fmnist

Rerunning the same command resumes from the last checkpoint.
"""

from jaxgc.jobs import gan


def get_config():
  c = gan.default_config()
  c.arch = "sagan"
  c.model.z_dim = 128
  c.model.g_width = 32
  c.model.d_width = 32
  c.loss = "hinge"
  c.g_learning_rate = 1e-4   # TTUR, as upstream
  c.d_learning_rate = 4e-4
  c.beta1 = 0.0
  c.beta2 = 0.9
  c.batch_size = 32
  c.steps = 1500
  c.fid.every = 250
  return c
