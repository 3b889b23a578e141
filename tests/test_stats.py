"""MACs and parameter counts against the published GAN Compression table (METHODS.md)."""

import jax
import jax.numpy as jnp
import pytest

from jaxgc import models
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.stats import count_macs
from jaxgc.stats import count_params


def _shapes(module, x):
  return jax.eval_shape(module.init, jax.random.key(0), x)


def test_cyclegan_resnet9_matches_published_macs_and_params():
  # GAN Compression README: original ResNet-9 CycleGAN, 56.8G MACs, 11.4M params at 256x256.
  module = models.ResnetGenerator(ngf=64, n_blocks=9)
  x = jnp.zeros((1, 256, 256, 3))
  v = _shapes(module, x)
  assert count_macs(module, v, x) / 1e9 == pytest.approx(56.8, abs=0.05)
  assert count_params(v) / 1e6 == pytest.approx(11.4, abs=0.05)


def test_macs_are_per_sample_and_scale_with_resolution():
  module = models.ResnetGenerator(ngf=8, n_blocks=6)
  small, big = jnp.zeros((3, 32, 32, 3)), jnp.zeros((1, 64, 64, 3))
  v = _shapes(module, small)
  assert count_macs(module, v, big) == 4 * count_macs(module, v, small)


def test_dense_macs_equal_weight_count():
  module = models.MLPGenerator()
  z = jnp.zeros((5, 64))
  v = _shapes(module, z)
  # For an MLP every weight is used exactly once per sample; biases are not MACs.
  weights = sum(x.size for x in jax.tree.leaves(v["params"]) if x.ndim == 2)
  assert count_macs(module, v, z) == weights


@pytest.mark.parametrize("module,x", [
    (models.MLPGenerator(), jnp.zeros((2, 64))),
    (models.ResnetGenerator(ngf=8, n_blocks=2), jnp.zeros((1, 32, 32, 3))),
    (PatchGANDiscriminator(ndf=8), jnp.zeros((2, 64, 64, 3)))])
def test_layer_macs_sum_to_count_macs(module, x):
  from jaxgc.stats import layer_macs  # pylint: disable=import-outside-toplevel
  v = _shapes(module, x)
  table = layer_macs(module, v, x)
  assert sum(table.values()) == count_macs(module, v, x)
  # every layer is a module of the params tree
  assert all(name.split("/")[0] in v["params"] for name in table), table
