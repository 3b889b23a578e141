"""Content relationship distillation: the distill step and its loss terms, the GAN losses by
hand, the frozen feature networks (Gram, teacher encoder, Inception taps), the sharded step,
and the `jaxgc distill` job on the real horse->zebra teacher (outputs, resume, bad input).

Tiny models throughout: a sub-mobile teacher of stem 8, its half-width student, a PatchGAN of
ndf 8, batches of 8 images of 32 x 32 and 8 x 8 CRD patches.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from conftest import asset_path
from conftest import run_on_fake_devices
from jaxgc import cli
from jaxgc.checkpoint import load_any_model
from jaxgc.jobs import distill as job
from jaxgc.models import dcgan
from jaxgc.models import inception as inception_model
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.models.resnet import ENCODER_KEYS
from jaxgc.models.resnet import ResnetGenerator
from jaxgc.models.resnet import SubMobileResnetGenerator
from jaxgc.models.resnet import encoder_of
from jaxgc.train import crd_losses as crd_lib
from jaxgc.train import crd_step as distill
from jaxgc.train import feature_nets as features
from jaxgc.train import gan_losses

H2Z = "cyclegan-h2z-gancompression/latest_net_G.pth"
CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "crd_h2z.py")
SIZE, BATCH, PATCH = 32, 8, 8
TEACHER = SubMobileResnetGenerator(stem=8, down=(8, 16), hidden=(8, 8), up=(8, 8))
STUDENT = SubMobileResnetGenerator(stem=4, down=(4, 8), hidden=(4, 4), up=(4, 4))
DISC = PatchGANDiscriminator(ndf=8, n_layers=3, norm="instance", image_size=SIZE)
LR = 1e-3
TERMS = ("crd", "recon", "perceptual", "style", "adv")
D_METRICS = ("d_loss", "d_real", "d_fake", "d_grad_norm")
# Float32 agreement of the same quantity computed by two differently fused XLA programs.
RTOL = 1e-5


# ---------------------------------------------------------------------------------------------
# helpers


def _random_variables(shapes, seed: int):
  """Variables of the given shapes filled in numpy: kernels LeCun-normal (N(0, 1 / fan_in), as
  Flax's default), biases N(0, 0.1), norm variances 1, other statistics 0. Jitting ``init``
  instead costs seconds of XLA compilation per model (its truncated-normal sampler)."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      fan_in = int(np.prod(s.shape[:-1]))
      return rng.normal(0.0, math.sqrt(1.0 / fan_in), s.shape).astype(np.float32)
    if "var" in name:
      return np.ones(s.shape, np.float32)
    if "params" in name and "bias" in name:
      return rng.normal(0.0, 0.1, s.shape).astype(np.float32)
    return np.zeros(s.shape, np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _init(module, seed: int, size: int = SIZE):
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  return _random_variables(shapes, seed)


def _images(seed: int, n: int = BATCH, size: int = SIZE) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, size, size, 3)).astype(np.float32)


def _copy(tree):
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _restart(template, g_params, d_params=None):
  """A step-0 state with ``template``'s optimizer and copies of the given parameters.

  The same static ``tx`` object keeps the tree definition, so a step compiled for ``template``
  is reused (``create_distill_state`` builds a new ``multi_transform`` each call)."""
  params = {"generator": _copy(g_params), "discriminator": _copy(d_params or {})}
  return template.replace(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=template.tx.init(params))


@functools.lru_cache(maxsize=None)
def _apply(module):
  return jax.jit(module.apply)


@functools.lru_cache(maxsize=None)
def _inception_tap_vars():
  """Random FID-Inception variables for the stages up to ``pool0`` (80 x 80 input)."""
  net = inception_model.FIDInceptionV3(taps=("pool0",))
  return _init(net, 5, size=80)


# name: (config, discriminator?, feature net ("encoder" / "inception" / None), image side)
CASES = {
    "adv_teacher_encoder": (distill.DistillConfig(
        patch_size=PATCH, recon_weight=1.0, adv_weight=1.0, disc_real="teacher",
        perceptual_weight=2.0, style_weight=3.0), True, "encoder", SIZE),
    "adv_target_inception": (distill.DistillConfig(
        patch_size=PATCH, crd_weight=0.5, recon_weight=1.0, recon="mse", adv_weight=0.5,
        gan_loss="vanilla", disc_real="target", perceptual_weight=1.0, style_weight=1.0),
        True, "inception", 80),
}


