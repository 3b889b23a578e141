"""The families' own precision rules (SAGAN, StyleGAN2) and the activation sites of their layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgc import compress
from jaxgc import models
from jaxgc.models import sagan


def _init(arch, **kw):
  m = models.build(arch, **kw)
  return m, jax.tree.map(np.asarray, jax.jit(m.init)(jax.random.key(0), models.example_input(m)))


@pytest.fixture(scope="module")
def tiny_sagan():
  return _init("sagan_generator", z_dim=8, conv_dim=8)


def _w4a8_bits(m, v):
  z = models.example_input(m)
  rules = compress.family_rules(m) + compress.load_recipe("w4a8").rules
  return compress.resolve_rules(v, rules, 4, 8, compress.first_last_layers(m, v, z))


def test_sagan_rules_keep_attention_at_w8a8(tiny_sagan):
  m, v = tiny_sagan
  bits = _w4a8_bits(m, v)
  for i in (1, 2):
    for name in ("query_conv", "key_conv", "value_conv"):
      assert bits[f"attn{i}/{name}"] == (8, 8)
  assert bits["l1"] == bits["last"] == (8, 8)          # @first / @last
  assert bits["l2"] == bits["l3"] == bits["l4"] == (4, 8)


def test_spectral_weights_are_quantized_after_normalisation(tiny_sagan):
  m, v = tiny_sagan
  v = jax.tree.map(np.array, v)
  v["spectral"]["l2"]["sigma"] = np.float32(3.0)   # params hold W / sigma (the folded kernel)
  q = compress.fake_quantize_by_rules(v, compress.family_rules(m), default_bits=4)
  kernel, kq = v["params"]["l2"]["kernel"], np.asarray(q["params"]["l2"]["kernel"])
  # The 4-bit grid is that of the normalised kernel, per output channel: codes are integers in
  # [-7, 7] of step max|W / sigma| / 7, and every weight moved by at most half a step.
  step = np.abs(kernel).max(axis=(0, 1, 2)) / 7
  codes = kq / step
  np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
  assert np.abs(codes).max() <= 7 + 1e-4
  assert np.all(np.abs(kq - kernel) <= step / 2 + 1e-7)
  # u, v, sigma and attention's gamma (a scalar, not a kernel) are never quantized.
  jax.tree.map(np.testing.assert_array_equal, q["spectral"], v["spectral"])
  np.testing.assert_array_equal(q["params"]["attn1"]["gamma"], v["params"]["attn1"]["gamma"])
  np.testing.assert_array_equal(q["params"]["attn1"]["query_conv"]["kernel"],
                                compress.fake_quant(v["params"]["attn1"]["query_conv"]["kernel"],
                                                    8, True, "per_channel"))


def test_stylegan2_rules_and_activation_sites():
  m, v = _init("stylegan2_generator", size=8, channels=(8, 8), z_dim=8, w_dim=8, n_mlp=2)
  bits = _w4a8_bits(m, v)
  assert bits["mapping/fc_0"] == bits["mapping/fc_1"] == (8, 8)      # mapping network
  assert bits["b4/conv1/affine"] == bits["b8/conv0/affine"] == (8, 8)  # modulation affines
  assert bits["b4/torgb"] == bits["b8/torgb"] == (8, 8)                # to-RGB layers
  assert bits["b4/conv1"] == bits["b8/conv0"] == bits["b8/conv1"] == (4, 8)
  # The modulated convolutions and the equalized-lr dense layers are activation sites.
  order = compress.execution_order(m, v, models.example_input(m))
  assert {"mapping/fc_0", "b4/conv1", "b4/conv1/affine", "b8/torgb"} <= set(order)


def test_sagan_discriminator_spectral_convs_are_activation_sites():
  d = models.build("sagan_discriminator", conv_dim=8)
  x = jnp.zeros((1, 64, 64, 3))
  v = jax.eval_shape(d.init, jax.random.key(0), x)
  order = compress.execution_order(d, v, x)
  assert order[:2] == ["l1", "l2"] and order[-1] == "last"
  assert isinstance(d, sagan.SAGANDiscriminator)


def test_other_families_have_no_rules():
  assert compress.family_rules(models.build("resnet_generator", ngf=4, n_blocks=1)) == ()
