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