@functools.lru_cache(maxsize=None)
def _case(name: str):
  """``(step, template state, teacher variables, feature net, initial student and D params)``
  of a case, built once per session so tests share its compiled step."""
  cfg, with_disc, feat, size = CASES[name]
  tv, sv = _init(TEACHER, 0, size), _init(STUDENT, 1, size)
  dv = _init(DISC, 2, size) if with_disc else None
  fn = None
  if feat == "encoder":
    fn = features.teacher_encoder(TEACHER, tv)
  elif feat == "inception":
    fn = features.inception(_inception_tap_vars(), taps=("pool0",))
  step = distill.make_distill_step(STUDENT, TEACHER, cfg, DISC if with_disc else None, fn)
  template = distill.create_distill_state(sv, dv, optax.adam(LR))
  return step, template, tv, fn, sv["params"], None if dv is None else dv["params"]


def _gan_np(logits, target, kind):
  z = np.asarray(logits, np.float64)
  if kind == "lsgan":
    return np.mean((z - target) ** 2)
  p = 1.0 / (1.0 + np.exp(-z))
  return np.mean(-np.log(p) if target == 1.0 else -np.log(1.0 - p))


def _changed(a, b) -> list[bool]:
  return [not np.array_equal(np.asarray(x), np.asarray(y))
          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


# ---------------------------------------------------------------------------------------------
# the step: one-step smoke test of every configuration, with every metric checked by hand


@pytest.mark.parametrize("name", list(CASES))
def test_one_step_every_term(name):
  cfg, with_disc, feat, size = CASES[name]
  step, template, tv, fn, g0, d0 = _case(name)
  n = 4 if size > SIZE else BATCH
  x = _images(10, n, size)
  batch = {"A": x}
  if cfg.disc_real == "target" and with_disc:
    batch["B"] = _images(11, n, size)
  state = _restart(template, g0, d0)
  new, m = step(state, batch, tv, None if fn is None else fn.variables)
  m = {k: float(v) for k, v in jax.device_get(m).items()}

  assert set(m) == {"loss", *TERMS, "crd_row", "crd_column", "crd_patch", "grad_norm",
                    *D_METRICS}
  assert all(math.isfinite(v) for v in m.values()), m
  assert int(new.step) == 1
  assert any(_changed(g0, new.params["generator"]))
  # The output layer has a real gradient whatever the terms: it must move.
  assert not np.array_equal(np.asarray(g0["conv_out"]["kernel"]),
                            np.asarray(new.params["generator"]["conv_out"]["kernel"]))

  weights = {"crd": cfg.crd_weight, "recon": cfg.recon_weight,
             "perceptual": cfg.perceptual_weight, "style": cfg.style_weight,
             "adv": cfg.adv_weight}
  for term, w in weights.items():
    if w == 0:
      assert m[term] == 0.0, (term, m[term])           # disabled terms are exactly 0
    else:
      assert m[term] > 0.0, (term, m[term])
  expected_loss = sum(w * m[t] for t, w in weights.items())
  assert m["loss"] == pytest.approx(expected_loss, rel=RTOL)
  # CRD: the slicing terms before their weights (25 each by default).
  sw = cfg.slicing_weights
  assert m["crd"] == pytest.approx(sw[0] * m["crd_row"] + sw[1] * m["crd_column"]
                                   + sw[2] * m["crd_patch"], rel=RTOL)

  # Every term against independent forward passes at the initial parameters.
  t_out = _apply(TEACHER)(tv, x)
  s_out = _apply(STUDENT)({"params": g0}, x)
  crd_ref = crd_lib.crd_loss(s_out, t_out, patch_size=PATCH)[0]
  assert m["crd"] == pytest.approx(float(crd_ref), rel=RTOL)
  err = np.asarray(s_out, np.float64) - np.asarray(t_out, np.float64)
  if cfg.recon_weight:
    ref = np.mean(np.abs(err)) if cfg.recon == "l1" else np.mean(err ** 2)
    assert m["recon"] == pytest.approx(ref, rel=RTOL)
  if fn is not None:
    ref = jax.jit(functools.partial(features.feature_losses, fn))(fn.variables, s_out, t_out)
    assert m["perceptual"] == pytest.approx(float(ref["perceptual"]), rel=1e-4)
    assert m["style"] == pytest.approx(float(ref["style"]), rel=1e-4)

  if with_disc:
    d = {"params": d0}
    real = batch["B"] if cfg.disc_real == "target" else t_out
    fake = t_out if cfg.disc_real == "target" else s_out
    kind = cfg.gan_loss
    assert m["d_real"] == pytest.approx(_gan_np(_apply(DISC)(d, real), 1.0, kind), rel=RTOL)
    assert m["d_fake"] == pytest.approx(_gan_np(_apply(DISC)(d, fake), 0.0, kind), rel=RTOL)
    assert m["adv"] == pytest.approx(_gan_np(_apply(DISC)(d, s_out), 1.0, kind), rel=RTOL)
    assert m["d_loss"] == pytest.approx(0.5 * (m["d_real"] + m["d_fake"]), rel=RTOL)
    assert m["d_grad_norm"] > 0
    # Every D kernel moved (its biases before an instance norm have no gradient to speak of).
    for layer, w in d0.items():
      assert not np.array_equal(np.asarray(w["kernel"]),
                                np.asarray(new.params["discriminator"][layer]["kernel"])), layer
  else:
    assert new.params["discriminator"] == {}
    assert all(m[k] == 0.0 for k in D_METRICS), m

  # Second call on a new state of the same structure: no recompilation.
  step(_restart(template, g0, d0), batch, tv, None if fn is None else fn.variables)
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_target_without_b_raises_at_trace_time():
  step, template, tv, fn, g0, d0 = _case("adv_target_inception")
  with pytest.raises(ValueError, match="'B'"):
    step(_restart(template, g0, d0), {"A": _images(10, 4, 80)}, tv, fn.variables)


def test_crd_is_zero_for_the_teacher_and_grows_with_a_perturbation():
  # The student is the teacher: the same (small) module and the same variables. L1 recon (the
  # default) must have a zero gradient there too, as PyTorch's L1Loss (jnp.abs alone has 1).
  cfg = distill.DistillConfig(patch_size=PATCH, adv_weight=0.0, recon_weight=1.0, recon="l1")
  step = distill.make_distill_step(STUDENT, STUDENT, cfg)
  tv = _init(STUDENT, 0)
  template = distill.create_distill_state(tv, None, optax.adam(LR))
  x = _images(10)

  new, m = step(_restart(template, tv["params"]), {"A": x}, tv, None)
  assert float(m["crd"]) == 0.0 and float(m["recon"]) == 0.0 and float(m["loss"]) == 0.0
  # The teacher is a fixed point: a zero gradient, so Adam leaves every weight where it was.
  assert float(m["grad_norm"]) == 0.0
  assert not any(_changed(tv["params"], new.params["generator"]))
  # No adversarial term: no discriminator at all, and its metrics are exactly 0.
  assert new.params["discriminator"] == {}
  assert all(float(m[k]) == 0.0 for k in D_METRICS), m

  rng = np.random.default_rng(7)
  direction = jax.tree.map(lambda w: rng.normal(size=w.shape).astype(np.float32), tv["params"])
  crd, recon = [], []
  for eps in (1e-3, 1e-2, 1e-1):
    p = jax.tree.map(lambda w, d, e=eps: w + e * d, tv["params"], direction)
    _, m = step(_restart(template, p), {"A": x}, tv, None)
    crd.append(float(m["crd"]))
    recon.append(float(m["recon"]))
  assert 0 < crd[0] < crd[1] < crd[2], crd
  assert 0 < recon[0] < recon[1] < recon[2], recon
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_student_and_teacher_output_shapes_must_agree():
  gray = SubMobileResnetGenerator(stem=4, down=(4, 8), hidden=(4, 4), up=(4, 4), output_nc=1)
  cfg = distill.DistillConfig(patch_size=PATCH, adv_weight=0.0)
  step = distill.make_distill_step(gray, TEACHER, cfg)
  state = distill.create_distill_state(_init(gray, 1), None, optax.sgd(LR))
  with pytest.raises(ValueError, match=r"\(8, 32, 32, 1\) and \(8, 32, 32, 3\)"):
    step(state, {"A": _images(10)}, _init(TEACHER, 0), None)


def test_step_and_config_errors():
  with pytest.raises(ValueError, match="no discriminator"):
    distill.make_distill_step(STUDENT, TEACHER, distill.DistillConfig())
  with pytest.raises(ValueError, match="feature network"):
    distill.make_distill_step(STUDENT, TEACHER, distill.DistillConfig(
        adv_weight=0.0, perceptual_weight=1.0))
  bad = [dict(crd_weight=-1.0), dict(crd_weight=0.0, adv_weight=0.0), dict(recon="l2"),
         dict(gan_loss="hinge"), dict(disc_real="fake"), dict(patch_size=0),
         dict(patch_size=8.0), dict(num_anchors=2), dict(num_anchors=True)]
  for kw in bad:
    with pytest.raises(ValueError):
      distill.DistillConfig(**kw)
  bn = PatchGANDiscriminator(ndf=8, n_layers=3, norm="batch", image_size=SIZE)
  with pytest.raises(ValueError, match="batch norm"):
    distill.create_distill_state(_init(STUDENT, 1), _init(bn, 2), optax.sgd(LR))
  distill.check_crop(distill.DistillConfig(patch_size=8), 32, 32)
  with pytest.raises(ValueError, match="12"):
    distill.check_crop(distill.DistillConfig(patch_size=12), 32, 32)


# ---------------------------------------------------------------------------------------------
# GAN losses by hand


@pytest.mark.parametrize("kind", ["lsgan", "vanilla"])
def test_gan_losses_by_hand(kind):
  real = np.array([[0.5, -1.0], [2.0, 0.0]], np.float32).reshape(1, 2, 2, 1)
  fake = np.array([[-0.25, 1.5], [0.0, -3.0]], np.float32).reshape(1, 2, 2, 1)
  sig = lambda z: 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))  # noqa: E731
  if kind == "lsgan":
    r_ref = np.mean((real.astype(np.float64) - 1) ** 2)   # (0.25 + 4 + 1 + 1) / 4 = 1.5625
    f_ref = np.mean(fake.astype(np.float64) ** 2)         # (0.0625 + 2.25 + 0 + 9) / 4
    g_ref = np.mean((fake.astype(np.float64) - 1) ** 2)
    assert r_ref == pytest.approx(1.5625)
  else:
    r_ref = np.mean(-np.log(sig(real)))
    f_ref = np.mean(-np.log(1 - sig(fake)))
    g_ref = np.mean(-np.log(sig(fake)))
  loss, r, f = gan_losses.discriminator_loss(jnp.asarray(real), jnp.asarray(fake), kind)
  assert float(r) == pytest.approx(r_ref, rel=1e-6)
  assert float(f) == pytest.approx(f_ref, rel=1e-6)
  assert float(loss) == pytest.approx(0.5 * (r_ref + f_ref), rel=1e-6)
  g = gan_losses.generator_loss(jnp.asarray(fake), kind)
  assert float(g) == pytest.approx(g_ref, rel=1e-6)
  assert loss.dtype == g.dtype == jnp.float32
  # bfloat16 logits are scored in float32.
  assert gan_losses.generator_loss(jnp.asarray(fake, jnp.bfloat16), kind).dtype == jnp.float32


