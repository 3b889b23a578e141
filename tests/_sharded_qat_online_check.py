"""Subprocess body of tests/test_qat.py::test_sharded_online_qat_equals_single_device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``. Two steps of image-to-image QAT
(a tiny ResNet generator, 4-bit weights, 16x16 crops, an online PatchGAN; the step of
``jaxgc qat`` with ``online_discriminator=True``) on a mesh of 8 devices (batch 8 sharded on
'data', state replicated) must match two steps on one device within 1e-5 (SGD: Adam's first
steps would blow float noise in near-zero gradients up to a full learning rate).
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
from jaxgc import parallel  # noqa: E402
from jaxgc.jobs import qat  # noqa: E402

STEPS = 2


def run(mesh, cfg, gen, g_vars):
  qcfg = qat.loss_config(cfg)
  # pylint: disable=protected-access
  state, make_step = qat._online_setup(cfg, qcfg, gen, g_vars, optax.sgd(0.05))
  state, teacher = parallel.replicate(state, mesh), parallel.replicate(g_vars, mesh)
  step = make_step(mesh)
  batch = qat._batch_fn(cfg, gen, mesh, True)
  history = []
  for s in range(STEPS):
    state, metrics = step(state, batch(s), teacher, None)
    history.append(jax.device_get(metrics))
  return jax.device_get(state.params), history


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  gen = models.build("resnet_generator", ngf=4, n_blocks=1)
  g_vars = jax.jit(gen.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  cfg = qat.resolve_config({"generator": "g", "weight_bits": 4, "batch_size": 8,
                            "adv_weight": 0.1, "online_discriminator": True, "disc_ndf": 8,
                            "disc_layers": 1, "inputs": {"crop_size": 16}})
  single = run(None, cfg, gen, g_vars)
  sharded = run(parallel.data_mesh(), cfg, gen, g_vars)
  jax.tree_util.tree_map_with_path(
      lambda p, a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0,
                                                 err_msg=jax.tree_util.keystr(p)),
      single[0], sharded[0])
  for m1, m2 in zip(single[1], sharded[1]):
    for k in m1:
      np.testing.assert_allclose(m1[k], m2[k], atol=1e-5, rtol=1e-5, err_msg=k)
  assert single[1][-1]["d_loss"] > 0
  print("OK", single[1][-1])


if __name__ == "__main__":
  main()
  sys.exit(0)
