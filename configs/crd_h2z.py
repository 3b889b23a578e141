"""Distill a 4x cheaper horse->zebra generator with CRD and an online discriminator (CPU-sized).

Teacher: GAN Compression's released sub-mobile CycleGAN horse->zebra generator (0.357M params,
2.5G MACs at 256 x 256). Student: the same architecture at 45% of the channels of every layer
(4.2x fewer MACs), inheriting the teacher's strongest channels. Loss: content relationship
distillation (You et al. 2022: row, column and 32x32-patch slicings, distance 1, angle 2, each
slicing 25) + an L1 pixel term + the LSGAN loss of an online PatchGAN trained on teacher vs
student outputs (the horse2zebra images are not available here, so the inputs are random crops
of scikit-image photos and the discriminator learns what still tells the student from the
teacher). Reports MACs, params, CPU latency, and PSNR / SSIM / FID of the student against the
teacher on held-out photos. About 15 minutes on 2 CPU cores.

  JAXGC_ASSETS=../shared/assets jaxgc distill --config configs/crd_h2z.py \
      --workdir runs/crd_h2z
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.teacher = "cyclegan-h2z-gancompression/latest_net_G.pth"
  c.student = ml_collections.ConfigDict({"arch": "same", "width": 0.45, "init": "slim"})
  c.disc = ml_collections.ConfigDict({"ndf": 32, "n_layers": 3})
  c.loss = ml_collections.ConfigDict({
      "crd_weight": 1.0, "patch_size": 32, "num_anchors": 32, "recon_weight": 10.0,
      "feature_net": "none", "adv_weight": 1.0, "disc_real": "teacher"})
  c.data = ml_collections.ConfigDict({"source": "photos", "crop_size": 128})
  c.learning_rate = 2e-4
  c.steps = 300
  c.batch_size = 4
  c.checkpoint_every = 100
  c.sample_every = 100
  c.eval = ml_collections.ConfigDict({"size": 256, "fid_images": 100})
  c.seed = 0
  return c
