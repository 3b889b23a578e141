"""Converter checks that need no torch: key maps, unwrapping, inference, mismatch errors."""

import jax
import numpy as np
import pytest

from jaxgc import models
from jaxgc.convert import CheckpointError
from jaxgc.convert import convert_state_dict
from jaxgc.convert import infer_arch
from jaxgc.convert import mapping


def _torch_like_state_dict(arch, layout=None, **kw):
  """A random state_dict with upstream key names and PyTorch layouts, built from the key map."""
  module = models.build(arch, **kw)
  shapes = jax.eval_shape(module.init, jax.random.key(0), models.example_input(module))
  flat = {"/".join(str(p.key) for p in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  rng = np.random.default_rng(0)
  sd = {}
  for fpath, tkey, kind in mapping.entries(arch, kw, {}, layout):
    shape = mapping.torch_shape(kind, flat[fpath])
    value = rng.standard_normal(shape).astype(np.float32)
    sd[tkey] = np.abs(value) + 0.5 if tkey.endswith("running_var") else value
  return sd


CASES = [
    ("resnet_generator", {"ngf": 8, "n_blocks": 6, "norm": "batch"}),
    ("resnet_generator", {"ngf": 4, "n_blocks": 9}),
    ("mobile_resnet_generator", {"ngf": 8, "n_blocks": 9}),
    ("sub_mobile_resnet_generator", {"stem": 4, "down": (8, 16), "hidden": (8, 8, 16),
                                     "up": (8, 4)}),
    ("dcgan_generator", {"features": (32, 16, 3), "z_dim": 10}),
    ("dcgan_discriminator", {"features": (8, 16, 32)}),
    ("mlp_generator", {"z_dim": 16, "hidden": (32, 32)}),
    ("mlp_discriminator", {"hidden": (32, 32)}),
    ("resnet_generator", {"ngf": 4, "n_blocks": 2, "norm": "instance_affine"}),
    ("unet_generator", {"num_downs": 5, "ngf": 2, "norm": "instance"}),
    ("unet_generator", {"num_downs": 6, "ngf": 3, "norm": "batch", "input_nc": 1}),
]


@pytest.mark.parametrize("arch,kw", CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(CASES)])
def test_round_trip_infers_arch_and_widths(arch, kw):
  sd = _torch_like_state_dict(arch, **kw)
  assert infer_arch(sd) == arch
  module, variables = convert_state_dict(sd)
  expected = models.build(arch, **kw)
  for name, value in kw.items():
    assert getattr(module, name) == getattr(expected, name), name
  # Every tensor lands somewhere, converted exactly (a permutation of the same numbers).
  n_torch = sum(v.size for v in sd.values())
  n_flax = sum(np.size(v) for v in jax.tree.leaves(variables))
  assert n_torch == n_flax
  y = module.apply(variables, models.example_input(module, batch=2, size=16))
  assert np.all(np.isfinite(np.asarray(y)))


def test_resnet_layouts_are_read_from_the_keys():
  """The vintage CycleGAN's ``block.N`` keys: same architecture, another row of the table."""
  sd = _torch_like_state_dict("resnet_generator", layout="vintage", ngf=4, n_blocks=3,
                              norm="instance_affine")
  assert "model.12.block.5.weight" in sd and "model.2.weight" in sd
  assert not any(".conv_block." in k for k in sd)
  assert mapping.resnet_layout(sd) == "vintage" and infer_arch(sd) == "resnet_generator"
  module, variables = convert_state_dict(sd)
  assert (module.n_blocks, module.norm) == (3, "instance_affine")
  np.testing.assert_array_equal(variables["params"]["block_2"]["norm_1"]["scale"],
                                sd["model.12.block.6.weight"])
  with pytest.raises(ValueError, match="unknown ResNet layout 'other'"):
    mapping.entries("resnet_generator", {}, {}, "other")


def test_first_conv_is_transposed_to_hwio():
  sd = _torch_like_state_dict("dcgan_discriminator", features=(8, 16, 32))
  _, variables = convert_state_dict(sd)
  w = sd["main.0.weight"]  # [out, in, kh, kw]
  np.testing.assert_array_equal(variables["params"]["conv_0"]["kernel"], w.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["bn_1"]["var"], sd["main.3.running_var"])


@pytest.mark.parametrize("wrap", ["state_dict", "netG_state_dict", "module", "nested"])
def test_wrapped_state_dicts_are_unwrapped(wrap):
  sd = _torch_like_state_dict("mlp_generator", z_dim=16, hidden=(32, 32))
  if wrap == "module":
    wrapped = {f"module.{k}": v for k, v in sd.items()}
  elif wrap == "nested":
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
  else:
    wrapped = {wrap: sd, "optimizer": {"lr": 0.1}}
  _, a = convert_state_dict(wrapped)
  _, b = convert_state_dict(sd)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_num_batches_tracked_is_ignored():
  sd = _torch_like_state_dict("dcgan_generator", features=(32, 16, 3), z_dim=10)
  sd["main.1.num_batches_tracked"] = np.array(7)
  convert_state_dict(sd)


def test_mismatch_lists_missing_unexpected_and_misshaped_in_one_error():
  sd = _torch_like_state_dict("mlp_generator", z_dim=16, hidden=(32, 32))
  del sd["2.bias"]
  sd["head.weight"] = np.zeros((3, 3), np.float32)
  sd["4.bias"] = np.zeros((5,), np.float32)
  with pytest.raises(CheckpointError) as err:
    convert_state_dict(sd, arch="mlp_generator", source="g.ckpt")
  msg = str(err.value)
  assert "\n" not in msg
  assert "g.ckpt does not match arch 'mlp_generator'" in msg
  assert "missing 1 keys [2.bias]" in msg
  assert "unexpected 1 keys [head.weight]" in msg
  assert "4.bias (5,) != expected (784,)" in msg


def test_other_architecture_is_refused_naming_the_keys():
  sd = _torch_like_state_dict("mlp_generator", z_dim=16, hidden=(32, 32))
  with pytest.raises(CheckpointError, match=r"missing \d+ keys \[main\.0\.weight.*unexpected 6"):
    convert_state_dict(sd, arch="dcgan_generator")


def test_nan_and_inf_weights_are_refused():
  for bad in (np.nan, np.inf):
    sd = _torch_like_state_dict("mlp_discriminator", hidden=(32, 32))
    sd["2.weight"][0, 0] = bad
    with pytest.raises(CheckpointError, match=r"NaN or Inf weights: 2\.weight \(1 non-finite\)"):
      convert_state_dict(sd)


def test_unknown_arch_and_uninferable_keys():
  with pytest.raises(ValueError, match="unknown arch 'stylegan9'"):
    convert_state_dict({"a.weight": np.zeros((2, 2))}, arch="stylegan9")
  with pytest.raises(CheckpointError, match="cannot infer the architecture"):
    convert_state_dict({"encoder.weight": np.zeros((2, 2))})
