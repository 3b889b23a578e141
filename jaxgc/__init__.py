"""jaxgc: compress pretrained GANs in JAX/Flax and measure honestly what compression costs.

Subpackages:
  jaxgc.models    Flax Linen GAN zoo (NHWC, variables as plain nested dicts).
  jaxgc.convert   PyTorch state_dict -> Flax variables, safe checkpoint loading.
  jaxgc.compress  Pure pytree transforms: fake quantization, clipping, low-bit storage.
"""

__version__ = "0.1.0"
