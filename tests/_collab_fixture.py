"""A tiny MLP G/D pair and its collaborative pruning state, shared by tests/test_collab.py and
its 8-device subprocess check."""

import jax
import jax.numpy as jnp
import optax

from jaxgc import models
from jaxgc.train import collab_step as cs

BATCH = 16


def tiny_pair(**overrides):
  """``(models, state, [3 latent batches], g_vars, d_vars, config)``."""
  g = models.MLPGenerator(z_dim=8, hidden=(16, 32))
  d = models.MLPDiscriminator(hidden=(32, 16))
  z = [jax.random.normal(jax.random.key(i), (BATCH, 8)) for i in range(3)]
  gv = g.init(jax.random.key(10), z[0])
  dv = d.init(jax.random.key(11), jnp.zeros((1, 28, 28, 1)))
  cfg = cs.CollabConfig(**{"g_budget": 0.5, "k": 3, "m": 2, **overrides})
  mods = cs.build_models(g, gv, d, dv, z[0], cfg, agent_dim=8, pair_hidden=(16,))
  state = cs.create_collab_state(mods, gv, dv, jax.random.key(3), optax.adam(1e-3),
                                 optax.adam(1e-3), optax.adam(1e-2), 16)
  return mods, state, z, gv, dv, cfg


def step_fn(mods, cfg, mesh=None):
  return cs.make_collab_step(mods, cfg, mesh)


IMAGE_SIZE = 16


def tiny_image_pair(conditional=False, **overrides):
  """A tiny ResNet generator and a 2-layer PatchGAN on 16 x 16 images (uniform in [-1, 1]),
  the PatchGAN reading the input and output concatenated when ``conditional`` (pix2pix):
  ``(models, state, [2 image batches], g_vars, d_vars, config)``."""
  from jaxgc.models import layers  # pylint: disable=import-outside-toplevel
  from jaxgc.models.patchgan import PatchGANDiscriminator  # pylint: disable=import-outside-toplevel
  g = models.ResnetGenerator(ngf=8, n_blocks=1)
  d = PatchGANDiscriminator(input_nc=6 if conditional else 3, ndf=8, n_layers=2,
                            norm="instance", image_size=IMAGE_SIZE)
  x = [jax.random.uniform(jax.random.key(20 + s), (8, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32,
                          -1, 1) for s in range(2)]
  gv = layers.normal_init(g, x[0], seed=1, gain=0.2)
  cfg = cs.CollabConfig(**{"g_budget": 0.5, "k": 3, "m": 1, "sigma": 0.05,
                           "d_outputs": "logits", "feature_layer": "conv_3",
                           "conditional": conditional, **overrides})
  dv = layers.normal_init(d, cs.d_input(cfg, x[0], x[0]), seed=2)
  mods = cs.build_models(g, gv, d, dv, x[0], cfg, agent_dim=8, pair_hidden=(16,))
  feat = jax.eval_shape(cs.feature_fn(mods, cfg), dv, x[0], x[0])
  state = cs.create_collab_state(mods, gv, dv, jax.random.key(3), optax.adam(1e-3),
                                 optax.adam(1e-3), optax.adam(1e-2), int(feat.shape[-1]))
  return mods, state, x, gv, dv, cfg
