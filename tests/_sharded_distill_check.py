"""Subprocess body of tests/test_distill.py::test_sharded_distill_step_equals_single_device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``. Three CRD distillation steps
of a tiny sub-mobile student against its teacher, on a mesh of 8 devices (batch of 8 sharded on
'data' with ``jaxgc.train.shard_batch``, state, teacher and feature variables replicated with
``jaxgc.train.replicate``), must match the same steps on one device: parameters within 1e-5
absolute, metrics within 1e-5 relative (or 1e-5 absolute near 0). One configuration with
every term: CRD with ``num_anchors=4`` random angle vertices (drawn from the config's seed and the
step: the same global draw on 1 and 8 devices; step 1's CRD must equal ``crd_loss`` with the key
``fold_in(key(seed), 0)``) + L1 reconstruction + perceptual and style terms under the teacher's
encoder + the LSGAN term of an online PatchGAN trained on teacher vs student outputs.

SGD, not Adam: a conv bias feeding an instance norm has a gradient of ~1e-9 rounding noise,
which Adam's normalisation would turn into +-lr steps whose signs depend on summation order.
Learning rate 0.01: at 0.05 the GAN game already diverges in 3 steps (loss ~90) and its chaos
amplifies the 1e-7 differences of the two reduction orders to 1e-3.
Exits non-zero (an AssertionError) otherwise.
"""

import os
import sys

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), (
    "set XLA_FLAGS=--xla_force_host_platform_device_count=8 before running")

import jax  # noqa: E402  (after the environment check, on purpose)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxgc import train  # noqa: E402
from jaxgc.models.patchgan import PatchGANDiscriminator  # noqa: E402
from jaxgc.models.resnet import SubMobileResnetGenerator  # noqa: E402
from jaxgc.train import crd_losses as crd_lib  # noqa: E402
from jaxgc.train import crd_step as distill  # noqa: E402
from jaxgc.train import feature_nets as features  # noqa: E402

STEPS, BATCH, SIZE, PATCH = 3, 8, 32, 8
TOL = 1e-5
LR = 0.01
TEACHER = SubMobileResnetGenerator(stem=8, down=(8, 16), hidden=(8, 8), up=(8, 8))
STUDENT = SubMobileResnetGenerator(stem=4, down=(4, 8), hidden=(4, 4), up=(4, 4))
DISC = PatchGANDiscriminator(ndf=8, n_layers=3, norm="instance", image_size=SIZE)


def init(module, seed):
  """Variables filled in numpy (LeCun-normal kernels, small random biases): no XLA compile."""
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      return rng.normal(0, np.sqrt(1.0 / np.prod(s.shape[:-1])), s.shape).astype(np.float32)
    return rng.normal(0, 0.1, s.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def run(mesh, cfg, disc, d_vars, feature_net, s_vars, t_vars, batches):
  state = train.replicate(distill.create_distill_state(s_vars, d_vars, optax.sgd(LR)), mesh)
  step = distill.make_distill_step(STUDENT, TEACHER, cfg, disc, feature_net, mesh)
  teacher = train.replicate(t_vars, mesh)
  feats = None if feature_net is None else train.replicate(feature_net.variables, mesh)
  history = []
  for b in batches:
    sharded = train.shard_batch(b, mesh)
    if mesh is not None:
      assert sharded["A"].sharding.spec == jax.sharding.PartitionSpec("data")
    state, metrics = step(state, sharded, teacher, feats)
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  if mesh is not None:
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params))
  assert int(jax.device_get(state.step)) == STEPS
  return jax.device_get(state.params), history


def check(name, single, sharded, start):
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(single[0]),
                          jax.tree.leaves(sharded[0])):
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0,
                               err_msg=f"{name}: {jax.tree_util.keystr(path)}")
  for s, (m1, m2) in enumerate(zip(single[1], sharded[1])):
    assert m1.keys() == m2.keys()
    for k in m1:
      np.testing.assert_allclose(m1[k], m2[k], atol=TOL, rtol=TOL,
                                 err_msg=f"{name}: {k} at step {s + 1}")
  moved = [not np.array_equal(a, np.asarray(b)) for a, b in
           zip(jax.tree.leaves(single[0]["generator"]), jax.tree.leaves(start))]
  assert any(moved), f"{name}: the steps did not change the student"


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  mesh = train.data_mesh()
  assert mesh.shape["data"] == 8
  t_vars, s_vars, d_vars = init(TEACHER, 0), init(STUDENT, 1), init(DISC, 2)
  rng = np.random.default_rng(3)
  batches = [{"A": rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)}
             for _ in range(STEPS)]

  # Every term at once, the discriminator trained on teacher vs student outputs, and random
  # angle anchors drawn from the seed and the step.
  cfg = distill.DistillConfig(patch_size=PATCH, recon_weight=1.0, perceptual_weight=1.0,
                              style_weight=1.0, adv_weight=1.0, disc_real="teacher",
                              num_anchors=4, seed=5)
  fn = features.teacher_encoder(TEACHER, t_vars)
  args = (cfg, DISC, d_vars, fn, s_vars, t_vars, batches)
  single, sharded = run(None, *args), run(mesh, *args)
  check("all terms", single, sharded, s_vars["params"])
  for k in ("crd", "recon", "perceptual", "style", "adv", "d_loss", "d_grad_norm"):
    assert single[1][0][k] > 0, (k, single[1][0])
  # Every D kernel moved (the biases before an instance norm have no gradient to speak of).
  for name, layer in d_vars["params"].items():
    assert not np.array_equal(single[0]["discriminator"][name]["kernel"], layer["kernel"]), name

  x = jnp.asarray(batches[0]["A"])
  s_out, t_out = jax.jit(STUDENT.apply)(s_vars, x), jax.jit(TEACHER.apply)(t_vars, x)
  crd = lambda key: float(crd_lib.crd_loss(s_out, t_out, patch_size=PATCH,  # noqa: E731
                                           num_anchors=4, key=key)[0])
  step1 = crd(jax.random.fold_in(jax.random.key(5), 0))
  np.testing.assert_allclose(single[1][0]["crd"], step1, rtol=TOL)
  exact = float(crd_lib.crd_loss(s_out, t_out, patch_size=PATCH)[0])
  other = crd(jax.random.fold_in(jax.random.key(5), 1))
  # The anchors matter (4 of 8..32 vertices): another draw or the exact term differ clearly.
  assert abs(step1 - exact) > 1e-3 * exact and abs(step1 - other) > 1e-3 * exact, (
      step1, exact, other)
  print("OK")


if __name__ == "__main__":
  main()
  sys.exit(0)
