"""Collaborative G/D pruning (jaxgc.train.collab_step): the sharded step, the hardened and
slimmed pair, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _collab_fixture as fx
from conftest import run_on_fake_devices
from jaxgc import models
from jaxgc.compress import slim as slim_lib
from jaxgc.train import agents
from jaxgc.train import collab_step as cs


def test_sharded_collab_step_equals_single_device():
  run_on_fake_devices("_sharded_collab_check.py")


def test_steps_train_everything_and_slimmed_pair_equals_gated():
  mods, state, z, gv, dv, cfg = fx.tiny_pair()
  step = fx.step_fn(mods, cfg)
  start = jax.device_get((state.g.params, state.ga.params, state.da.params, state.pair.params))
  for i in range(3):
    state, m = step(state, z[i], gv, dv)
    assert all(np.isfinite(float(v)) for v in m.values()), m
  assert float(m["density"]) > 0 and 0 < float(m["g_ratio"]) <= 1
  after = jax.device_get((state.g.params, state.ga.params, state.da.params, state.pair.params))
  for a, b in zip(start, after):   # G, both agents and the pair discriminator all moved
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  g_vars = {"params": state.g.params}
  d_vars = {"params": state.d.params}
  g_masks, d_masks, g_keep, d_keep = cs.final_masks(mods, state, cfg, g_vars, d_vars)
  for spec, keep, target in ((mods.g_spec, g_keep, cfg.g_budget),
                             (mods.d_spec, d_keep, cfg.d_target)):
    ratio = float(agents.expected_macs(spec, [jnp.asarray(k, jnp.float32) for k in keep]))
    assert abs(ratio / spec.total_macs / target - 1) <= 0.05, (ratio / spec.total_macs, target)
  for module, variables, masks, spec, keep, x in (
      (mods.generator, g_vars, g_masks, mods.g_spec, g_keep, z[0]),
      (mods.discriminator, d_vars, d_masks, mods.d_spec, d_keep,
       mods.generator.apply(g_vars, z[0]))):
    small, small_v = slim_lib.slim(module, variables, masks)
    gated = module.apply(agents.apply_gates(spec, variables,
                                            [jnp.asarray(k, jnp.float32) for k in keep]), x)
    np.testing.assert_allclose(small.apply(small_v, x), gated, atol=1e-5)


def test_bad_input_is_one_line():
  mods, _, z, gv, dv, cfg = fx.tiny_pair()
  cases = [
      (lambda: cs.CollabConfig(g_budget=1.5), "g_budget must be a MACs fraction in (0, 1]"),
      (lambda: cs.CollabConfig(d_budget=0.0), "d_budget must be a MACs fraction"),
      (lambda: cs.build_models(mods.generator, gv, None, None, z[0], cfg),
       "needs a discriminator"),
      (lambda: cs.build_models(mods.generator, gv, mods.discriminator, dv, z[0],
                               cs.CollabConfig(k=16)), "neighbours k must be an int in [1, batch=16)"),
      (lambda: cs.build_models(mods.generator, gv, mods.discriminator, dv, z[0],
                               cs.CollabConfig(m=16)), "perturbed copies M"),
  ]
  lenet = models.LeNet5()
  x = models.example_input(lenet)
  cases.append((lambda: cs.build_models(mods.generator, gv, lenet,
                                        jax.eval_shape(lenet.init, jax.random.key(0), x),
                                        z[0], cfg), "LeNet5 cannot be gated"))
  for fn, needle in cases:
    with pytest.raises(ValueError) as e:
      fn()
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
