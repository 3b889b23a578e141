"""Subprocess body of tests/test_collab.py::test_sharded_collab_step_equals_single_device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``: three collaborative pruning
steps of a small MLP G/D pair on a mesh of 8 devices (batch sharded on 'data', state
replicated) must match the same steps on one device within 1e-5 (metrics and every trained
tree: G, D, both agents, the pair discriminator). Exits non-zero otherwise.
"""

import os

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), (
    "set XLA_FLAGS=--xla_force_host_platform_device_count=8 before running")

import jax  # noqa: E402  (after the environment check, on purpose)
import numpy as np  # noqa: E402

from jaxgc import train  # noqa: E402
import _collab_fixture as fx  # noqa: E402  (tests/ is the script's directory)


def run(mesh):
  mods, state, z, gv, dv, cfg = fx.tiny_pair()
  step = fx.step_fn(mods, cfg, mesh)
  state = train.replicate(state, mesh)
  gv_r, dv_r = train.replicate(gv, mesh), train.replicate(dv, mesh)
  history = []
  for i in range(3):
    state, m = step(state, train.shard_batch(z[i], mesh), gv_r, dv_r)
    history.append(jax.device_get(m))
  return jax.device_get((state.g.params, state.d.params, state.ga.params, state.da.params,
                         state.pair.params)), history


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  single, sharded = run(None), run(train.data_mesh())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), single[0],
               sharded[0])
  for m1, m2 in zip(single[1], sharded[1]):
    for k in m1:
      np.testing.assert_allclose(m1[k], m2[k], atol=1e-5, rtol=1e-5, err_msg=k)
  print("OK")


if __name__ == "__main__":
  main()
