"""Subprocess body of tests/test_train.py::test_sharded_selfsup_step_equals_single_device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``. Self-supervised compression
steps of (a) the MNIST MLP generator pruned 75% unstructured (fixed masks) with a frozen
discriminator, (b) the same under a polynomial pruning schedule, and (c) a slimmed ResNet
generator distilled from its unpruned teacher, each on a mesh of 8 devices (batch sharded on
'data', state replicated) must match the same steps on one device within 1e-5, and pruned
weights must stay exactly zero. Exits non-zero (an AssertionError) otherwise.
"""

import os
import sys

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), (
    "set XLA_FLAGS=--xla_force_host_platform_device_count=8 before running")

import jax  # noqa: E402  (after the environment check, on purpose)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxgc import models  # noqa: E402
from jaxgc import train  # noqa: E402
from jaxgc.compress import prune  # noqa: E402
from jaxgc.compress import slim  # noqa: E402

STEPS = 3
BATCH = 16


def run(mesh, student, params, frozen, tx, batches, teacher_mod, teacher_vars, disc, d_vars,
        cfg):
  state = train.replicate(train.create_train_state(params, tx, frozen), mesh)
  step = train.make_selfsup_step(student, cfg, disc, mesh, teacher=teacher_mod)
  teacher = train.replicate(teacher_vars, mesh)
  d = None if d_vars is None else train.replicate(d_vars, mesh)
  history = []
  for x in batches:
    state, metrics = step(state, train.shard_batch(x, mesh), teacher, d)
    history.append(jax.device_get(metrics))
  return jax.device_get(state.params), history


def check(name, single, sharded, start):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), single[0],
               sharded[0])
  for m1, m2 in zip(single[1], sharded[1]):
    for k in m1:
      np.testing.assert_allclose(m1[k], m2[k], atol=1e-5, rtol=1e-5, err_msg=f"{name}: {k}")
  changed = any(not np.array_equal(a, np.asarray(b)) for a, b in
                zip(jax.tree.leaves(single[0]), jax.tree.leaves(start)))
  assert changed, f"{name}: the steps did not change the parameters"


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  mesh = train.data_mesh()
  gen, disc = models.MLPGenerator(), models.MLPDiscriminator()
  g_vars = gen.init(jax.random.key(1), jnp.zeros((1, gen.z_dim)))
  d_vars = disc.init(jax.random.key(2), jnp.zeros((1, 28, 28, 1)))
  cfg = train.SelfSupConfig(adv_weight=0.1)
  z = [train.sample_latents(jax.random.key(0), s, BATCH, gen.z_dim) for s in range(STEPS)]

  # (a) fixed unstructured masks: the masks must survive every step on both layouts.
  pcfg = prune.PruneConfig(sparsity=0.75)
  masks = prune.compute_masks(g_vars["params"], pcfg)
  params = prune.apply_masks(g_vars["params"], masks)
  tx = optax.chain(optax.adam(1e-3), prune.keep_masks(masks))
  args = (params, {}, tx, z, gen, g_vars, disc, d_vars, cfg)
  single, sharded = run(None, gen, *args), run(mesh, gen, *args)
  check("fixed masks", single, sharded, params)
  for path, m in jax.tree_util.tree_leaves_with_path(masks):
    w = np.asarray(single[0]["dense_0"]["kernel"]) if "dense_0" in str(path) else None
    if w is not None:
      assert np.all(w[~np.asarray(m)] == 0), "a pruned weight moved"

  # (b) polynomial schedule inside the optimizer (masks recomputed under jit).
  pcfg = prune.PruneConfig(sparsity=0.5, schedule="polynomial", end_step=2, frequency=1)
  tx = optax.chain(optax.adam(1e-3), prune.pruning(pcfg))
  args = (g_vars["params"], {}, tx, z, gen, g_vars, disc, d_vars, cfg)
  check("polynomial", run(None, gen, *args), run(mesh, gen, *args), g_vars["params"])

  # (c) a slimmed image-to-image student distilled from its unpruned teacher.
  res = models.ResnetGenerator(ngf=8, n_blocks=2)
  r_vars = res.init(jax.random.key(3), jnp.zeros((1, 32, 32, 3)))
  small, small_vars = slim.slim(res, r_vars, slim.channel_masks(res, r_vars, 0.5))
  imgs = [np.random.default_rng(s).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
          for s in range(STEPS)]
  # SGD, not Adam: a conv bias feeding an InstanceNorm has a gradient of ~1e-9 rounding noise,
  # which Adam's normalisation would blow up to +-lr steps whose signs depend on summation order.
  args = (small_vars["params"], {}, optax.sgd(0.1), imgs, res, r_vars, None, None,
          train.SelfSupConfig())
  check("slimmed", run(None, small, *args), run(mesh, small, *args), small_vars["params"])
  print("OK")


if __name__ == "__main__":
  main()
  sys.exit(0)
