"""Tests for jaxgc.compress: selection, fake quantization, clipping and low-bit storage."""

import copy
import itertools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgc import compress
from jaxgc.compress import quantize
from jaxgc.compress import selection
from jaxgc.compress import storage

ALL_BITS = range(2, 9)
GRANULARITIES = ("per_tensor", "per_channel")
CASES = list(itertools.product(ALL_BITS, (True, False), GRANULARITIES))


def make_tree(seed=0, dtype=np.float32, spread=True):
  """A small generator-like variables tree.

  Output channels get scales spread over four decades (``spread``), the case where per-channel
  scales matter. Conv kernels are ``[kh, kw, in, out]``, dense kernels ``[in, out]``.
  """
  rng = np.random.default_rng(seed)

  def kernel(*shape):
    w = rng.normal(size=shape)
    if spread:
      w = w * np.logspace(-3, 1, shape[-1])
    return w.astype(dtype)

  return {
      "params": {
          "conv_in": {"kernel": kernel(3, 3, 3, 8), "bias": rng.normal(size=8).astype(dtype)},
          "block_0": {
              "sep_0": {
                  "depthwise": {"kernel": kernel(3, 3, 1, 8)},
                  "pointwise": {"kernel": kernel(1, 1, 8, 16)},
              },
              "norm": {"scale": np.ones(16, dtype), "bias": np.zeros(16, dtype)},
          },
          "conv_out": {"kernel": kernel(4, 4, 16, 3)},
          "dense": {"kernel": kernel(16, 5)},
      },
      "batch_stats": {"norm": {"mean": rng.normal(size=16).astype(dtype),
                               "var": rng.uniform(0.5, 2, size=16).astype(dtype)}},
  }


KERNELS = [
    "params/conv_in/kernel",
    "params/block_0/sep_0/depthwise/kernel",
    "params/block_0/sep_0/pointwise/kernel",
    "params/conv_out/kernel",
    "params/dense/kernel",
]


