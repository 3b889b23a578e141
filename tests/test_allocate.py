"""Tests for jaxgc.compress.allocate: sensitivity, knapsack allocation, mixed-precision apply."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import require_asset
from jaxgc import convert
from jaxgc.compress import allocate
from jaxgc.compress import quantize
from jaxgc.compress import storage

OPTIONS = (2, 3, 4, 6, 8)
REAL_OPTIONS = (2, 3, 4, 5, 6, 8)


# ------------------------------------------------------------------------------------------------
# Knapsack: exact against brute force.


def random_problem(rng, num_layers, options=OPTIONS, monotone=True):
  names = [f"params/layer_{i}/kernel" for i in range(num_layers)]
  sizes = {p: int(rng.integers(1, 2000)) for p in names}
  sens = {}
  for p in names:
    if monotone:  # decreasing in bits, about 4x per bit as for round-to-nearest
      s0 = rng.uniform(0.1, 10.0)
      vals = s0 * 4.0 ** -np.array(options, np.float64) * rng.uniform(0.5, 2.0, len(options))
      vals = np.sort(vals)[::-1]
    else:
      vals = rng.uniform(0.0, 1.0, len(options))
    sens[p] = {b: float(v) for b, v in zip(options, vals)}
  return sens, sizes


def brute_force(sens, sizes, budget, options=OPTIONS):
  """Least total sensitivity over every assignment meeting the budget (exact integers)."""
  names = list(sens)
  limit = budget * sum(sizes.values())
  best = np.inf
  for combo in itertools.product(options, repeat=len(names)):
    if sum(sizes[p] * b for p, b in zip(names, combo)) <= limit:
      best = min(best, sum(sens[p][b] for p, b in zip(names, combo)))
  return best


def check_feasible(assignment, sizes, budget):
  used = sum(sizes[p] * b for p, b in assignment.items())
  assert used <= budget * sum(sizes.values()), (used, budget)


@pytest.mark.parametrize("monotone", [True, False])
@pytest.mark.parametrize("num_layers", [3, 4, 5])
def test_dp_equals_brute_force(num_layers, monotone):
  rng = np.random.default_rng(100 * num_layers + monotone)
  for _ in range(6):
    sens, sizes = random_problem(rng, num_layers, monotone=monotone)
    for budget in (2.0, 2.5, float(rng.uniform(2, 8)), 4.0, 5.25, 7.9, 8.0):
      a = allocate.allocate_bits(sens, sizes, budget, OPTIONS)
      assert list(a) == list(sens)
      assert all(b in OPTIONS for b in a.values())
      check_feasible(a, sizes, budget)
      assert allocate.average_bits(a, sizes) <= budget
      np.testing.assert_allclose(allocate.total_sensitivity(sens, a),
                                 brute_force(sens, sizes, budget), rtol=1e-12)


def test_bucketed_dp_is_feasible_and_near_optimal():
  rng = np.random.default_rng(7)
  max_units = 40  # force the rounded-up grid
  for _ in range(20):
    sens, sizes = random_problem(rng, 4)
    budget = float(rng.uniform(2.2, 7.5))
    a = allocate.allocate_bits(sens, sizes, budget, OPTIONS, max_units=max_units)
    check_feasible(a, sizes, budget)
    # No worse than the exact optimum of a budget smaller by L * (budget - b_min) / max_units.
    reduced = budget - len(sens) * (budget - OPTIONS[0]) / max_units
    got = allocate.total_sensitivity(sens, a)
    assert got <= brute_force(sens, sizes, reduced) * (1 + 1e-12)
    assert got >= brute_force(sens, sizes, budget) * (1 - 1e-12)


def test_bigger_budget_never_increases_total_sensitivity():
  rng = np.random.default_rng(3)
  for monotone in (True, False):
    sens, sizes = random_problem(rng, 5, monotone=monotone)
    totals = [allocate.total_sensitivity(sens, allocate.allocate_bits(sens, sizes, b))
              for b in np.linspace(2.0, 8.5, 66)]
    assert all(t1 <= t0 * (1 + 1e-12) for t0, t1 in zip(totals, totals[1:])), totals


def test_budget_at_or_above_max_bits_gives_all_max():
  sens, sizes = random_problem(np.random.default_rng(4), 5)
  for budget in (8, 8.0, 12.5):
    assert set(allocate.allocate_bits(sens, sizes, budget).values()) == {8}


def test_budget_at_min_bits_gives_all_min():
  sens, sizes = random_problem(np.random.default_rng(5), 5)
  assert set(allocate.allocate_bits(sens, sizes, 2.0).values()) == {2}


def test_large_layers_use_the_exact_gcd_grid():
  # Layers of 2**20 weights: the gcd unit keeps the table small and the answer exact.
  sens, _ = random_problem(np.random.default_rng(6), 3)
  sizes = {p: n << 20 for p, n in zip(sens, (1, 3, 5))}
  for budget in (3.0, 4.0, 5.5):
    a = allocate.allocate_bits(sens, sizes, budget, OPTIONS)
    check_feasible(a, sizes, budget)
    np.testing.assert_allclose(allocate.total_sensitivity(sens, a),
                               brute_force(sens, sizes, budget), rtol=1e-12)


def test_budget_below_min_bits_raises():
  sens, sizes = random_problem(np.random.default_rng(8), 3)
  with pytest.raises(ValueError, match=r"^budget of 1\.5 bits is below the minimum of 2 bits$"):
    allocate.allocate_bits(sens, sizes, 1.5)
  with pytest.raises(ValueError, match="below the minimum of 3 bits"):
    allocate.allocate_bits(sens, sizes, 2.5, bits_options=(3, 4, 6))
  with pytest.raises(ValueError, match="finite"):
    allocate.allocate_bits(sens, sizes, float("nan"))


def test_missing_layers_and_bits_raise_naming_them():
  sens, sizes = random_problem(np.random.default_rng(9), 3)
  first = next(iter(sens))
  fewer_sizes = {p: n for p, n in sizes.items() if p != first}
  with pytest.raises(ValueError, match=f"layer '{first}' has a sensitivity but no entry"):
    allocate.allocate_bits(sens, fewer_sizes, 4.0)
  fewer_sens = {p: s for p, s in sens.items() if p != first}
  with pytest.raises(ValueError, match=f"layer '{first}' is in num_params but has no sensitivity"):
    allocate.allocate_bits(fewer_sens, sizes, 4.0)
  holey = {p: dict(s) for p, s in sens.items()}
  del holey[first][4]
  with pytest.raises(ValueError, match=f"sensitivity of layer '{first}' has no entry for 4 bits"):
    allocate.allocate_bits(holey, sizes, 4.0, OPTIONS)
  holey[first][4] = float("nan")
  with pytest.raises(ValueError, match=f"layer '{first}' at 4 bits is not finite"):
    allocate.allocate_bits(holey, sizes, 4.0, OPTIONS)
  with pytest.raises(ValueError, match="positive int"):
    allocate.allocate_bits(sens, {**sizes, first: 0}, 4.0)
  with pytest.raises(ValueError, match="weight bits must be in 2..8"):
    allocate.allocate_bits(sens, sizes, 4.0, bits_options=(1, 4))
  with pytest.raises(ValueError, match=f"layer '{first}' of the assignment"):
    allocate.average_bits({first: 4}, fewer_sizes)


def test_average_bits_hand_computed():
  assert allocate.average_bits({"a": 2, "b": 8}, {"a": 3, "b": 1}) == pytest.approx(3.5)


# ------------------------------------------------------------------------------------------------
# Sensitivity and mixed-precision application on a tiny two-layer network.


def tiny_tree(seed=0):
  rng = np.random.default_rng(seed)
  return {"params": {
      "a": {"kernel": (rng.normal(size=(6, 8)) * np.logspace(-1, 0.5, 8)).astype(np.float32),
            "bias": rng.normal(size=8).astype(np.float32)},
      "b": {"kernel": rng.normal(size=(8, 4)).astype(np.float32)}}}


def tiny_apply(variables, x):
  p = variables["params"]
  return jnp.tanh(jnp.tanh(x @ p["a"]["kernel"] + p["a"]["bias"]) @ p["b"]["kernel"])


def test_layer_sensitivity_matches_direct_computation_and_compiles_once():
  variables = tiny_tree()
  x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
  traces = []

  def counted(v, inputs):
    traces.append(1)
    return tiny_apply(v, inputs)

  sens = allocate.layer_sensitivity(counted, variables, x, bits_options=(2, 4, 8), progress=False)
  assert len(traces) == 1, "apply_fn was retraced across layers or bit widths"
  assert list(sens) == ["params/a/kernel", "params/b/kernel"]
  ref = np.asarray(tiny_apply(variables, x), np.float64)
  for layer in ("a", "b"):
    for bits in (2, 4, 8):
      q = jax.tree.map(lambda t: t, variables)
      q["params"][layer] = dict(q["params"][layer],
                                kernel=quantize.fake_quant(variables["params"][layer]["kernel"],
                                                           bits))
      want = np.mean((np.asarray(tiny_apply(q, x), np.float64) - ref) ** 2)
      # float32, jitted vs eager: each output in [-1, 1] (dots of <= 8 terms, tanh) is off by
      # <= delta = 1e-6 (~8 ulp; 2e-7 seen vs float64), so the MSE by <= 2 * sqrt(MSE) * delta:
      # 4.5e-4 relative at 8 bits (a one-step code error moves it by ~9% in the median).
      np.testing.assert_allclose(sens[f"params/{layer}/kernel"][bits], want, rtol=1e-6,
                                 atol=2e-6 * np.sqrt(want))
    row = sens[f"params/{layer}/kernel"]
    assert row[2] > row[4] > row[8] > 0
  # The input tree is not modified.
  np.testing.assert_array_equal(variables["params"]["a"]["kernel"],
                                tiny_tree()["params"]["a"]["kernel"])


def test_layer_sensitivity_custom_metric_and_exclude():
  variables = tiny_tree()
  x = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32)
  sens = allocate.layer_sensitivity(
      tiny_apply, variables, x, bits_options=(3,), exclude="/b/",
      metric=lambda r, o: float(np.max(np.abs(r - o))), progress=False)
  assert list(sens) == ["params/a/kernel"] and list(sens["params/a/kernel"]) == [3]
  assert sens["params/a/kernel"][3] > 0
  with pytest.raises(ValueError, match="metric must be one of"):
    allocate.layer_sensitivity(tiny_apply, variables, x, metric="fid", progress=False)


def test_apply_allocation_is_per_layer_fake_quant_and_matches_storage():
  variables = tiny_tree()
  assignment = {"params/a/kernel": 3, "params/b/kernel": 8}
  out = allocate.apply_allocation(variables, assignment)
  np.testing.assert_array_equal(out["params"]["a"]["kernel"],
                                quantize.fake_quant(variables["params"]["a"]["kernel"], 3))
  np.testing.assert_array_equal(out["params"]["b"]["kernel"],
                                quantize.fake_quant(variables["params"]["b"]["kernel"], 8))
  np.testing.assert_array_equal(out["params"]["a"]["bias"], variables["params"]["a"]["bias"])
  stored = allocate.quantize_allocation(variables, assignment)
  assert stored["params"]["a"]["kernel"].packed and not stored["params"]["b"]["kernel"].packed
  jax.tree.map(np.testing.assert_array_equal, storage.dequantize_variables(stored), out)
  jitted = jax.jit(lambda v: allocate.apply_allocation(v, assignment))(variables)
  jax.tree.map(np.testing.assert_array_equal, jitted, out)
  with pytest.raises(ValueError, match="layer 'params/c/kernel' is not a leaf"):
    allocate.apply_allocation(variables, {"params/c/kernel": 4})
  with pytest.raises(ValueError, match="layer 'params/a/kernel': weight bits"):
    allocate.apply_allocation(variables, {"params/a/kernel": 9})


def test_output_error_psnr_convention():
  ref = np.zeros((2, 4, 4, 1))
  out = np.full((2, 4, 4, 1), 0.2)  # 0.1 in [0, 1] units: PSNR 20 dB
  err = allocate.output_error(ref, out)
  assert err["mse"] == pytest.approx(0.04)
  assert err["psnr_db"] == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------------
# Real generators: allocation at 4 bits on average against uniform 4-bit per-channel.


def real_case(rel, arch, num, z_dim, seed=0):
  module, variables = convert.load_torch_checkpoint(require_asset(rel), arch=arch)
  z = np.random.default_rng(seed).standard_normal((num, z_dim)).astype(np.float32)
  return module, variables, z


def check_real_allocation(module, variables, z, strict, held_out=None):
  sens = allocate.layer_sensitivity(module.apply, variables, z, bits_options=REAL_OPTIONS,
                                    progress=False)
  for layer, row in sens.items():  # non-increasing in bits, 1% tolerance
    vals = [row[b] for b in REAL_OPTIONS]
    assert all(hi <= lo * 1.01 for lo, hi in zip(vals, vals[1:])), (layer, row)
  sizes = allocate.layer_param_counts(variables)
  assignment = allocate.allocate_bits(sens, sizes, 4.0)
  assert allocate.average_bits(assignment, sizes) <= 4.0
  cmp = allocate.compare_with_uniform(module.apply, variables, z, assignment, budget_bits=4.0)
  assert cmp["uniform_bits"] == 4
  alloc, unif = cmp["allocated"], cmp["uniform"]
  print(f"\nchosen bits: {assignment} (average {alloc['avg_bits']:.3f})")
  print(f"allocated: MSE {alloc['mse']:.5g}, PSNR {alloc['psnr_db']:.2f} dB, {alloc['bytes']} B")
  print(f"uniform 4: MSE {unif['mse']:.5g}, PSNR {unif['psnr_db']:.2f} dB, {unif['bytes']} B")
  if strict:
    assert alloc["mse"] < unif["mse"]
    assert alloc["psnr_db"] > unif["psnr_db"]
  else:
    assert alloc["mse"] <= unif["mse"] * (1 + 1e-6)
  if held_out is not None:  # the allocation generalises to latents it was not measured on
    forward = jax.jit(module.apply)
    ref = np.asarray(forward(variables, held_out))
    mse = {}
    for name, assign in (("allocated", assignment), ("uniform", dict.fromkeys(assignment, 4))):
      out = forward(allocate.apply_allocation(variables, assign), held_out)
      mse[name] = allocate.output_error(ref, np.asarray(out))["mse"]
    print(f"held-out latents: allocated MSE {mse['allocated']:.5g}, "
          f"uniform 4 MSE {mse['uniform']:.5g}")
    if strict:
      assert mse["allocated"] < mse["uniform"]
  return sens, assignment


def test_dcgan_digiface_allocation_beats_uniform_4bit():
  module, variables, z = real_case("dcgan-digiface64/weights.tar", "dcgan_generator", 8, 100)
  held_out = np.random.default_rng(1).standard_normal((8, 100)).astype(np.float32)
  sens, assignment = check_real_allocation(module, variables, z, strict=True, held_out=held_out)
  report = allocate.allocation_report(module.apply, variables, z, sens, assignment,
                                      budget_bits=4.0)
  print(report)
  assert "| `params/convt_1/kernel` | 2,097,152 |" in report
  assert "uniform 4-bit" in report and "allocated" in report


def test_mlp_mnist_allocation_no_worse_than_uniform_4bit():
  # For this generator the additive model's optimum at 4 bits is uniform 4-bit itself (every
  # layer loses about the same per weight), so the allocation can only tie.
  module, variables, z = real_case("mnist-mlpgan/G--300.ckpt", "mlp_generator", 64, 64)
  check_real_allocation(module, variables, z, strict=False)
