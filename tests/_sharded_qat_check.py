"""Subprocess body of tests/test_qat.py::test_sharded_step_equals_single_device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` in the environment: the flag must
be set before JAX is imported, which is why this runs in its own interpreter. Three QAT steps on
a mesh of 8 devices (batch 16 sharded on 'data', state replicated) must match three steps on one
device within 1e-5. Exits non-zero (an AssertionError) otherwise.
"""

import os
import sys

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), (
    "set XLA_FLAGS=--xla_force_host_platform_device_count=8 before running")

import jax  # noqa: E402  (after the environment check, on purpose)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxgc import compress  # noqa: E402
from jaxgc import models  # noqa: E402
from jaxgc import train  # noqa: E402

STEPS = 3
BATCH = 16


def run(mesh, gen, disc, g_vars, d_vars, cfg):
  state = train.replicate(train.create_train_state(g_vars["params"], optax.adam(1e-3)), mesh)
  step = train.make_train_step(gen, cfg, disc, mesh)
  teacher, d = train.replicate(g_vars, mesh), train.replicate(d_vars, mesh)
  key = jax.random.key(0)
  history = []
  for s in range(STEPS):
    z = train.shard_batch(train.sample_latents(key, s, BATCH, gen.z_dim), mesh)
    state, metrics = step(state, z, teacher, d)
    history.append(jax.device_get(metrics))
  if mesh is not None:
    assert state.params["dense_0"]["kernel"].sharding.is_fully_replicated
    assert len(state.params["dense_0"]["kernel"].sharding.device_set) == 8
  return jax.device_get(state.params), history


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  gen, disc = models.MLPGenerator(), models.MLPDiscriminator()
  g_vars = gen.init(jax.random.key(1), jnp.zeros((1, gen.z_dim)))
  d_vars = disc.init(jax.random.key(2), jnp.zeros((1, 28, 28, 1)))
  cfg = train.QATConfig(compress.QuantConfig(4), adv_weight=0.1)
  mesh = train.data_mesh()
  assert mesh.shape["data"] == 8
  single = run(None, gen, disc, g_vars, d_vars, cfg)
  sharded = run(mesh, gen, disc, g_vars, d_vars, cfg)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), single[0],
               sharded[0])
  for m1, m2 in zip(single[1], sharded[1]):
    for k in m1:
      np.testing.assert_allclose(m1[k], m2[k], atol=1e-5, rtol=1e-5, err_msg=k)
  changed = any(not np.array_equal(a, np.asarray(b)) for a, b in
                zip(jax.tree.leaves(single[0]), jax.tree.leaves(g_vars["params"])))
  assert changed, "the steps did not change the parameters"
  print("OK", single[1][-1])


if __name__ == "__main__":
  main()
  sys.exit(0)