def test_vanilla_gan_loss_is_stable_for_large_logits():
  big = jnp.asarray([[80.0, -80.0]]).reshape(1, 1, 2, 1)
  _, r, f = gan_losses.discriminator_loss(big, big, "vanilla")
  # softplus(-80) ~ 1.8e-35 and softplus(80) = 80: one of the two logits is wrong in each term.
  assert float(r) == pytest.approx(40.0, rel=1e-6)
  assert float(f) == pytest.approx(40.0, rel=1e-6)
  assert math.isfinite(float(gan_losses.generator_loss(big * 10, "vanilla")))


# ---------------------------------------------------------------------------------------------
# the discriminator learns what tells the student from the teacher


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discriminator_learns_teacher_vs_student(seed):
  step, template, tv, fn, _, _ = _case("adv_teacher_encoder")
  sv, dv = _init(STUDENT, 100 + seed), _init(DISC, 200 + seed)
  state = _restart(template, sv["params"], dv["params"])
  batch = {"A": _images(300 + seed)}
  d_losses = []
  for _ in range(20):
    state, m = step(state, batch, tv, fn.variables)
    d_losses.append(float(m["d_loss"]))
  x = batch["A"]
  d = distill.disc_variables(state)
  t_logit = float(jnp.mean(_apply(DISC)(d, _apply(TEACHER)(tv, x))))
  s_logit = float(jnp.mean(_apply(DISC)(d, _apply(STUDENT)(distill.student_variables(state), x))))
  # LSGAN targets are 1 (teacher) and 0 (student): after 20 Adam steps at lr 1e-3 the D scores
  # the teacher's outputs clearly above the student's, and its loss fell tenfold. (Seeds 0-9:
  # gaps 0.75 to 1.03, final / first loss 0.008 to 0.022.) A D trained the wrong way round, or
  # not at all, fails both.
  assert t_logit - s_logit > 0.5, (t_logit, s_logit)
  assert d_losses[-1] < 0.1 * d_losses[0], d_losses
  assert int(state.step) == 20
  assert step._cache_size() == 1  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# sharding


