"""The image path of configs/collab_cyclegan_vintage.py at accelerator scale: the full-size
vintage CycleGAN generator and an online PatchGAN, 256 x 256 photo crops, every method
(collab, the ablations no_density / no_peer / g_only, the baselines magnitude_l1 and selfsup)
at G budgets of 1/10 and 1/21 (GAN Compression's 2.67 GMACs) of the teacher's MACs, a 500-step
D warm-up, 5000 search + 3000 fine-tune steps, global batch 32, quality on 1000 held-out crops
in FID-Inception feature space.

`batch_size` is global: it is split over every device of every process (the data-parallel
mesh of jaxgc.parallel.data_mesh) and must be a multiple of the device count. On a multi-host
pod run the same command on every host with `--distributed` (jax.distributed.initialize) and
the workdir on a file system every host sees: each process feeds its rows of every global
batch, process 0 writes the logs, models and report.

  JAXGC_ASSETS=/path/to/assets jaxgc collab --config configs/collab_cyclegan_vintage_pod.py \\
      --workdir runs/collab_cyclegan_vintage_pod [--distributed]
"""

from jaxgc.configs import collab_cyclegan_vintage


def get_config():
  """configs/collab_cyclegan_vintage.py, scaled up for an accelerator by the keys set here."""
  c = collab_cyclegan_vintage.get_config()
  c.d_warmup_steps = 500
  c.methods = ("collab", "no_density", "no_peer", "g_only", "magnitude_l1", "selfsup")
  c.budgets = (0.1, 0.047)
  c.search_steps = 5000
  c.finetune_steps = 3000
  c.batch_size = 32
  c.k = 8
  c.m = 2
  c.max_shift = 8
  c.data.size = 256
  c.eval_samples = 1000
  c.latency_batch = 8
  c.latency_repeats = 10
  c.checkpoint_every = 500
  c.metrics.nearest_k = 5
  return c
