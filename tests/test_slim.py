"""Physical channel slimming (jaxgc.compress.slim) and the MAC counter's XLA cross-check.

Every slimmed model is checked against the masked one it came from (max abs <= 1e-4) on
random variables, for every supported architecture at 50% and 75% sparsity, and on the real
horse->zebra generator when JAXGC_ASSETS is set.
"""

import functools
import math
import re

import jax
import numpy as np
import pytest

from conftest import require_asset
from jaxgc import models
from jaxgc.checkpoint import load_model
from jaxgc.checkpoint import save_model
from jaxgc.compress.prune import apply_masks
from jaxgc.compress.slim import channel_groups
from jaxgc.compress.slim import channel_masks
from jaxgc.compress.slim import slim
from jaxgc.compress.slim import slim_to_macs
from jaxgc.models import layers
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.stats import count_macs
from jaxgc.stats import count_params
from jaxgc.stats import xla_flops

# float32: dropping zeroed channels reorders conv sums (fan-in K <= ~400) in ~10-25 normalised
# layers of unit-scale activations: L * sqrt(K) * eps * 4 ~ 1e-4 (seen: 4e-6). A wrong channel
# gives O(0.1); the tests also require pruning itself to move the output by > 1e-3.
TOL = 1e-4

ARCHS = {
    "resnet": lambda: models.ResnetGenerator(ngf=8, n_blocks=2),
    "resnet_batchnorm": lambda: models.ResnetGenerator(ngf=8, n_blocks=2, norm="batch"),
    "mobile": lambda: models.MobileResnetGenerator(ngf=8, n_blocks=2),
    "sub_mobile": lambda: models.SubMobileResnetGenerator(stem=8, down=(16, 32), hidden=(16, 32),
                                                          up=(16, 8)),
    "dcgan": lambda: models.DCGANGenerator(features=(32, 16, 8, 3), z_dim=16),
    "resnet_instance_affine": lambda: models.ResnetGenerator(ngf=8, n_blocks=2,
                                                             norm="instance_affine"),
    "unet": lambda: models.UnetGenerator(num_downs=5, ngf=4),
    "unet_instance": lambda: models.UnetGenerator(num_downs=5, ngf=4, norm="instance"),
    "mlp_generator": lambda: models.MLPGenerator(z_dim=16, hidden=(32, 24)),
    "mlp_discriminator": lambda: models.MLPDiscriminator(hidden=(32, 24)),
    "patchgan": lambda: PatchGANDiscriminator(ndf=8, n_layers=3, image_size=32),
    "patchgan_instance": lambda: PatchGANDiscriminator(ndf=8, n_layers=2, norm="instance",
                                                       input_nc=6, image_size=32),
}


def _input(module, batch=2, seed=3):
  shape = models.example_input(module, batch, 32).shape
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _variables(module, x, seed=0):
  """Random variables (numpy, no jax init): kernels ~ N(0, 1/fan_in), biases, norm scales and
  running statistics all away from their init values, so that every slot matters."""
  rng = np.random.default_rng(seed)

  def fill(kp, s):
    name = kp[-1].key
    if name == "kernel":
      return rng.normal(0, 1 / math.sqrt(math.prod(s.shape[:-1])), s.shape).astype(np.float32)
    if name == "var":
      return rng.uniform(0.5, 2.0, s.shape).astype(np.float32)
    if name == "scale":
      return (rng.uniform(0.5, 1.5, s.shape) * rng.choice([-1, 1], s.shape)).astype(np.float32)
    return rng.normal(0, 0.5, s.shape).astype(np.float32)

  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def _jitted_apply(module):
  """One compiled forward pass per distinct module (modules compare by their fields)."""
  return jax.jit(module.apply)


def _run(module, variables, x):
  return np.asarray(_jitted_apply(module)(variables, x))


