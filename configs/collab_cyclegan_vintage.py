"""Collaborative G/D pruning (Ganjdanesh et al. AAAI 2024, our reconstruction) of the full-size
vintage CycleGAN generator (ResNet, 9 blocks, 11.39M params, 56.8 GMACs at 256 x 256, 3.55
GMACs per 64 x 64 crop) with a PatchGAN (70 x 70, ndf 64, instance norm) trained online, at one
G budget: 1/10 of the teacher's MACs (GAN Compression takes such a teacher to 2.67 GMACs at
256 x 256, 1/21), against magnitude pruning + L1 distillation (a), self-supervised
compression (b) and CRD distillation (f) at the same MACs.

A CPU smoke run: 64 x 64 random crops of scikit-image photos, batch 4, a 30-step D warm-up
(teacher outputs real, the teacher with ~12% of its channels randomly gated off fake), then 100
search + 60 fine-tune steps for collab and 160 steps for each baseline, (f) CRD distillation
(``jaxgc distill``'s loss) included. The numbers are honest about this length: far from
converged. Quality: PSNR to the teacher on 64 held-out crops and FID / KID / precision /
recall / density / coverage of the student's translations of them against the teacher's, in
FID-Inception feature space (64 samples: FID is biased upwards).

  JAXGC_ASSETS=../shared/assets jaxgc collab --config configs/collab_cyclegan_vintage.py \\
      --workdir runs/collab_cyclegan_vintage

Rerunning the same command resumes (finished settings are kept). On an accelerator raise
search_steps / finetune_steps, batch_size, data.size and eval_samples.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.generator = "cyclegan-vintage-resnet9/latest_net_G_A2B.pth"
  c.discriminator = "online"
  c.disc = ml_collections.ConfigDict()
  c.disc.ndf = 64
  c.disc.n_layers = 3
  c.d_warmup_steps = 30
  c.methods = ("collab", "magnitude_l1", "selfsup", "crd")
  c.budgets = (0.1,)
  c.search_steps = 100
  c.finetune_steps = 60
  c.batch_size = 4
  c.k = 2
  c.m = 1
  c.sigma = 0.05
  c.max_shift = 2
  c.features = "discriminator"
  c.feature_layer = "conv_4"
  c.d_outputs = "logits"
  c.learning_rate = 2e-4
  c.agent_learning_rate = 1e-2
  c.selfsup_adv_weight = 0.01
  c.data = ml_collections.ConfigDict()
  c.data.source = "photos"
  c.data.size = 64
  c.eval_samples = 64
  c.latency_batch = 1
  c.latency_repeats = 5
  c.checkpoint_every = 20
  c.metrics = ml_collections.ConfigDict()
  c.metrics.extractor = "inception"
  c.metrics.nearest_k = 3
  c.seed = 0
  return c
