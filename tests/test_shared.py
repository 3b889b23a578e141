"""The helpers every layer shares: jaxgc.parallel (batched apply and generation), jaxgc.report
(tables, model facts) and jaxgc.train.gan_losses (reconstruction terms)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgc import parallel
from jaxgc import report
from jaxgc.models import DCGANGenerator
from jaxgc.train import gan_losses


class _Counted(nn.Module):
  """A dense layer that counts how often it is traced (Python side effect)."""
  traces = [0]

  @nn.compact
  def __call__(self, x):
    _Counted.traces[0] += 1
    return nn.Dense(3)(x)


def test_generate_pads_to_one_shape_compiles_once_and_equals_apply():
  m = _Counted()
  x = np.random.default_rng(0).standard_normal((10, 5)).astype(np.float32)
  v1 = m.init(jax.random.key(0), x[:1])
  v2 = m.init(jax.random.key(1), x[:1])
  _Counted.traces[0] = 0
  y1 = parallel.generate(m, v1, x, batch_size=4)
  y2 = parallel.generate(m, v2, x, batch_size=4)
  # Batches of 4, 4 and 2 padded to 4: one shape, one trace for both calls (new variables of
  # the same shapes reuse the compilation).
  assert _Counted.traces[0] == 1
  assert y1.shape == (10, 3)
  # Each row is one Dense: float32 dot products of 5 terms, batched or not, agree to a few ulp.
  np.testing.assert_allclose(y1, np.asarray(m.apply(v1, x)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y2, np.asarray(m.apply(v2, x)), rtol=1e-6, atol=1e-6)


def test_batched_apply_without_variables_and_errors():
  x = np.arange(7, dtype=np.float32)[:, None]
  out = parallel.batched_apply(lambda b: b * 2, x, 3, progress=False)
  np.testing.assert_array_equal(out, x * 2)
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    parallel.batched_apply(lambda b: b, x, 0, progress=False)
  mesh = jax.make_mesh((1,), ("model",))
  with pytest.raises(ValueError, match="mesh must have a 'data' axis"):
    parallel.batched_apply(lambda b: b, x, 2, mesh=mesh, progress=False)


def test_pad_rows_put_round_up_and_axis_size():
  a = np.ones((3, 2), np.float32)
  p = parallel.pad_rows(a, 5)
  assert isinstance(p, np.ndarray) and p.shape == (5, 2) and p[3:].sum() == 0
  j = parallel.pad_rows(jnp.ones((3, 2)), 4)
  assert isinstance(j, jax.Array) and j.shape == (4, 2) and float(j[3].sum()) == 0
  assert parallel.pad_rows(a, 3) is a
  assert parallel.round_up(5, 4) == 8 and parallel.round_up(8, 4) == 8
  assert parallel.data_axis_size(None) == 1
  assert parallel.data_axis_size(parallel.data_mesh()) == jax.device_count()
  assert isinstance(parallel.put(a, None, None), jax.Array)


def test_table_and_fmt():
  lines = report.table(["model", "params"], [["a", report.fmt(1234, ",")],
                                             ["b", report.fmt(None, ",")]])
  assert lines == ["| model | params |", "|---|---:|", "| a | 1,234 |", "| b | - |"]
  assert report.fmt(None, "psnr") == "inf" and report.fmt(31.234, "psnr") == "31.23"
  with pytest.raises(ValueError, match="a table of 2 columns"):
    report.table(["a", "b"], [["only one"]])


def test_model_facts_of_a_small_dcgan():
  g = DCGANGenerator(features=(8, 4, 3), z_dim=4)
  z = np.zeros((2, 4), np.float32)
  v = g.init(jax.random.key(0), z)
  v = jax.tree.map(np.array, v)   # writable copies
  before = report.model_facts(g, v, z, latency_repeats=None)["nonzero_params"]
  v["params"]["convt_0"]["kernel"][...] = 0.0   # 512 random (nonzero) weights zeroed
  facts = report.model_facts(g, v, z, latency_repeats=1)
  n = sum(x.size for x in jax.tree.leaves(v["params"]))
  assert facts["params"] == n
  assert facts["nonzero_params"] == before - v["params"]["convt_0"]["kernel"].size
  assert facts["arch"] == "dcgan_generator" and facts["macs"] > 0 and facts["latency_s"] > 0
  assert facts["bytes"] == sum(np.asarray(x).nbytes for x in jax.tree.leaves(v))
  assert "latency_s" not in report.model_facts(g, v, z, latency_repeats=None)


def test_reconstruction_loss_l1_has_zero_gradient_where_equal_and_mse_by_hand():
  t = jnp.asarray([0.0, 1.0, -1.0, 0.5])
  out = jnp.asarray([0.0, 2.0, -1.5, 0.5])
  assert float(gan_losses.reconstruction_loss(out, t, "l1")) == pytest.approx(1.5 / 4)
  assert float(gan_losses.reconstruction_loss(out, t, "mse")) == pytest.approx(1.25 / 4)
  g = jax.grad(lambda o: gan_losses.reconstruction_loss(o, t, "l1"))(out)
  np.testing.assert_array_equal(np.asarray(g), [0.0, 0.25, -0.25, 0.0])   # PyTorch's L1Loss
  gt = jax.grad(lambda tt: gan_losses.reconstruction_loss(out, tt, "mse"))(t)
  np.testing.assert_array_equal(np.asarray(gt), 0.0)                      # targets are constant
  with pytest.raises(ValueError, match="the reconstruction loss must be one of"):
    gan_losses.reconstruction_loss(out, t, "huber")
  with pytest.raises(ValueError, match="the discriminator's GAN loss must be one of"):
    gan_losses.discriminator_loss(out, t, "non_saturating_prob")