def _max_abs(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _shapes(tree):
  return jax.tree.map(np.shape, tree)


# ------------------------------------------------------------------------------------------------
# The slimmed model computes what the masked one does.


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_slimmed_equals_masked(arch, sparsity):
  module = ARCHS[arch]()
  x = _input(module)
  variables = _variables(module, x)
  masks = channel_masks(module, variables, sparsity)
  small, small_vars = slim(module, variables, masks)
  assert type(small) is type(module)
  masked_out = _run(module, apply_masks(variables, masks), x)
  assert _max_abs(_run(small, small_vars, x), masked_out) <= TOL
  assert _max_abs(masked_out, _run(module, variables, x)) > 1e-3  # pruning changed something
  # The module's widths describe the sliced variables exactly, and they are smaller.
  assert _shapes(jax.eval_shape(small.init, jax.random.key(0), x)) == _shapes(small_vars)
  assert count_params(small_vars) < count_params(variables)
  assert count_macs(small, small_vars, x) < count_macs(module, variables, x)


def test_slimmed_widths_are_the_kept_counts():
  module = ARCHS["resnet"]()  # stem 8, down (16, 32), hidden (32, 32), up (16, 8)
  x = _input(module)
  v = _variables(module, x)
  small, _ = slim(module, v, channel_masks(module, v, 0.75))
  assert (small.stem, small.down, small.hidden, small.up) == (2, (4, 8), (8, 8), (4, 2))
  assert (small.ngf, small.n_blocks, small.norm) == (8, 2, "instance")
  dcgan = ARCHS["dcgan"]()
  z = _input(dcgan)
  vd = _variables(dcgan, z)
  small, _ = slim(dcgan, vd, channel_masks(dcgan, vd, 0.5))
  assert small.features == (16, 8, 4, 3) and small.z_dim == 16  # image channels stay


def test_patchgan_groups_and_slimmed_widths():
  """A PatchGAN's groups are its convolutions before the logit map; the input channels and the
  one-channel output stay, and the slimmed module's ``features`` are the kept counts."""
  module = ARCHS["patchgan"]()   # features (8, 16, 32, 64), BatchNorm on conv_1 .. conv_3
  x = _input(module)
  v = _variables(module, x)
  groups = channel_groups(module, v)
  assert [g.name for g in groups] == [f"features[{i}]" for i in range(4)]
  assert groups[0].scales == () and groups[1].scales == (("params/norm_1/scale", -1),)
  assert ("batch_stats/norm_3/var", -1) in groups[3].slots
  assert ("params/conv_4/kernel", -2) in groups[3].slots
  small, small_vars = slim(module, v, channel_masks(module, v, 0.5))
  assert small.features == (4, 8, 16, 32) and small.widths() == (4, 8, 16, 32)
  assert small_vars["params"]["conv_0"]["kernel"].shape == (4, 4, 3, 4)
  assert small_vars["params"]["conv_4"]["kernel"].shape == (4, 4, 32, 1)
  assert module.widths() == (8, 16, 32, 64)
  _raises("features must be 4 channel counts", module.clone(features=(8, 16)).init,
          jax.random.key(0), x)


def test_zero_sparsity_is_the_identity():
  module = ARCHS["mobile"]()
  x = _input(module)
  v = _variables(module, x)
  masks = channel_masks(module, v, 0.0)
  assert all(np.all(m) for m in jax.tree.leaves(masks))
  small, small_vars = slim(module, v, masks)
  assert (small.stem, small.down, small.hidden, small.up) == (8, (16, 32), (32, 32), (16, 8))
  np.testing.assert_array_equal(_run(small, small_vars, x), _run(module, v, x))


def test_real_horse2zebra_generator():
  pytest.importorskip("torch")
  from jaxgc.convert import load_torch_checkpoint  # pylint: disable=import-outside-toplevel
  module, variables = load_torch_checkpoint(
      require_asset("cyclegan-h2z-gancompression/latest_net_G.pth"))
  x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
  masks = channel_masks(module, variables, 0.75)
  small, small_vars = slim(module, variables, masks)
  assert isinstance(small, models.SubMobileResnetGenerator)
  assert (small.stem, small.down, small.hidden, small.up) == (
      4, (8, 32), (16,) * 3 + (32,) * 6, (8, 4))  # every width of 16_16_32_16_32_32_16_16 / 4
  masked_out = _run(module, apply_masks(variables, masks), x)
  assert _max_abs(_run(small, small_vars, x), masked_out) <= TOL


# ------------------------------------------------------------------------------------------------
# Groups.


def test_groups_of_a_resnet_tie_the_residual_trunk():
  module = ARCHS["resnet"]()
  v = _variables(module, _input(module))
  groups = channel_groups(module, v)
  assert [g.name for g in groups] == ["stem", "down[0]", "down[1]", "hidden[0]", "hidden[1]",
                                      "up[0]", "up[1]"]
  assert [g.size for g in groups] == [8, 16, 32, 32, 32, 16, 8]
  trunk = groups[2]
  assert set(trunk.slots) == {
      ("params/down_1/kernel", -1), ("params/down_1/bias", -1),
      ("params/block_0/conv_1/kernel", -1), ("params/block_0/conv_1/bias", -1),
      ("params/block_1/conv_1/kernel", -1), ("params/block_1/conv_1/bias", -1),
      ("params/block_0/conv_0/kernel", -2), ("params/block_1/conv_0/kernel", -2),
      ("params/up_0/kernel", -2)}
  assert set(trunk.producers) == {("params/down_1/kernel", -1),
                                  ("params/block_0/conv_1/kernel", -1),
                                  ("params/block_1/conv_1/kernel", -1)}
  assert trunk.scales == ()
  slots = [s for g in groups for s in g.slots]
  assert len(slots) == len(set(slots))  # a slot belongs to one group
  names = [g.name for g in channel_groups(module, v, trunk=False)]
  assert "down[1]" not in names and len(names) == 6


def test_groups_of_a_mobile_block_and_of_batchnorm():
  module = ARCHS["mobile"]()
  groups = {g.name: g for g in channel_groups(module, _variables(module, _input(module)))}
  assert set(groups["hidden[0]"].slots) == {
      ("params/block_0/sep_0/pointwise/kernel", -1), ("params/block_0/sep_0/pointwise/bias", -1),
      ("params/block_0/sep_1/depthwise/kernel", -1), ("params/block_0/sep_1/depthwise/bias", -1),
      ("params/block_0/sep_1/pointwise/kernel", -2)}
  assert ("params/block_1/sep_0/depthwise/kernel", -1) in groups["down[1]"].slots
  assert ("params/block_1/sep_0/pointwise/kernel", -2) in groups["down[1]"].slots
  bn = ARCHS["resnet_batchnorm"]()
  stem = channel_groups(bn, _variables(bn, _input(bn)))[0]
  assert set(stem.slots) == {
      ("params/conv_in/kernel", -1), ("params/norm_in/scale", -1), ("params/norm_in/bias", -1),
      ("batch_stats/norm_in/mean", -1), ("batch_stats/norm_in/var", -1),
      ("params/down_0/kernel", -2)}
  assert stem.scales == (("params/norm_in/scale", -1),)


def test_affine_instance_norm_follows_its_channels():
  """InstanceNorm2d(affine=True) (the vintage CycleGAN): scale and bias are slots of their
  group, and the scales can rank the channels."""
  module = ARCHS["resnet_instance_affine"]()
  v = _variables(module, _input(module))
  groups = {g.name: g for g in channel_groups(module, v)}
  assert set(groups["hidden[1]"].slots) == {
      ("params/block_1/conv_0/kernel", -1), ("params/block_1/conv_0/bias", -1),
      ("params/block_1/norm_0/scale", -1), ("params/block_1/norm_0/bias", -1),
      ("params/block_1/conv_1/kernel", -2)}
  assert groups["stem"].scales == (("params/norm_in/scale", -1),)
  masks = channel_masks(module, v, 0.5, criterion="norm_scale")
  scale = np.abs(v["params"]["norm_in"]["scale"])
  kept = np.flatnonzero(np.asarray(masks["params"]["norm_in"]["scale"]))
  assert sorted(kept) == sorted(np.argsort(-scale, kind="stable")[:4])
  small, small_vars = slim(module, v, masks)
  assert small.norm == "instance_affine" and small_vars["params"]["norm_in"]["bias"].shape == (4,)


def test_unet_groups_tie_channels_across_each_skip_concatenation():
  module = ARCHS["unet"]()  # down (4, 8, 16, 32, 32), up (4, 8, 16, 32)
  v = _variables(module, _input(module))
  groups = {g.name: g for g in channel_groups(module, v)}
  assert list(groups) == [f"down[{i}]" for i in range(5)] + [f"up[{i}]" for i in range(4)]
  assert groups["down[0]"].segments == (("params/up_out/kernel", -2, 0),)
  assert groups["up[0]"].segments == (("params/up_out/kernel", -2, 4),)
  assert groups["down[2]"].segments == (("params/up_1/kernel", -2, 0),)
  assert groups["up[2]"].segments == (("params/up_1/kernel", -2, 16),)
  assert groups["down[4]"].segments == ()  # the innermost: read by up_3 alone
  assert ("params/up_3/kernel", -2) in groups["down[4]"].slots
  assert set(groups["up[1]"].slots) == {
      ("params/up_1/kernel", -1), ("params/up_norm_1/scale", -1), ("params/up_norm_1/bias", -1),
      ("batch_stats/up_norm_1/mean", -1), ("batch_stats/up_norm_1/var", -1)}
  small, small_vars = slim(module, v, channel_masks(module, v, widths={
      "down": (2, 8, 16, 32, 32), "up[0]": 3}))
  assert (small.down, small.up) == ((2, 8, 16, 32, 32), (3, 8, 16, 32))
  assert small_vars["params"]["up_out"]["kernel"].shape == (4, 4, 5, 3)  # 2 skip + 3 up
  x = _input(module)
  masks = channel_masks(module, v, 0.5)
  small, small_vars = slim(module, v, masks)
  got = small.apply(small_vars, x, batch_statistics=True)
  want = module.apply(apply_masks(v, masks), x, batch_statistics=True)
  assert _max_abs(got, want) <= TOL  # also with upstream test.py's batch statistics


def test_masks_cover_exactly_the_group_slots():
  module = ARCHS["resnet"]()
  v = _variables(module, _input(module))
  masks = channel_masks(module, v, 0.5, groups=channel_groups(module, v, trunk=False))
  assert masks["params"]["conv_out"]["bias"] is None  # the image channels are never pruned
  assert masks["params"]["block_0"]["conv_1"]["bias"] is None  # trunk left whole
  assert np.all(masks["params"]["down_1"]["kernel"].any(axis=(0, 1, 2)))
  # conv_1 reads hidden[0] (input axis pruned) and writes the kept trunk (output axis whole).
  kept_in = masks["params"]["block_0"]["conv_1"]["kernel"][0, 0, :, 0]
  assert int(np.sum(kept_in)) == 16
  np.testing.assert_array_equal(masks["params"]["block_0"]["conv_0"]["bias"], kept_in)


# ------------------------------------------------------------------------------------------------
# Scores.


def _tiny_dcgan():
  """DCGAN generator z 2 -> 4 channels -> 3; convt_0's 4 filters of 32 weights each have
  L1 norms (3, 8, 6.4, 2) and L2 norms (3, 1.41, 1.13, 2); |BN scale| is (0.1, 0.2, 0.3, 5)."""
  module = models.DCGANGenerator(features=(4, 3), z_dim=2)
  v = _variables(module, np.zeros((1, 2), np.float32))
  k = np.zeros((4, 4, 2, 4), np.float32)
  k[0, 0, 0, 0] = 3.0
  k[..., 1] = 0.25
  k[..., 2] = -0.2
  k[1, 2, 1, 3] = -2.0
  v["params"]["convt_0"]["kernel"] = k
  v["params"]["bn_0"]["scale"] = np.array([0.1, -0.2, 0.3, -5.0], np.float32)
  return module, v


@pytest.mark.parametrize("criterion,kept", [("l1", [1, 2]), ("l2", [0, 3]),
                                            ("norm_scale", [2, 3])])
def test_criteria_keep_the_largest_filters(criterion, kept):
  module, v = _tiny_dcgan()
  masks = channel_masks(module, v, 0.5, criterion=criterion)
  want = np.isin(np.arange(4), kept)
  np.testing.assert_array_equal(masks["params"]["convt_0"]["kernel"][0, 0, 0], want)
  np.testing.assert_array_equal(masks["params"]["bn_0"]["bias"], want)
  np.testing.assert_array_equal(masks["batch_stats"]["bn_0"]["var"], want)
  np.testing.assert_array_equal(masks["params"]["convt_1"]["kernel"][0, 0, :, 0], want)
  assert np.all(masks["params"]["convt_1"]["kernel"][0, 0, want])  # image channels all kept


def test_ties_keep_the_lower_channels():
  module, v = _tiny_dcgan()
  v["params"]["convt_0"]["kernel"] = np.ones((4, 4, 2, 4), np.float32)
  masks = channel_masks(module, v, 0.5)
  np.testing.assert_array_equal(masks["params"]["bn_0"]["scale"], [True, True, False, False])


def test_a_residual_group_sums_the_scores_of_every_block():
  module = models.ResnetGenerator(ngf=2, n_blocks=2)  # trunk of 8 channels
  v = _variables(module, _input(module))
  p = v["params"]
  for layer in (p["down_1"], p["block_0"]["conv_1"], p["block_1"]["conv_1"]):
    layer["kernel"] = np.zeros_like(layer["kernel"])
  p["down_1"]["kernel"][..., 7] = 1.0                # L1 36 (3 x 3 x 4)
  p["block_0"]["conv_1"]["kernel"][..., 3] = 0.1     # L1 7.2 (3 x 3 x 8) ...
  p["block_1"]["conv_1"]["kernel"][..., 3] = 0.1     # ... twice: 14.4
  p["block_1"]["conv_1"]["kernel"][..., 5] = 0.15    # L1 10.8, once
  masks = channel_masks(module, v, widths={"down[1]": 2})
  np.testing.assert_array_equal(np.flatnonzero(masks["params"]["down_1"]["bias"]), [3, 7])


# ------------------------------------------------------------------------------------------------
# Width targets and MAC targets.


def test_widths_target():
  module = ARCHS["resnet"]()
  x = _input(module)
  v = _variables(module, x)
  masks = channel_masks(module, v, widths={"hidden": (5, 3), "up[1]": 2})
  small, small_vars = slim(module, v, masks)
  assert (small.stem, small.down, small.hidden, small.up) == (8, (16, 32), (5, 3), (16, 2))
  assert _max_abs(_run(small, small_vars, x), _run(module, apply_masks(v, masks), x)) <= TOL
  dcgan = ARCHS["dcgan"]()
  vd = _variables(dcgan, _input(dcgan))
  small, _ = slim(dcgan, vd, channel_masks(dcgan, vd, widths={"features": (8, 8, 2, 3)}))
  assert small.features == (8, 8, 2, 3)
  with pytest.raises(ValueError, match=re.escape("features[3]=4 cannot change")):
    channel_masks(dcgan, vd, widths={"features": (8, 8, 2, 4)})


@pytest.mark.parametrize("ratio", [2.0, 4.0])
def test_slim_to_macs(ratio):
  module = ARCHS["resnet"]()
  x = _input(module, batch=1)
  v = _variables(module, x)
  result = slim_to_macs(module, v, ratio, x=x)
  base = count_macs(module, v, x)
  assert result.macs == count_macs(result.module, result.variables, x)
  assert ratio <= base / result.macs <= 1.3 * ratio
  # Minimal: one channel more per group (a smaller sparsity) misses the target.
  fewer = channel_masks(module, v, max(0.0, result.sparsity - 1 / 32))
  assert count_macs(*slim(module, v, fewer), x) > base / ratio


@pytest.mark.parametrize("sparsity,multiple_of,widths", [
    (0.5, 8, (8, (8, 16), (16, 16), (8, 8))),   # stem 4 and up[1] 4 round to 8
    (0.75, 8, (8, (8, 8), (8, 8), (8, 8))),     # 2 rounds to 0, then up to one multiple
    (0.75, 16, (8, (16, 16), (16, 16), (16, 8))),  # groups of 8 stay whole
])
def test_multiple_of_rounds_kept_counts(sparsity, multiple_of, widths):
  module = ARCHS["resnet"]()  # stem 8, down (16, 32), hidden (32, 32), up (16, 8)
  v = _variables(module, _input(module))
  masks = channel_masks(module, v, sparsity, multiple_of=multiple_of)
  small, _ = slim(module, v, masks)
  assert (small.stem, small.down, small.hidden, small.up) == widths


def test_slimmed_model_saves_and_loads(tmp_path):
  module = ARCHS["resnet_batchnorm"]()
  x = _input(module)
  v = _variables(module, x)
  small, small_vars = slim(module, v, channel_masks(module, v, 0.5))
  loaded, loaded_vars = load_model(save_model(tmp_path / "slim", small, small_vars))
  assert models.model_spec(loaded) == models.model_spec(small)
  assert (loaded.stem, loaded.down, loaded.hidden, loaded.up) == (4, (8, 16), (16, 16), (8, 4))
  np.testing.assert_array_equal(_run(loaded, loaded_vars, x), _run(small, small_vars, x))


# ------------------------------------------------------------------------------------------------
# Bad input: ValueError, one line, naming the value.


def _raises(match, fn, *args, **kwargs):
  with pytest.raises(ValueError, match=match) as e:
    fn(*args, **kwargs)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_bad_sparsity(sparsity):
  module = ARCHS["dcgan"]()
  v = _variables(module, _input(module))
  _raises(re.escape(f"got {sparsity!r}"), channel_masks, module, v, sparsity)


def test_bad_widths_criterion_and_ratio():
  module = ARCHS["resnet"]()
  v = _variables(module, _input(module))
  _raises(r"hidden\[0\]=0 would prune every channel", channel_masks, module, v,
          widths={"hidden[0]": 0})
  _raises("sparsity 0.95 would prune every channel of group stem", channel_masks, module, v,
          0.95)  # 8 stem channels: round(7.6) = 8 pruned
  _raises(r"hidden\[1\]=33 is outside \[1, 32\]", channel_masks, module, v,
          widths={"hidden": (4, 33)})
  _raises("unknown width 'middle'", channel_masks, module, v, widths={"middle": 3})
  _raises(re.escape("width down[1]=16 cannot change"), channel_masks, module, v,
          widths={"down[1]": 16}, groups=channel_groups(module, v, trunk=False))
  _raises("exactly one of sparsity and widths", channel_masks, module, v, 0.5,
          widths={"stem": 2})
  _raises("'l3'", channel_masks, module, v, 0.5, criterion="l3")
  _raises("'norm_scale' needs a norm scale, and group stem", channel_masks, module, v, 0.5,
          criterion="norm_scale")
  _raises("multiple_of must be an int >= 1, got 0", channel_masks, module, v, 0.5,
          multiple_of=0)
  _raises("ratio must be a number >= 1, got 0.5", slim_to_macs, module, v, 0.5)
  _raises("ratio 1000.0 is out of reach", slim_to_macs, module, v, 1000.0)


@pytest.mark.parametrize("module", [models.DCGANDiscriminator(), models.LeNet5()],
                         ids=lambda m: type(m).__name__)
def test_unsupported_architecture(module):
  v = jax.eval_shape(module.init, jax.random.key(0), models.example_input(module))
  name = type(module).__name__
  _raises(f"does not support {name}", channel_groups, module, v)
  _raises(f"does not support {name}", channel_masks, module, v, 0.5)
  _raises(f"does not support {name}", slim, module, v, jax.tree.map(lambda _: None, v))


def test_variables_of_another_shape():
  v = _variables(ARCHS["resnet"](), _input(ARCHS["resnet"]()))
  _raises("variables do not match ResnetGenerator: no leaf params/block_2/", channel_groups,
          models.ResnetGenerator(ngf=8, n_blocks=3), v)


_DROP = object()


def _edited(masks, path, value):
  """A copy of ``masks`` with the leaf at ``path`` ("a/b/c") replaced, or dropped."""
  new = jax.tree.map(lambda m: m, masks, is_leaf=lambda m: m is None)
  *parents, last = path.split("/")
  node = new
  for key in parents:
    node = node[key]
  if value is _DROP:
    del node[last]
  else:
    node[last] = value
  return new


def test_bad_masks():
  module = ARCHS["resnet"]()
  v = _variables(module, _input(module))
  masks = channel_masks(module, v, 0.5)
  bias = np.asarray(masks["params"]["conv_in"]["bias"])
  _raises(re.escape("no mask (or None) for params/conv_out/bias"), slim, module, v,
          _edited(masks, "params/conv_out/bias", _DROP))
  _raises("a mask for params/conv_out/scale, which is not a variable", slim, module, v,
          _edited(masks, "params/conv_out/scale", None))
  _raises(re.escape("mask of params/conv_in/bias must be bool of shape (8,), got bool (4,)"),
          slim, module, v, _edited(masks, "params/conv_in/bias", np.ones(4, bool)))
  _raises("must be bool of shape .*, got float64", slim, module, v,
          _edited(masks, "params/conv_in/bias", bias.astype(float)))
  # A producer kernel masked but not its bias: not a channel mask.
  _raises("the mask of params/conv_in/bias disagrees with its channel groups", slim, module,
          v, _edited(masks, "params/conv_in/bias", None))
  # The trunk pruned in one block only.
  full = channel_masks(module, v, 0.0)
  kernel = np.array(full["params"]["block_1"]["conv_1"]["kernel"])
  kernel[..., 0] = False
  _raises("not channel masks of ResnetGenerator", slim, module, v,
          _edited(full, "params/block_1/conv_1/kernel", kernel))
  _raises(re.escape("masks prune every channel of group stem (8 channels)"), slim, module, v,
          jax.tree.map(lambda m: None if m is None else np.zeros(m.shape, bool), masks,
                       is_leaf=lambda m: m is None))


# ------------------------------------------------------------------------------------------------
# One MAC counter, cross-checked against XLA's cost analysis.


@pytest.mark.parametrize("layer,shape", [
    (layers.conv(16, 3, strides=2, padding=1, use_bias=False), (1, 9, 9, 4)),
    (layers.conv(8, 3, padding=1, groups=8, use_bias=False), (1, 8, 8, 8)),
    (layers.ConvTranspose(6, 3, strides=2, padding=1, output_padding=1, use_bias=False),
     (1, 5, 5, 4)),
    (layers.dense(7, use_bias=False), (3, 5)),
], ids=["conv_strided_padded", "depthwise", "conv_transpose", "dense"])
def test_valid_macs_are_half_of_xla_flops_for_one_layer(layer, shape):
  x = np.ones(shape, np.float32)
  v = jax.eval_shape(layer.init, jax.random.key(0), x)
  assert xla_flops(layer, v, x) == 2 * count_macs(layer, v, x, convention="valid")


def test_transposed_conv_conventions():
  layer = layers.ConvTranspose(6, 3, strides=2, padding=1, output_padding=1, use_bias=False)
  x = np.ones((1, 16, 16, 4), np.float32)
  v = jax.eval_shape(layer.init, jax.random.key(0), x)
  assert count_macs(layer, v, x) == 32 * 32 * 6 * 4 * 9  # every tap of the 32x32 output
  # Taps on real input pixels: per axis, each of the 16 pixels meets the 3 taps, but padding 1
  # crops one of those 48 products from the output: 47.
  assert count_macs(layer, v, x, convention="valid") == 47 * 47 * 6 * 4
  with pytest.raises(ValueError, match="'flops'"):
    count_macs(layer, v, x, convention="flops")


@pytest.mark.parametrize("arch", ["resnet", "sub_mobile", "dcgan"])
def test_model_macs_agree_with_xla_flops(arch):
  # XLA also counts the elementwise work (norms, ReLU, adds, tanh): a few percent here.
  module = ARCHS[arch]()
  x = _input(module, batch=1)
  v = jax.eval_shape(module.init, jax.random.key(0), x)
  ratio = xla_flops(module, v, x) / (2 * count_macs(module, v, x, convention="valid"))
  assert 1.0 <= ratio <= 1.1
