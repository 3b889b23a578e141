"""jaxgc's int8 per-channel symmetric fake quantization against qwix and a float64 reference.

jaxgc (``jaxgc.compress.quantize``): ``scale = max|w| / 127`` per output channel (last axis),
codes ``round(w / scale)`` (ties to even) in the restricted range ``[-127, 127]``, value
``code * scale``.

qwix 0.1.8 (``qwix/_src/core/qarray.py``: ``calibrate``, ``compute_scale_zero_point``;
``numerics.get_symmetric_bound``): with ``calibration_method="absmax"`` the scale is
``max|w| / 127.5`` (``iinfo(int8).max + 0.5``) and codes use the full range ``[-128, 127]``, so its
default grid differs from ours by the factor ``127.5 / 127``. ``"absmax,<f>"`` multiplies the
calibrated ``max|w|`` by ``f``; with ``f = 127.5 / 127`` qwix's scale is ours up to one float32
rounding (qwix divides, jaxgc multiplies by float32 reciprocals), its codes are ours exactly, and
its dequantized values match ours to about 1e-7 relative.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgc.compress import compute_scale_zero_point
from jaxgc.compress import fake_quant
from jaxgc.compress import quantize_int

SHAPES = [(3, 3, 16, 32), (1, 1, 8, 4), (64, 128), (3, 3, 1, 24)]  # conv, 1x1, dense, depthwise
QWIX_FACTOR = 127.5 / 127


def _weights(shape, seed=0):
  w = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
  w = w * jnp.linspace(0.01, 3.0, shape[-1])  # channels with very different ranges
  return w.at[..., 0].set(0.0)  # and an all-zero channel


def _ours(w):
  scale, zp = compute_scale_zero_point(w, 8, True, "per_channel")
  return fake_quant(w, 8, True, "per_channel"), quantize_int(w, scale, zp, 8, True), scale


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_reference(shape):
  w = _weights(shape)
  fq, codes, _ = _ours(w)
  w64 = np.asarray(w, np.float64)
  amax = np.abs(w64).reshape(-1, shape[-1]).max(0)
  scale = np.where(amax > 0, amax / 127.0, 1.0)
  ref_codes = np.clip(np.round(w64 / scale), -127, 127)  # np.round: ties to even, as jnp.round
  np.testing.assert_array_equal(np.asarray(codes), ref_codes)
  np.testing.assert_allclose(np.asarray(fq, np.float64), ref_codes * scale, rtol=0,
                             atol=1e-6 * amax.max())
  np.testing.assert_array_equal(np.asarray(fq)[..., 0], 0.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_qwix_int8_channelwise_absmax(shape):
  qwix = pytest.importorskip("qwix", reason="qwix not installed (test extra: qwix>=0.1.8)")
  w = _weights(shape)
  fq, codes, scale = _ours(w)
  q = qwix.quantize(w, jnp.int8, channelwise_axes=(w.ndim - 1,),
                    calibration_method=f"absmax,{QWIX_FACTOR!r}")
  assert q.qvalue.dtype == jnp.int8 and q.scale.shape == scale.shape
  # Same integer codes, bit for bit (so both stay in [-127, 127]).
  np.testing.assert_array_equal(np.asarray(q.qvalue, np.int32), np.asarray(codes))
  # Same scale up to one float32 rounding.
  np.testing.assert_allclose(np.asarray(q.scale), np.asarray(scale), rtol=1e-6)
  # Dequantized values within 1e-6 of the channel's range; bit-exact on our scale.
  theirs = np.asarray(qwix.dequantize(q))
  amax = np.max(np.abs(np.asarray(w)).reshape(-1, shape[-1]), axis=0)
  assert np.all(np.abs(theirs - np.asarray(fq)) <= 1e-6 * np.maximum(amax, 1e-30))
  np.testing.assert_array_equal(np.asarray(q.qvalue, np.float32) * np.asarray(scale),
                                np.asarray(fq))


def test_qwix_default_absmax_grid_differs_by_documented_factor():
  qwix = pytest.importorskip("qwix", reason="qwix not installed (test extra: qwix>=0.1.8)")
  w = _weights((64, 128))
  _, _, scale = _ours(w)
  q = qwix.quantize(w, jnp.int8, channelwise_axes=(1,))
  # Channel 0 is all zero: both use scale 1 there.
  np.testing.assert_allclose(np.asarray(q.scale)[:, 1:] * 127.5, np.asarray(scale)[:, 1:] * 127.0,
                             rtol=1e-6)
  assert int(np.min(np.asarray(q.qvalue))) == -128  # full int8 range, unlike jaxgc's [-127, 127]
