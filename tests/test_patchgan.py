"""The PatchGAN discriminator: parity with an upstream-structured PyTorch ``NLayerDiscriminator``
on random weights, the key map, architecture inference, the 70x70 receptive field, bad inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxgc import convert  # noqa: E402
from jaxgc import models  # noqa: E402
from jaxgc.convert import CheckpointError  # noqa: E402
from jaxgc.convert import mapping  # noqa: E402
from jaxgc.convert import torch_refs_zoo as ref  # noqa: E402
from jaxgc.models import patchgan  # noqa: E402

ATOL = 1e-4
ARCH = "patchgan_discriminator"


def _sd(net: torch.nn.Module) -> dict[str, torch.Tensor]:
  return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _images(seed: int, shape) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape).astype(np.float32)


def _torch_logits(net: torch.nn.Module, x_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    y = net(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()
  return y.transpose(0, 2, 3, 1)


PARITY_CASES = [
    # (norm, n_layers, ndf, input side)
    ("batch", 3, 64, 70),
    ("batch", 3, 16, 128),
    ("instance", 3, 64, 70),
    ("instance", 3, 16, 128),
    ("batch", 2, 16, 70),
    ("instance", 2, 16, 128),
    ("none", 3, 16, 70),
]


@pytest.mark.parametrize("norm,n_layers,ndf,size", PARITY_CASES,
                         ids=[f"{n}-L{l}-ndf{d}-{s}" for n, l, d, s in PARITY_CASES])
def test_random_weight_parity(norm, n_layers, ndf, size):
  net = ref.random_patchgan(seed=n_layers * 7 + size, ndf=ndf, n_layers=n_layers, norm=norm)
  module, variables = convert.convert_state_dict(_sd(net))
  assert isinstance(module, models.ARCHS[ARCH])
  assert (module.ndf, module.n_layers, module.norm, module.input_nc) == (ndf, n_layers, norm, 3)
  x = _images(size, (2, size, size, 3))
  y_torch = _torch_logits(net, x)
  side = patchgan.output_size(size, n_layers)
  assert y_torch.shape == (2, side, side, 1)
  assert float(np.std(y_torch)) > 1e-3  # not a degenerate, constant map
  y = np.asarray(jax.jit(module.apply)(variables, x))
  assert y.shape == y_torch.shape
  err = float(np.max(np.abs(y.astype(np.float64) - y_torch)))
  assert err <= ATOL, f"max |flax - torch| = {err:.3g} > {ATOL}"


def test_default_is_the_70x70_patchgan_with_30x30_logits_at_256():
  module = models.build(ARCH)
  assert (module.ndf, module.n_layers, module.norm) == (64, 3, "batch")
  assert patchgan.receptive_field(3) == 70
  assert patchgan.output_size(256, 3) == 30
  shapes = jax.eval_shape(module.init, jax.random.key(0), models.example_input(module))
  y = jax.eval_shape(module.apply, shapes, models.example_input(module, batch=2))
  assert y.shape == (2, 30, 30, 1)


def test_outputs_are_logits_not_probabilities():
  net = ref.random_patchgan(seed=3, ndf=8, norm="none")
  with torch.no_grad():
    net.model[-1].bias.fill_(3.0)  # push the logits above 1
  module, variables = convert.convert_state_dict(_sd(net))
  y = np.asarray(module.apply(variables, _images(3, (1, 32, 32, 3))))
  assert y.max() > 1.0


@pytest.mark.parametrize("norm,n_layers", [("batch", 3), ("instance", 2), ("none", 4)])
def test_key_map_consumes_every_torch_key_with_checked_shapes(norm, n_layers):
  net = ref.random_patchgan(seed=1, ndf=8, n_layers=n_layers, norm=norm)
  sd = _sd(net)
  assert mapping.infer_arch({k: v.numpy() for k, v in sd.items()}) == ARCH
  module, variables = convert.convert_state_dict(sd)
  kw = {"ndf": 8, "n_layers": n_layers, "norm": norm, "input_nc": 3}
  table = mapping.entries(ARCH, kw, {})
  torch_keys = {k for k in sd if not k.endswith("num_batches_tracked")}
  assert {t for _, t, _ in table} == torch_keys  # every key consumed, none invented
  flat = {"/".join(str(p.key) for p in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}
  assert set(flat) == {f for f, _, _ in table}
  for fpath, tkey, kind in table:
    w = sd[tkey].numpy()
    assert mapping.torch_shape(kind, flat[fpath].shape) == w.shape, tkey
    np.testing.assert_array_equal(flat[fpath], mapping.to_flax(kind, w), err_msg=tkey)
  # Sequential indices: convs at 0, 3i - 1 and 3 n_layers + 2.
  convs = sorted(int(k.split(".")[1]) for k in sd if k.endswith("weight") and sd[k].ndim == 4)
  assert convs == [0] + [3 * i - 1 for i in range(1, n_layers + 1)] + [3 * n_layers + 2]
  # The module rebuilt from its JSON spec has the same variable shapes.
  rebuilt = models.build(**{"arch": ARCH, **models.model_spec(module)["kwargs"]})
  assert rebuilt == module


def test_mismatched_state_dicts_raise_checkpoint_error():
  sd = _sd(ref.random_patchgan(seed=2, ndf=8, norm="batch"))
  missing = {k: v for k, v in sd.items() if k != "model.6.running_var"}
  with pytest.raises(CheckpointError, match=r"missing 1 keys \[model\.6\.running_var\]"):
    convert.convert_state_dict(missing, arch=ARCH)
  with pytest.raises(CheckpointError, match="does not match arch"):
    convert.convert_state_dict(sd, arch=ARCH, n_layers=2)
  with pytest.raises(CheckpointError, match="mis-shaped"):
    convert.convert_state_dict(sd, arch=ARCH, ndf=16)


def test_arch_inference_does_not_claim_other_archs():
  for arch, kw in [("resnet_generator", {"ngf": 4, "n_blocks": 2}),
                   ("dcgan_discriminator", {"features": (8, 16)})]:
    module = models.build(arch, **kw)
    shapes = jax.eval_shape(module.init, jax.random.key(0), models.example_input(module))
    flat = {"/".join(str(p.key) for p in path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
    sd = {t: np.zeros(mapping.torch_shape(k, flat[f]), np.float32)
          for f, t, k in mapping.entries(arch, kw, {})}
    assert mapping.infer_arch(sd) == arch


def test_receptive_field_of_an_interior_logit():
  """The gradient of one interior logit w.r.t. the input is nonzero exactly on a 70x70 square
  for n_layers=3. InstanceNorm couples every pixel, so the inference-mode BatchNorm network is
  the one whose window is local."""
  assert [patchgan.receptive_field(n) for n in (1, 2, 3, 4)] == [16, 34, 70, 142]
  n_layers = 3
  rf = patchgan.receptive_field(n_layers)
  net = ref.random_patchgan(seed=4, ndf=4, n_layers=n_layers, norm="batch")
  module, variables = convert.convert_state_dict(_sd(net))
  size = 72
  side = patchgan.output_size(size, n_layers)
  assert side == 7
  o = side // 2  # input window [8 o - 23, 8 o + 46] = [1, 70]

  def logit(x):
    return module.apply(variables, x)[0, o, o, 0]

  x = jnp.asarray(_images(5, (1, size, size, 3)))
  g = np.abs(np.asarray(jax.grad(logit)(x)[0])).sum(-1)
  rows, cols = np.nonzero(g)
  assert rows.max() - rows.min() + 1 == rf and cols.max() - cols.min() + 1 == rf
  assert len(rows) == rf * rf  # the whole window, no holes
  # The window starts where the strides put it: 2**n_layers * (o - 2) - (2**n_layers - 1).
  s = 2**n_layers
  assert rows.min() == s * (o - 2) - (s - 1) and cols.min() == rows.min()


def test_train_mode_batch_norm_matches_torch_train_mode():
  net = ref.random_patchgan(seed=6, ndf=8, n_layers=2, norm="batch")
  sd = _sd(net)
  module, variables = convert.convert_state_dict(sd)
  x = _images(6, (4, 40, 40, 3))
  net.train()
  y_torch = _torch_logits(net, x)
  y, updated = module.apply(variables, x, train=True, mutable=["batch_stats"])
  err = float(np.max(np.abs(np.asarray(y) - y_torch)))
  assert err <= ATOL, f"train mode: max |flax - torch| = {err:.3g}"
  # Running means follow PyTorch's momentum-0.1 update.
  np.testing.assert_allclose(updated["batch_stats"]["norm_1"]["mean"],
                             net.model[3].running_mean.numpy(), atol=1e-5)
  assert not np.allclose(updated["batch_stats"]["norm_1"]["mean"],
                         variables["batch_stats"]["norm_1"]["mean"])


@pytest.mark.parametrize("kwargs,shape,message", [
    ({}, (1, 64, 64, 1), r"\[batch, height, width, 3\], got shape \(1, 64, 64, 1\)"),
    ({}, (64, 64, 3), r"got shape \(64, 64, 3\)"),
    ({}, (1, 23, 64, 3), r"at least 24x24 for n_layers=3, got 23x64"),
    ({"norm": "group"}, (1, 64, 64, 3), r"norm must be one of .* got 'group'"),
    ({"n_layers": 0}, (1, 64, 64, 3), r"n_layers must be >= 1, got 0"),
])
def test_bad_inputs_raise(kwargs, shape, message):
  module = models.build(ARCH, ndf=4, **kwargs)
  with pytest.raises(ValueError, match=message):
    module.init(jax.random.key(0), jnp.zeros(shape, jnp.float32))
