"""Mixed-precision weight quantization: per-layer sensitivity and an optimal bit allocation.

Each selected kernel gets its own bit width. The procedure is the usual two-step one of
sensitivity-driven mixed precision (HAWQ, Dong et al. 2019, arXiv 1905.03696, with the
measured rather than Hessian-estimated sensitivity of Cai et al. 2020, "ZeroQ", arXiv
2001.00281, sec. 3.2, and the Pareto/knapsack formulation of their eq. 6):

1. :func:`layer_sensitivity` quantizes one layer at a time (every other weight in float32) at every
   candidate bit width and measures how far the network output moves:
   ``s_l(b) = metric(f(W), f(W with layer l fake-quantized to b bits))``.
2. :func:`allocate_bits` assumes the errors add across layers and solves

   ``minimise sum_l s_l(b_l)  subject to  sum_l n_l * b_l <= budget_bits * sum_l n_l``,

   a multiple-choice knapsack, exactly by dynamic programming (see its docstring for the
   discretisation). ``n_l`` is the number of weights of layer ``l``, so the constraint bounds the
   *average weight bit width* of the selected layers, the standard mixed-precision budget. Real
   storage (:mod:`jaxgc.compress.storage`) rounds 2-4 bits up to packed int4 and 5-8 bits up to
   int8, so the file size does not follow the average exactly; :func:`compare_with_uniform`
   reports both.

Keeping the sensitive first and last layers at higher precision (Andreev et al. 2021, "Quantization
of Generative Adversarial Networks for Efficient Inference: a Methodological Study", arXiv
2108.13996) is the hand-made special case that this allocation finds from measurements.

Every function is pure: variables trees are never modified. Quantization is
:func:`jaxgc.compress.quantize.fake_quant` (min-max scales, round to nearest, STE gradient).
"""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxgc.compress import quantize
from jaxgc.compress import selection
from jaxgc.compress import storage

DEFAULT_INCLUDE = selection.DEFAULT_INCLUDE
DEFAULT_BITS = (2, 3, 4, 6, 8)
# Capacity of the knapsack table: budgets that need more units are solved on a grid of this many
# units (an allocation within L * (budget_bits - min_bits) / MAX_UNITS average bits of optimal).
MAX_UNITS = 1 << 16

Sensitivity = Mapping[str, Mapping[int, float]]


# ------------------------------------------------------------------------------------------------
# Tree helpers.


def layer_param_counts(variables: Any, include: str = DEFAULT_INCLUDE,
                       exclude: str | None = None) -> dict[str, int]:
  """Number of weights of each selected leaf.

  Args:
    variables: nested dicts of arrays.
    include: regex on "/"-joined paths; by default every ``kernel`` under ``params``.
    exclude: optional regex of paths to leave out.

  Returns:
    ``{path: size}`` in tree-flatten order, the ``num_params`` of :func:`allocate_bits`.

  Raises:
    ValueError: nothing selected.
  """
  mask = selection.select(variables, include, exclude)
  leaves, _ = selection.flatten_with_paths(variables)
  flags = jax.tree_util.tree_leaves(mask)
  return {p: int(np.size(w)) for (p, w), m in zip(leaves, flags) if m}


def _leaf_index(variables: Any) -> tuple[list[Any], Any, dict[str, int]]:
  leaves, treedef = selection.flatten_with_paths(variables)
  index = {p: i for i, (p, _) in enumerate(leaves) if p is not None}
  return [w for _, w in leaves], treedef, index


def _check_paths(paths: Sequence[str], index: Mapping[str, int]) -> None:
  for path in paths:
    if path not in index:
      examples = ", ".join(list(index)[:5]) or "<empty tree>"
      raise ValueError(f"layer '{path}' is not a leaf of the variables tree; paths are e.g. "
                       f"{examples}")


# ------------------------------------------------------------------------------------------------
# Sensitivity.


def _mse(reference: Any, outputs: Any) -> float:
  """Mean squared error over every element of every leaf, in float64."""
  ref = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(reference)]
  out = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(outputs)]
  total = sum(float(np.sum((r - o) ** 2)) for r, o in zip(ref, out))
  return total / sum(r.size for r in ref)


_METRICS: dict[str, Callable[[Any, Any], float]] = {"mse": _mse}


def _metric_fn(metric: str | Callable[[Any, Any], float]) -> Callable[[Any, Any], float]:
  if callable(metric):
    return metric
  if metric not in _METRICS:
    raise ValueError(f"metric must be one of {tuple(_METRICS)} or a callable, got {metric!r}")
  return _METRICS[metric]


