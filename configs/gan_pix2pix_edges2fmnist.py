"""Train a pix2pix teacher on edges -> Fashion-MNIST: U-Net (num_downs 5, ngf 32) + PatchGAN
(ndf 32, 3 layers) at 32x32 grayscale, vanilla GAN loss + 100 * L1, Adam 2e-4 (beta1 0.5),
batch 32. FID of the outputs for 500 held-out edge maps against 1,000 held-out garments, on a
LeNet-5 domain classifier trained on Fashion-MNIST's training split.

The data: Canny edges of the first 10,000 training and 1,000 test garments (scikit-image),
made by scripts/make_edges.py:

  JAXGC_ASSETS=../shared/assets python scripts/make_edges.py data/edges2fmnist
  JAXGC_ASSETS=../shared/assets jaxgc gan --config configs/gan_pix2pix_edges2fmnist.py \
      --workdir runs/gan_pix2pix_edges2fmnist --config.data.source=data/edges2fmnist

(``data.source`` defaults to ``$JAXGC_CACHE/data/edges2fmnist``, where jaxgc.jobs.teachers
makes it on first use.)
"""

import os

from jaxgc._fileio import cache_root
from jaxgc.jobs import gan


def get_config():
  c = gan.default_config()
  c.arch = "pix2pix"
  c.data.source = os.path.join(cache_root(), "data", "edges2fmnist")
  c.model.g_width = 32
  c.model.d_width = 32
  c.loss = "non_saturating_logits"
  c.batch_size = 32
  c.steps = 1000
  c.checkpoint_every = 100
  c.sample_every = 100
  c.fid.every = 100
  c.fid.reference = 1000
  c.fid.classifier_data = "fashion_mnist"
  return c
