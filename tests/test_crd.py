"""CRD losses: slicing, RKD distance and angle terms against a float64 numpy reference written
from the definitions (Park et al. 2019; the CRD authors' NCHW slicing), hand-computed triangles,
gradients, jit, the anchor subset, and bad inputs."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxgc.train import crd_losses as crd

RTOL = 1e-5


# ----------------------------------------------------------------------------------------------
# float64 numpy reference (loops; tiny inputs only)
# ----------------------------------------------------------------------------------------------


def _huber(x):
  a = np.abs(x)
  return np.where(a < 1.0, 0.5 * x * x, a - 0.5)


def _ref_distances(e):
  n = len(e)
  d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
  mu = d[~np.eye(n, dtype=bool)].mean()
  return d / max(mu, 1e-12)


def _ref_cosines(e):
  n = len(e)
  c = np.zeros((n, n, n))
  for j, i, k in itertools.product(range(n), repeat=3):
    a, b = e[i] - e[j], e[k] - e[j]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    c[j, i, k] = 0.0 if na == 0 or nb == 0 else a @ b / (na * nb)
  return c


def ref_distance(s, t):
  s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
  return np.mean([_huber(_ref_distances(a) - _ref_distances(b)).mean() for a, b in zip(s, t)])


def ref_angle(s, t):
  s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
  return np.mean([_huber(_ref_cosines(a) - _ref_cosines(b)).mean() for a, b in zip(s, t)])


def ref_slices(x_nhwc, k):
  """Slices as the CRD authors take them from an NCHW image: rows of ``s.transpose(0, 1)``
  (``[H, C, W]``), columns of ``s.transpose(0, 2)`` (``[W, H, C]``), ``F.unfold`` patches."""
  out = {"row": [], "column": [], "patch": []}
  for img in np.asarray(x_nhwc, np.float64):
    chw = img.transpose(2, 0, 1)
    c, h, w = chw.shape
    out["row"].append(chw.transpose(1, 0, 2).reshape(h, -1))
    out["column"].append(chw.transpose(2, 1, 0).reshape(w, -1))
    out["patch"].append(np.stack([chw[:, r * k:(r + 1) * k, q * k:(q + 1) * k].reshape(-1)
                                  for r in range(h // k) for q in range(w // k)]))
  return {s: np.stack(v) for s, v in out.items()}


def ref_crd(s, t, k, wd=1.0, wa=2.0, ws=(25.0, 25.0, 25.0)):
  ss, ts = ref_slices(s, k), ref_slices(t, k)
  return sum(w * (wd * ref_distance(ss[n], ts[n]) + wa * ref_angle(ss[n], ts[n]))
             for n, w in zip(crd.SLICINGS, ws))


def _rng_images(seed, shape):
  return np.tanh(np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# slicing
# ----------------------------------------------------------------------------------------------


def test_slices_shapes_and_order():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  rows, cols, patches = crd.slice_rows(x), crd.slice_columns(x), crd.slice_patches(x, 2)
  assert rows.shape == (2, 4, 18) and cols.shape == (2, 6, 12) and patches.shape == (2, 6, 12)
  for b in range(2):
    for r in range(4):
      np.testing.assert_array_equal(rows[b, r], x[b, r].ravel())
    for c in range(6):
      np.testing.assert_array_equal(cols[b, c], x[b, :, c].ravel())
    for q in range(6):  # raster order over a 2 x 3 grid of 2x2 patches
      r0, c0 = 2 * (q // 3), 2 * (q % 3)
      np.testing.assert_array_equal(patches[b, q], x[b, r0:r0 + 2, c0:c0 + 2].ravel())


# ----------------------------------------------------------------------------------------------
# against the float64 reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("duplicates", [False, True])
def test_rkd_terms_match_float64_reference(duplicates):
  rng = np.random.default_rng(0)
  s = rng.standard_normal((3, 6, 5)).astype(np.float32)
  t = rng.standard_normal((3, 6, 5)).astype(np.float32)
  if duplicates:  # coincident slices: zero unit vectors, zero cosines
    t[:, 2] = t[:, 0]
    s[0, 4] = s[0, 1]
  np.testing.assert_allclose(float(crd.rkd_distance_loss(s, t)), ref_distance(s, t), rtol=RTOL)
  np.testing.assert_allclose(float(crd.rkd_angle_loss(s, t)), ref_angle(s, t), rtol=RTOL)


@pytest.mark.parametrize("weights", [
    dict(),
    dict(distance_weight=0.5, angle_weight=3.0, slicing_weights={"row": 1.0, "column": 2.0,
                                                                  "patch": 4.0}),
])
def test_crd_loss_matches_reference_with_the_authors_slicing(weights):
  s, t = _rng_images(1, (2, 8, 8, 3)), _rng_images(2, (2, 8, 8, 3))
  total, terms = crd.crd_loss(s, t, patch_size=4, **weights)
  ws = weights.get("slicing_weights", {"row": 25.0, "column": 25.0, "patch": 25.0})
  expected = ref_crd(s, t, 4, weights.get("distance_weight", 1.0),
                     weights.get("angle_weight", 2.0), tuple(ws[n] for n in crd.SLICINGS))
  assert total.dtype == jnp.float32
  np.testing.assert_allclose(float(total), expected, rtol=RTOL)
  ss, ts = ref_slices(s, 4), ref_slices(t, 4)
  for n in crd.SLICINGS:
    np.testing.assert_allclose(float(terms[f"{n}_distance"]), ref_distance(ss[n], ts[n]),
                               rtol=RTOL)
    np.testing.assert_allclose(float(terms[f"{n}_angle"]), ref_angle(ss[n], ts[n]), rtol=RTOL)


def test_hand_computed_triangles():
  """Teacher: a right isosceles triangle (0,0), (1,0), (0,1); student: an equilateral one."""
  teacher = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], np.float32)
  student = np.array([[[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]]], np.float32)
  # Distances: teacher 1, 1, sqrt2 (mean over the 6 ordered off-diagonal pairs (2 + sqrt2)/3),
  # student all 1 (mean 1). Ordered pairs: 4 legs, 2 hypotenuses, 3 zero diagonals.
  mu = (2 + math.sqrt(2)) / 3
  leg, hyp = 1 - 1 / mu, 1 - math.sqrt(2) / mu
  dist = (4 * 0.5 * leg**2 + 2 * 0.5 * hyp**2) / 9
  # Angles: teacher 90 degrees at (0,0) and 45 at the others, student 60 everywhere; per vertex
  # two ordered (i, k) pairs with i != k, the rest (i == k: cos 1 for both, or degenerate: 0).
  angle = (2 * 0.5 * (0.5 - 0.0)**2 + 4 * 0.5 * (0.5 - math.sqrt(0.5))**2) / 27
  np.testing.assert_allclose(float(crd.rkd_distance_loss(student, teacher)), dist, rtol=RTOL)
  np.testing.assert_allclose(float(crd.rkd_angle_loss(student, teacher)), angle, rtol=RTOL)
  # Scaling, rotating and translating the teacher's triangle changes no relation.
  rot = np.array([[0.6, -0.8], [0.8, 0.6]], np.float32)
  moved = 3.0 * teacher @ rot.T + np.array([5.0, -2.0], np.float32)
  assert float(crd.rkd_distance_loss(moved, teacher)) < 1e-10
  assert float(crd.rkd_angle_loss(moved, teacher)) < 1e-10


# ----------------------------------------------------------------------------------------------
# behaviour
# ----------------------------------------------------------------------------------------------


def test_zero_for_identical_outputs_and_growing_with_the_perturbation():
  t = _rng_images(3, (2, 16, 16, 3))
  total, terms = crd.crd_loss(t, t, patch_size=4)
  assert float(total) == 0.0 and all(float(v) == 0.0 for v in terms.values())
  noise = np.random.default_rng(4).standard_normal(t.shape).astype(np.float32)
  losses = [float(crd.crd_loss(t + s * noise, t, patch_size=4)[0])
            for s in (1e-3, 1e-2, 1e-1, 1.0)]
  assert losses[0] > 0
  assert all(a < b for a, b in zip(losses, losses[1:])), losses


def test_gradients_float64():
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    s = jnp.asarray(rng.standard_normal((2, 4, 4, 2)))
    t = jnp.asarray(rng.standard_normal((2, 4, 4, 2)))
    assert s.dtype == jnp.float64
    loss = jax.jit(lambda x, y: crd.crd_loss(x, y, patch_size=2)[0])
    check_grads(lambda x: loss(x, t), (s,), order=1, modes=["rev"])
    assert loss(s, t).dtype == jnp.float64
    # The anchor subset is differentiated through the same custom VJP.
    sub = jax.jit(lambda x: crd.rkd_angle_loss(x, crd.slice_rows(t), num_anchors=2,
                                               key=jax.random.key(1)))
    check_grads(sub, (crd.slice_rows(s),), order=1, modes=["rev"])


def test_gradients_are_finite_for_coincident_slices():
  """A zero difference vector has no direction: its unit vector and its gradient are zero
  (PyTorch's F.normalize would give a 1e12-scale gradient there)."""
  t = _rng_images(6, (1, 8, 8, 3))
  flat = np.zeros_like(t)              # every slice equal: zero distances, zero unit vectors
  dup = t.copy()
  dup[:, 3] = dup[:, 2]                # two equal rows
  rows = functools.partial(crd.crd_loss, slicing_weights={"row": 1.0})
  value_and_grad = jax.jit(jax.value_and_grad(lambda x, y: rows(x, y)[0], argnums=(0, 1)))
  for s in (flat, dup):
    value, (g, g_teacher) = value_and_grad(s, t)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(g)))
    assert float(np.max(np.abs(g))) < 1e3
    assert float(np.max(np.abs(g_teacher))) == 0.0  # the teacher is a target only
  assert float(np.max(np.abs(g))) > 0  # the duplicated rows still get a gradient


