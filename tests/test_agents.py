"""Pruning agents, straight-through channel gates and the MACs budget (jaxgc.train.agents)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgc import models
from jaxgc.compress import apply_masks
from jaxgc.compress import slim as slim_lib
from jaxgc.stats import count_macs
from jaxgc.train import agents


@pytest.fixture(scope="module")
def net():
  g = models.MLPGenerator(z_dim=8, hidden=(24, 64))
  z = jax.random.normal(jax.random.key(0), (4, 8))
  v = g.init(jax.random.key(1), z)
  return g, v, z, agents.gate_spec(g, v, z)


def test_expected_macs_of_hard_gates_is_the_slimmed_count(net):
  g, v, z, spec = net
  assert spec.names == ("hidden[0]", "hidden[1]") and spec.total_macs == count_macs(g, v, z)
  keep = [np.arange(24) % 3 == 0, np.arange(64) < 5]
  small, small_v = slim_lib.slim(g, v, agents.hard_masks(spec, v, keep))
  got = float(agents.expected_macs(spec, [jnp.asarray(k, jnp.float32) for k in keep]))
  assert got == count_macs(small, small_v, z)
  # the gated network is the masked one and the slimmed one (float32 rounding)
  gated = g.apply(agents.apply_gates(spec, v, [jnp.asarray(k, jnp.float32) for k in keep]), z)
  masked = g.apply(apply_masks(v, agents.hard_masks(spec, v, keep)), z)
  np.testing.assert_allclose(gated, masked, atol=1e-6)
  np.testing.assert_allclose(small.apply(small_v, z), gated, atol=1e-5)


def test_straight_through_gate_gradients_are_nonzero(net):
  g, v, z, spec = net
  agent = agents.PruningAgent(spec.sizes, dim=8)
  peer = jnp.zeros(3)
  params = agent.init(jax.random.key(2), peer)
  target = g.apply(v, z)

  def loss(p):
    gates = agents.sample_gates(jax.random.key(3), agent.apply(p, peer))
    for x in gates:   # forward values are exactly 0/1
      assert x.dtype == jnp.float32
    out = g.apply(agents.apply_gates(spec, v, gates), z)
    return jnp.mean((out - target + 0.1) ** 2) + agents.budget_loss(spec, gates, 0.5)[0]

  grads = jax.jit(jax.grad(loss))(params)
  for name in ("head_0", "head_1", "embedding"):
    leaves = jax.tree.leaves(grads["params"][name])
    assert max(float(jnp.abs(x).max()) for x in leaves) > 0, name
  gates = agents.sample_gates(jax.random.key(3), agent.apply(params, peer))
  assert all(set(np.unique(np.asarray(x))) <= {0.0, 1.0} for x in gates)


@pytest.mark.parametrize("target", [0.5, 0.25])
def test_budget_is_reached_within_two_percent(net, target):
  _, _, _, spec = net
  agent = agents.PruningAgent(spec.sizes, dim=8, use_peer=False)
  params = agent.init(jax.random.key(4), jnp.zeros(1))
  opt = optax.adam(5e-2)
  state = opt.init(params)

  @jax.jit
  def step(params, state, key):
    def loss(p):
      return agents.budget_loss(spec, agents.sample_gates(key, agent.apply(p, jnp.zeros(1))),
                                target)[0]
    grads = jax.grad(loss)(params)
    upd, state = opt.update(grads, state)
    return optax.apply_updates(params, upd), state

  for i in range(120):
    params, state = step(params, state, jax.random.key(i))
  logits = agent.apply(params, jnp.zeros(1))
  soft_ratio = float(agents.expected_macs(spec, agents.deterministic_gates(logits))) \
      / spec.total_macs
  assert abs(soft_ratio / target - 1) < 0.15, soft_ratio   # the agent alone gets close
  keep = agents.harden(spec, logits, target)
  ratio = float(agents.expected_macs(spec, [jnp.asarray(k, jnp.float32) for k in keep])) \
      / spec.total_macs
  assert abs(ratio / target - 1) <= 0.02, (ratio, target)


def test_peer_feedback_flows(net):
  _, _, _, spec = net
  agent = agents.PruningAgent(spec.sizes, dim=8, init_logit=0.0)
  d_gates = [jnp.ones(5), jnp.ones(7)]  # a D-agent's gates
  a = agents.peer_summary(agents.keep_ratios(d_gates), [0.9, 0.1])
  b = agents.peer_summary(agents.keep_ratios([jnp.zeros(5).at[0].set(1), jnp.ones(7)]),
                         [0.2, 3.0])
  params = agent.init(jax.random.key(5), a)
  apply = jax.jit(agent.apply)
  la, lb = apply(params, a), apply(params, b)
  assert max(float(jnp.abs(x - y).max()) for x, y in zip(la, lb)) > 1e-4
  # the same Gumbel noise gives other gates for some draw
  assert any(not np.array_equal(x, y) for i in range(20)
             for x, y in zip(agents.sample_gates(jax.random.key(i), la),
                             agents.sample_gates(jax.random.key(i), lb)))
  # without peer feedback the D-agent's state does not reach the G-agent
  solo = agents.PruningAgent(spec.sizes, dim=8, use_peer=False)
  ps = solo.init(jax.random.key(5), a)
  assert all(np.array_equal(x, y) for x, y in zip(solo.apply(ps, a), solo.apply(ps, b)))
  # and no gradient flows into the peer through the summary
  assert float(jnp.abs(jax.grad(lambda s: sum(x.sum() for x in agent.apply(params, s)))(a))
               .max()) == 0


def test_bad_input_is_one_line(net):
  _, _, _, spec = net
  for bad in (0, 1.5, -0.1, True, "half"):
    with pytest.raises(ValueError, match="budget must be a MACs fraction in") as e:
      agents.check_budget(bad)
    assert "\n" not in str(e.value)
  lenet = models.LeNet5()
  x = models.example_input(lenet)
  with pytest.raises(ValueError, match="LeNet5 cannot be gated"):
    agents.gate_spec(lenet, jax.eval_shape(lenet.init, jax.random.key(0), x), x)