def test_sharded_distill_step_equals_single_device():
  run_on_fake_devices("_sharded_distill_check.py", timeout=600)


# ---------------------------------------------------------------------------------------------
# feature networks


def test_gram_and_feature_losses_by_hand():
  rng = np.random.default_rng(0)
  s = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  t = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  s64, t64 = s.astype(np.float64), t.astype(np.float64)

  def gram_np(x):
    f = x.reshape(x.shape[0], -1, x.shape[-1])
    return np.einsum("bnc,bnd->bcd", f, f) / (x.shape[1] * x.shape[2] * x.shape[3])

  np.testing.assert_allclose(features.gram(jnp.asarray(s)), gram_np(s64), rtol=1e-5, atol=1e-7)
  # A two-map network: the images themselves and their negation at half resolution.
  net = features.FeatureNet("toy", lambda v, x: (x, -v * x[:, ::2, ::2]), None)
  out = features.feature_losses(net, 2.0, jnp.asarray(s), jnp.asarray(t))
  maps_s, maps_t = (s64, -2 * s64[:, ::2, ::2]), (t64, -2 * t64[:, ::2, ::2])
  perceptual = np.mean([np.mean((a - b) ** 2) for a, b in zip(maps_s, maps_t)])
  style = np.mean([np.mean((gram_np(a) - gram_np(b)) ** 2) for a, b in zip(maps_s, maps_t)])
  assert float(out["perceptual"]) == pytest.approx(perceptual, rel=1e-5)
  assert float(out["style"]) == pytest.approx(style, rel=1e-4)
  same = features.feature_losses(net, 2.0, jnp.asarray(s), jnp.asarray(s))
  assert float(same["perceptual"]) == 0.0 and float(same["style"]) == 0.0
  assert float(features.feature_losses(net, 2.0, jnp.asarray(s), jnp.asarray(t),
                                       style=False)["style"]) == 0.0
  # No gradient into the teacher's side.
  g = jax.grad(lambda a, b: features.feature_losses(net, 2.0, a, b)["perceptual"],
               argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
  assert np.any(np.asarray(g[0]) != 0) and np.all(np.asarray(g[1]) == 0)
  with pytest.raises(ValueError, match="same shape"):
    features.feature_losses(net, 2.0, jnp.asarray(s), jnp.asarray(t[:, :2]))


def _capture(module, variables, x):
  _, state = jax.jit(functools.partial(module.apply, capture_intermediates=True))(variables, x)
  return state["intermediates"]


@pytest.mark.parametrize("generator", [TEACHER, ResnetGenerator(ngf=4, n_blocks=2)],
                         ids=["sub_mobile", "resnet"])
def test_encoder_of_equals_the_generator_internals(generator):
  v = _init(generator, 3)
  # Inputs beyond [-1, 1]: the sub-mobile generator clamps them, so must its encoder.
  x = 1.5 * _images(4, n=2)
  enc, enc_vars = encoder_of(generator, v)
  maps = jax.jit(enc.apply)(enc_vars, x)
  inter = _capture(generator, v, x)
  assert enc.clamp == isinstance(generator, SubMobileResnetGenerator)
  assert {k for c in enc_vars.values() for k in c} <= set(ENCODER_KEYS)
  assert not any(k.startswith("block_") for c in enc_vars.values() for k in c)
  assert [m.shape for m in maps] == [(2, 32, 32, enc.stem), (2, 16, 16, enc.down[0]),
                                     (2, 8, 8, enc.down[1])]
  for m, norm in zip(maps, ("norm_in", "down_norm_0", "down_norm_1")):
    ref = np.maximum(np.asarray(inter[norm]["__call__"][0]), 0.0)
    assert np.any(ref > 0)
    np.testing.assert_allclose(np.asarray(m), ref, rtol=1e-5, atol=1e-5, err_msg=norm)
  fn = features.teacher_encoder(generator, v)
  assert fn.name == "teacher_encoder"
  np.testing.assert_array_equal(np.asarray(jax.jit(fn.apply)(fn.variables, x)[2]),
                                np.asarray(maps[2]))


def test_encoder_of_rejects_other_generators():
  gen = dcgan.DCGANGenerator()
  v = jax.eval_shape(gen.init, jax.random.key(0), jnp.zeros((1, gen.z_dim)))
  with pytest.raises(ValueError, match="DCGANGenerator"):
    encoder_of(gen, v)
  with pytest.raises(ValueError, match="DCGANGenerator"):
    features.teacher_encoder(gen, v)


def _random_inception_variables(seed: int = 0):
  """Random variables of the whole FID Inception (He-normal kernels, so activations neither
  vanish nor explode through 12 layers; zero shifts, unit variances)."""
  shapes = jax.eval_shape(inception_model.FIDInceptionV3().init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  v = _random_variables(shapes, seed)
  return jax.tree.map(lambda w: w * math.sqrt(2.0) if w.ndim == 4 else w, v)


def _max_pool_3x3_s2_np(x):
  n, h, w, c = x.shape
  ho, wo = (h - 3) // 2 + 1, (w - 3) // 2 + 1
  out = np.full((n, ho, wo, c), -np.inf, x.dtype)
  for i in range(3):
    for j in range(3):
      out = np.maximum(out, x[:, i:i + 2 * ho:2, j:j + 2 * wo:2])
  return out


def test_inception_taps_equal_the_full_network_internals():
  v = _random_inception_variables()
  x = np.random.default_rng(1).uniform(-1.0, 0.99, (1, 299, 299, 3)).astype(np.float32)
  inter = _capture(inception_model.FIDInceptionV3(), v, x)
  # Taps given out of order come back in STAGES order.
  taps = inception_model.FIDInceptionV3(taps=("mixed_2", "pool1", "pool0"))
  pool0, pool1, mixed_2 = jax.jit(taps.apply)(v, x)
  assert pool0.shape == (1, 73, 73, 64)
  assert pool1.shape == (1, 35, 35, 192)
  assert mixed_2.shape == (1, 35, 35, 288)
  refs = {"pool0": _max_pool_3x3_s2_np(np.asarray(inter["conv_2"]["__call__"][0])),
          "pool1": _max_pool_3x3_s2_np(np.asarray(inter["conv_4"]["__call__"][0])),
          "mixed_2": np.asarray(inter["mixed_2"]["__call__"][0])}
  for name, got in (("pool0", pool0), ("pool1", pool1), ("mixed_2", mixed_2)):
    ref = refs[name]
    assert np.mean(ref > 0) > 0.1, name                   # live activations, not all zeros
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5,
                               atol=1e-5 * float(np.max(np.abs(ref))), err_msg=name)


def test_inception_taps_input_sizes_and_names():
  net = inception_model.FIDInceptionV3
  small = jax.ShapeDtypeStruct((2, 80, 80, 3), jnp.float32)
  key = jax.random.key(0)
  (pool0,) = jax.eval_shape(lambda x: net(taps=("pool0",)).init_with_output(key, x)[0], small)
  assert pool0.shape == (2, 18, 18, 64)      # 80 -> 39 -> 37 -> 37 -> 18
  with pytest.raises(ValueError, match="299"):
    jax.eval_shape(lambda x: net().init(key, x), small)
  with pytest.raises(ValueError, match="75"):
    jax.eval_shape(lambda x: net(taps=("pool0",)).init(key, x),
                   jax.ShapeDtypeStruct((1, 74, 80, 3), jnp.float32))
  with pytest.raises(ValueError, match="pool9"):
    jax.eval_shape(lambda x: net(taps=("pool9",)).init(key, x), small)
  for taps in (("pool9",), ("pool3",), ()):
    with pytest.raises(ValueError, match="taps"):
      features.inception({}, taps)
  fn = features.inception({}, ("pool1", "mixed_2"))
  assert fn.name == "inception:pool1,mixed_2"


def test_inception_feature_net_scales_images_like_fid():
  v = _inception_tap_vars()
  fn = features.inception(v, taps=("pool0",))
  x = _images(12, n=1, size=80)
  pixels = (np.asarray(x, np.float64) + 1.0) * 127.5     # [0, 255]
  ref = inception_model.FIDInceptionV3(taps=("pool0",)).apply(
      v, jnp.asarray((pixels - 128.0) / 128.0, jnp.float32))
  np.testing.assert_allclose(np.asarray(fn.apply(v, x)[0]), np.asarray(ref[0]), rtol=1e-5,
                             atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the job


def _job_config(teacher: str, steps: int) -> dict:
  return {"teacher": teacher, "student": {"width": 0.25}, "disc": {"ndf": 8},
          "data": {"crop_size": 32}, "loss": {"patch_size": 8}, "batch_size": 2,
          "steps": steps, "checkpoint_every": 1, "sample_every": 1, "latency_repeats": 1,
          "tensorboard": False,
          "eval": {"size": 64, "fid_images": 0, "photos": ("astronaut", "coffee")}}


@pytest.fixture
def compile_cache(tmp_path):
  """JAX's persistent compilation cache in ``tmp_path`` for one test, restored afterwards.

  Each run of the job jits fresh closures, so without it the three runs of the resume test
  compile the same programs three times (105 s instead of 60 s on 2 busy CPU cores). The
  equalities asserted hold without it too (checked once by hand)."""
  settings = {"jax_compilation_cache_dir": str(tmp_path / "jax_cache"),
              "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  old = {k: getattr(jax.config, k) for k in settings}
  for k, v in settings.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    for k, v in old.items():
      jax.config.update(k, v)
    compilation_cache.reset_cache()


def _log(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def test_job_on_the_real_teacher_writes_everything_and_resumes_exactly(assets, tmp_path,
                                                                        compile_cache):
  del compile_cache
  teacher = str(asset_path(assets, H2Z))
  b = tmp_path / "b"
  report = job.run(_job_config(teacher, 2), b, progress=False)

  t, s, r = report["teacher"], report["student"], report["ratios"]
  assert s["macs"] < t["macs"] and s["params"] < t["params"]
  # Width 0.25 of every layer: roughly 1/16 of the MACs; the 3-channel ends do not shrink.
  assert r["macs"] == pytest.approx(t["macs"] / s["macs"]) and r["macs"] > 4
  assert r["params"] == pytest.approx(t["params"] / s["params"]) and r["params"] > 4
  assert t["params"] == 356867            # the released horse->zebra sub-mobile generator
  assert t["latency_s"] > 0 and s["latency_s"] > 0 and math.isfinite(r["latency"])
  for when in ("before", "after"):
    q = report["quality"][when]
    assert math.isfinite(q["psnr_db"]) and -1 <= q["ssim"] <= 1, q
    assert "fid" not in q                               # eval.fid_images = 0
  assert report["training"]["resumed_from"] == 0 and report["training"]["steps"] == 2
  assert report["training"]["feature_net"] is None
  assert json.loads((b / "report.json").read_text())["ratios"] == r
  md = (b / "report.md").read_text()
  assert md.startswith("# jaxgc distill") and "| student after training |" in md
  assert "CRD" in md and "lsgan" in md
  for name in ("samples.png", "curves.png", "samples/step_000001.png",
               "samples/step_000002.png"):
    assert (b / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  assert json.loads((b / "distill_config.json").read_text())["student"]["width"] == 0.25
  module, variables = load_any_model(b / "student")
  assert isinstance(module, SubMobileResnetGenerator) and module.stem == 4
  assert sum(np.asarray(w).size for w in jax.tree.leaves(variables)) == s["params"]
  out = jax.jit(module.apply)(variables, _images(13, n=1))
  assert out.shape == (1, 32, 32, 3) and np.all(np.abs(np.asarray(out)) <= 1)
  log = _log(b)
  assert [row["step"] for row in log] == [1, 2]
  for row in log:
    assert all(math.isfinite(v) for v in row.values()), row
    assert row["crd"] > 0 and row["adv"] > 0 and row["d_loss"] > 0 and row["recon"] == 0

  # Resume: B continues from its step-2 checkpoint to step 4; A runs 4 steps in one go.
  resumed = job.run(_job_config(teacher, 4), b, progress=False)
  assert resumed["training"]["resumed_from"] == 2
  a = tmp_path / "a"
  job.run(_job_config(teacher, 4), a, progress=False)
  _, va = load_any_model(a / "student")
  _, vb = load_any_model(b / "student")
  assert jax.tree.structure(va) == jax.tree.structure(vb)
  for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
    assert np.array_equal(np.asarray(x), np.asarray(y))
  assert any(_changed(variables, va))          # steps 3 and 4 did train
  assert _log(a) == _log(b) and len(_log(b)) == 4

  # A rerun that changes a training key is refused.
  changed = _job_config(teacher, 4)
  changed["loss"]["crd_weight"] = 2.0
  with pytest.raises(ValueError,
                     match=r"loss\.crd_weight=1\.0, but the config says loss\.crd_weight=2\.0"):
    job.run(changed, b, progress=False)


# ---------------------------------------------------------------------------------------------
# bad input through the command line


@pytest.mark.parametrize("overrides, message", [
    (["--config.loss.patch_size=12"], "patch_size 12"),
    (["--config.loss.slicing_weights=(0.0,0.0,1.0)", "--config.loss.patch_size=32"],
     "patch_size 32"),
    (["--config.student.width=1.5"], "1.5"),
    (["--config.data.source=unpaired"], "'unpaired'"),
    (["--config.loss.disc_real=target"], "disc_real='target'"),
    (["--config.loss.nope=1"], "loss.nope"),
    (["--config.loss.gan_loss=hinge"], "'hinge'"),
    (["--config.loss.feature_net=vgg"], "'vgg'"),
    (["--config.student.arch=resnet_generator"], "init='slim'"),
    (["--config.data.crop_size=30", "--config.loss.patch_size=5"], "30"),
])
def test_bad_input_one_line_error(tmp_path, capsys, overrides, message):
  workdir = tmp_path / "w"
  argv = ["distill", "--config", CONFIG, "--workdir", str(workdir),
          "--no-progress", "--config.teacher=x.pth", "--config.data.crop_size=32",
          "--config.loss.patch_size=8", *overrides]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("jaxgc: error:") and message in err[0], err
  assert not workdir.exists()          # validated before anything is read or written


def test_missing_teacher_one_line_error(tmp_path, capsys):
  argv = ["distill", "--config", CONFIG, "--workdir", str(tmp_path / "w"),
          "--no-progress", f"--config.teacher={tmp_path / 'missing.pth'}",
          "--config.data.crop_size=32", "--config.loss.patch_size=8"]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("jaxgc: error:") and "missing.pth" in err[0], err
