"""jaxgc: compress pretrained GANs in JAX/Flax and measure honestly what compression costs.

Subpackages, bottom to top (every import points down; docs/ARCHITECTURE.md):
  jaxgc.models    Flax Linen GAN zoo (NHWC, variables as plain nested dicts).
  jaxgc.convert   PyTorch state_dict -> Flax variables, safe checkpoint loading.
  jaxgc.parallel  The 'data' mesh, sharding, jitted steps, batched apply and generation.
  jaxgc.data      Job inputs (photos, latents, assets), reference image sets, the grain pipeline.
  jaxgc.report    Report tables, image metrics, sample grids and plots shared by every job.
  jaxgc.compress  Pure pytree transforms: quantization, clipping, storage, pruning, slimming.
  jaxgc.eval      Feature extractors, FID/KID, k-NN and LSH precision/recall.
  jaxgc.train     Train states, losses and jitted steps (self-supervised, QAT, CRD).
  jaxgc.jobs      The jobs behind the ``jaxgc`` command line.
"""

from jaxgc import _aliases

__version__ = "0.2.0"

_aliases.install()
