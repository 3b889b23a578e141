"""The local density structure loss (jaxgc.train.density) against a float64 numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgc.train import density


def _reference(t, s, k, tp=None, sp=None, lam=1.0):
  """The issue's formulas in float64 numpy, loop by loop."""
  t = t.reshape(len(t), -1).astype(np.float64)
  s = s.reshape(len(s), -1).astype(np.float64)
  kls, kdes = [], []
  for i in range(len(t)):
    d = ((t - t[i]) ** 2).sum(1)
    d[i] = np.inf
    nb = np.argsort(d, kind="stable")[:k]
    h = np.sqrt(d[nb[-1]])
    tn, sn = list(t[nb]), list(s[nb])
    if tp is not None:
      tn += list(tp[i].reshape(tp.shape[1], -1))
      sn += list(sp[i].reshape(sp.shape[1], -1))
    lt = np.array([-((t[i] - v) ** 2).sum() / (2 * h * h) for v in tn])
    ls = np.array([-((s[i] - v) ** 2).sum() / (2 * h * h) for v in sn])
    p = np.exp(lt) / np.exp(lt).sum()
    q = np.exp(ls) / np.exp(ls).sum()
    kls.append((p * np.log(p / q)).sum())
    kdes.append(abs(np.log(np.exp(lt).mean()) - np.log(np.exp(ls).mean())))
  return np.mean(kls) + lam * np.mean(kdes)


@pytest.fixture(scope="module")
def feats():
  rng = np.random.default_rng(0)
  t = rng.normal(size=(12, 6)).astype(np.float32)
  s = (t + 0.3 * rng.normal(size=t.shape)).astype(np.float32)
  tp = (t[:, None] + 0.2 * rng.normal(size=(12, 3, 6))).astype(np.float32)
  sp = (tp + 0.3 * rng.normal(size=tp.shape)).astype(np.float32)
  return t, s, tp, sp


def test_matches_float64_reference(feats):
  t, s, tp, sp = feats
  got, aux = jax.jit(lambda *a: density.density_loss(a[0], a[1], 4, t_pert=a[2], s_pert=a[3],
                                                     lam=0.5))(t, s, tp, sp)
  want = _reference(t, s, 4, tp, sp, lam=0.5)
  np.testing.assert_allclose(float(got), want, rtol=1e-4)
  got2, _ = density.density_loss(t, s, 3)
  np.testing.assert_allclose(float(got2), _reference(t, s, 3), rtol=1e-4)
  assert float(aux["kl"]) > 0 and float(aux["kde"]) > 0


def test_zero_at_teacher_and_grows_with_perturbation(feats):
  t, _, tp, _ = feats
  rng = np.random.default_rng(1)
  noise, noise_p = rng.normal(size=t.shape), rng.normal(size=tp.shape)
  loss0, _ = density.density_loss(t, t, 4, t_pert=tp, s_pert=tp)
  assert abs(float(loss0)) < 1e-6
  losses = [float(density.density_loss(t, t + a * noise, 4, t_pert=tp,
                                       s_pert=tp + a * noise_p)[0]) for a in (0.05, 0.2, 0.8)]
  assert 0 < losses[0] < losses[1] < losses[2], losses
  # a gradient reaches the student and none the teacher
  g_s = jax.grad(lambda s: density.density_loss(t, s, 4)[0])(t + 0.1 * noise)
  g_t = jax.grad(lambda tt: density.density_loss(tt, t + 0.1 * noise, 4)[0])(t)
  assert float(jnp.abs(g_s).max()) > 0 and float(jnp.abs(g_t).max()) == 0


def test_pair_discriminator_and_features(feats):
  t, s, tp, sp = feats
  idx, h = density.nearest_neighbours(t, 4)
  assert idx.shape == (12, 4) and h.shape == (12,) and not np.any(np.asarray(idx)
                                                                    == np.arange(12)[:, None])
  pd = density.PairDiscriminator((16,))
  c, n = density.neighbour_pairs(t, idx, tp)
  assert c.shape == n.shape == (12 * 7, 6)
  params = pd.init(jax.random.key(0), c, n)
  d_loss, g_loss = density.pair_losses(pd.apply, params, t, s, idx, tp, sp)
  assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss))
  g = jax.grad(lambda s_: density.pair_losses(pd.apply, params, t, s_, idx, tp, sp)[1])(s)
  assert float(jnp.abs(g).max()) > 0
  from jaxgc.models.mlp import MLPDiscriminator
  d = MLPDiscriminator(hidden=(8, 4))
  x = jnp.zeros((3, 28, 28, 1))
  dv = d.init(jax.random.key(0), x)
  assert density.penultimate_features(d, dv, x, "dense_2").shape == (3, 4)
  with pytest.raises(ValueError, match="no layer called 'conv_out'"):
    density.penultimate_features(d, dv, x, "conv_out")
  imgs = density.perturb_images(jax.random.key(1), jnp.ones((2, 8, 8, 3)), 3)
  assert imgs.shape == (2, 3, 8, 8, 3)
  assert density.pixel_features(jnp.ones((2, 32, 32, 3)), 8).shape == (2, 192)


@pytest.mark.parametrize("k,m,needle", [(12, 0, "neighbours k"), (0, 0, "neighbours k"),
                                        (3, 12, "perturbed copies M")])
def test_bad_neighbourhood_one_line(k, m, needle):
  with pytest.raises(ValueError, match=needle) as e:
    density.check_neighbourhood(12, k, m)
  assert "\n" not in str(e.value)