def _check_bits_options(bits_options: Sequence[int]) -> tuple[int, ...]:
  options = tuple(bits_options)
  if not options:
    raise ValueError("bits_options is empty")
  for b in options:
    quantize.check_bits(b)
  if len(set(options)) != len(options):
    raise ValueError(f"bits_options has duplicates: {options}")
  return tuple(sorted(int(b) for b in options))


# Compiled once per (shape, dtype, bits, symmetric, granularity) and shared by every call; far
# faster than op-by-op dispatch on large kernels, and inlined when called under an outer jit.
_fake_quant = jax.jit(quantize.fake_quant, static_argnums=(1, 2, 3))
_quantize_tensor = jax.jit(storage.quantize_tensor, static_argnums=(1, 2, 3))


def layer_sensitivity(
    apply_fn: Callable[[Any, Any], Any],
    variables: Any,
    inputs: Any,
    bits_options: Sequence[int] = DEFAULT_BITS,
    include: str = DEFAULT_INCLUDE,
    exclude: str | None = None,
    symmetric: bool = True,
    granularity: str = "per_channel",
    metric: str | Callable[[Any, Any], float] = "mse",
    progress: bool = True,
) -> dict[str, dict[int, float]]:
  """Output error of quantizing one layer at a time, for every layer and bit width.

  For each selected leaf ``l`` and each ``b`` in ``bits_options``, the leaf alone is replaced by
  ``fake_quant(w_l, b, symmetric, granularity)`` and ``s_l(b) = metric(apply_fn(variables,
  inputs), apply_fn(variables_q, inputs))`` is recorded. ``apply_fn`` is jitted once with the
  variables as an argument, so the ``len(layers) * len(bits_options) + 1`` forward passes compile
  once (the quantized trees have the structure, shapes and dtypes of ``variables``).

  Sensitivities are measured on ``inputs`` only: use enough samples (e.g. 8-64 latents) for a
  stable ranking, and the same inputs when comparing allocations.

  Args:
    apply_fn: ``(variables, inputs) -> outputs`` (a pytree of arrays), e.g. ``module.apply``.
      Must be jittable.
    variables: nested dicts of arrays, e.g. ``{"params": ..., "batch_stats": ...}``.
    inputs: the network input, e.g. latents ``[batch, z_dim]`` float32 or images
      ``[batch, height, width, channels]``; any pytree ``apply_fn`` accepts.
    bits_options: candidate weight bit widths, each in ``[2, 8]``.
    include: regex on "/"-joined paths of the layers to measure; by default every ``kernel`` under
      ``params``.
    exclude: optional regex of paths to leave in float32 (they get no entry).
    symmetric: symmetric signed or asymmetric unsigned codes (see :func:`fake_quant`).
    granularity: ``"per_channel"`` or ``"per_tensor"`` scales.
    metric: ``"mse"`` (mean squared output error over all elements, float64), or a callable
      ``metric(reference_outputs, outputs) -> float`` receiving NumPy arrays (pytrees of them),
      where lower is better, e.g. ``1 - precision`` or an FID from :mod:`jaxgc.eval`.
    progress: show a tqdm bar over the layers.

  Returns:
    ``{layer_path: {bits: sensitivity}}``, layers in tree-flatten order, bits ascending; floats.

  Raises:
    ValueError: a bit width outside ``[2, 8]``, an unknown granularity or metric, nothing
      selected, or a selected leaf that is not floating point or not finite (naming it).
  """
  options = _check_bits_options(bits_options)
  quantize.check_granularity(granularity)
  metric_fn = _metric_fn(metric)
  layers = selection.selected_paths(variables, include, exclude)
  leaves, treedef, index = _leaf_index(variables)
  for path in layers:
    selection.check_weight(path, leaves[index[path]])

  forward = jax.jit(apply_fn)

  def run(tree_leaves):
    out = forward(jax.tree_util.tree_unflatten(treedef, tree_leaves), inputs)
    return jax.tree_util.tree_map(np.asarray, out)

  reference = run(leaves)
  result: dict[str, dict[int, float]] = {}
  for path in tqdm(layers, desc="layer sensitivity", disable=not progress, unit="layer"):
    i = index[path]
    row = {}
    for bits in options:
      trial = list(leaves)
      trial[i] = _fake_quant(leaves[i], bits, symmetric, granularity)
      row[bits] = float(metric_fn(reference, run(trial)))
    result[path] = row
  return result


