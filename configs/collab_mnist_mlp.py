"""Collaborative G/D pruning of the MNIST MLP GAN (Ganjdanesh et al. AAAI 2024, our
reconstruction) at G budgets of 50%, 25% and 10% of the teacher's MACs, against magnitude
pruning + L1 distillation (a), self-supervised compression (b), and the ablations without the
density loss (c), without peer feedback (d) and with the G-agent only (e).

Teacher: the pretrained MLP generator (z 64 -> 256 -> 256 -> 784); D: its pretrained
discriminator (784 -> 256 -> 256 -> 1, sigmoid), pruned by the D-agent to the same fraction.
The density loss lives in D's penultimate features (a frozen copy). Quality: PSNR to the
teacher on 1000 held-out latents and FID / KID / precision / recall / density / coverage of
1000 student samples against 1000 teacher samples in LeNet-5 feature space.

  JAXGC_ASSETS=../shared/assets jaxgc collab --config configs/collab_mnist_mlp.py \\
      --workdir runs/collab_mnist_mlp

Rerunning the same command resumes (finished settings are kept).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.generator = "mnist-mlpgan/G--300.ckpt"
  c.discriminator = "mnist-mlpgan/D--300.ckpt"
  c.methods = ("collab", "no_density", "no_peer", "g_only", "magnitude_l1", "selfsup")
  c.budgets = (0.5, 0.25, 0.1)
  c.search_steps = 200
  c.finetune_steps = 100
  c.batch_size = 64
  c.k = 4
  c.m = 2
  c.sigma = 0.3
  c.feature_layer = "dense_2"
  c.d_outputs = "prob"
  c.learning_rate = 3e-4
  c.agent_learning_rate = 1e-2
  c.checkpoint_every = 100
  c.eval_samples = 1000
  c.metrics = ml_collections.ConfigDict()
  c.metrics.extractor = "lenet5"
  c.metrics.num_samples = 1000
  c.metrics.nearest_k = 5
  c.seed = 0
  return c
