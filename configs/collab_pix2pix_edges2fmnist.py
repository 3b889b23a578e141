"""Collaborative G/D pruning (Ganjdanesh et al. AAAI 2024, our reconstruction) of the pix2pix
pair that ``jaxgc gan`` trains on edges -> Fashion-MNIST (U-Net, num_downs 5, ngf 32, 63 M MACs
per 32 x 32 image; its conditional PatchGAN, ndf 32, 3 layers, BatchNorm, which reads the edge
map and the garment concatenated), at G budgets of 50% and 25% of the teacher's MACs, against
magnitude pruning + L1 distillation (a) and self-supervised compression (b; MSE only: its
adversarial term reads D on the output alone, which a conditional D cannot).

D's real samples are the real target garments of the pix2pix pairs; the trained D needs no
warm-up. Inputs: the data set's training edge maps; quality on its first 500 held-out edge
maps (PSNR to the teacher; the sample metrics of the student's translations against the
teacher's in pixel space).

The teacher is ``teachers.teacher("pix2pix_edges2fmnist")`` of the user cache
(``$JAXGC_CACHE/teachers/pix2pix_edges2fmnist``; ``scripts/train_teachers.sh`` trains it, or
``python -c 'from jaxgc.jobs import teachers; teachers.teacher("pix2pix_edges2fmnist")'``):

  JAXGC_ASSETS=../shared/assets jaxgc collab --config configs/collab_pix2pix_edges2fmnist.py \\
      --workdir runs/collab_pix2pix_edges2fmnist
"""

import os

import ml_collections

from jaxgc._fileio import cache_root


def get_config():
  teacher = os.path.join(cache_root(), "teachers", "pix2pix_edges2fmnist")
  c = ml_collections.ConfigDict()
  c.generator = os.path.join(teacher, "generator")
  c.discriminator = os.path.join(teacher, "discriminator")
  c.d_warmup_steps = 0
  c.methods = ("collab", "magnitude_l1", "selfsup")
  c.budgets = (0.5, 0.25)
  c.search_steps = 100
  c.finetune_steps = 50
  c.batch_size = 16
  c.k = 4
  c.m = 1
  c.sigma = 0.05
  c.max_shift = 1
  c.features = "discriminator"
  c.feature_layer = "conv_4"
  c.d_outputs = "logits"
  c.learning_rate = 2e-4
  c.agent_learning_rate = 1e-2
  c.data = ml_collections.ConfigDict()
  c.data.source = "paired"
  c.data.root = os.path.join(cache_root(), "data", "edges2fmnist")
  c.data.size = 32
  c.eval_samples = 500
  c.latency_batch = 8
  c.checkpoint_every = 50
  c.metrics = ml_collections.ConfigDict()
  c.metrics.extractor = "pixels"
  c.metrics.nearest_k = 5
  c.seed = 0
  return c
