"""Prune the MNIST MLP generator at 50%, 75% and 90% sparsity, unstructured, N:M and channel,
and recover each by self-supervised compression (Yu and Pool 2020).

Teacher: the pretrained MLP generator; the frozen pretrained discriminator adds a small
non-saturating adversarial term to the distillation (MSE to the teacher's outputs). N:M uses
groups of m = 8 along the input axis: 4:8, 2:8 and 1:8 (sparsity 0.5, 0.75, 0.875: N:M cannot
give 0.9 with m = 8). Channel pruning removes hidden units (never the 784 output pixels).
Quality: PSNR against the teacher on 1000 held-out latents, and FID / precision / recall of
1000 student samples against 1000 teacher samples in MNIST LeNet-5 feature space. About 5
minutes on 2 CPU cores.

  JAXGC_ASSETS=../shared/assets jaxgc selfsup --config configs/selfsup_mnist_mlp.py \
      --workdir runs/selfsup_mnist_mlp

Rerunning the same command resumes (finished settings are kept).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.generator = "mnist-mlpgan/G--300.ckpt"
  c.discriminator = "mnist-mlpgan/D--300.ckpt"
  c.adv_loss = "non_saturating_prob"
  c.distill = "mse"
  c.distill_weight = 1.0
  c.adv_weight = 0.01
  c.granularities = ("unstructured", "n:m", "channel")
  c.sparsities = (0.5, 0.75, 0.9)
  c.nm_group = 8
  c.channel_exclude = "dense_2"   # the output layer's units are the image pixels
  c.learning_rate = 3e-4
  c.steps = 600
  c.batch_size = 64
  c.checkpoint_every = 200
  c.sample_every = 200
  c.seed = 0
  c.eval_samples = 1000
  c.metrics = ml_collections.ConfigDict()
  c.metrics.extractor = "lenet5"
  c.metrics.num_samples = 1000
  return c