def _leaves(tree):
  return {selection.path_str(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_trees_equal(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert la.keys() == lb.keys()
  for k in la:
    assert la[k].dtype == lb[k].dtype, k
    assert np.array_equal(la[k], lb[k]), k


# ----------------------------------------------------------------------------- selection


def test_path_str_and_default_selection():
  tree = make_tree()
  assert sorted(compress.selected_paths(tree, compress.DEFAULT_INCLUDE)) == sorted(KERNELS)
  mask = compress.select(tree, compress.DEFAULT_INCLUDE)
  assert mask["params"]["conv_in"]["kernel"] is True
  assert mask["params"]["conv_in"]["bias"] is False
  assert mask["batch_stats"]["norm"]["mean"] is False


def test_select_exclude_first_and_last():
  paths = compress.selected_paths(make_tree(), compress.DEFAULT_INCLUDE, r"conv_in|conv_out")
  assert sorted(paths) == sorted(k for k in KERNELS if "conv_in" not in k and "conv_out" not in k)


def test_select_no_match_raises():
  with pytest.raises(ValueError, match=r"include pattern 'nothing_here' matches no parameter"):
    compress.select(make_tree(), "nothing_here")
  with pytest.raises(ValueError, match="leaves no parameter"):
    compress.select(make_tree(), "kernel", exclude="params")
  with pytest.raises(ValueError, match="invalid include pattern"):
    compress.select(make_tree(), "kernel(")


# ----------------------------------------------------------------------------- quantize


@pytest.mark.parametrize("bits", [1, 9, 0, 4.0, True])
def test_bad_bits(bits):
  with pytest.raises(ValueError, match="weight bits must be in 2..8"):
    compress.QuantConfig(bits=bits)
  with pytest.raises(ValueError, match="weight bits must be in 2..8"):
    compress.fake_quant(jnp.ones((2, 2)), bits)


def test_bad_bits_message_exact():
  with pytest.raises(ValueError, match=r"^weight bits must be in 2\.\.8, got 9$"):
    compress.QuantConfig(bits=9)


def test_bad_granularity():
  with pytest.raises(ValueError, match="per_row"):
    compress.QuantConfig(bits=4, granularity="per_row")


@pytest.mark.parametrize("bits,symmetric,granularity", CASES)
def test_fake_quant_levels_and_error_bound(bits, symmetric, granularity):
  w = jnp.asarray(make_tree()["params"]["block_0"]["sep_0"]["pointwise"]["kernel"])
  out = np.asarray(compress.fake_quant(w, bits, symmetric, granularity))
  scale, _ = compress.compute_scale_zero_point(w, bits, symmetric, granularity)
  scale = np.broadcast_to(np.asarray(scale), w.shape)
  # At most 2**bits distinct values per output channel (symmetric: 2**bits - 1).
  levels = 2**bits - 1 if symmetric else 2**bits
  for c in range(w.shape[-1]):
    assert len(np.unique(out[..., c])) <= levels
  # Min-max ranges contain every weight, so the rounding error is at most half a step (plus the
  # float32 rounding of w * (1 / scale), below 2**8 * 2**-23 of a step).
  err = np.abs(out - np.asarray(w))
  assert np.all(err <= scale * (0.5 + 1e-4))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_per_channel_beats_per_tensor(bits, symmetric):
  tree = make_tree(spread=True)
  pt = compress.fake_quantize(tree, compress.QuantConfig(bits, symmetric, "per_tensor"))
  pc = compress.fake_quantize(tree, compress.QuantConfig(bits, symmetric, "per_channel"))
  w, a, b = _leaves(tree), _leaves(pt), _leaves(pc)
  for k in KERNELS:
    err_t = np.sqrt(np.mean((a[k] - w[k]) ** 2))
    err_c = np.sqrt(np.mean((b[k] - w[k]) ** 2))
    assert err_c <= err_t, k
    # Error relative to each channel's own RMS, averaged over channels: per tensor, the small
    # channels (four decades below the largest) are rounded to zero, a relative error near 1.
    rel_t, rel_c = _relative_channel_error(a[k], w[k]), _relative_channel_error(b[k], w[k])
    assert rel_c < rel_t, k
    if bits >= 4:
      assert rel_c < 0.25 * rel_t, k


def _relative_channel_error(q, w):
  q, w = q.reshape(-1, w.shape[-1]), w.reshape(-1, w.shape[-1])
  return np.mean(np.sqrt(np.mean((q - w) ** 2, 0)) / np.sqrt(np.mean(w**2, 0)))


@pytest.mark.parametrize("symmetric", [True, False])
def test_int8_per_channel_matches_float64_reference(symmetric):
  w = make_tree(seed=3)["params"]["conv_out"]["kernel"]
  w64 = w.astype(np.float64)
  axes = (0, 1, 2)
  if symmetric:
    scale = np.abs(w64).max(axis=axes, keepdims=True) / 127.0
    zp = np.zeros_like(scale)
    qmin, qmax = -127, 127
  else:
    lo = np.minimum(w64.min(axis=axes, keepdims=True), 0.0)
    hi = np.maximum(w64.max(axis=axes, keepdims=True), 0.0)
    scale = (hi - lo) / 255.0
    zp = np.round(-lo / scale)
    qmin, qmax = 0, 255
  x = w64 / scale
  ref = (np.clip(np.round(x) + zp, qmin, qmax) - zp) * scale
  out = np.asarray(compress.fake_quant(jnp.asarray(w), 8, symmetric, "per_channel"))
  # float32 vs float64 may round a value lying within 1e-4 of a half step the other way; skip them.
  not_tie = np.abs(np.abs(x - np.floor(x)) - 0.5) > 1e-4
  assert not_tie.mean() > 0.99
  np.testing.assert_allclose(out[not_tie], ref[not_tie], rtol=1e-6, atol=1e-7)


def test_hand_computed_int2_and_int4():
  w = jnp.array([[-1.0, 0.2], [0.4, 0.6], [1.0, 0.0]], jnp.float32)  # [in=3, out=2]
  # per_tensor symmetric 2 bit: qmax = 1, scale = 1 -> codes round(w) in {-1, 0, 1}.
  np.testing.assert_array_equal(
      compress.fake_quant(w, 2, True, "per_tensor"), [[-1, 0], [0, 1], [1, 0]])
  # per_tensor asymmetric 2 bit: range [-1, 1], scale 2/3, zero point round(1.5) = 2 (ties to even).
  np.testing.assert_allclose(
      compress.fake_quant(w, 2, False, "per_tensor"),
      np.array([[-2, 0], [1, 1], [1, 0]]) * 2 / 3, rtol=1e-6)  # 1.0 -> code 3 (clipped)
  # per_channel symmetric 4 bit: qmax = 7; channel 1 scale = 0.6/7.
  out = np.asarray(compress.fake_quant(w, 4, True, "per_channel"))
  np.testing.assert_allclose(out[:, 1], np.array([2, 7, 0]) * 0.6 / 7, rtol=1e-6)  # 2.33 -> 2
  np.testing.assert_allclose(out[:, 0], np.array([-7, 3, 7]) / 7.0, atol=1e-7)  # 2.8 -> 3


def test_zero_tensor_is_exact_and_finite():
  for symmetric in (True, False):
    z = jnp.zeros((3, 3, 2, 4))
    out = compress.fake_quant(z, 4, symmetric, "per_channel")
    assert np.array_equal(out, z)
    q = storage.quantize_tensor(z, 3, symmetric)
    assert np.array_equal(q.dequantize(), z)


def test_ste_gradient_is_identity():
  w = jnp.asarray(make_tree()["params"]["conv_in"]["kernel"])
  for bits, symmetric in [(2, True), (4, False), (8, True)]:
    f = lambda x, b=bits, s=symmetric: compress.fake_quant(x, b, s).sum()
    np.testing.assert_array_equal(jax.grad(f)(w), np.ones(w.shape, np.float32))
    np.testing.assert_array_equal(jax.jit(jax.grad(f))(w), np.ones(w.shape, np.float32))
  # Through the tree transform: unselected leaves get their ordinary gradient too.
  tree = make_tree()
  loss = lambda v: sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(
      compress.fake_quantize(v, compress.QuantConfig(3))))
  grads = jax.grad(loss)(jax.tree_util.tree_map(jnp.asarray, tree))
  for x in jax.tree_util.tree_leaves(grads):
    np.testing.assert_array_equal(x, np.ones_like(x))


def test_dtype_preserved():
  tree = make_tree()
  bf = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), tree)
  out = compress.fake_quantize(bf, compress.QuantConfig(4))
  for x in jax.tree_util.tree_leaves(out):
    assert x.dtype == jnp.bfloat16
  out32 = compress.fake_quantize(tree, compress.QuantConfig(4))
  for x in jax.tree_util.tree_leaves(out32):
    assert x.dtype == np.float32


