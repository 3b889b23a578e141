"""Quantization-aware training of the MNIST MLP generator at 4-bit per-channel weights.

Starts from the post-training-quantized generator (W4, per-channel, symmetric, every kernel) and
fine-tunes its float shadow weights for 500 Adam steps of 64 latents: distilled (MSE) to the FP32
generator's outputs, plus a small non-saturating adversarial term from the frozen trained
discriminator. About a minute on 2 CPU cores. qat_report.md compares the output PSNR vs FP32 on
1000 held-out latents before (PTQ) and after QAT.

  JAXGC_ASSETS=../shared/assets jaxgc qat --config configs/qat_mnist_mlp.py \
      --workdir runs/qat_mnist_mlp

Rerunning the same command resumes from the latest checkpoint (every 100 steps).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.generator = "mnist-mlpgan/G--300.ckpt"
  c.discriminator = "mnist-mlpgan/D--300.ckpt"
  c.weight_bits = 4
  c.symmetric = True
  c.granularity = "per_channel"
  c.learning_rate = 1e-4
  c.steps = 500
  c.batch_size = 64
  c.distill = "mse"
  c.distill_weight = 1.0
  c.adv_weight = 0.01
  c.checkpoint_every = 100
  c.seed = 0
  c.eval_samples = 1000
  return c
