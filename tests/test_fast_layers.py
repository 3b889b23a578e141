"""The fast formulations of jaxgc.models.layers equal the convolutions PyTorch runs (issue 19).

Depthwise convolutions run as shifted multiply-adds on the CPU, stride-2 transposed
convolutions as one matrix product plus shifted sums per output phase (col2im), wide stride-1
convolutions as one matrix product plus shifted sums of its outputs. Both must equal the
reference formulation (XLA's grouped / input-dilated convolution, which the parity tests tie to
PyTorch) to float32 rounding, be counted as the reference by count_macs, and be intercepted by
activation quantization like any convolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgc import compress
from jaxgc import stats
from jaxgc.models import layers
from jaxgc.models import resnet

# Summation order differs from the reference: each output is a sum of k*k*cin products of
# N(0, 1) values, so rounding differences are a few float32 ulps of values of size ~sqrt(k*k*cin).
ATOL = 1e-5


@pytest.mark.parametrize("k, s, p, op", [(3, 2, 1, 1), (4, 2, 1, 0), (3, 2, 0, 0), (5, 2, 2, 1),
                                         (4, 1, 0, 0), (3, 1, 1, 0),
                                         (4, 2, 0, 0), (3, 3, 1, 2), (2, 2, 0, 0), (1, 2, 0, 1)])
def test_col2im_and_subpixel_transposed_convs_equal_the_dilated_one(k, s, p, op):
  rng = np.random.default_rng(k * 100 + s * 10 + p)
  x = jnp.asarray(rng.standard_normal((2, 5, 6, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 3, 4)) / k, jnp.float32)
  want = layers._transposed_conv_dilated(x, w, s, p, op)
  got = layers._transposed_conv_col2im(x, w, s, p, op)
  if s > 1:
    sub = layers._transposed_conv_subpixel(x, w, s, p, op)
    np.testing.assert_allclose(np.asarray(sub), np.asarray(want), atol=ATOL, rtol=0)
  assert got.shape == want.shape == (2, (5 - 1) * s - 2 * p + k + op,
                                     (6 - 1) * s - 2 * p + k + op, 4)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=0)


@pytest.mark.parametrize("k, s, p", [(3, 1, 1), (3, 2, 1), (5, 1, 0), (3, 1, 0), (1, 1, 0)])
def test_depthwise_conv_equals_the_grouped_one(k, s, p):
  rng = np.random.default_rng(k + s + p)
  x = jnp.asarray(rng.standard_normal((2, 7, 8, 5)), jnp.float32)
  layer = layers.DepthwiseConv(5, k, strides=s, padding=p)
  v = layer.init(jax.random.key(0), x)
  want = jax.lax.conv_general_dilated(
      x, v["params"]["kernel"], (s, s), ((p, p), (p, p)), feature_group_count=5,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest") + v["params"]["bias"]
  got = jax.jit(layer.apply)(v, x)   # on the CPU: the shifted multiply-adds
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=0)
  # The same variables as flax's grouped nn.Conv: checkpoints do not change.
  conv = jax.eval_shape(lambda: layers.conv(5, k, s, p, groups=5).init(jax.random.key(0), x))
  assert type(layers.conv(5, k, s, p, groups=5)) is layers.DepthwiseConv
  assert jax.tree.map(lambda a: a.shape, conv) == jax.tree.map(lambda a: a.shape, v)
  with pytest.raises(ValueError, match=r"keeps its 5 channels, got features=6"):
    layers.DepthwiseConv(6, 3).init(jax.random.key(0), x)


def test_macs_count_the_layer_not_its_formulation():
  """A mobile generator with depthwise and stride-2 transposed convolutions: count_macs gives
  the torchprofile count of the convolutions PyTorch runs, computed by hand."""
  g = resnet.MobileResnetGenerator(ngf=8, n_blocks=1)
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)
  v = jax.eval_shape(g.init, jax.random.key(0), x)
  macs = stats.count_macs(g, v, x)
  with stats.tracing_reference_formulation():
    ref = jax.make_jaxpr(lambda v, x: g.apply(v, x))(v, x)
  assert "platform_index" not in str(ref) and "conv_general_dilated" in str(ref)
  fast = jax.make_jaxpr(lambda v, x: g.apply(v, x))(v, x)
  assert "platform_index" in str(fast)   # the CPU / accelerator choice is in the program
  # By hand: conv_in 7x7 3->8 at 32x32; down 3x3 s2 8->16 (16x16), 16->32 (8x8); one mobile
  # block at 8x8, width 32, hidden 32*... (read from the variables); up 3x3 32->16 (16x16),
  # 16->8 (32x32); conv_out 7x7 8->3 at 32x32.
  p = v["params"]
  hand = 32 * 32 * 8 * 49 * 3 + 16 * 16 * 16 * 9 * 8 + 8 * 8 * 32 * 9 * 16
  for sep in ("sep_0", "sep_1"):
    dw, pw = p["block_0"][sep]["depthwise"]["kernel"], p["block_0"][sep]["pointwise"]["kernel"]
    hand += 8 * 8 * dw.shape[3] * 9 + 8 * 8 * pw.shape[2] * pw.shape[3]
  hand += 16 * 16 * 16 * 9 * 32 + 32 * 32 * 8 * 9 * 16 + 32 * 32 * 3 * 49 * 8
  assert macs == hand


def test_activation_quantization_intercepts_depthwise_convolutions():
  g = resnet.MobileResnetGenerator(ngf=8, n_blocks=1)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  v = g.init(jax.random.key(0), x)
  calib = compress.calibrate(g, v, [x], compress.ActQuantConfig(8))
  assert "block_0/sep_0/depthwise" in calib and "up_0" in calib


@pytest.mark.parametrize("cin, cout, k, strides", [(64, 3, 7, (1, 1)), (8, 8, 3, (1, 1)),
                                                   (16, 4, (1, 7), (1, 1)), (5, 5, (3, 1), (2, 2)),
                                                   (4, 6, 4, (2, 1)), (6, 7, 3, (2, 2))])
def test_unpadded_conv_on_the_cpu_equals_the_native_one(cin, cout, k, strides):
  kh, kw = (k, k) if isinstance(k, int) else k
  rng = np.random.default_rng(cin + cout)
  x = jnp.asarray(rng.standard_normal((2, 9, 10, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kh, kw, cin, cout)) / np.sqrt(kh * kw * cin), jnp.float32)
  want = layers._conv_native(x, w, strides, ((0, 0), (0, 0)))
  got = layers._conv_unpadded_on_cpu(x, w, strides)
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.asarray(jax.jit(layers.conv2d, static_argnums=(2, 3))(
      x, w, strides, ((0, 0), (0, 0)))), np.asarray(want), atol=ATOL, rtol=0)

  def program(x, w, padding=((0, 0), (0, 0))):
    return str(jax.make_jaxpr(lambda x, w: layers.conv2d(x, w, strides, padding))(x, w))

  assert "platform_index" in program(x, w)
  # Padded convolutions (XLA's fast path already): the native convolution only.
  assert "platform_index" not in program(x, w, ((1, 1), (0, 0)))


@pytest.mark.parametrize("cin, cout, strides", [(16, 8, (1, 1)), (7, 5, (2, 2)), (4, 6, (2, 1))])
def test_a_1x1_conv_on_the_cpu_is_a_matrix_product_equal_to_the_native_one(cin, cout, strides):
  rng = np.random.default_rng(cin * cout)
  x = jnp.asarray(rng.standard_normal((2, 9, 10, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((1, 1, cin, cout)) / np.sqrt(cin), jnp.float32)
  want = layers._conv_native(x, w, strides, ((0, 0), (0, 0)))
  got = jax.jit(layers.conv2d, static_argnums=(2, 3))(x, w, strides, ((0, 0), (0, 0)))
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=0)
  program = str(jax.make_jaxpr(lambda x, w: layers.conv2d(x, w, strides))(x, w))
  assert "platform_index" in program and "dot_general" in program
