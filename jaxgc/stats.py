"""Model size and cost: parameter counts and multiply-accumulates (MACs).

MACs are counted analytically from the traced program (the jaxpr of ``module.apply``): every
``conv_general_dilated`` and ``dot_general`` contributes its multiply-accumulates, so the count
covers any model of the zoo, masked or slimmed, without per-architecture code. A convolution,
transposed ones included, counts ``out_height * out_width * out_channels * kh * kw *
in_channels / groups``: the convention of torchprofile, with which GAN Compression and the
papers after it report MACs (56.8G for the 9-block CycleGAN ResNet generator at 256x256, which
this counter reproduces: see tests/test_stats.py).

``convention="valid"`` counts instead only the kernel taps that land on a real input pixel
(not on zero padding, nor on the zeros a transposed convolution's input dilation inserts): the
work a direct implementation does, and what XLA's cost analysis counts. ``xla_flops`` reads
that cost analysis; ``2 * count_macs(..., convention="valid")`` equals it for a lone
convolution or matrix product without bias, and is within a few percent of it for a whole
model, the rest being XLA's count of elementwise work (norms, activations, bias adds): both
checked in tests/test_slim.py. For a stride-2 transposed convolution the valid count is about
a quarter of torchprofile's (each input pixel meets each tap once).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def count_params(variables: Any, collection: str | None = "params") -> int:
  """Number of scalars in ``variables[collection]`` (all leaves when ``collection`` is None)."""
  tree = variables if collection is None else variables.get(collection, {})
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


CONVENTIONS = ("torchprofile", "valid")

# While MACs are counted, layers with a faster formulation of the same function (col2im
# and sub-pixel transposed convolutions, shifted multiply-add depthwise convolutions and
# unpadded convolutions given one padding row on the CPU: jaxgc.models.layers) trace their
# reference formulation, the convolution PyTorch runs, so the
# count is that of the layer, not of its implementation.
_REFERENCE = contextvars.ContextVar("jaxgc_reference_formulation", default=False)


def reference_formulation() -> bool:
  """Whether layers should trace their reference formulation (inside :func:`count_macs`)."""
  return _REFERENCE.get()


@contextlib.contextmanager
def tracing_reference_formulation():
  """Inside the block, layers trace the convolution PyTorch runs (see :func:`count_macs`)."""
  token = _REFERENCE.set(True)
  try:
    yield
  finally:
    _REFERENCE.reset(token)


def _valid_taps(out_size: int, kernel: int, stride: int, pad_lo: int, in_size: int,
                lhs_dilation: int, rhs_dilation: int) -> int:
  """(output position, kernel tap) pairs of one spatial axis that read a real input pixel."""
  last = (in_size - 1) * lhs_dilation  # the last real pixel of the dilated input
  n = 0
  for t in range(kernel):
    for o in range(out_size):
      u = o * stride - pad_lo + t * rhs_dilation
      n += 0 <= u <= last and u % lhs_dilation == 0
  return n


def _conv_macs(eqn, convention: str) -> int:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  out = eqn.outvars[0].aval
  p = eqn.params
  dn = p["dimension_numbers"]
  groups = p["feature_group_count"]
  in_ch = lhs.shape[dn.lhs_spec[1]]
  out_ch = out.shape[dn.out_spec[1]]
  batch = out.shape[dn.out_spec[0]]
  if convention == "valid":
    taps = math.prod(
        _valid_taps(out.shape[od], rhs.shape[rd], p["window_strides"][i], p["padding"][i][0],
                    lhs.shape[ld], p["lhs_dilation"][i], p["rhs_dilation"][i])
        for i, (ld, rd, od) in enumerate(zip(dn.lhs_spec[2:], dn.rhs_spec[2:], dn.out_spec[2:])))
  else:
    taps = (math.prod(out.shape[d] for d in dn.out_spec[2:])
            * math.prod(rhs.shape[d] for d in dn.rhs_spec[2:]))
  return batch * out_ch * (in_ch // groups) * taps


def _dot_macs(eqn) -> int:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  (lc, _), _ = eqn.params["dimension_numbers"]
  contract = math.prod(lhs.shape[d] for d in lc)
  return math.prod(eqn.outvars[0].aval.shape) * contract


def _jaxpr_macs(jaxpr, convention: str) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += _conv_macs(eqn, convention)
    elif name == "dot_general":
      total += _dot_macs(eqn)
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          total += _jaxpr_macs(inner if hasattr(inner, "eqns") else inner.jaxpr, convention)
        elif hasattr(sub, "eqns"):
          total += _jaxpr_macs(sub, convention)
  return total


def count_macs(module, variables: Any, x: jax.Array, convention: str = "torchprofile") -> int:
  """Multiply-accumulates of one forward pass per sample.

  Args:
    module: a Flax module.
    variables: its variables (arrays or ``jax.ShapeDtypeStruct``; values are not used).
    x: an example input whose first axis is the batch (values are not used).
    convention: ``"torchprofile"`` (every kernel tap at every output position, as published
      MAC tables count) or ``"valid"`` (only taps that read a real input pixel, as XLA's cost
      analysis counts; see the module docstring).

  Returns:
    MACs per sample (int), convolutions and matrix products only.

  Raises:
    ValueError: unknown ``convention``.
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
  with tracing_reference_formulation():   # each layer counted as the convolution it computes
    closed = jax.make_jaxpr(lambda v, x: module.apply(v, x))(variables, x)
  return _jaxpr_macs(closed.jaxpr, convention) // int(x.shape[0])


