"""Train a small StyleGAN2 teacher on Fashion-MNIST (32x32 grayscale): 32 channels at every
resolution (4..32), z = w = 64, 2 mapping layers, NVlabs layout, the unfused modulated
convolution; non-saturating logistic loss, lazy R1 (gamma 0.01, about what StyleGAN2-ADA's
auto config gives at 32x32, every 16 steps), EMA generator (decay 0.999, ramp-up 0.05 as
StyleGAN2-ADA), Adam 2e-3 betas
(0, 0.99), batch 16. FID on a LeNet-5 domain classifier trained on the training split.
(64 channels and batch 32 ran at 18 s per step on the shared 2-core CPU: too slow here.)

  JAXGC_ASSETS=../shared/assets jaxgc gan --config configs/gan_stylegan2_fmnist.py \
      --workdir runs/gan_stylegan2_fmnist
"""

from jaxgc.jobs import gan


def get_config():
  c = gan.default_config()
  c.arch = "stylegan2"
  c.model.z_dim = 64
  c.model.g_width = 32
  c.model.d_width = 32
  c.loss = "non_saturating_logits"
  c.r1_gamma = 0.01
  c.ema_decay = 0.999
  c.ema_rampup = 0.05   # StyleGAN2-ADA's ramp-up: early on the EMA forgets the initial weights
  c.g_learning_rate = 2e-3
  c.d_learning_rate = 2e-3
  c.beta1 = 0.0
  c.beta2 = 0.99
  c.batch_size = 16
  c.steps = 1000
  c.checkpoint_every = 100
  c.sample_every = 100
  c.fid.every = 100
  return c