# ------------------------------------------------------------------------------------------------
# Allocation.


def _check_problem(sensitivity: Sensitivity, num_params: Mapping[str, int],
                   bits_options: Sequence[int] | None) -> tuple[list[str], tuple[int, ...]]:
  if not sensitivity:
    raise ValueError("sensitivity is empty: no layer to allocate")
  layers = list(sensitivity)
  for path in layers:
    if path not in num_params:
      raise ValueError(f"layer '{path}' has a sensitivity but no entry in num_params")
  for path in num_params:
    if path not in sensitivity:
      raise ValueError(f"layer '{path}' is in num_params but has no sensitivity")
  for path in layers:
    n = num_params[path]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
      raise ValueError(f"num_params of layer '{path}' must be a positive int, got {n!r}")
  if bits_options is None:
    bits_options = sorted({int(b) for row in sensitivity.values() for b in row})
  options = _check_bits_options(bits_options)
  for path in layers:
    row = sensitivity[path]
    for b in options:
      if b not in row:
        raise ValueError(f"sensitivity of layer '{path}' has no entry for {b} bits")
      if not math.isfinite(float(row[b])):
        raise ValueError(f"sensitivity of layer '{path}' at {b} bits is not finite: {row[b]!r}")
  return layers, options


def _check_budget(budget_bits: float, options: tuple[int, ...]) -> Fraction:
  if isinstance(budget_bits, bool) or not isinstance(budget_bits, (int, float, np.integer,
                                                                   np.floating)):
    raise ValueError(f"budget_bits must be a number, got {budget_bits!r}")
  if not math.isfinite(float(budget_bits)):
    raise ValueError(f"budget_bits must be finite, got {budget_bits!r}")
  if budget_bits < options[0]:
    raise ValueError(f"budget of {float(budget_bits):g} bits is below the minimum of "
                     f"{options[0]} bits")
  return Fraction(float(budget_bits))