def _layer_macs(jaxpr, convention: str, prefix: tuple[str, ...], out: dict[str, int]) -> None:
  for eqn in jaxpr.eqns:
    stack = prefix + tuple(str(eqn.source_info.name_stack).split("/"))
    name = "/".join(x for x in stack if x)
    if eqn.primitive.name == "conv_general_dilated":
      out[name] = out.get(name, 0) + _conv_macs(eqn, convention)
    elif eqn.primitive.name == "dot_general":
      out[name] = out.get(name, 0) + _dot_macs(eqn)
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        inner = getattr(sub, "jaxpr", None)
        inner = sub if inner is None and hasattr(sub, "eqns") else inner
        if inner is not None:
          _layer_macs(inner if hasattr(inner, "eqns") else inner.jaxpr, convention, stack, out)


def layer_macs(module, variables: Any, x: jax.Array, convention: str = "torchprofile"
               ) -> dict[str, int]:
  """Multiply-accumulates of one forward pass per sample, layer by layer.

  The same count as :func:`count_macs` (which it sums to exactly), attributed to the Flax
  module that issues each convolution or matrix product, by the name stack JAX records.

  Args:
    module, variables, x, convention: as :func:`count_macs`.

  Returns:
    ``{layer path: MACs per sample}`` in program order, the path relative to ``module``
    (e.g. ``"dense_0"``, ``"block_3/conv_1"``), as in its ``params`` tree.

  Raises:
    ValueError: unknown ``convention``.
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
  with tracing_reference_formulation():
    closed = jax.make_jaxpr(lambda v, x: module.apply(v, x))(variables, x)
  out: dict[str, int] = {}
  _layer_macs(closed.jaxpr, convention, (), out)
  root = type(module).__name__ + "/"
  return {(k[len(root):] if k.startswith(root) else k): v // int(x.shape[0])
          for k, v in out.items()}


def xla_flops(module, variables: Any, x: jax.Array, reference: bool = True) -> float:
  """Floating-point operations per sample of the compiled forward pass, by XLA's cost analysis.

  ``jax.jit(module.apply).lower(variables, x).compile().cost_analysis()["flops"]`` divided by
  the batch: two per multiply-accumulate of every convolution and matrix product (only the
  taps that read real input, see ``count_macs(..., convention="valid")``) plus about one per
  element of every elementwise operation and reduction XLA keeps after fusion.

  Args:
    module: a Flax module.
    variables: its variables (arrays or ``jax.ShapeDtypeStruct``).
    x: an example input whose first axis is the batch.
    reference: compile the reference formulation of jaxgc's fast layers (the convolutions
      PyTorch runs, as :func:`count_macs` traces them), a cross-check of the MAC count; False
      compiles what actually runs (shifted multiply-adds count one FLOP per multiply and per
      add; a col2im transposed convolution's matrix product counts PyTorch's MACs, an unpadded
      convolution its extra padding row too).

  Returns:
    FLOPs per sample (float), as counted for the default backend.

  Raises:
    ValueError: the backend's compiler reports no flop count.
  """
  with (tracing_reference_formulation() if reference else contextlib.nullcontext()):
    lowered = jax.jit(lambda v, x: module.apply(v, x)).lower(variables, x)
  cost = lowered.compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    raise ValueError(f"the {jax.default_backend()} compiler reports no flop count: {cost!r}")
  return float(cost["flops"]) / int(x.shape[0])


def latency(module, variables, x, repeats: int = 10) -> float:
  """Median wall seconds of one jitted ``module.apply(variables, x)`` (compilation excluded).

  Args:
    module: a Flax module.
    variables: its variables.
    x: one input batch (e.g. ``[batch, height, width, 3]`` float32), put on the default device.
    repeats: timed calls, >= 1, after one untimed warm-up call.

  Returns:
    Seconds (float) per call, the median over ``repeats`` (``block_until_ready`` included).
  """
  import statistics  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  apply = jax.jit(module.apply)
  xs = jnp.asarray(x)
  apply(variables, xs).block_until_ready()
  times = []
  for _ in range(max(1, int(repeats))):
    t = time.perf_counter()
    apply(variables, xs).block_until_ready()
    times.append(time.perf_counter() - t)
  return statistics.median(times)
