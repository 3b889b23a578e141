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

from jaxgc.configs import collab_mnist_mlp


def get_config():
  """configs/collab_mnist_mlp.py, scaled up for an accelerator by the keys set here."""
  c = collab_mnist_mlp.get_config()
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