def test_jitted_fake_quantize_does_not_retrace():
  traces = []

  def fq(v, config):
    traces.append(1)
    return compress.fake_quantize(v, config)

  jitted = jax.jit(fq, static_argnums=1)
  cfg = compress.QuantConfig(4, symmetric=False)
  tree = make_tree()
  out1 = jitted(tree, cfg)
  out2 = jitted(make_tree(seed=1), compress.QuantConfig(4, symmetric=False))  # equal config
  assert len(traces) == 1
  assert_trees_equal(out1, compress.fake_quantize(tree, cfg))
  assert not np.array_equal(out1["params"]["dense"]["kernel"], out2["params"]["dense"]["kernel"])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def fq8(v):
    return compress.fake_quantize(v, compress.QuantConfig(8))

  fq8(tree)
  fq8(make_tree(seed=2))


def test_fake_quantize_nan_names_path():
  tree = make_tree()
  tree["params"]["dense"]["kernel"][0, 0] = np.nan
  with pytest.raises(ValueError, match="params/dense/kernel.*non-finite"):
    compress.fake_quantize(tree, compress.QuantConfig(8))
  with pytest.raises(ValueError, match="params/dense/kernel.*non-finite"):
    compress.quantize_variables(tree, compress.QuantConfig(8))
  with pytest.raises(ValueError, match="params/dense/kernel.*non-finite"):
    compress.clip_weights(tree, compress.ClipConfig("absolute", 1.0))
  tree["params"]["dense"]["kernel"][0, 0] = np.inf
  with pytest.raises(ValueError, match="params/dense/kernel"):
    compress.quantize_variables(tree, compress.QuantConfig(4))


def test_non_float_leaf_rejected():
  tree = {"params": {"kernel": np.arange(6, dtype=np.int32).reshape(2, 3)}}
  with pytest.raises(ValueError, match="not floating point"):
    compress.fake_quantize(tree, compress.QuantConfig(8))


def test_include_matching_nothing_raises():
  for fn, cfg in [(compress.fake_quantize, compress.QuantConfig(8)),
                  (compress.quantize_variables, compress.QuantConfig(8)),
                  (compress.clip_weights, compress.ClipConfig("percentile", 99.0))]:
    with pytest.raises(ValueError, match="matches no parameter; paths are e.g. batch_stats/"):
      fn(make_tree(), cfg, include=r"^generator/")


