"""Pruning agents with peer feedback, channel gates and a differentiable MACs budget, for
collaborative generator/discriminator pruning.

Source: Ganjdanesh et al., "Compressing Image-to-Image Translation GANs Using Local Density
Structures on Their Learned Manifold", AAAI 2024 (arXiv 2312.14776): one pruning agent for the
generator and one for the discriminator, each seeing its peer's state. The paper publishes no
code; this module is **our reconstruction**, the agent following the design of the same
authors' pruning hypernetwork (Alii-Ganjj/InterpretationsSteeredPruning ``Models/hypernet.py``,
read, not copied): a learned embedding per prunable layer -> bidirectional GRU -> a dense head
per layer -> one logit per output channel -> Gumbel-sigmoid gates at temperature 0.4, hard
(0/1) in the forward pass with a straight-through gradient, and a MACs budget of the form
``w * |log(F / F_total / p)|`` (theirs is one-sided, ``log(max(F / F_total, p) / p)``; ours is
two-sided so that the final masks land on the budget, not below it).

Peer feedback (ours): a summary vector of the peer, under stop-gradient (its per-group keep
ratios and its network's loss statistics: D's real/fake accuracy for the G-agent, G's
adversarial loss for the D-agent), mapped by a two-layer MLP and added to every token.

Gates act on *channel groups* (``jaxgc.compress.slim.channel_groups``): every slot of a group
(producer kernels and biases, norms, readers' input axes) is multiplied by the group's gate, so
a hard gate is exactly a channel mask, and the slimmed network equals the gated one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgc import stats
from jaxgc.compress import slim as slim_lib
from jaxgc.compress.selection import path_str

TEMPERATURE = 0.4


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """One layer's MACs and how they scale with the gates: ``macs * out_frac * in_frac``.

  Attributes:
    name: the layer's path (``stats.layer_macs`` key).
    macs: MACs per sample of the ungated layer.
    out_group: index of the group its output channels belong to, or -1.
    in_groups: ``(group index, channels)`` of every group its input channels belong to.
    in_total: its input channels (kernel axis -2), 0 when it has no kernel.
  """

  name: str
  macs: int
  out_group: int
  in_groups: tuple[tuple[int, int], ...]
  in_total: int


@dataclasses.dataclass(frozen=True)
class GateSpec:
  """The channel groups of a network and the per-layer MACs table the budget uses."""

  groups: tuple[slim_lib.ChannelGroup, ...]
  layers: tuple[LayerCost, ...]
  total_macs: int

  @property
  def sizes(self) -> tuple[int, ...]:
    """Channels per group."""
    return tuple(g.size for g in self.groups)

  @property
  def names(self) -> tuple[str, ...]:
    """Group names, e.g. ``("hidden[0]", "hidden[1]")``."""
    return tuple(g.name for g in self.groups)


def gate_spec(module: nn.Module, variables: Any, x: jax.Array) -> GateSpec:
  """The gateable channel groups of ``module`` and its per-layer MACs (``stats.layer_macs``).

  Args:
    module: a network ``jaxgc.compress.slim`` supports (zoo generators, the MLP pair).
    variables: its variables (arrays or ``jax.ShapeDtypeStruct``).
    x: an example input ``[batch, ...]``.

  Raises:
    ValueError: an architecture that cannot be gated (naming it, one line).
  """
  if not slim_lib.is_supported(module):
    raise ValueError(f"{type(module).__name__} cannot be gated: its channel groups are unknown "
                     f"(gateable: the architectures jaxgc.compress.slim supports)")
  groups = tuple(slim_lib.channel_groups(module, variables))
  shapes = {path_str(kp): np.shape(v)
            for kp, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  table = stats.layer_macs(module, variables, x)
  layers = []
  for name, macs in table.items():
    kernel = f"params/{name}/kernel"
    out_group, in_groups = -1, []
    for gi, g in enumerate(groups):
      if (kernel, -1) in g.slots:
        out_group = gi
      if (kernel, -2) in g.slots or any(p == kernel for p, _, _ in g.segments):
        in_groups.append((gi, g.size))
    in_total = shapes[kernel][-2] if kernel in shapes else 0
    layers.append(LayerCost(name, int(macs), out_group, tuple(in_groups), int(in_total)))
  return GateSpec(groups, tuple(layers), int(sum(table.values())))


def _macs_of_kept(spec: GateSpec, kept: Sequence[Any]) -> Any:
  """MACs per sample with ``kept[i]`` channels of group ``i`` (floats or traced scalars)."""
  total = 0.0
  for layer in spec.layers:
    out_frac = 1.0 if layer.out_group < 0 else kept[layer.out_group] / spec.sizes[
        layer.out_group]
    in_frac = 1.0
    if layer.in_groups and layer.in_total:
      fixed = layer.in_total - sum(size for _, size in layer.in_groups)
      in_frac = (fixed + sum(kept[gi] for gi, _ in layer.in_groups)) / layer.in_total
    total = total + float(layer.macs) * out_frac * in_frac   # float: MACs pass 2**31
  return total


def expected_macs(spec: GateSpec, gates: Sequence[jax.Array]) -> jax.Array:
  """MACs per sample of the gated network, float32 scalar, differentiable in ``gates``.

  Each layer's MACs scale with the kept fraction of its output group and of its input channels
  (``sum(gates) / size`` per group; channels of no group count as kept). With 0/1 gates this is
  the slimmed network's exact count for dense and convolutional layers (``stats.count_macs``).
  """
  return jnp.float32(0.0) + _macs_of_kept(spec, [jnp.sum(g.astype(jnp.float32)) for g in gates])


def budget_loss(spec: GateSpec, gates: Sequence[jax.Array], target: float,
                weight: float = 2.0) -> tuple[jax.Array, jax.Array]:
  """``(weight * |log(ratio / target)|, ratio)`` with ``ratio = expected_macs / total``."""
  ratio = expected_macs(spec, gates) / float(spec.total_macs)
  return weight * jnp.abs(jnp.log(ratio / target)), ratio


def apply_gates(spec: GateSpec, variables: Any, gates: Sequence[jax.Array]) -> Any:
  """``variables`` with every slot of group ``i`` multiplied by ``gates[i]`` along its axis
  (a segment only on its range): 0/1 gates give exactly the masked network
  (``jaxgc.compress.prune.apply_masks`` with :func:`hard_masks`)."""
  per_leaf: dict[str, list[tuple[int, int, int]]] = {}
  for gi, g in enumerate(spec.groups):
    for path, axis, offset in g.all_slots():
      per_leaf.setdefault(path, []).append((gi, axis, offset))

  def gate_leaf(kp, leaf):
    path = path_str(kp)
    if path not in per_leaf:
      return leaf
    out = leaf
    for gi, axis, offset in per_leaf[path]:
      n = leaf.shape[axis]
      vec = gates[gi].astype(leaf.dtype)
      vec = jnp.concatenate([jnp.ones(offset, leaf.dtype), vec,
                             jnp.ones(n - offset - vec.shape[0], leaf.dtype)])
      bshape = [1] * leaf.ndim
      bshape[axis] = n
      out = out * vec.reshape(bshape)
    return out

  return jax.tree_util.tree_map_with_path(gate_leaf, variables)


def _at_least_one(hard: jax.Array, score: jax.Array) -> jax.Array:
  """``hard`` with the highest-scoring channel switched on where it keeps none."""
  top = jnp.arange(score.shape[0]) == jnp.argmax(score)
  return jnp.where(jnp.any(hard > 0), hard, top.astype(hard.dtype))


def sample_gates(key: jax.Array, logits: Sequence[jax.Array],
                 temperature: float = TEMPERATURE) -> list[jax.Array]:
  """Gumbel-sigmoid gates, hard in value, soft in gradient (straight-through).

  ``soft = sigmoid((logit + log u - log(1 - u)) / temperature)``, ``u ~ U(0, 1)``; the gate
  is ``hard + (soft - stop_gradient(soft))`` with ``hard = soft > 1/2`` (at least one channel per
  group). Returns one float32 ``[size]`` vector of 0/1 values per group.
  """
  out = []
  for i, lg in enumerate(logits):
    u = jax.random.uniform(jax.random.fold_in(key, i), lg.shape, jnp.float32, 1e-6, 1 - 1e-6)
    soft = jax.nn.sigmoid((lg + jnp.log(u) - jnp.log1p(-u)) / temperature)
    hard = _at_least_one((soft > 0.5).astype(jnp.float32), soft)
    out.append(hard + (soft - jax.lax.stop_gradient(soft)))  # exactly 0/1 in value
  return out


def deterministic_gates(logits: Sequence[jax.Array]) -> list[jax.Array]:
  """``logit > 0`` as float32 0/1 (at least one channel per group), no gradient."""
  return [_at_least_one((lg > 0).astype(jnp.float32), lg) for lg in logits]


def _ratio_np(spec: GateSpec, keep: Sequence[np.ndarray]) -> float:
  """:func:`expected_macs` of boolean keep vectors, in numpy, over the total."""
  return float(_macs_of_kept(spec, [float(np.sum(k)) for k in keep])) / spec.total_macs


def harden(spec: GateSpec, logits: Sequence[Any], target: float,
           tolerance: float = 0.02) -> list[np.ndarray]:
  """Boolean keep vectors (one per group) from an agent's logits, on the MACs budget.

  Starts from the agent's own decision (``logit > 0``, at least one channel per group). If its
  MACs ratio is off ``target`` by more than ``tolerance`` (relative), moves the global threshold
  to the logit that brings the ratio closest, then adds (the highest-logit pruned channel of a
  group) or removes (the lowest-logit kept one) single channels while that brings the ratio
  closer: the decision follows the agent's ranking of channels within every group.

  Args:
    spec: the network's :func:`gate_spec`.
    logits: per-group ``[size]`` logits.
    target: the MACs budget, a fraction in (0, 1].
    tolerance: relative distance to ``target`` accepted as is.

  Returns:
    One bool ``[size]`` numpy vector per group, each with at least one ``True``.

  Raises:
    ValueError: ``target`` outside (0, 1].
  """
  check_budget(target, "target")
  flat = [np.asarray(lg, np.float64) for lg in logits]
  order = [np.argsort(-lg, kind="stable") for lg in flat]   # best channels first

  def keep_counts(counts):
    out = []
    for o, n in zip(order, counts):
      k = np.zeros(o.shape[0], bool)
      k[o[:n]] = True
      out.append(k)
    return out

  def err(counts):
    return abs(_ratio_np(spec, keep_counts(counts)) - target)

  counts = [max(1, int(np.sum(lg > 0))) for lg in flat]
  if err(counts) <= tolerance * target:
    return keep_counts(counts)
  cands = np.unique(np.concatenate(flat))
  counts = min(([max(1, int(np.sum(lg >= tau))) for lg in flat] for tau in cands), key=err)
  while True:
    moves = [counts[:i] + [c + d] + counts[i + 1:] for i, c in enumerate(counts)
             for d in (-1, 1) if 1 <= c + d <= spec.sizes[i]]
    best = min(moves, key=err, default=counts)
    if err(best) >= err(counts):
      return keep_counts(counts)
    counts = best


def hard_masks(spec: GateSpec, variables: Any, keep: Sequence[np.ndarray]) -> Any:
  """Channel pruning masks over ``variables`` (``jaxgc.compress.slim`` format) from boolean keep
  vectors, one per group."""
  return slim_lib.masks_from_keep(variables, spec.groups,
                                  {g.name: np.asarray(k, bool) for g, k in zip(spec.groups, keep)})


def check_budget(value: Any, name: str = "budget") -> float:
  """``value`` as a float in (0, 1], else a one-line ``ValueError`` naming it."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
    raise ValueError(f"{name} must be a MACs fraction in (0, 1], got {value!r}")
  return float(value)


