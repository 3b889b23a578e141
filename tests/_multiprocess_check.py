"""Subprocess body of tests/test_multiprocess.py: one of 2 local processes with 2 CPU devices each.

Run as ``python _multiprocess_check.py PROCESS_ID PORT``: joins ``jax.distributed.initialize`` on
127.0.0.1:PORT (gloo CPU collectives), builds the 4-device ``'data'`` mesh spanning both
processes, and checks that results computed from this process's half of the data equal the same
computation done here on one device holding everything. Prints ``OK`` and exits 0, else raises.
"""

import os
import sys

PROCESS_ID, PORT = int(sys.argv[1]), sys.argv[2]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402  (after the environment, on purpose)

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{PORT}", num_processes=2, process_id=PROCESS_ID)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxgc import parallel  # noqa: E402
from jaxgc import train  # noqa: E402
from jaxgc.eval import lsh  # noqa: E402
from jaxgc.eval import metrics  # noqa: E402
from jaxgc.models.patchgan import PatchGANDiscriminator  # noqa: E402
from jaxgc.models.resnet import SubMobileResnetGenerator  # noqa: E402
from jaxgc.train import crd_step as distill  # noqa: E402
from jaxgc.train import feature_nets as features  # noqa: E402

TOL = 1e-5


class distill_check:  # pylint: disable=invalid-name
  """The tiny teacher, student and PatchGAN of tests/_sharded_distill_check.py."""
  BATCH, SIZE, PATCH, LR = 8, 32, 8, 0.01
  TEACHER = SubMobileResnetGenerator(stem=8, down=(8, 16), hidden=(8, 8), up=(8, 8))
  STUDENT = SubMobileResnetGenerator(stem=4, down=(4, 8), hidden=(4, 4), up=(4, 4))
  DISC = PatchGANDiscriminator(ndf=8, n_layers=3, norm="instance", image_size=SIZE)

  @staticmethod
  def init(module, seed):
    """Variables filled in numpy (LeCun-normal kernels, small random biases)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(
        (1, distill_check.SIZE, distill_check.SIZE, 3), jnp.float32))
    rng = np.random.default_rng(seed)

    def fill(path, s):
      if "kernel" in jax.tree_util.keystr(path):
        return rng.normal(0, np.sqrt(1.0 / np.prod(s.shape[:-1])), s.shape).astype(np.float32)
      return rng.normal(0, 0.1, s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def local_half(x: np.ndarray) -> np.ndarray:
  n = x.shape[0] // jax.process_count()
  return x[PROCESS_ID * n:(PROCESS_ID + 1) * n]


def check_distill_step(mesh) -> None:
  """One CRD distillation step: this process feeds its half of the batch (rows
  ``k * b .. (k + 1) * b``); parameters and metrics equal one device's step on the whole batch."""
  t_vars = distill_check.init(distill_check.TEACHER, 0)
  s_vars = distill_check.init(distill_check.STUDENT, 1)
  d_vars = distill_check.init(distill_check.DISC, 2)
  rng = np.random.default_rng(3)
  batch = {"A": rng.uniform(-1, 1, (distill_check.BATCH, distill_check.SIZE,
                                    distill_check.SIZE, 3)).astype(np.float32)}
  cfg = distill.DistillConfig(patch_size=distill_check.PATCH, recon_weight=1.0,
                              adv_weight=1.0, disc_real="teacher", num_anchors=4, seed=5)
  fn = features.teacher_encoder(distill_check.TEACHER, t_vars)

  def one_step(m, b):
    state = train.replicate(distill.create_distill_state(s_vars, d_vars,
                                                         optax.sgd(distill_check.LR)), m)
    step = distill.make_distill_step(distill_check.STUDENT, distill_check.TEACHER, cfg,
                                     distill_check.DISC, fn, m)
    state, metrics = step(state, train.shard_batch(b, m), train.replicate(t_vars, m),
                          train.replicate(fn.variables, m))
    return jax.device_get(state.params), {k: float(v) for k, v in
                                          jax.device_get(metrics).items()}

  single = one_step(None, batch)
  multi = one_step(mesh, {"A": local_half(batch["A"])})
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(single[0]),
                          jax.tree.leaves(multi[0])):
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0, err_msg=jax.tree_util.keystr(path))
  for k in single[1]:
    np.testing.assert_allclose(single[1][k], multi[1][k], atol=TOL, rtol=TOL, err_msg=k)
  print(f"process {PROCESS_ID}: distill step crd={multi[1]['crd']:.6f} "
        f"d_loss={multi[1]['d_loss']:.6f} equal to one device")


