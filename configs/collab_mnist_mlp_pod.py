"""The full grid of configs/collab_mnist_mlp.py at accelerator scale: every method (collab, the
ablations no_density / no_peer / g_only, and the baselines magnitude_l1 and selfsup) at G
budgets of 50%, 25%, 10% and 5%, with 10x the steps, a 4x batch (neighbourhoods over 256
samples) and 10k-sample quality metrics.

`batch_size` is global: it is split over every device of every process (the data-parallel
mesh of jaxgc.parallel.data_mesh) and must be a multiple of the device count. On a multi-host
pod run the same command on every host with `--distributed` (jax.distributed.initialize) and
the workdir on a file system every host sees: each process feeds its rows of every global
batch, process 0 writes the logs, models and report.

  JAXGC_ASSETS=/path/to/assets jaxgc collab --config configs/collab_mnist_mlp_pod.py \\
      --workdir runs/collab_mnist_mlp_pod [--distributed]
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.generator = "mnist-mlpgan/G--300.ckpt"
  c.discriminator = "mnist-mlpgan/D--300.ckpt"
  c.methods = ("collab", "no_density", "no_peer", "g_only", "magnitude_l1", "selfsup")
  c.sigma = 0.3
  c.feature_layer = "dense_2"
  c.d_outputs = "prob"
  c.learning_rate = 3e-4
  c.agent_learning_rate = 1e-2
  c.metrics = ml_collections.ConfigDict()
  c.metrics.extractor = "lenet5"
  c.metrics.nearest_k = 5
  c.seed = 0
  c.budgets = (0.5, 0.25, 0.1, 0.05)
  c.search_steps = 2000
  c.finetune_steps = 1000
  c.batch_size = 256
  c.k = 8
  c.m = 4
  c.checkpoint_every = 500
  c.eval_samples = 10000
  c.metrics.num_samples = 10000
  return c