def test_inputs_not_mutated():
  tree = make_tree()
  before = copy.deepcopy(tree)
  compress.fake_quantize(tree, compress.QuantConfig(3, False, "per_tensor"))
  compress.clip_weights(tree, compress.ClipConfig("percentile", 90.0, "per_channel"))
  q = compress.quantize_variables(tree, compress.QuantConfig(4))
  compress.dequantize_variables(q)
  assert_trees_equal(tree, before)
  assert tree.keys() == before.keys()
  assert tree["params"].keys() == before["params"].keys()


# ----------------------------------------------------------------------------- clip


def test_clip_percentile_100_is_identity():
  tree = make_tree()
  for g in GRANULARITIES:
    assert_trees_equal(compress.clip_weights(tree, compress.ClipConfig("percentile", 100, g)), tree)


def test_clip_absolute_exact():
  tree = make_tree()
  c = 0.05
  out = _leaves(compress.clip_weights(tree, compress.ClipConfig("absolute", c)))
  w = _leaves(tree)
  for k in KERNELS:
    assert np.array_equal(out[k], np.clip(w[k], np.float32(-c), np.float32(c)))
    inside = np.abs(w[k]) <= np.float32(c)
    assert np.array_equal(out[k][inside], w[k][inside])
  assert np.array_equal(out["params/conv_in/bias"], w["params/conv_in/bias"])  # not selected


def test_clip_percentile_per_channel():
  w = make_tree()["params"]["block_0"]["sep_0"]["pointwise"]["kernel"]  # [1, 1, 8, 16]
  out = np.asarray(compress.clip_tensor(w, "percentile", 75.0, "per_channel"))
  ref_c = np.percentile(np.abs(w).reshape(-1, w.shape[-1]), 75.0, axis=0)
  np.testing.assert_allclose(np.abs(out).reshape(-1, w.shape[-1]).max(axis=0), ref_c, rtol=1e-6)
  # Per tensor would crush the small channels to nothing; per channel keeps each channel's shape.
  per_tensor = np.asarray(compress.clip_tensor(w, "percentile", 75.0, "per_tensor"))
  assert np.array_equal(per_tensor[..., 0], w[..., 0])  # tiny channel below the global threshold
  assert not np.array_equal(out[..., 0], w[..., 0])


def test_clip_std():
  w = make_tree(spread=False)["params"]["conv_out"]["kernel"]
  out = np.asarray(compress.clip_tensor(w, "std", 2.0))
  c = 2.0 * np.std(w.astype(np.float64))
  np.testing.assert_allclose(np.abs(out).max(), c, rtol=1e-5)
  # Zero spread: left unchanged rather than set to zero.
  const = np.full((2, 2, 3), 0.7, np.float32)
  assert np.array_equal(compress.clip_tensor(const, "std", 1.0), const)


@pytest.mark.parametrize("mode,value,match", [
    ("percentile", 0.0, r"percentile must be in \(0, 100\], got 0.0"),
    ("percentile", 100.5, "got 100.5"),
    ("absolute", -1.0, "must be > 0, got -1.0"),
    ("std", 0.0, "k must be > 0, got 0.0"),
    ("std", float("nan"), "finite"),
    ("median", 1.0, "median"),
])
def test_clip_bad_values(mode, value, match):
  with pytest.raises(ValueError, match=match):
    compress.ClipConfig(mode, value)
  with pytest.raises(ValueError, match=match):
    compress.clip_threshold(jnp.ones((2, 2)), mode, value)


def test_clip_bad_granularity():
  with pytest.raises(ValueError, match="per_pixel"):
    compress.ClipConfig("absolute", 1.0, "per_pixel")


# ----------------------------------------------------------------------------- storage