def check_metrics(mesh) -> None:
  """FID statistics, exact k-NN precision/recall/density/coverage and LSH precision/recall:
  each process holds its half of small random features (sizes not multiples of 4, so padding
  and masking are exercised); gathered and measured on the 4-device mesh they equal the numbers
  one device computes from all the features."""
  rng = np.random.default_rng(0)
  real = rng.standard_normal((602, 12)).astype(np.float32)
  fake = (0.3 + 1.2 * rng.standard_normal((514, 12))).astype(np.float32)
  r, f = parallel.gather_rows(local_half(real)), parallel.gather_rows(local_half(fake))
  np.testing.assert_array_equal(r, real)
  mu, sigma = metrics.feature_statistics(real)
  mu_m, sigma_m = metrics.feature_statistics(r, mesh=mesh)
  np.testing.assert_allclose(mu_m, mu, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(sigma_m, sigma, rtol=1e-12, atol=1e-14)
  fid, fid_m = metrics.fid(real, fake), metrics.fid(r, f, mesh=mesh)
  assert abs(fid - fid_m) <= 1e-9 * max(1.0, abs(fid)), (fid, fid_m)
  exact, exact_m = metrics.prdc(real, fake, nearest_k=5), metrics.prdc(r, f, nearest_k=5,
                                                                      mesh=mesh)
  assert exact == exact_m, (exact, exact_m)
  assert 0.2 < exact["precision"] < 1 and 0.2 < exact["recall"] < 1, exact
  for method in lsh.METHODS:
    kw = dict(method=method, block_size=256, num_tables=8, max_candidates=64)
    single, multi = lsh.lsh_precision_recall(real, fake, **kw), lsh.lsh_precision_recall(
        r, f, mesh=mesh, **kw)
    assert single.keys() == multi.keys() and all(
        single[k] == multi[k] or (np.isnan(single[k]) and np.isnan(multi[k])) for k in single), (
            method, single, multi)
    print(f"process {PROCESS_ID}: lsh[{method}] {multi}")
  print(f"process {PROCESS_ID}: fid={fid_m:.9f} prdc={exact_m} equal to one device")


def check_global_batch_on_interleaved_mesh() -> None:
  """``parallel.shard_global_batch`` places a batch every process holds whole on a mesh whose
  devices alternate between the processes (as some TPU topologies order them): the global
  array is the batch, row for row, and each device holds its own slot's rows."""
  by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(2)]
  order = [by_process[i % 2][i // 2] for i in range(4)]   # p0, p1, p0, p1
  mesh = jax.sharding.Mesh(np.array(order), ("data",))
  x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  placed = parallel.shard_global_batch({"x": x}, mesh)["x"]
  np.testing.assert_array_equal(parallel.to_host(placed), x)
  for shard in placed.addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
    slot = order.index(shard.device)
    assert shard.index[0] == slice(2 * slot, 2 * slot + 2), (shard.index, slot)
  print(f"process {PROCESS_ID}: global batch on an interleaved mesh equal to one device")


def main() -> None:
  assert jax.process_count() == 2 and len(jax.local_devices()) == 2, jax.devices()
  mesh = train.data_mesh()
  assert mesh.shape["data"] == 4
  check_global_batch_on_interleaved_mesh()
  check_metrics(mesh)
  check_distill_step(mesh)
  print("OK")


if __name__ == "__main__":
  main()
  sys.exit(0)
