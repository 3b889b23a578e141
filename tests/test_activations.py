"""Activation fake quantization (interception, calibration, STE) and per-layer precision rules."""

import os
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgc.compress import activations as A
from jaxgc.compress import quantize
from jaxgc.compress import rules as R
from jaxgc.models import DCGANGenerator
from jaxgc.models import MLPGenerator
from jaxgc.models import SubMobileResnetGenerator
from jaxgc.models import layers


class TwoDense(nn.Module):
  """``dense_1(relu(dense_0(x)))``: a tiny model whose first layer input is the data itself."""

  @nn.compact
  def __call__(self, x):
    return layers.dense(3, name="dense_1")(nn.relu(layers.dense(5, name="dense_0")(x)))


class FlaxConvT(nn.Module):
  """Covers Flax's own nn.ConvTranspose next to nn.Conv."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), name="conv")(x)
    return nn.ConvTranspose(2, (3, 3), strides=(2, 2), name="convt")(x)


def _init(module, x, seed=0):
  return module.init(jax.random.key(seed), x)


def _mlp():
  m = MLPGenerator(z_dim=8, hidden=(16, 16), image_shape=(4, 4, 1))
  z = jax.random.normal(jax.random.key(1), (8, 8))
  return m, _init(m, z), z


DYN8 = A.ActQuantConfig(8, mode="dynamic")


# ---------------------------------------------------------------- interception reaches every layer


@pytest.mark.parametrize("name", ["mlp_g", "dcgan_g", "sub_mobile_h2z", "flax_convt"])
def test_interception_reaches_every_kernel(name):
  if name == "mlp_g":
    m, x = MLPGenerator(z_dim=8, hidden=(16, 16)), jnp.ones((2, 8))
  elif name == "dcgan_g":
    m, x = DCGANGenerator(features=(16, 8, 3), z_dim=8), jnp.ones((2, 8))
  elif name == "sub_mobile_h2z":  # the released horse->zebra widths, small images
    m, x = SubMobileResnetGenerator(), jnp.full((1, 16, 16, 3), 0.5)
  else:
    m, x = FlaxConvT(), jnp.ones((1, 6, 6, 3))
  # Everything abstract (no FLOPs): sites are recorded when the model is traced.
  v = jax.eval_shape(m.init, jax.random.key(0), x)
  kernels = R.layer_paths(v)

  sites = []

  def run(v, x):
    with A.quantized_activations(DYN8) as s:
      y = m.apply(v, x)
    sites.extend(s)
    return y

  y = jax.eval_shape(run, v, x)
  assert y.shape[0] == x.shape[0]
  assert len(sites) == len(kernels)
  assert sorted(sites) == sorted(kernels)
  assert A.execution_order(m, v, x) == sites  # each layer called once, in this order


def test_include_exclude_select_layers_by_module_path():
  m, x = SubMobileResnetGenerator(), jnp.full((1, 16, 16, 3), 0.5)
  v = jax.eval_shape(m.init, jax.random.key(0), x)

  def sites_of(**kw):
    got = []

    def run(v, x):
      with A.quantized_activations(DYN8, **kw) as sites:
        y = m.apply(v, x)
      got.extend(sites)
      return y

    jax.eval_shape(run, v, x)
    return got

  assert sites_of(include=r"block_0/sep_0/depthwise") == ["block_0/sep_0/depthwise"]
  sites = sites_of(include=r"^block_", exclude=r"pointwise")
  assert len(sites) == 9 * 2 and all(s.endswith("depthwise") for s in sites)
  with pytest.raises(ValueError, match="select no layer"):
    jax.eval_shape(lambda v, x: A.apply_quantized(m, v, x, DYN8, include="no_such_layer"), v, x)


# ---------------------------------------------------------------- precision vs bits


def test_error_is_monotone_in_bits():
  m, v, z = _mlp()
  ref = m.apply(v, z)
  calib = A.calibrate(m, v, [z])
  errs = {}
  for bits in (2, 4, 8, 16):
    for mode in ("static", "dynamic"):
      cfg = A.ActQuantConfig(bits, mode=mode)
      y = A.apply_quantized(m, v, z, cfg, calib if mode == "static" else None)
      errs[bits, mode] = float(jnp.max(jnp.abs(y - ref)))
  for mode in ("static", "dynamic"):
    e = [errs[b, mode] for b in (2, 4, 8, 16)]
    assert e == sorted(e, reverse=True) and e[0] > e[1] > e[2] > e[3], (mode, e)
    assert e[3] < 1e-3  # 16 bits ~ FP32
    assert e[2] < 2e-2  # 8 bits close
    assert e[0] > 10 * e[2]  # 2 bits much worse


# ---------------------------------------------------------------- calibration methods


def _tiny():
  m = TwoDense()
  batches = [jax.random.normal(jax.random.key(i), (16, 4)) * (i + 1) for i in range(3)]
  return m, _init(m, batches[0]), batches


def _hidden(m, v, x):
  """The input of dense_1, computed by intercepting dense_1 itself."""
  got = []

  def grab(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.name == "dense_1":
      got.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    m.apply(v, x)
  return np.asarray(got[0])


def test_minmax_is_the_true_min_max_over_batches():
  m, v, batches = _tiny()
  calib = A.calibrate(m, v, iter(batches), method="minmax")  # a generator works too
  assert list(calib) == ["dense_0", "dense_1"]
  allx = np.concatenate([np.asarray(b) for b in batches])
  assert calib["dense_0"]["min"] == allx.min() and calib["dense_0"]["max"] == allx.max()
  assert calib["dense_0"]["min"].dtype == np.float32 and calib["dense_0"]["min"].shape == ()
  h = np.concatenate([_hidden(m, v, b) for b in batches])
  np.testing.assert_allclose(calib["dense_1"]["max"], h.max(), rtol=1e-6)
  assert calib["dense_1"]["min"] == 0.0  # after ReLU


def test_percentile_inside_minmax_and_equal_to_batch_average():
  m, v, batches = _tiny()
  mm = A.calibrate(m, v, batches, method="minmax")
  pc = A.calibrate(m, v, batches, method="percentile", percentile=99.0)
  for layer in mm:
    assert pc[layer]["min"] >= mm[layer]["min"] and pc[layer]["max"] <= mm[layer]["max"]
  want_hi = np.mean([np.percentile(np.asarray(b), 99.0) for b in batches])
  want_lo = np.mean([np.percentile(np.asarray(b), 1.0) for b in batches])
  np.testing.assert_allclose(pc["dense_0"]["max"], want_hi, rtol=1e-5)
  np.testing.assert_allclose(pc["dense_0"]["min"], want_lo, rtol=1e-5)


def test_mse_range_inside_minmax_and_lower_error_on_heavy_tails():
  m = TwoDense()
  rng = np.random.default_rng(0)
  # Laplace: heavier tails than a Gaussian; the extremes waste most 4-bit codes.
  batches = [rng.laplace(size=(64, 4)).astype(np.float32) for _ in range(3)]
  v = _init(m, jnp.asarray(batches[0]))
  cfg = A.ActQuantConfig(4)
  mm = A.calibrate(m, v, batches, cfg, method="minmax")
  ms = A.calibrate(m, v, batches, cfg, method="mse")
  for layer in mm:
    assert mm[layer]["min"] <= ms[layer]["min"] <= 0 <= ms[layer]["max"] <= mm[layer]["max"]
  x = jnp.asarray(np.concatenate(batches))

  def sse(c):
    return float(jnp.sum((A.fake_quant_act(x, c["min"], c["max"], 4) - x) ** 2))

  assert ms["dense_0"]["max"] < 0.9 * mm["dense_0"]["max"]
  assert sse(ms["dense_0"]) < 0.8 * sse(mm["dense_0"])


def test_ema_matches_hand_computed():
  m, v, batches = _tiny()
  calib = A.calibrate(m, v, batches, method="ema", ema_decay=0.8)
  lo = hi = None
  for b in batches:
    b = np.asarray(b, np.float64)
    lo = b.min() if lo is None else 0.8 * lo + 0.2 * b.min()
    hi = b.max() if hi is None else 0.8 * hi + 0.2 * b.max()
  assert calib["dense_0"]["min"] == np.float32(lo) and calib["dense_0"]["max"] == np.float32(hi)


def test_per_channel_calibration_shapes():
  m, v, batches = _tiny()
  cfg = A.ActQuantConfig(8, granularity="per_channel")
  for method in ("minmax", "mse"):
    calib = A.calibrate(m, v, batches, cfg, method=method)
    assert calib["dense_0"]["min"].shape == (4,) and calib["dense_1"]["max"].shape == (5,)
  allx = np.concatenate([np.asarray(b) for b in batches])
  calib = A.calibrate(m, v, batches, cfg)
  np.testing.assert_array_equal(calib["dense_0"]["max"], allx.max(0))
  y = A.apply_quantized(m, v, batches[0], cfg, calib)
  np.testing.assert_allclose(y, m.apply(v, batches[0]), atol=0.05)


def test_static_equals_dynamic_on_the_calibration_batch():
  m, v, batches = _tiny()
  calib = A.calibrate(m, v, batches[:1])
  st = A.apply_quantized(m, v, batches[0], A.ActQuantConfig(6), calib, include="dense_0")
  dy = A.apply_quantized(m, v, batches[0], A.ActQuantConfig(6, mode="dynamic"),
                         include="dense_0")
  np.testing.assert_array_equal(st, dy)
  # On a batch with a wider range, static clips and differs from dynamic.
  st2 = A.apply_quantized(m, v, batches[2], A.ActQuantConfig(6), calib, include="dense_0")
  dy2 = A.apply_quantized(m, v, batches[2], A.ActQuantConfig(6, mode="dynamic"),
                          include="dense_0")
  assert float(jnp.max(jnp.abs(st2 - dy2))) > 1e-3


def test_symmetric_vs_asymmetric_grid():
  x = jnp.linspace(-1.0, 3.0, 101)
  sym = np.asarray(A.fake_quant_act(x, -1.0, 3.0, 4, symmetric=True))
  asym = np.asarray(A.fake_quant_act(x, -1.0, 3.0, 4, symmetric=False))
  np.testing.assert_allclose(np.unique(sym / (3.0 / 7)), np.arange(-2, 8), atol=1e-5)
  assert len(np.unique(sym)) <= 15 and len(np.unique(asym)) <= 16
  assert 0.0 in sym and 0.0 in asym  # zero exact in both
  assert np.max(np.abs(asym - x)) <= 4.0 / 15 / 2 + 1e-6
  assert np.mean((asym - x) ** 2) < np.mean((sym - x) ** 2)  # skewed data: asymmetric wins
  # Non-negative data (after ReLU): asymmetric uses all 2**b codes.
  relu = jnp.linspace(0.0, 1.0, 1001)
  e_a = jnp.mean((A.fake_quant_act(relu, 0.0, 1.0, 4) - relu) ** 2)
  e_s = jnp.mean((A.fake_quant_act(relu, 0.0, 1.0, 4, symmetric=True) - relu) ** 2)
  assert e_a < e_s


def test_save_load_round_trip_exact(tmp_path):
  m, v, batches = _tiny()
  calib = A.calibrate(m, v, batches, method="percentile")
  calib["per_channel"] = {"min": np.float32([-1.1, 0.0, 1e-30]),
                          "max": np.float32([np.pi, 7.0, 3e38])}
  path = tmp_path / "calib.json"
  A.save_calibration(calib, path)
  back = A.load_calibration(path)
  assert list(back) == list(calib)
  for layer in calib:
    for k in ("min", "max"):
      assert back[layer][k].dtype == np.float32
      np.testing.assert_array_equal(back[layer][k], calib[layer][k])
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # a plain open()'s mode, not 0o600
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
  with pytest.raises(ValueError, match="non-finite"):
    A.save_calibration({"a": {"min": np.float32(np.nan), "max": np.float32(1)}}, path)


# ---------------------------------------------------------------- gradients and jit


def test_ste_gradient():
  x = jnp.linspace(-2.0, 2.0, 9)
  g = jax.grad(lambda x: jnp.sum(A.fake_quant_act(x, -1.0, 1.5, 8)))(x)
  np.testing.assert_array_equal(g, ((x >= -1.0) & (x <= 1.5)).astype(jnp.float32))
  # Through a linear model: equals the unquantized gradient inside the range, 0 outside.
  m = nn.Dense(3)
  xs = jax.random.normal(jax.random.key(3), (4, 6)) * 2
  v = _init(m, xs)
  calib = {"": {"min": np.float32(-1.0), "max": np.float32(1.0)}}
  fq = jax.grad(lambda x: jnp.sum(A.apply_quantized(m, v, x, A.ActQuantConfig(8), calib)))(xs)
  fp = jax.grad(lambda x: jnp.sum(m.apply(v, x)))(xs)
  inside = (xs >= -1.0) & (xs <= 1.0)
  assert 0 < int(inside.sum()) < inside.size
  np.testing.assert_array_equal(fq, jnp.where(inside, fp, 0.0))
  # QAT: dynamic ranges contain every value, so with 16 bits (values ~ unchanged) the parameter
  # gradients through the whole MLP equal the unquantized ones; with 4 bits they stay finite.
  gm, gv, z = _mlp()

  def grads(cfg):
    loss = lambda p: jnp.sum(A.apply_quantized(gm, {"params": p}, z, cfg) ** 2)  # noqa: E731
    return jax.grad(loss)(gv["params"])

  g0 = jax.grad(lambda p: jnp.sum(gm.apply({"params": p}, z) ** 2))(gv["params"])
  for a, b in zip(jax.tree.leaves(grads(A.ActQuantConfig(16, mode="dynamic"))),
                  jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
  g4 = grads(A.ActQuantConfig(4, mode="dynamic"))
  assert all(np.isfinite(a).all() and np.abs(a).sum() > 0 for a in jax.tree.leaves(g4))


def test_jit_does_not_retrace():
  m, v, z = _mlp()
  calib = A.calibrate(m, v, [z])
  traces = []

  @jax.jit
  def run(v, z, calib):
    traces.append(1)
    return A.apply_quantized(m, v, z, A.ActQuantConfig(8), calib)

  y1 = run(v, z, calib)
  y2 = run(v, z + 0.1, jax.tree.map(lambda a: a * 1.1, calib))
  assert len(traces) == 1
  # float32: jit may round a hidden value an ulp differently, and one within an ulp of a .5 code
  # boundary (~1e-5 chance per value, 8 x 32 values) then moves by one 8-bit step: every sample
  # within 1e-6 but at most one, which stays within the 8-bit error (0.05, as above).
  eager = np.asarray(A.apply_quantized(m, v, z, A.ActQuantConfig(8), calib))
  assert np.sum(np.max(np.abs(np.asarray(y1) - eager), axis=(1, 2, 3)) > 1e-6) <= 1
  np.testing.assert_allclose(y1, eager, atol=0.05)
  assert not np.allclose(y1, y2)


# ---------------------------------------------------------------- rules and recipes


def test_first_matching_rule_wins_and_unmatched_warns():
  m, v, z = _mlp()
  rules = [("dense_0", 8, 16), (r"dense_\d", 4, None), ("nothing", 2, 2), ("no_.*", 3, 3)]
  with pytest.warns(UserWarning) as record:
    bits = R.resolve_rules(v, rules, default_weight_bits=6, default_act_bits=8)
  msgs = [str(w.message) for w in record if "matching no layer" in str(w.message)]
  assert len(msgs) == 1 and "'nothing'" in msgs[0] and "'no_.*'" in msgs[0]
  assert bits == {"dense_0": (8, 16), "dense_1": (4, None), "dense_2": (4, None)}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert R.resolve_rules(v, [], 6, 8)["dense_1"] == (6, 8)


def test_fake_quantize_by_rules_uses_per_layer_bits():
  m, v, z = _mlp()
  q = R.fake_quantize_by_rules(v, [("dense_0", 8, None), ("dense_2", None, None)], default_bits=3)
  p, qp = v["params"], q["params"]
  np.testing.assert_array_equal(qp["dense_0"]["kernel"],
                                quantize.fake_quant(p["dense_0"]["kernel"], 8))
  np.testing.assert_array_equal(qp["dense_1"]["kernel"],
                                quantize.fake_quant(p["dense_1"]["kernel"], 3))
  np.testing.assert_array_equal(qp["dense_2"]["kernel"], p["dense_2"]["kernel"])
  np.testing.assert_array_equal(qp["dense_1"]["bias"], p["dense_1"]["bias"])


def test_recipes_load_and_resolve_first_last():
  m, v, z = _mlp()
  for name in ("w8a8", "w4a8", "w4a4"):
    r = R.load_recipe(name)
    assert r.name == name and r.act_config().bits == r.default_act_bits
  w4a8 = R.load_recipe("w4a8")
  fl = R.first_last_layers(m, v)
  assert fl == ("dense_0", "dense_2")
  bits = R.resolve_rules(v, w4a8.rules, w4a8.default_weight_bits, w4a8.default_act_bits,
                         first_last=fl)
  assert bits == {"dense_0": (8, 8), "dense_1": (4, 8), "dense_2": (8, 8)}
  assert R.resolve_rules(["dense_0", "dense_1", "dense_2"], w4a8.rules, 4, 8) == bits
  with pytest.raises(ValueError, match="first_last"):
    R.resolve_rules(v, w4a8.rules, 4, 8)
  dc = DCGANGenerator(features=(8, 4, 3), z_dim=4)
  dv = jax.eval_shape(dc.init, jax.random.key(0), jnp.ones((1, 4)))  # abstract variables work
  assert R.first_last_layers(dc, dv) == ("convt_0", "convt_2")
  # Activation rules with markers through apply_quantized: first/last at 8, others at 2 bits.
  cfg = A.ActQuantConfig(2, mode="dynamic")
  y = A.apply_quantized(m, v, z, cfg, rules=[("@first", None, 16), ("@last", None, 16)])
  y_mid = A.apply_quantized(m, v, z, cfg, include="dense_1")
  np.testing.assert_allclose(y, y_mid, atol=2e-3)
  with pytest.raises(ValueError, match="unknown recipe"):
    R.load_recipe("w3a3")


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("bits", [1, 17])
def test_bad_act_bits(bits):
  with pytest.raises(ValueError, match=f"activation bits must be in 2..16, got {bits}"):
    A.ActQuantConfig(bits)
  with pytest.raises(ValueError, match="activation bits"):
    R.PrecisionRule("x", 8, bits)


def test_bad_calibration_inputs():
  m, v, z = _mlp()
  with pytest.raises(ValueError, match="calibration set is empty"):
    A.calibrate(m, v, [])
  with pytest.raises(ValueError, match=r"\(4, 9\)"):
    A.calibrate(m, v, [jnp.ones((4, 8)), jnp.ones((4, 9))])
  with pytest.raises(ValueError, match=r"batch 0 of shape \(4, 5\)"):
    A.calibrate(m, v, [jnp.ones((4, 5))])
  with pytest.raises(ValueError, match="method"):
    A.calibrate(m, v, [z], method="kl")


def test_static_mode_needs_calibration_for_every_layer():
  m, v, z = _mlp()
  calib = A.calibrate(m, v, [z])
  del calib["dense_1"]
  with pytest.raises(ValueError, match="no calibration for layer 'dense_1'"):
    A.apply_quantized(m, v, z, A.ActQuantConfig(8), calib)
  with pytest.raises(ValueError, match="needs a calibration"):
    A.apply_quantized(m, v, z, A.ActQuantConfig(8))
  # Excluding the missing layer is fine.
  A.apply_quantized(m, v, z, A.ActQuantConfig(8), calib, exclude="dense_1")


# ---------------------------------------------------------------- a real checkpoint


def test_recipes_on_real_mnist_mlp_generator():
  from conftest import require_asset  # pylint: disable=g-import-not-at-top
  path = require_asset("mnist-mlpgan/G--300.ckpt")
  pytest.importorskip("torch", reason="torch is needed to read the PyTorch checkpoint")
  from jaxgc import convert  # pylint: disable=g-import-not-at-top
  m, v = convert.load_torch_checkpoint(path, arch="mlp_generator")
  zs = [jax.random.normal(jax.random.key(i), (64, m.z_dim)) for i in range(3)]
  z = jax.random.normal(jax.random.key(99), (64, m.z_dim))
  ref = m.apply(v, z)
  fl = R.first_last_layers(m, v)
  assert fl == ("dense_0", "dense_2")
  errs = {}
  for name in ("w8a8", "w4a8", "w4a4"):
    r = R.load_recipe(name)
    qv = R.fake_quantize_by_rules(v, r.rules, r.default_weight_bits, r.weight_symmetric,
                                  r.weight_granularity, first_last=fl)
    calib = A.calibrate(m, qv, zs, r.act_config(), method=r.calibration_method)
    y = A.apply_quantized(m, qv, z, r.act_config(), calib,
                          rules=R.act_rules(r.rules, r.default_act_bits))
    errs[name] = float(jnp.sqrt(jnp.mean((y - ref) ** 2)))
  assert errs["w8a8"] < 0.05 < errs["w4a4"]  # images in [-1, 1]
  assert errs["w8a8"] < errs["w4a8"] < errs["w4a4"], errs
