"""Subprocess body of tests/test_gan.py::test_sharded_gan_step_equals_single_device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``. Three DCGAN steps (16x16, batch
16, BatchNorm on the global batch's statistics) on a mesh of 8 devices (batch sharded on 'data',
state replicated) must match the same steps on one device within 1e-5, running statistics
included; a batch of 12 is refused by the job's mesh check. Exits non-zero otherwise.
"""

import os

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), (
    "set XLA_FLAGS=--xla_force_host_platform_device_count=8 before running")

import jax  # noqa: E402  (after the environment check, on purpose)
import numpy as np  # noqa: E402

from jaxgc import parallel  # noqa: E402
from jaxgc.jobs import gan  # noqa: E402
from jaxgc.jobs import runs  # noqa: E402
from jaxgc.train import gan_step  # noqa: E402


def run(cfg, mesh, batches):
  g, d = gan.build_models(cfg)
  g_tx, d_tx = gan._optimizers(cfg)  # pylint: disable=protected-access
  g_vars, d_vars = gan._init(cfg, g, d)  # pylint: disable=protected-access
  state = parallel.replicate(gan_step.create_gan_state(g_vars, d_vars, g_tx, d_tx, ema=True),
                             mesh)
  step = gan_step.make_gan_step(g, d, gan._objective(cfg), g_tx, d_tx, mesh)  # pylint: disable=protected-access
  key = parallel.replicate(jax.random.key(0), mesh)
  history = []
  for x in batches:
    state, metrics = step(state, parallel.shard_batch(x, mesh), key)
    history.append(jax.device_get(metrics))
  return jax.device_get({"params": state.params, "frozen": state.frozen}), history


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  cfg = gan.resolve_config({"data": {"resolution": 16}, "model": {"g_width": 8, "d_width": 8,
                                                                  "z_dim": 8},
                            "batch_size": 16, "ema_decay": 0.9})
  rng = np.random.default_rng(0)
  batches = [rng.uniform(-1, 1, (16, 16, 16, 1)).astype(np.float32) for _ in range(3)]
  single = run(cfg, None, batches)
  sharded = run(cfg, runs.batch_mesh(16), batches)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), single[0],
               sharded[0])
  for m1, m2 in zip(single[1], sharded[1]):
    for k in m1:
      np.testing.assert_allclose(m1[k], m2[k], atol=1e-5, rtol=1e-5, err_msg=k)
  try:
    runs.batch_mesh(12)
  except ValueError as e:
    assert "batch_size 12 is not a multiple of the 8 devices" in str(e), e
  else:
    raise AssertionError("batch 12 on 8 devices was accepted")
  print("OK")


if __name__ == "__main__":
  main()
