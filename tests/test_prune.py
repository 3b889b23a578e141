"""Tests for jaxgc.compress.prune: scores, granularities, distributions, schedules, optax transform."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgc.compress import prune
from jaxgc.compress import prune_scores
from jaxgc.compress.prune import PruneConfig
from jaxgc.models import registry

# A 2x4 dense kernel with magnitudes 1..8 in a known order, and a bias that is never pruned.
KERNEL = np.array([[1.0, -8.0, 3.0, -2.0],
                   [7.0, 0.5, -6.0, 5.0]], np.float32)


def tiny_tree():
  return {"dense": {"kernel": jnp.asarray(KERNEL), "bias": jnp.ones(4)}}


def mlp_params(seed=0, **kwargs):
  """The MNIST MLP generator's ``params`` at random init (no checkpoint)."""
  module = registry.build("mlp_generator", **kwargs)
  variables = jax.jit(module.init)(jax.random.key(seed), registry.example_input(module))
  return module, variables["params"]


@pytest.fixture(scope="module")
def mlp():
  return mlp_params()[1]


def normal(seed, shape):
  """Gaussian test data from NumPy (``jax.random.normal`` compiles slowly on CPU)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def kernel_paths(params):
  return [p for p in prune_scores.leaves_by_path(params) if p.endswith("kernel")]


# --------------------------------------------------------------------------- unstructured


@pytest.mark.parametrize("sparsity, expected", [
    (0.0, [[1, 1, 1, 1], [1, 1, 1, 1]]),
    (0.25, [[0, 1, 1, 1], [1, 0, 1, 1]]),       # |w| = 0.5 and 1 go first
    (0.5, [[0, 1, 0, 0], [1, 0, 1, 1]]),        # then 2 and 3
    (0.75, [[0, 1, 0, 0], [1, 0, 0, 0]]),
    (0.95, [[0, 1, 0, 0], [0, 0, 0, 0]]),       # round(7.6) = 8: one weight is always kept
])
def test_unstructured_layer_masks_are_exact(sparsity, expected):
  masks = prune.compute_masks(tiny_tree(), PruneConfig(sparsity))
  assert masks["dense"]["bias"] is None
  assert masks["dense"]["kernel"].dtype == jnp.bool_
  np.testing.assert_array_equal(masks["dense"]["kernel"], np.array(expected, bool))


def test_half_sparsity_prunes_the_four_smallest():
  masks = prune.compute_masks(tiny_tree(), PruneConfig(0.5))
  # Magnitudes 0.5, 1, 2, 3 pruned; 5, 6, 7, 8 kept.
  kept = np.sort(np.abs(KERNEL[np.asarray(masks["dense"]["kernel"])]))
  np.testing.assert_array_equal(kept, [5, 6, 7, 8])


def test_ties_are_broken_by_position():
  params = {"kernel": jnp.ones((2, 3))}
  masks = prune.compute_masks(params, PruneConfig(0.5))
  np.testing.assert_array_equal(masks["kernel"], [[False, False, False], [True, True, True]])


def test_apply_masks_zeroes_pruned_and_keeps_the_rest():
  params = tiny_tree()
  masks = prune.compute_masks(params, PruneConfig(0.5))
  out = prune.apply_masks(params, masks)
  np.testing.assert_array_equal(out["dense"]["kernel"], [[0, -8, 0, 0], [7, 0, -6, 5]])
  np.testing.assert_array_equal(out["dense"]["bias"], np.ones(4))
  np.testing.assert_array_equal(params["dense"]["kernel"], KERNEL)  # input untouched


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.77, 0.9])
def test_layer_scope_sparsity_within_one_weight(mlp, sparsity):
  masks = prune.compute_masks(mlp, PruneConfig(sparsity))
  report = prune.mask_sparsity(masks)
  assert sorted(report["leaves"]) == sorted(kernel_paths(mlp))
  for leaf in report["leaves"].values():
    assert abs(leaf["sparsity"] - sparsity) <= 1 / leaf["size"]
  for name in ("dense_0", "dense_1", "dense_2"):
    w, m = np.abs(np.asarray(mlp[name]["kernel"])), np.asarray(masks[name]["kernel"])
    assert w[~m].max() <= w[m].min()  # every pruned weight is below every kept one


def test_global_scope_ranks_across_leaves():
  params = {"a": {"kernel": jnp.array([[0.1, 0.2], [0.3, 0.4]])},
            "b": {"kernel": jnp.array([[1.0, 2.0], [0.05, 3.0]])}}
  glob = prune.compute_masks(params, PruneConfig(0.5, scope="global"))
  np.testing.assert_array_equal(glob["a"]["kernel"], [[False, False], [False, True]])
  np.testing.assert_array_equal(glob["b"]["kernel"], [[True, True], [False, True]])
  layer = prune.compute_masks(params, PruneConfig(0.5))
  np.testing.assert_array_equal(layer["a"]["kernel"], [[False, False], [True, True]])


@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_global_scope_sparsity_within_one_weight(mlp, sparsity):
  report = prune.mask_sparsity(prune.compute_masks(mlp, PruneConfig(sparsity, scope="global")))
  assert abs(report["sparsity"] - sparsity) <= 1 / report["size"]
  # Leaves end up at different sparsities (the point of a global threshold).
  per_leaf = [v["sparsity"] for v in report["leaves"].values()]
  assert max(per_leaf) - min(per_leaf) > 0.01


def test_previous_masks_keep_pruned_weights_pruned():
  params = tiny_tree()
  first = prune.compute_masks(params, PruneConfig(0.25))
  # The weights grow back large, but stay pruned; the next two go by magnitude.
  grown = {"dense": {"kernel": params["dense"]["kernel"].at[0, 0].set(100.0).at[1, 1].set(-90),
                     "bias": params["dense"]["bias"]}}
  second = prune.compute_masks(grown, PruneConfig(0.5), previous_masks=first)
  np.testing.assert_array_equal(second["dense"]["kernel"], [[0, 1, 0, 0], [1, 0, 1, 1]])
  without = prune.compute_masks(grown, PruneConfig(0.5))
  assert bool(without["dense"]["kernel"][0, 0])


# --------------------------------------------------------------------------- N:M


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8)])
@pytest.mark.parametrize("shape", [(3, 3, 16, 8), (32, 5)])
def test_nm_keeps_n_largest_of_every_m_input_channels(n, m, shape):
  w = normal(1, shape)
  masks = prune.compute_masks({"kernel": w}, PruneConfig(1 - n / m, "n:m", n=n, m=m))
  mask = np.asarray(masks["kernel"])
  assert mask.shape == shape
  groups = np.moveaxis(mask, -2, -1).reshape(-1, m)            # consecutive inputs
  np.testing.assert_array_equal(groups.sum(-1), n)
  scores = np.moveaxis(np.abs(np.asarray(w)), -2, -1).reshape(-1, m)
  assert np.all(np.where(groups, scores, np.inf).min(-1) >= np.where(groups, -np.inf, scores).max(-1))
  assert abs(1 - mask.mean() - (1 - n / m)) < 1e-12


def test_nm_hand_case_along_input_axis():
  # [in=4, out=2]: column 0 has magnitudes 4, 1, 3, 2 -> keep rows 0 and 2; column 1 reversed.
  w = jnp.array([[4.0, -1.0], [1.0, 4.0], [-3.0, 2.0], [2.0, -3.0]])
  masks = prune.compute_masks({"kernel": w}, PruneConfig(0.5, "n:m"))
  np.testing.assert_array_equal(masks["kernel"], [[1, 0], [0, 1], [1, 0], [0, 1]])
  dense = prune.compute_masks({"kernel": w}, PruneConfig(0.5, "n:m"), sparsity=0.0)
  assert bool(jnp.all(dense["kernel"]))


def test_nm_m_not_dividing_input_axis_names_leaf_and_shape():
  params = {"conv": {"kernel": jnp.ones((3, 3, 6, 8))}}
  with pytest.raises(ValueError, match=r"'conv/kernel'.*multiple of 4, got shape \(3, 3, 6, 8\)"):
    prune.compute_masks(params, PruneConfig(0.5, "n:m"))
  with pytest.raises(ValueError, match="multiple of 4"):
    prune.pruning(PruneConfig(0.5, "n:m")).init(params)


# --------------------------------------------------------------------------- channel


def test_channel_l1_and_l2_choose_different_filters():
  # Filter 0: one large weight (L1 3, L2 3); filter 1: four small ones (L1 4, L2 2).
  w = jnp.array([[3.0, 1.0], [0.0, -1.0], [0.0, 1.0], [0.0, -1.0]])
  l1 = prune.compute_masks({"kernel": w}, PruneConfig(0.5, "channel", norm="l1"))["kernel"]
  l2 = prune.compute_masks({"kernel": w}, PruneConfig(0.5, "channel", norm="l2"))["kernel"]
  np.testing.assert_array_equal(l1, np.tile([False, True], (4, 1)))
  np.testing.assert_array_equal(l2, np.tile([True, False], (4, 1)))


def test_channel_zeroes_whole_output_filters():
  w = normal(0, (3, 3, 4, 10)) * jnp.arange(1, 11)
  masks = prune.compute_masks({"conv": {"kernel": w}}, PruneConfig(0.3, "channel"))
  mask = np.asarray(masks["conv"]["kernel"])
  per_filter = mask.reshape(-1, 10)
  assert np.all(per_filter.all(0) | ~per_filter.any(0))        # each filter all kept or all gone
  norms = np.abs(np.asarray(w)).sum((0, 1, 2))
  np.testing.assert_array_equal(per_filter[0], norms > np.sort(norms)[2])


def test_channel_never_prunes_every_filter():
  params = {"out": {"kernel": jnp.ones((4, 3))}}
  with pytest.raises(ValueError, match=r"would remove all 3 output channels of 'out/kernel'"):
    prune.compute_masks(params, PruneConfig(0.9, "channel"))
  with pytest.raises(ValueError, match="would remove all 3 output channels"):
    prune.pruning(PruneConfig(0.9, "channel", schedule="polynomial", end_step=10)).init(params)
  # A traced sparsity cannot be checked: it is clipped so that one filter is kept.
  fn = jax.jit(lambda p, s: prune.compute_masks(p, PruneConfig(0.5, "channel"), sparsity=s))
  mask = np.asarray(fn(params, 0.99)["out"]["kernel"])
  assert mask.any(0).sum() == 1


def test_channel_scored_by_paired_norm_scale():
  # Filter norms prefer dropping filter 0; the batch-norm scales say filter 2 matters least.
  params = {"convt_0": {"kernel": jnp.array([[0.1, 1.0, 2.0, 3.0]] * 2)},
            "bn_0": {"scale": jnp.array([5.0, -4.0, 0.01, 3.0]), "bias": jnp.zeros(4)}}
  cfg = PruneConfig(0.25, "channel", norm_scales=(("convt_0/kernel", "bn_0/scale"),))
  mask = prune.compute_masks(params, cfg)["convt_0"]["kernel"]
  np.testing.assert_array_equal(mask[0], [True, True, False, True])
  plain = prune.compute_masks(params, PruneConfig(0.25, "channel"))["convt_0"]["kernel"]
  np.testing.assert_array_equal(plain[0], [False, True, True, True])
  override = prune.compute_masks(params, PruneConfig(0.25, "channel"),
                                 channel_scores={"convt_0/kernel": jnp.array([4.0, 0, 2, 3])})
  np.testing.assert_array_equal(override["convt_0"]["kernel"][0], [True, False, True, True])
  bad = PruneConfig(0.25, "channel", norm_scales=(("convt_0/kernel", "bn_1/scale"),))
  with pytest.raises(ValueError, match="'bn_1/scale', which is not in params"):
    prune.compute_masks(params, bad)


# --------------------------------------------------------------------------- ERK


def test_erk_small_layers_are_denser_and_total_is_exact(mlp):
  cfg = PruneConfig(0.8, distribution="erk")
  targets = prune.target_sparsities(mlp, cfg)
  s = [targets[f"dense_{i}/kernel"] for i in range(3)]            # 64x256, 256x256, 256x784
  assert s[0] < s[1] < s[2]
  sizes = {p: np.asarray(mlp[p.split("/")[0]]["kernel"]).size for p in targets}
  total = sum(targets[p] * sizes[p] for p in targets) / sum(sizes.values())
  assert abs(total - 0.8) < 1e-9
  report = prune.mask_sparsity(prune.compute_masks(mlp, cfg))
  assert abs(report["sparsity"] - 0.8) < 1e-3
  for p, leaf in report["leaves"].items():
    assert abs(leaf["sparsity"] - targets[p]) <= 1 / leaf["size"]


def test_erk_caps_density_at_one_and_redistributes():
  # Unclipped ERK would give the 2x2 leaf density 24.5: it is kept dense and the big leaf
  # takes all the pruning: 0.5 * 10004 zeros over 10000 weights.
  s = prune.erk_sparsities({"a": (2, 2), "b": (100, 100)}, 0.5)
  assert s["a"] == 0.0
  assert s["b"] == pytest.approx(0.5 * 10004 / 10000, abs=1e-12)
  # Without capping: density proportional to (sum of dims) / (prod of dims).
  s = prune.erk_sparsities({"a": (10, 20), "b": (20, 40)}, 0.5)
  ratio = (1 - s["a"]) / (1 - s["b"])
  assert ratio == pytest.approx((30 / 200) / (60 / 800))
  assert (s["a"] * 200 + s["b"] * 800) / 1000 == pytest.approx(0.5)


# --------------------------------------------------------------------------- scores


def test_random_masks_are_reproducible_with_key(mlp):
  cfg = PruneConfig(0.6, score="random")
  a = prune.compute_masks(mlp, cfg, key=jax.random.key(3))
  b = prune.compute_masks(mlp, cfg, key=jax.random.key(3))
  c = prune.compute_masks(mlp, cfg, key=jax.random.key(4))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a["dense_1"]["kernel"], c["dense_1"]["kernel"])
  assert abs(prune.mask_sparsity(a)["sparsity"] - 0.6) < 1e-4
  # Not magnitude in disguise: about half of the largest weights are pruned too.
  w = np.abs(np.asarray(mlp["dense_1"]["kernel"]))
  assert 0.4 < 1 - np.asarray(a["dense_1"]["kernel"])[w > np.median(w)].mean() < 0.8
  with pytest.raises(ValueError, match="score 'random' needs a PRNG key"):
    prune.compute_masks(mlp, cfg)
  with pytest.raises(ValueError, match="score 'random' needs a PRNG key"):
    prune.pruning(cfg)


def test_saliency_uses_gradients():
  w = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  g = jnp.array([[10.0, 1.0], [0.1, 1.0]])                          # |w g| = 10, 2, 0.3, 4
  params, grads = {"kernel": w}, {"kernel": g}
  magnitude = prune.compute_masks(params, PruneConfig(0.5))["kernel"]
  saliency = prune.compute_masks(params, PruneConfig(0.5, score="saliency"), grads=grads)["kernel"]
  np.testing.assert_array_equal(magnitude, [[False, False], [True, True]])
  np.testing.assert_array_equal(saliency, [[True, False], [False, True]])
  scores = prune.compute_scores(params, PruneConfig(0.5, score="saliency"), grads=grads)
  np.testing.assert_allclose(scores["kernel"], [[10, 2], [0.3, 4]], rtol=1e-6)
  with pytest.raises(ValueError, match="score 'saliency' needs grads"):
    prune.compute_masks(params, PruneConfig(0.5, score="saliency"))
  with pytest.raises(ValueError, match=r"grads 'kernel' has shape \(2,\)"):
    prune.compute_masks(params, PruneConfig(0.5, score="saliency"), grads={"kernel": jnp.ones(2)})


def test_compute_masks_jits_with_traced_sparsity(mlp):
  cfg = PruneConfig(0.5, distribution="erk")
  fn = jax.jit(lambda p, s: prune.compute_masks(p, cfg, sparsity=s))
  jax.tree.map(np.testing.assert_array_equal, fn(mlp, 0.5), prune.compute_masks(mlp, cfg))
  # ERK scaled to a lower overall sparsity keeps the param-weighted mean on target.
  assert abs(prune.mask_sparsity(fn(mlp, 0.25))["sparsity"] - 0.25) < 1e-3
  assert fn._cache_size() == 1


# --------------------------------------------------------------------------- schedules


def test_one_shot_schedule():
  cfg = PruneConfig(0.7, begin_step=3)
  values = [float(prune.sparsity_at(cfg, t)) for t in range(6)]
  np.testing.assert_allclose(values, [0, 0, 0, 0.7, 0.7, 0.7], atol=1e-7)
  np.testing.assert_array_equal([bool(prune.is_update_step(cfg, t)) for t in range(6)],
                                [0, 0, 0, 1, 0, 0])


def test_iterative_schedule_steps_in_equal_increments():
  cfg = PruneConfig(0.8, schedule="iterative", begin_step=2, end_step=8, frequency=2,
                    initial_sparsity=0.2)
  values = [float(prune.sparsity_at(cfg, t)) for t in range(11)]
  np.testing.assert_allclose(values, [0.2, 0.2, 0.35, 0.35, 0.5, 0.5, 0.65, 0.65, 0.8, 0.8, 0.8],
                             atol=1e-6)
  np.testing.assert_array_equal([bool(prune.is_update_step(cfg, t)) for t in range(11)],
                                [0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0])


def test_polynomial_schedule_matches_zhu_gupta():
  s_i, s_f, t0, n, dt = 0.1, 0.9, 10, 4, 5
  cfg = PruneConfig(s_f, schedule="polynomial", begin_step=t0, end_step=t0 + n * dt,
                    frequency=dt, initial_sparsity=s_i)

  def closed_form(t):                                              # arXiv 1710.01878, eq. 1
    if t < t0:
      return s_i
    t = min(t0 + (t - t0) // dt * dt, t0 + n * dt)                 # held between updates
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3

  steps = list(range(0, 40))
  np.testing.assert_allclose([float(prune.sparsity_at(cfg, t)) for t in steps],
                             [closed_form(t) for t in steps], atol=1e-6)
  assert float(prune.sparsity_at(cfg, 15)) == pytest.approx(0.9 - 0.8 * 0.75 ** 3, abs=1e-6)
  # Jit-friendly: a traced step gives the same values and compiles once.
  jitted = jax.jit(lambda t: prune.sparsity_at(cfg, t))
  np.testing.assert_allclose([float(jitted(t)) for t in steps], [closed_form(t) for t in steps],
                             atol=1e-6)
  assert jitted._cache_size() == 1


# --------------------------------------------------------------------------- optax


def test_pruning_update_equals_masking_params_plus_updates():
  params = tiny_tree()
  tx = prune.pruning(PruneConfig(0.5))
  state = tx.init(params)
  updates = {"dense": {"kernel": jnp.full((2, 4), 0.25), "bias": jnp.full(4, -1.0)}}
  new_updates, new_state = tx.update(updates, state, params)
  expected = prune.apply_masks(jax.tree.map(jnp.add, params, updates), new_state.masks)
  got = optax.apply_updates(params, new_updates)
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  np.testing.assert_array_equal(got["dense"]["kernel"], [[0, -7.75, 0, 0], [7.25, 0, -5.75, 5.25]])
  assert int(new_state.count) == 1


def test_pruning_in_a_jitted_chain_follows_the_schedule(mlp):
  module, params = registry.build("mlp_generator"), mlp
  cfg = PruneConfig(0.75, schedule="polynomial", begin_step=1, end_step=7, frequency=2)
  tx = optax.chain(optax.sgd(0.1), prune.pruning(cfg))
  z = normal(5, (4, module.z_dim))
  target = jnp.zeros((4, 28, 28, 1))

  @jax.jit
  def train_step(params, opt_state):
    loss = lambda p: jnp.mean((module.apply({"params": p}, z) - target) ** 2)  # noqa: E731
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  state = tx.init(params)
  masks = state[1].masks
  for step in range(10):
    params, state = train_step(params, state)
    new_masks = state[1].masks
    changed = any(not np.array_equal(a, b) for a, b in
                  zip(jax.tree.leaves(masks), jax.tree.leaves(new_masks)))
    assert changed == (step in (3, 5, 7)), step                 # step 1 is at sparsity 0
    for path in ("dense_0", "dense_1", "dense_2"):
      w, m = np.asarray(params[path]["kernel"]), np.asarray(new_masks[path]["kernel"])
      assert np.all(w[~m] == 0), (step, path)                     # pruned weights stay exactly 0
      assert np.all(m <= np.asarray(masks[path]["kernel"]))       # nested: pruned stay pruned
    masks = new_masks
  report = prune.mask_sparsity(masks)
  for leaf in report["leaves"].values():
    assert abs(leaf["sparsity"] - 0.75) <= 1 / leaf["size"]
  assert train_step._cache_size() == 1
  train_step(params, state)
  assert train_step._cache_size() == 1                            # no recompilation


def test_pruning_saliency_needs_grads_as_extra_argument():
  params = {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
  grads = {"kernel": jnp.array([[10.0, 1.0], [0.1, 1.0]])}
  cfg = PruneConfig(0.5, score="saliency", begin_step=1)
  tx = optax.chain(optax.sgd(0.0), prune.pruning(cfg))
  state = tx.init(params)
  _, state = tx.update(grads, state, params, grads=grads)         # step 0: not yet
  updates, state = tx.update(grads, state, params, grads=grads)   # step 1: one shot
  np.testing.assert_array_equal(state[1].masks["kernel"], [[True, False], [False, True]])
  np.testing.assert_array_equal(optax.apply_updates(params, updates)["kernel"], [[1, 0], [0, 4]])
  with pytest.raises(ValueError, match="score 'saliency' needs grads"):
    tx.update(grads, state, params)
  with pytest.raises(ValueError, match="init does not have"):
    prune.pruning(PruneConfig(0.5, score="saliency")).init(params)


def test_pruning_init_masks_at_step_zero(mlp):
  one_shot = prune.pruning(PruneConfig(0.5)).init(mlp)
  assert abs(prune.mask_sparsity(one_shot.masks)["sparsity"] - 0.5) < 1e-4
  later = prune.pruning(PruneConfig(0.5, begin_step=10)).init(mlp)
  assert prune.mask_sparsity(later.masks)["sparsity"] == 0.0
  assert later.masks["dense_0"]["bias"] is None
  with pytest.raises(ValueError, match="pruning needs params"):
    prune.pruning(PruneConfig(0.5)).update(mlp, one_shot)


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from jaxgc.compress import prune
    assert len(jax.devices()) == 8
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(16, 32)), jnp.float32)},
              "b": {"kernel": jnp.asarray(rng.normal(size=(32, 8)), jnp.float32),
                    "bias": jnp.ones(8)}}
    configs = [prune.PruneConfig(0.5, "channel"), prune.PruneConfig(0.5, "n:m")]
    all_masks = jax.jit(lambda p: [prune.compute_masks(p, c) for c in configs])
    tx = optax.chain(optax.sgd(0.1), prune.pruning(
        prune.PruneConfig(0.6, schedule="iterative", end_step=2)))
    init = jax.jit(tx.init)

    @jax.jit
    def step(p, s):
      u, s = tx.update(jax.tree.map(jnp.sin, p), s, p)
      return optax.apply_updates(p, u), s

    def run(p):
      masks, s = all_masks(p), init(p)
      for _ in range(3):
        p, s = step(p, s)
      return jax.device_get((masks, p, s[1].masks))

    single = run(params)
    for axis_type in (AxisType.Auto, AxisType.Explicit):
      mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
      sharded = jax.device_put(params, {"a": {"kernel": NamedSharding(mesh, P(None, "data"))},
                                        "b": NamedSharding(mesh, P())})
      assert not sharded["a"]["kernel"].sharding.is_fully_replicated
      jax.tree.map(np.testing.assert_array_equal, single, run(sharded))
    print("OK")
""")


