"""Train a DCGAN teacher on Fashion-MNIST (32x32 grayscale, the 28x28 garments padded), with FID
on a LeNet-5 domain classifier trained on the training split, against 2,000 held-out test images.

G: ConvT widths (128, 64, 32, 1) (g_width 32: half the DCGAN tutorial's, to fit a CPU);
D: (32, 64, 128) and a last conv. Non-saturating loss, Adam 2e-4 (beta1 0.5), batch 64, 1,500
steps: about 15 minutes on a 2-core CPU shared with other jobs.

  JAXGC_ASSETS=../shared/assets jaxgc gan --config configs/gan_dcgan_fmnist.py \
      --workdir runs/gan_dcgan_fmnist

Rerunning the same command resumes from the last checkpoint.
"""

from jaxgc.jobs import gan


def get_config():
  c = gan.default_config()
  c.model.g_width = 32
  c.model.d_width = 32
  c.steps = 1500
  c.fid.every = 250
  return c