def allocate_bits(
    sensitivity: Sensitivity,
    num_params: Mapping[str, int],
    budget_bits: float,
    bits_options: Sequence[int] | None = None,
    max_units: int = MAX_UNITS,
) -> dict[str, int]:
  """Bit width per layer minimising the total sensitivity under an average-bits budget.

  Solves the multiple-choice knapsack

  ``minimise sum_l s_l(b_l)  s.t.  b_l in bits_options,  sum_l n_l * b_l <= budget_bits * N``

  with ``N = sum_l n_l``, by dynamic programming over the budget. Costs are measured above the
  cheapest option, ``e_l(b) = n_l * (b - b_min)`` (integers), against the spare budget
  ``E = (budget_bits - b_min) * N`` (exact rational arithmetic, ``budget_bits`` taken as the
  float it is). The table has one entry per budget unit:

  * Exact: with ``g`` the gcd of all ``e_l(b)``, every cost is a whole number of units ``g``
    and the constraint is ``sum e_l / g <= floor(E / g)``. Used when ``floor(E / g) <=
    max_units``; the result is then an exact optimum.
  * Bucketed (larger problems): the unit is ``u = E / max_units`` and costs are rounded *up*,
    ``ceil(e_l / u)``. Any assignment the table accepts satisfies the real constraint
    (``sum e_l <= u * sum ceil(e_l / u) <= E``), so the result is always feasible; and every
    assignment with ``sum e_l <= E - L * u`` is accepted, so the result is at least as good as
    the exact optimum for the budget ``budget_bits - L * (budget_bits - b_min) / max_units``
    (``L`` layers; below 0.002 bits for 50 layers at the default ``max_units``).

  The all-``b_min`` assignment costs 0 units, so a solution always exists once ``budget_bits >=
  b_min``. When ``budget_bits >= b_max`` the constraint cannot bind and each layer simply takes
  its least sensitive width. Ties are broken towards more bits. Cost: ``O(L * K * units)`` with
  ``K`` options, vectorised over the units (milliseconds for ``L = 50``).

  Errors are assumed additive across layers (each ``s_l`` is measured with the other layers in
  float32, :func:`layer_sensitivity`); check the joint error with :func:`compare_with_uniform`.

  Args:
    sensitivity: ``{layer: {bits: s}}``, finite floats, lower is better (from
      :func:`layer_sensitivity`).
    num_params: ``{layer: number of weights}``, positive ints, the same layers (from
      :func:`layer_param_counts`).
    budget_bits: average weight bits allowed over the layers, ``>= min(bits_options)``.
    bits_options: candidate widths in ``[2, 8]``; by default every width in ``sensitivity``
      (each layer must have an entry for each).
    max_units: largest budget table before bucketing, a positive int.

  Returns:
    ``{layer: bits}`` (Python ints) in the order of ``sensitivity``, with
    ``average_bits(result, num_params) <= budget_bits``.

  Raises:
    ValueError: ``budget_bits`` below ``min(bits_options)`` (``"budget of 1.5 bits is below the
      minimum of 2 bits"``) or not finite; a layer in one of ``sensitivity`` / ``num_params``
      but not the other, a missing or non-finite sensitivity, a non-positive size, or an invalid
      bit width (each naming the layer); an empty problem.
  """
  layers, options = _check_problem(sensitivity, num_params, bits_options)
  budget = _check_budget(budget_bits, options)
  if isinstance(max_units, bool) or not isinstance(max_units, (int, np.integer)) or max_units < 1:
    raise ValueError(f"max_units must be a positive int, got {max_units!r}")
  # Descending, so that on equal totals the first (widest) option wins the strict comparisons.
  desc = options[::-1]
  sens = np.array([[float(sensitivity[p][b]) for b in desc] for p in layers], np.float64)

  if budget >= options[-1]:
    return {p: desc[int(np.argmin(sens[i]))] for i, p in enumerate(layers)}

  b_min = options[0]
  sizes = [int(num_params[p]) for p in layers]
  extra = [[n * (b - b_min) for b in desc] for n in sizes]
  spare = (budget - b_min) * sum(sizes)  # Fraction >= 0
  g = math.gcd(*[e for row in extra for e in row])  # > 0: at least two options, n > 0
  if spare // g <= max_units:
    cap = int(spare // g)
    costs = [[e // g for e in row] for row in extra]
  else:
    cap = int(max_units)
    unit = spare / cap
    costs = [[math.ceil(Fraction(e) / unit) for e in row] for row in extra]

  # best[c]: least total sensitivity of the layers so far with at most c units spent.
  best = np.zeros(cap + 1, np.float64)
  choices = []
  for i in range(len(layers)):
    new = np.full(cap + 1, np.inf)
    pick = np.full(cap + 1, -1, np.int16)
    for k, c in enumerate(costs[i]):
      if c > cap:
        continue
      cand = np.full(cap + 1, np.inf)
      cand[c:] = best[:cap + 1 - c] + sens[i, k]
      better = cand < new
      new[better] = cand[better]
      pick[better] = k
    best = new
    choices.append(pick)

  assignment = {}
  c = cap
  for i in reversed(range(len(layers))):
    k = int(choices[i][c])
    assignment[layers[i]] = desc[k]
    c -= costs[i][k]
  return {p: assignment[p] for p in layers}


def average_bits(assignment: Mapping[str, int], num_params: Mapping[str, int]) -> float:
  """Weight-count-weighted mean bit width ``sum_l n_l * b_l / sum_l n_l`` over ``assignment``.

  Raises:
    ValueError: an empty assignment, or a layer without an entry in ``num_params`` (naming it).
  """
  if not assignment:
    raise ValueError("assignment is empty")
  for path in assignment:
    if path not in num_params:
      raise ValueError(f"layer '{path}' of the assignment has no entry in num_params")
  total = sum(int(num_params[p]) for p in assignment)
  return sum(int(b) * int(num_params[p]) for p, b in assignment.items()) / total


def total_sensitivity(sensitivity: Sensitivity, assignment: Mapping[str, int]) -> float:
  """``sum_l s_l(b_l)``, the objective :func:`allocate_bits` minimises."""
  return float(sum(float(sensitivity[p][b]) for p, b in assignment.items()))


# ------------------------------------------------------------------------------------------------
# Applying an allocation.


def _check_assignment(assignment: Mapping[str, int]) -> None:
  if not assignment:
    raise ValueError("assignment is empty")
  for path, bits in assignment.items():
    try:
      quantize.check_bits(bits)
    except ValueError as e:
      raise ValueError(f"layer '{path}': {e}") from None


def _map_assignment(fn: Callable[[Any, int], Any], variables: Any,
                    assignment: Mapping[str, int]) -> Any:
  _check_assignment(assignment)
  _, _, index = _leaf_index(variables)
  _check_paths(list(assignment), index)

  def apply(path, w):
    if path not in assignment:
      return w
    selection.check_weight(path, w)
    return fn(w, int(assignment[path]))

  return selection.map_with_paths(apply, variables)


def apply_allocation(variables: Any, assignment: Mapping[str, int], symmetric: bool = True,
                     granularity: str = "per_channel") -> Any:
  """Fake-quantizes each layer of ``assignment`` at its own bit width.

  Pure; leaves not in ``assignment`` are returned as they are. Jittable when ``assignment`` is
  closed over (it is static: Python strings and ints).

  Args:
    variables: nested dicts of arrays.
    assignment: ``{layer path: bits}``, bits in ``[2, 8]`` (from :func:`allocate_bits`).
    symmetric: symmetric signed or asymmetric unsigned codes.
    granularity: ``"per_channel"`` or ``"per_tensor"``.

  Returns:
    A tree of the structure, shapes and dtypes of ``variables``.

  Raises:
    ValueError: an empty assignment, a path that is not a leaf, a bit width outside ``[2, 8]``, a
      leaf that is not floating point or not finite (each naming the layer), or an unknown
      granularity.
  """
  quantize.check_granularity(granularity)
  return _map_assignment(lambda w, b: _fake_quant(w, b, symmetric, granularity),
                         variables, assignment)


def quantize_allocation(variables: Any, assignment: Mapping[str, int], symmetric: bool = True,
                        granularity: str = "per_channel") -> Any:
  """Real low-bit storage of an allocation: a :class:`~jaxgc.compress.storage.QuantizedTensor`
  per layer at its own width, for :func:`~jaxgc.compress.storage.save_quantized`.

  ``storage.dequantize_variables(quantize_allocation(v, a))`` equals ``apply_allocation(v, a)``
  bit for bit. Layers of 2-4 bits are stored as packed int4, 5-8 bits as int8.

  Raises:
    ValueError: as :func:`apply_allocation`.
  """
  quantize.check_granularity(granularity)
  return _map_assignment(lambda w, b: _quantize_tensor(w, b, symmetric, granularity),
                         variables, assignment)


# ------------------------------------------------------------------------------------------------
# Comparison and report.


def output_error(reference: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
  """MSE and PSNR of generator outputs against the float32 ones.

  Args:
    reference: ``[batch, ...]`` float outputs in [-1, 1] (tanh generators).
    outputs: same shape.

  Returns:
    ``mse``: mean squared error over all elements in the model's [-1, 1] units. ``psnr_db``: the
    mean over samples of the PSNR with outputs mapped to [0, 1] (data range 1), as
    :func:`jaxgc.report.image_metrics` computes it; ``inf`` when the outputs are identical.
  """
  ref = np.asarray(reference, np.float64)
  out = np.asarray(outputs, np.float64)
  if ref.shape != out.shape:
    raise ValueError(f"outputs of shape {out.shape} do not match the reference {ref.shape}")
  sq = (ref - out) ** 2
  per_sample = (sq.reshape(sq.shape[0], -1) if sq.ndim > 1 else sq.reshape(-1, 1)).mean(axis=1)
  per_sample_01 = per_sample / 4.0  # [-1, 1] -> [0, 1] scales errors by 1/2, squares by 1/4
  psnr = (math.inf if np.all(per_sample_01 == 0)
          else float(np.mean(10 * np.log10(1.0 / np.maximum(per_sample_01, 1e-20)))))
  return {"mse": float(sq.mean()), "psnr_db": psnr}


def _saved_bytes(tree: Any) -> int:
  with tempfile.TemporaryDirectory() as d:
    return storage.save_quantized(tree, os.path.join(d, "q.npz"))


def compare_with_uniform(
    apply_fn: Callable[[Any, Any], Any],
    variables: Any,
    inputs: Any,
    assignment: Mapping[str, int],
    uniform_bits: int | None = None,
    symmetric: bool = True,
    granularity: str = "per_channel",
    budget_bits: float | None = None,
) -> dict[str, Any]:
  """Output error and real file size of an allocation and of uniform quantization.

  The uniform setting quantizes the same layers, all at ``uniform_bits``: by default the widest
  uniform width within the budget, ``floor(budget_bits)``, or without a budget the width nearest
  the allocation's average (``round(average_bits)``, halves up), clipped to ``[2, 8]``.

  Args:
    apply_fn: ``(variables, inputs) -> outputs`` in [-1, 1], one array ``[batch, ...]``.
    variables: float32 variables.
    inputs: network inputs, e.g. latents ``[batch, z_dim]``.
    assignment: ``{layer: bits}`` from :func:`allocate_bits`.
    uniform_bits: width of the uniform baseline, in ``[2, 8]``; see above for the default.
    symmetric: symmetric signed or asymmetric unsigned codes.
    granularity: ``"per_channel"`` or ``"per_tensor"``.
    budget_bits: the average-bits budget the allocation was made for (only sets the default
      ``uniform_bits``).

  Returns:
    ``{"fp32": ..., "uniform": ..., "allocated": ...}``, each a dict with ``avg_bits`` (over the
    assigned layers; 32 for fp32), ``mse`` and ``psnr_db`` (:func:`output_error` against the
    float32 outputs) and ``bytes`` (the :func:`~jaxgc.compress.storage.save_quantized` file of
    the whole tree), plus ``"uniform_bits"``.

  Raises:
    ValueError: as :func:`apply_allocation`; ``uniform_bits`` outside ``[2, 8]``.
  """
  _, _, index = _leaf_index(variables)
  _check_paths(list(assignment), index)
  leaves = jax.tree_util.tree_leaves(variables)
  sizes = {p: int(np.size(leaves[index[p]])) for p in assignment}
  avg = average_bits(assignment, sizes)
  if uniform_bits is None:
    target = math.floor(budget_bits) if budget_bits is not None else math.floor(avg + 0.5)
    uniform_bits = min(max(int(target), quantize.MIN_BITS), quantize.MAX_BITS)
  quantize.check_bits(uniform_bits)
  uniform = {p: uniform_bits for p in assignment}

  forward = jax.jit(apply_fn)
  reference = np.asarray(forward(variables, inputs))
  result: dict[str, Any] = {"uniform_bits": uniform_bits}
  result["fp32"] = {"avg_bits": 32.0, "mse": 0.0, "psnr_db": math.inf,
                    "bytes": storage.fp32_bytes(variables)}
  for name, assign in (("uniform", uniform), ("allocated", dict(assignment))):
    q = apply_allocation(variables, assign, symmetric, granularity)
    err = output_error(reference, np.asarray(forward(q, inputs)))
    result[name] = {"avg_bits": average_bits(assign, sizes), **err,
                    "bytes": _saved_bytes(quantize_allocation(variables, assign, symmetric,
                                                              granularity))}
  return result


def allocation_report(
    apply_fn: Callable[[Any, Any], Any],
    variables: Any,
    inputs: Any,
    sensitivity: Sensitivity,
    assignment: Mapping[str, int],
    uniform_bits: int | None = None,
    symmetric: bool = True,
    granularity: str = "per_channel",
    budget_bits: float | None = None,
) -> str:
  """Markdown report of an allocation: a per-layer table and a comparison with uniform bits.

  Args:
    apply_fn, variables, inputs, uniform_bits, symmetric, granularity, budget_bits: as
      :func:`compare_with_uniform`.
    sensitivity: ``{layer: {bits: s}}`` from :func:`layer_sensitivity`.
    assignment: ``{layer: bits}`` from :func:`allocate_bits`.

  Returns:
    Markdown: a table ``layer | params | bits | sensitivity`` (sensitivity at the chosen width),
    then a table ``setting | avg bits | file bytes | output MSE | PSNR (dB)`` for float32, uniform
    and the allocation. The average excludes layers left in float32; the file holds the whole
    tree.

  Raises:
    ValueError: as :func:`compare_with_uniform`.
  """
  cmp = compare_with_uniform(apply_fn, variables, inputs, assignment, uniform_bits, symmetric,
                             granularity, budget_bits)
  leaves, _, index = _leaf_index(variables)
  lines = ["| layer | params | bits | sensitivity |", "|---|---:|---:|---:|"]
  for path, bits in assignment.items():
    s = sensitivity.get(path, {}).get(bits)
    lines.append(f"| `{path}` | {int(np.size(leaves[index[path]])):,} | {bits} | "
                 f"{'-' if s is None else f'{s:.4g}'} |")
  lines += ["", "| setting | avg bits | file bytes | output MSE | PSNR (dB) |",
            "|---|---:|---:|---:|---:|"]
  names = {"fp32": "float32", "uniform": f"uniform {cmp['uniform_bits']}-bit",
           "allocated": "allocated"}
  for key, label in names.items():
    row = cmp[key]
    lines.append(f"| {label} | {row['avg_bits']:.3f} | {row['bytes']:,} | {row['mse']:.4g} | "
                 f"{row['psnr_db']:.2f} |")
  return "\n".join(lines) + "\n"