def test_sharded_pruning_equals_single_device():
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
             PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- reports and errors


def test_mask_sparsity_report():
  masks = {"a": {"kernel": jnp.array([[True, False], [False, False]]), "bias": None},
           "b": {"kernel": jnp.ones((2, 3), bool)}}
  report = prune.mask_sparsity(masks)
  assert report["leaves"] == {"a/kernel": {"sparsity": 0.75, "nonzero": 1, "size": 4},
                              "b/kernel": {"sparsity": 0.0, "nonzero": 6, "size": 6}}
  assert (report["nonzero"], report["size"]) == (7, 10)
  assert report["sparsity"] == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
    ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\), got -0.1"),
    ({"sparsity": 0.5, "granularity": "block"}, "granularity must be one of"),
    ({"sparsity": 0.5, "score": "taylor"}, "score must be one of"),
    ({"sparsity": 0.7, "granularity": "n:m"}, r"sparsity must be 1 - n/m = 0.5 .* 2:4, got 0.7"),
    ({"sparsity": 0.5, "granularity": "n:m", "n": 4, "m": 4}, "n:m needs n < m, got 4:4"),
    ({"sparsity": 0.5, "granularity": "n:m", "schedule": "polynomial", "end_step": 4},
     "n:m granularity needs schedule 'one_shot'"),
    ({"sparsity": 0.5, "granularity": "channel", "scope": "global"},
     "scope 'global' needs granularity 'unstructured'"),
    ({"sparsity": 0.0, "distribution": "erk"}, "distribution 'erk' needs sparsity > 0"),
    ({"sparsity": 0.5, "schedule": "iterative", "begin_step": 5, "end_step": 2},
     "end_step must be an int >= 5, got 2"),
    ({"sparsity": 0.5, "schedule": "polynomial", "end_step": 10, "frequency": 3},
     "end_step - begin_step must be a multiple of frequency"),
    ({"sparsity": 0.5, "initial_sparsity": 0.6}, r"initial_sparsity must be in \[0, sparsity"),
    ({"sparsity": 0.5, "frequency": 0}, "frequency must be an int >= 1, got 0"),
    ({"sparsity": 0.5, "power": 0}, "power must be a number > 0"),
    ({"sparsity": 0.5, "include": "("}, "include is not a valid regex"),
    ({"sparsity": 0.5, "norm_scales": (("a/kernel", "bn/scale"),)},
     "norm_scales needs granularity 'channel'"),
])
def test_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    PruneConfig(**kwargs)


def test_sparsity_argument_out_of_range():
  with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
    prune.compute_masks(tiny_tree(), PruneConfig(0.5), sparsity=1.0)


def test_apply_masks_errors_name_the_path():
  params = tiny_tree()
  masks = prune.compute_masks(params, PruneConfig(0.5))
  with pytest.raises(ValueError, match="no mask entry for 'dense/bias'"):
    prune.apply_masks(params, {"dense": {"kernel": masks["dense"]["kernel"]}})
  with pytest.raises(ValueError, match="'other/kernel' is not a parameter"):
    prune.apply_masks(params, {**masks, "other": {"kernel": None}})
  with pytest.raises(ValueError, match=r"mask for 'dense/kernel' has shape \(4, 2\)"):
    prune.apply_masks(params, {"dense": {"kernel": jnp.ones((4, 2), bool), "bias": None}})
  with pytest.raises(ValueError, match="mask for 'dense/kernel' has dtype float32, expected bool"):
    prune.apply_masks(params, {"dense": {"kernel": jnp.ones((2, 4)), "bias": None}})
  with pytest.raises(ValueError, match="no mask entry for 'dense/bias'"):
    prune.compute_masks(params, PruneConfig(0.5), previous_masks={"dense": {"kernel": None}})
