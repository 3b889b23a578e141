"""NNX: the converted horse->zebra generator as an NNX module, and every public transform on its
``nnx.State`` giving what it gives on the Linen variables.

The generator is GAN Compression's released horse->zebra model from ``$JAXGC_ASSETS`` (skipped,
saying why, only when ``JAXGC_ASSETS`` is unset), run on 2 images of 32x32 to keep CI short.
Both forms run the same Linen ``apply`` on the same variables, so outputs are compared for exact
equality: any difference would mean the NNX path selected or transformed other leaves.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import asset_path
from jaxgc import compress
from jaxgc import convert
from jaxgc.compress import selection

H2Z = "cyclegan-h2z-gancompression/latest_net_G.pth"


@pytest.fixture(scope="module")
def h2z(assets):
  module, variables = convert.load_torch_checkpoint(str(asset_path(assets, H2Z)))
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  return module, variables, x


def _split(module, variables):
  return nnx.split(convert.to_nnx(module, variables))


def test_to_nnx_runs_the_linen_model_exactly(h2z):
  module, variables, x = h2z
  model = convert.to_nnx(module, variables)
  np.testing.assert_array_equal(model(x), module.apply(variables, x))
  back_module, back = convert.from_nnx(model)
  assert back_module is module
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)


def test_nnx_paths_are_the_linen_paths(h2z):
  module, variables, _ = h2z
  _, state = _split(module, variables)
  assert selection.all_paths(state) == selection.all_paths(variables)
  exclude = r"conv_in|conv_out"
  assert (compress.selected_paths(state, compress.DEFAULT_INCLUDE, exclude)
          == compress.selected_paths(variables, compress.DEFAULT_INCLUDE, exclude))


TRANSFORMS = {
    "fake_quantize_w4": lambda v: compress.fake_quantize(
        v, compress.QuantConfig(4), exclude=r"conv_in|conv_out"),
    "clip_then_w8": lambda v: compress.fake_quantize(
        compress.clip_weights(v, compress.ClipConfig("percentile", 99.0, "per_channel")),
        compress.QuantConfig(8, symmetric=False, granularity="per_tensor")),
    "packed_int4_storage": lambda v: compress.dequantize_variables(
        compress.quantize_variables(v, compress.QuantConfig(4))),
    "rules_w4a8": lambda v: compress.fake_quantize_by_rules(
        v, [("block_0", 8, None)], default_bits=4),
    "prune_channel": lambda v: compress.apply_masks(
        v, compress.compute_masks(v, compress.PruneConfig(0.25, granularity="channel",
                                                           exclude=r"conv_out"))),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_same_compression_same_outputs(h2z, name):
  module, variables, x = h2z
  graphdef, state = _split(module, variables)
  new_state = TRANSFORMS[name](state)
  assert isinstance(new_state, nnx.State)
  y_nnx = nnx.merge(graphdef, new_state)(x)
  y_linen = module.apply(TRANSFORMS[name](variables), x)
  np.testing.assert_array_equal(y_nnx, y_linen)
  assert float(jnp.max(jnp.abs(y_linen - module.apply(variables, x)))) > 0  # it did something


def test_packed_storage_file_is_the_linen_file(h2z, tmp_path):
  module, variables, _ = h2z
  _, state = _split(module, variables)
  cfg = compress.QuantConfig(4)
  n_nnx = compress.save_quantized(compress.quantize_variables(state, cfg), tmp_path / "n.npz")
  n_lin = compress.save_quantized(compress.quantize_variables(variables, cfg), tmp_path / "l.npz")
  assert n_nnx == n_lin
  assert (tmp_path / "n.npz").read_bytes() == (tmp_path / "l.npz").read_bytes()


def test_masks_and_sparsity_match(h2z):
  module, variables, _ = h2z
  _, state = _split(module, variables)
  cfg = compress.PruneConfig(0.5)
  report_nnx = compress.mask_sparsity(compress.compute_masks(state, cfg))
  report_linen = compress.mask_sparsity(compress.compute_masks(variables, cfg))
  assert report_nnx == report_linen
  assert report_nnx["sparsity"] == pytest.approx(0.5, abs=1e-3)


def _loss_linen(module, x):
  return lambda params: jnp.mean(module.apply({"params": params}, x) ** 2)


def test_pruning_transformation_in_nnx_optimizer_matches_linen(h2z):
  """One SGD step through ``pruning`` as Linen optax and inside ``nnx.Optimizer``: the same
  parameters, exactly (the same gradients, the same masks)."""
  module, variables, x = h2z
  tx = optax.chain(optax.sgd(0.1), compress.pruning(compress.PruneConfig(0.5)))
  params = variables["params"]
  opt_state = tx.init(params)
  grads = jax.grad(_loss_linen(module, x))(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  linen_params = optax.apply_updates(params, updates)

  model = convert.to_nnx(module, variables)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))
  _, nnx_params = convert.from_nnx(model)
  for (path, a), b in zip(selection.flatten_with_paths(nnx_params["params"])[0],
                          jax.tree.leaves(linen_params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-7, err_msg=path)
  assert compress.mask_sparsity(optimizer.opt_state[-1].masks)["sparsity"] == pytest.approx(
      0.5, abs=1e-3)
  # keep_masks with masks of the NNX parameters, called by hand on boxed trees.
  state = nnx.state(model, nnx.Param)
  masks = compress.compute_masks(state, compress.PruneConfig(0.5))
  keep = compress.keep_masks(masks)
  keep.init(state)
  new, _ = keep.update(jax.tree.map(jnp.ones_like, state), optax.EmptyState(), state)
  assert isinstance(new, nnx.State)
  stepped = optax.apply_updates(nnx.as_pure(state), nnx.as_pure(new))
  pruned = jax.tree.map(lambda m, w: None if m is None else int(np.sum(np.asarray(w)[~m] != 0)),
                        nnx.as_pure(masks), stepped, is_leaf=lambda v: v is None)
  assert set(jax.tree.leaves(pruned)) == {0}


def test_activation_quantization_intercepts_the_bridged_model(h2z):
  """Calibration and fake quantization hook Linen layer calls, which the bridge makes."""
  module, variables, x = h2z
  model = convert.to_nnx(module, variables)
  cfg = compress.ActQuantConfig(8)
  calib = compress.calibrate(*convert.from_nnx(model), [x], cfg)
  reference = compress.calibrate(module, variables, [x], cfg)
  assert calib.keys() == reference.keys()
  for k in calib:
    np.testing.assert_array_equal(calib[k]["min"], reference[k]["min"])
  with compress.quantized_activations(cfg, calib) as sites:
    y_nnx = model(x)
  assert len(sites) == len(calib)
  np.testing.assert_array_equal(y_nnx, compress.apply_quantized(module, variables, x, cfg, calib))


def test_rng_state_is_never_selected():
  """A bridged model holding RNG streams: its keys and counts are skipped, kept as they are."""
  x = jnp.ones((1, 3))
  model = nnx.bridge.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0)).lazy_init(x)
  _, state = nnx.split(model)
  raw = [p for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  assert len(raw) > 2  # kernel, bias and RNG state
  assert selection.all_paths(state) == ["params/bias", "params/kernel"]
  new = compress.fake_quantize(state, compress.QuantConfig(8))
  raw = lambda a: jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
  kept = [(p, a, b) for (p, a), b in zip(selection.flatten_with_paths(new)[0],
                                         jax.tree.leaves(state)) if p is None]
  assert kept  # the RNG leaves are there, untouched
  for _, a, b in kept:
    np.testing.assert_array_equal(raw(a), raw(b))
  masks = compress.compute_masks(state, compress.PruneConfig(0.5))
  assert [p for p, m in selection.flatten_with_paths(masks, is_leaf=lambda v: v is None)[0]
          if m is not None] == ["params/kernel"]


def test_to_nnx_rejects_bad_input(h2z):
  module, variables, _ = h2z
  with pytest.raises(TypeError, match="flax.linen Module"):
    convert.to_nnx("not a module", variables)
  with pytest.raises(ValueError, match="dict of collections"):
    convert.to_nnx(module, [1, 2])
  broken = jax.tree.map(lambda a: a, variables)
  broken["params"]["conv_in"] = {"kernel": np.zeros((1, 1, 3, 2), np.float32)}
  with pytest.raises(ValueError, match="params/conv_in/"):
    convert.to_nnx(module, broken)
  with pytest.raises(TypeError, match="ToNNX"):
    convert.from_nnx(module)