class PruningAgent(nn.Module):
  """A hypernetwork emitting one logit per channel of every group of a network.

  Input: ``peer`` ``[peer_dim]`` float32, the peer's summary (:func:`peer_summary`), under
  stop-gradient; ignored when ``use_peer`` is False. Output: a tuple of ``[sizes[i]]`` float32
  logits. Layers: a learned ``[len(sizes), dim]`` embedding (+ the peer's MLP feedback on every
  token) -> bidirectional GRU (``dim`` per direction) -> per-group ``Dense(sizes[i])`` head,
  its bias initialised to ``init_logit`` (gates start open).
  """

  sizes: tuple[int, ...]
  dim: int = 32
  use_peer: bool = True
  init_logit: float = 2.0

  @nn.compact
  def __call__(self, peer: jax.Array) -> tuple[jax.Array, ...]:
    tokens = self.param("embedding", nn.initializers.normal(1.0), (len(self.sizes), self.dim))
    if self.use_peer:
      fb = jax.lax.stop_gradient(peer.astype(jnp.float32))
      fb = nn.Dense(self.dim, name="peer_1")(nn.relu(nn.Dense(self.dim, name="peer_0")(fb)))
      tokens = tokens + fb[None, :]
    h = jnp.concatenate([self._gru(tokens, "gru_fwd"),
                         self._gru(tokens[::-1], "gru_bwd")[::-1]], axis=-1)   # [layers, 2 dim]
    return tuple(nn.Dense(n, name=f"head_{i}", kernel_init=nn.initializers.normal(0.1),
                          bias_init=nn.initializers.constant(self.init_logit))(h[i])
                 for i, n in enumerate(self.sizes))


  def _gru(self, tokens: jax.Array, name: str) -> jax.Array:
    """One direction of the bidirectional GRU, unrolled over the (few) layer tokens."""
    cell = nn.GRUCell(self.dim, name=name)
    carry = jnp.zeros((self.dim,), jnp.float32)
    out = []
    for i in range(tokens.shape[0]):
      carry, y = cell(carry, tokens[i])
      out.append(y)
    return jnp.stack(out)


def keep_ratios(gates: Sequence[jax.Array]) -> jax.Array:
  """``[groups]`` float32: the kept fraction of every group."""
  return jnp.stack([jnp.mean(g.astype(jnp.float32)) for g in gates])


def peer_summary(ratios: jax.Array, loss_stats: Sequence[Any]) -> jax.Array:
  """``[groups + len(loss_stats)]`` float32: the peer's per-group keep ratios (``[groups]``,
  :func:`keep_ratios`) then its loss statistics, under stop-gradient."""
  return jax.lax.stop_gradient(jnp.concatenate(
      [jnp.asarray(ratios, jnp.float32).reshape(-1),
       jnp.asarray(loss_stats, jnp.float32).reshape(-1)]))