def test_jit_matches_eager_and_traces_once():
  traces = []

  def loss(s, t):
    traces.append(1)
    return crd.crd_loss(s, t, patch_size=4)

  jitted = jax.jit(loss)
  s, t = _rng_images(7, (2, 8, 8, 3)), _rng_images(8, (2, 8, 8, 3))
  total, terms = jitted(s, t)
  eager, eager_terms = crd.crd_loss(s, t, patch_size=4)
  # float32, jit may reorder sums of ~1e3 Huber terms (sqrt(n) * eps ~ 4e-6): RTOL, the bound
  # both sides already meet against float64 (seen: 3e-7 there).
  np.testing.assert_allclose(float(total), float(eager), rtol=RTOL)
  assert set(terms) == set(eager_terms) == {
      f"{n}{x}" for n in crd.SLICINGS for x in ("", "_distance", "_angle")}
  jitted(s + 0.5, t)
  assert len(traces) == 1


def test_zero_weights_skip_their_terms():
  s, t = _rng_images(9, (1, 32, 64, 3)), _rng_images(10, (1, 32, 64, 3))
  _, terms = crd.crd_loss(s, t, slicing_weights={"row": 1.0})
  assert set(terms) == {"row", "row_distance", "row_angle"}
  # Two 32x32 patches are enough for the distance term alone.
  total, terms = crd.crd_loss(s, t, angle_weight=0.0, slicing_weights={"patch": 2.0})
  assert set(terms) == {"patch", "patch_distance"}
  np.testing.assert_allclose(float(total), 2.0 * float(terms["patch_distance"]), rtol=1e-6)


