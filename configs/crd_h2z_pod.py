"""CRD distillation of the horse->zebra generator at paper scale, for a GPU cluster or TPU pod.

The same recipe as configs/crd_h2z.py at the scale of the CRD paper (You et al. 2022): full
256 x 256 crops of the horse2zebra training folders (CycleGAN layout, `trainA` horses, `trainB`
zebras, `testA` for evaluation; pytorch-CycleGAN-and-pix2pix's `resize_and_crop` from 286),
exact angle terms, the online teacher discriminator trained on real zebras vs the teacher's
translations (`disc_real="target"`), perceptual and style terms under the FID Inception's
intermediate maps (VGG-16 weights are not available to jaxgc), and FID on the 120 test horses.
`batch_size` is global: it is split over every device of every process; it must be a multiple
of the device count. On a multi-host pod run the same command on every host with
`--distributed` (jax.distributed.initialize) and the data folder on a shared file system.

  JAXGC_ASSETS=/path/to/assets jaxgc distill --config configs/crd_h2z_pod.py \
      --workdir gs_or_shared/crd_h2z --config.data.root=/data/horse2zebra [--distributed]
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.teacher = "cyclegan-h2z-gancompression/latest_net_G.pth"
  c.student = ml_collections.ConfigDict({"arch": "same", "width": 0.45, "init": "slim"})
  c.disc = ml_collections.ConfigDict({"ndf": 64, "n_layers": 3})
  c.loss = ml_collections.ConfigDict({
      "crd_weight": 1.0, "patch_size": 32, "num_anchors": 0, "recon_weight": 10.0,
      "feature_net": "inception", "perceptual_weight": 1.0, "style_weight": 0.0,
      "adv_weight": 1.0, "disc_real": "target"})
  c.data = ml_collections.ConfigDict({"source": "unpaired", "root": "", "load_size": 286,
                                      "crop_size": 256})
  c.learning_rate = 2e-4
  c.d_learning_rate = 2e-4
  c.steps = 100_000
  c.batch_size = 64
  c.checkpoint_every = 2000
  c.max_to_keep = 3
  c.sample_every = 2000
  c.eval = ml_collections.ConfigDict({"size": 256, "fid_images": 120, "fid_batch": 60})
  c.seed = 0
  return c
