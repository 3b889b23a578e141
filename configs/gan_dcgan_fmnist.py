"""Train a DCGAN teacher on Fashion-MNIST (32x32 grayscale, the 28x28 garments padded), with FID
on a LeNet-5 domain classifier trained on the training split, against 2,000 held-out test images.

G: ConvT widths (128, 64, 32, 1) (g_width 32: half the DCGAN tutorial's, to fit a CPU);
D: (32, 64, 128) and a last conv. Non-saturating loss, Adam 2e-4 (beta1 0.5), batch 64, 1,500
steps: about 15 minutes on a 2-core CPU shared with other jobs.

  JAXGC_ASSETS=../shared/assets jaxgc gan --config configs/gan_dcgan_fmnist.py \
      --workdir runs/gan_dcgan_fmnist

Rerunning the same command resumes from the last checkpoint.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.arch = "dcgan"
  c.data = ml_collections.ConfigDict()
  c.data.source = "fashion_mnist"
  c.data.resolution = 32
  c.data.channels = 1
  c.model = ml_collections.ConfigDict()
  c.model.z_dim = 100
  c.model.g_width = 32
  c.model.d_width = 32
  c.loss = "non_saturating_prob"
  c.g_learning_rate = 2e-4
  c.d_learning_rate = 2e-4
  c.beta1 = 0.5
  c.batch_size = 64
  c.steps = 1500
  c.checkpoint_every = 250
  c.sample_every = 250
  c.seed = 0
  c.fid = ml_collections.ConfigDict()
  c.fid.every = 250
  c.fid.num_samples = 500
  c.fid.reference = 2000
  c.fid.extractor = "domain"
  return c