def test_int4_pack_unpack_all_codes():
  signed = np.arange(-8, 8, dtype=np.int32)
  unsigned = np.arange(0, 16, dtype=np.int32)
  for codes, is_signed in [(signed, True), (unsigned, False)]:
    pairs = np.array(list(itertools.product(codes, codes)), np.int32).reshape(-1)  # all byte pairs
    for x in (pairs, pairs[:-1], codes[:1]):  # even, odd, single
      packed = compress.pack_int4(x)
      assert packed.dtype == jnp.uint8 and packed.shape == ((x.size + 1) // 2,)
      np.testing.assert_array_equal(compress.unpack_int4(packed, x.size, is_signed), x)
  # Layout: low nibble first, two's complement for negatives.
  np.testing.assert_array_equal(compress.pack_int4(np.array([1, 2, -1])), [0x21, 0x0F])
  with pytest.raises(ValueError, match=r"\[-8, 15\]"):
    compress.pack_int4(np.array([16]))
  with pytest.raises(ValueError, match="cannot hold"):
    compress.unpack_int4(np.zeros(3, np.uint8), 8, True)


@pytest.mark.parametrize("bits,symmetric,granularity", CASES)
def test_storage_roundtrip_bit_exact(bits, symmetric, granularity, tmp_path):
  tree = make_tree(seed=bits)
  cfg = compress.QuantConfig(bits, symmetric, granularity)
  fq = compress.fake_quantize(tree, cfg)
  fq_jit = jax.jit(compress.fake_quantize, static_argnums=1)(tree, cfg)
  q = compress.quantize_variables(tree, cfg)
  deq = compress.dequantize_variables(q)
  assert_trees_equal(deq, fq)
  assert_trees_equal(fq_jit, fq)
  qt = q["params"]["conv_out"]["kernel"]
  assert isinstance(qt, compress.QuantizedTensor)
  assert qt.packed == (bits <= 4)
  assert qt.qvalue.dtype == (np.uint8 if qt.packed or not symmetric else np.int8)
  lo, hi = quantize.code_range(bits, symmetric)
  codes = np.asarray(qt.codes())
  assert codes.min() >= lo and codes.max() <= hi
  # Through the file, too.
  path = tmp_path / "q.npz"
  nbytes = compress.save_quantized(q, path)
  assert nbytes == os.path.getsize(path)
  loaded = compress.load_quantized(path)
  assert_trees_equal(compress.dequantize_variables(loaded), fq)
  assert os.listdir(tmp_path) == ["q.npz"]  # no temporary file left behind


@pytest.mark.parametrize("bits,symmetric", [(3, False), (4, True), (8, False)])
def test_jitted_dequantize_matches(bits, symmetric):
  tree = make_tree()
  cfg = compress.QuantConfig(bits, symmetric)
  q = compress.quantize_variables(tree, cfg)
  assert_trees_equal(jax.jit(compress.dequantize_variables)(q), compress.fake_quantize(tree, cfg))


def test_storage_bfloat16_roundtrip(tmp_path):
  tree = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), make_tree())
  cfg = compress.QuantConfig(4, False)
  q = compress.quantize_variables(tree, cfg)
  compress.save_quantized(q, tmp_path / "bf.npz")
  loaded = compress.load_quantized(tmp_path / "bf.npz")
  assert loaded["batch_stats"]["norm"]["mean"].dtype == jnp.bfloat16
  assert_trees_equal(compress.dequantize_variables(loaded), compress.fake_quantize(tree, cfg))


def test_file_sizes(tmp_path):
  rng = np.random.default_rng(0)
  big = {"params": {"conv": {"kernel": rng.normal(size=(3, 3, 256, 256)).astype(np.float32),
                             "bias": np.zeros(256, np.float32)}}}
  fp32 = compress.fp32_bytes(big)
  n8 = compress.save_quantized(compress.quantize_variables(big, compress.QuantConfig(8)),
                               tmp_path / "w8.npz")
  n4 = compress.save_quantized(compress.quantize_variables(big, compress.QuantConfig(4)),
                               tmp_path / "w4.npz")
  assert fp32 > 4 * 3 * 3 * 256 * 256
  assert n4 / n8 == pytest.approx(0.5, abs=0.01)
  assert n4 / fp32 == pytest.approx(1 / 8, abs=0.005)
  assert n8 / fp32 == pytest.approx(1 / 4, abs=0.005)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
  path = tmp_path / "model.npz"
  cfg = compress.QuantConfig(8)
  compress.save_quantized(compress.quantize_variables(make_tree(), cfg), path)
  original = path.read_bytes()

  def broken_savez(f, **entries):  # dies half way through the write
    del entries
    f.write(b"PK partial")
    raise OSError("disk full")

  with monkeypatch.context() as m:
    m.setattr(storage.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
      compress.save_quantized(compress.quantize_variables(make_tree(seed=1), cfg), path)
  assert path.read_bytes() == original
  assert os.listdir(tmp_path) == ["model.npz"]
  bad = {"params": {"a/b": np.ones(2, np.float32)}}  # "/" in a key cannot round-trip
  with pytest.raises(ValueError, match="without '/'"):
    compress.save_quantized(bad, path)
  assert path.read_bytes() == original
  assert os.listdir(tmp_path) == ["model.npz"]


def test_load_rejects_foreign_file(tmp_path):
  np.savez(tmp_path / "x.npz", a=np.ones(3))
  with pytest.raises(ValueError, match="not a jaxgc.quantized file"):
    compress.load_quantized(tmp_path / "x.npz")