def test_anchor_subset_estimates_the_exact_angle_term():
  rng = np.random.default_rng(11)
  s = rng.standard_normal((2, 6, 4)).astype(np.float32)
  t = rng.standard_normal((2, 6, 4)).astype(np.float32)
  exact = float(crd.rkd_angle_loss(s, t))
  key = jax.random.key(0)
  keys = jax.random.split(key, 300)
  est = np.asarray(jax.jit(lambda ks: jax.lax.map(
      lambda k: crd.rkd_angle_loss(s, t, num_anchors=2, key=k), ks))(keys))
  assert est.std() > 0  # the subset really changes with the key
  np.testing.assert_allclose(est.mean(), exact, rtol=0.05)  # unbiased
  # crd_loss caps num_anchors at each slicing's number of slices, which is then exact.
  # (the rows of these [2, 6, 4, 1] images are the [2, 6, 4] slices above)
  _, capped = crd.crd_loss(s.reshape(2, 6, 4, 1), t.reshape(2, 6, 4, 1),
                           slicing_weights={"row": 1.0}, num_anchors=100, key=key)
  np.testing.assert_allclose(float(capped["row_angle"]), exact, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------


BAD = [
    (lambda: crd.crd_loss(np.zeros((1, 70, 70, 3)), np.zeros((1, 70, 70, 3))),
     r"patch_size 32 does not divide the image height 70 and width 70"),
    (lambda: crd.slice_patches(np.zeros((1, 8, 12, 3)), 8),
     r"patch_size 8 does not divide the image height 8 and width 12"),
    (lambda: crd.slice_patches(np.zeros((1, 8, 8, 3)), 0), r"positive int, got 0"),
    (lambda: crd.crd_loss(np.zeros((1, 32, 64, 3)), np.zeros((1, 32, 64, 3))),
     r"angle term needs at least 3 slices, got 2 patch slices of a 32x64 image with "
     r"patch_size 32"),
    (lambda: crd.rkd_angle_loss(np.zeros((1, 2, 5)), np.zeros((1, 2, 5))),
     r"angle term needs at least 3 slices per sample, got n_slices=2"),
    (lambda: crd.rkd_distance_loss(np.zeros((1, 1, 5)), np.zeros((1, 1, 5))),
     r"distance term needs at least 2 slices per sample, got n_slices=1"),
    (lambda: crd.crd_loss(np.zeros((2, 32, 32, 3)), np.zeros((2, 32, 64, 3))),
     r"same shape, got \(2, 32, 32, 3\) and \(2, 32, 64, 3\)"),
    (lambda: crd.rkd_distance_loss(np.zeros((1, 4, 5)), np.zeros((1, 4, 6))),
     r"same shape, got \(1, 4, 5\) and \(1, 4, 6\)"),
    (lambda: crd.crd_loss(np.zeros((32, 32, 3)), np.zeros((32, 32, 3))),
     r"student_images must be \[batch, height, width, channels\], got shape \(32, 32, 3\)"),
    (lambda: crd.crd_loss(np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 3)),
                          angle_weight=-1.0), r"angle_weight must be >= 0, got -1.0"),
    (lambda: crd.crd_loss(np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 3)),
                          slicing_weights={"rows": 1.0}), r"unknown \['rows'\]"),
    (lambda: crd.crd_loss(np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 3)),
                          slicing_weights=(1.0, 2.0)), r"3 entries .* got \(1.0, 2.0\)"),
    (lambda: crd.rkd_angle_loss(np.zeros((1, 4, 5)), np.zeros((1, 4, 5)), num_anchors=2),
     r"num_anchors=2 needs a PRNG key"),
    (lambda: crd.rkd_angle_loss(np.zeros((1, 4, 5)), np.zeros((1, 4, 5)), num_anchors=0,
                                key=jax.random.key(0)), r"in \[1, 4\] .* got 0"),
]


@pytest.mark.parametrize("call,message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_inputs_raise_one_line_value_errors(call, message):
  with pytest.raises(ValueError, match=message) as info:
    call()
  assert "\n" not in str(info.value)
