"""Model size and cost: parameter counts and multiply-accumulates (MACs).

MACs are counted analytically from the traced program (the jaxpr of ``module.apply``): every
``conv_general_dilated`` and ``dot_general`` contributes its multiply-accumulates, so the count
covers any model of the zoo, masked or slimmed, without per-architecture code. A convolution,
transposed ones included, counts ``out_height * out_width * out_channels * kh * kw *
in_channels / groups``: the convention of torchprofile, with which GAN Compression and the
papers after it report MACs (56.8G for the 9-block CycleGAN ResNet generator at 256x256, which
this counter reproduces: see tests/test_stats.py).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def count_params(variables: Any, collection: str | None = "params") -> int:
  """Number of scalars in ``variables[collection]`` (all leaves when ``collection`` is None)."""
  tree = variables if collection is None else variables.get(collection, {})
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def _conv_macs(eqn) -> int:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  out = eqn.outvars[0].aval
  dn = eqn.params["dimension_numbers"]
  groups = eqn.params["feature_group_count"]
  k_spatial = math.prod(rhs.shape[d] for d in dn.rhs_spec[2:])
  in_ch = lhs.shape[dn.lhs_spec[1]]
  out_ch = out.shape[dn.out_spec[1]]
  batch = out.shape[dn.out_spec[0]]
  out_spatial = math.prod(out.shape[d] for d in dn.out_spec[2:])
  return batch * out_spatial * out_ch * (in_ch // groups) * k_spatial


def _dot_macs(eqn) -> int:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  (lc, _), _ = eqn.params["dimension_numbers"]
  contract = math.prod(lhs.shape[d] for d in lc)
  return math.prod(eqn.outvars[0].aval.shape) * contract


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += _conv_macs(eqn)
    elif name == "dot_general":
      total += _dot_macs(eqn)
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          total += _jaxpr_macs(inner if hasattr(inner, "eqns") else inner.jaxpr)
        elif hasattr(sub, "eqns"):
          total += _jaxpr_macs(sub)
  return total


def count_macs(module, variables: Any, x: jax.Array) -> int:
  """Multiply-accumulates of one forward pass per sample.

  Args:
    module: a Flax module.
    variables: its variables.
    x: an example input whose first axis is the batch (values are not used).

  Returns:
    MACs per sample (int), convolutions and matrix products only.
  """
  closed = jax.make_jaxpr(lambda v, x: module.apply(v, x))(variables, x)
  return _jaxpr_macs(closed.jaxpr) // int(x.shape[0])
