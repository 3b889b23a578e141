"""SAGAN (heykeetae/Self-Attention-GAN) in both spectral-norm layouts: heykeetae's
``SpectralNorm`` (``*.module.weight_bar``, ``weight_u``, ``weight_v``) and
``torch.nn.utils.spectral_norm`` as StudioGAN saves it (``weight_orig``, ``weight_u``,
``weight_v``).

Parity: PyTorch references of ``jaxgc.convert.torch_refs_sagan`` with random weights (random
attention ``gamma``, BatchNorm parameters and statistics, stored vectors one power iteration
from random), saved with ``torch.save``, converted by ``jaxgc convert CKPT OUTDIR``
(architecture inferred) and read back with ``jaxgc.checkpoint.load_model``, equal the
reference's first forward call after loading to ``ATOL`` (max abs, float32; seen: about 2e-7
for the generator's images, 5e-8 for the discriminator's logits) at upstream's size: 64x64,
``z_dim=128``, ``conv_dim=64``. The other tests use ``conv_dim=8`` to stay fast.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxgc import cli  # noqa: E402
from jaxgc import compress  # noqa: E402
from jaxgc import convert  # noqa: E402
from jaxgc import models  # noqa: E402
from jaxgc import stats  # noqa: E402
from jaxgc.checkpoint import load_model  # noqa: E402
from jaxgc.convert import CheckpointError  # noqa: E402
from jaxgc.convert import mapping  # noqa: E402
from jaxgc.convert import torch_refs_sagan as refs  # noqa: E402

ATOL = 1e-4
ROOT = pathlib.Path(__file__).resolve().parents[1]
GEN, DIS = "sagan_generator", "sagan_discriminator"


def _inputs(arch: str, seed: int, batch: int = 2, z_dim: int = 128) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if arch == GEN:
    return rng.standard_normal((batch, z_dim)).astype(np.float32)
  return rng.uniform(-1, 1, (batch, 64, 64, 3)).astype(np.float32)


def _max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _one_line(excinfo) -> str:
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  return msg


# --------------------------------------------------------------------------------------------
# Parity at upstream's size through `jaxgc convert` and load_model


@pytest.mark.parametrize("arch", [GEN, DIS])
@pytest.mark.parametrize("layout", list(mapping.SPECTRAL_LAYOUTS))
def test_convert_cli_parity_full_size(arch, layout, tmp_path, capsys):
  net = refs.random_sagan(arch, layout, seed=7)
  torch.save(net.state_dict(), tmp_path / "net.pth")
  argv = ["convert", str(tmp_path / "net.pth"), str(tmp_path / "model")]
  assert cli.main(argv + (["--arch", arch] if layout == "torch" else [])) == 0
  capsys.readouterr()
  module, variables = load_model(tmp_path / "model")
  assert models.registry.arch_name(module) == arch
  assert module.conv_dim == 64 and getattr(module, "z_dim", 128) == 128
  x = _inputs(arch, 7)
  y_torch = refs.forward_nhwc(net, x)  # the reference's first call after it was saved
  apply = jax.jit(module.apply)
  y = np.asarray(apply(variables, x))
  assert y.shape == ((2, 64, 64, 3) if arch == GEN else (2, 1))
  apply(variables, _inputs(arch, 8))
  assert apply._cache_size() == 1  # pylint: disable=protected-access  # no recompilation
  assert float(np.std(y_torch)) > 1e-3  # not a degenerate, constant output
  err = _max_abs(y, y_torch)
  print(f"\n{arch} ({layout} layout, 64x64): max |jaxgc - torch| = {err:.3g}")
  assert err <= ATOL
  spec = json.loads((tmp_path / "model" / "spec.json").read_text())
  assert models.model_spec(models.build(spec["arch"], **spec["kwargs"])) == {
      k: spec[k] for k in ("arch", "kind", "kwargs")}


# --------------------------------------------------------------------------------------------
# Spectral normalisation: folded as upstream's first call, the vectors kept


def _reference_vectors(net, name: str):
  m = getattr(net, name)[0]
  m = getattr(m, "module", m)
  w = (m.weight_bar if hasattr(m, "weight_bar") else m.weight_orig).detach().numpy()
  return w, m.weight_u.detach().numpy().copy(), m.weight_v.detach().numpy().copy()


@pytest.mark.parametrize("layout", list(mapping.SPECTRAL_LAYOUTS))
def test_folded_kernels_and_vectors_are_those_of_the_first_call(layout):
  net = refs.random_sagan(GEN, layout, seed=3, z_dim=16, conv_dim=8)
  sd = {k: v.clone() for k, v in net.state_dict().items()}
  module, variables = convert.convert_state_dict(sd)
  stored = {n: _reference_vectors(net, n) for n in ("l1", "l2", "l3", "l4")}
  refs.forward_nhwc(net, _inputs(GEN, 3, z_dim=16))  # upstream's first call
  row = mapping.SPECTRAL_LAYOUTS[layout]
  for n, (w, u0, _) in stored.items():
    _, u1, v1 = _reference_vectors(net, n)
    s = variables["spectral"][n]
    np.testing.assert_allclose(s["u"], u1, atol=1e-6)
    np.testing.assert_allclose(s["v"], v1, atol=1e-6)
    # heykeetae iterates on every call (u moves); torch's eval() forward does not.
    assert (_max_abs(u1, u0) > 1e-3) == (row.power_iterations == 1)
    mat = w.reshape(w.shape[0], -1) if layout == "heykeetae" else (
        np.swapaxes(w, 0, 1).reshape(w.shape[1], -1))
    sigma = float(u1.astype(np.float64) @ mat @ v1)
    np.testing.assert_allclose(s["sigma"], sigma, rtol=1e-5)
    # the kernel is the folded weight: kernel * sigma is upstream's unnormalised weight
    np.testing.assert_allclose(variables["params"][n]["kernel"] * s["sigma"],
                               np.transpose(w, (2, 3, 0, 1)), atol=1e-5)
  assert module.spectral_rows == row.transpose_rows
  assert variables["spectral"]["l2"]["u"].shape == ((64,) if layout == "heykeetae" else (32,))


def test_forward_runs_without_the_spectral_collection():
  net = refs.random_sagan(DIS, "heykeetae", seed=4, conv_dim=8)
  module, variables = convert.convert_state_dict(net.state_dict())
  x = _inputs(DIS, 4)
  plain = {k: v for k, v in variables.items() if k != "spectral"}
  np.testing.assert_array_equal(module.apply(plain, x), module.apply(variables, x))


def test_attention_maps_and_batch_statistics_match_upstream():
  """``return_attention`` gives upstream's (out, p1, p2); ``batch_statistics=True`` equals the
  reference left in training mode, as upstream's trainer.py samples."""
  net = refs.random_sagan(GEN, "heykeetae", seed=5, z_dim=16, conv_dim=8)
  sd = net.state_dict()
  module, variables = convert.convert_state_dict(sd)
  z = _inputs(GEN, 5, batch=3, z_dim=16)
  y, p1, p2 = module.apply(variables, z, return_attention=True)
  with torch.no_grad():
    t_y, t_p1, t_p2 = refs.build_reference(sd)(torch.from_numpy(z))
  assert p1.shape == (3, 256, 256) and p2.shape == (3, 1024, 1024)
  assert _max_abs(p1, t_p1.numpy()) <= 1e-5 and _max_abs(p2, t_p2.numpy()) <= 1e-5
  assert _max_abs(y, np.transpose(t_y.numpy(), (0, 2, 3, 1))) <= ATOL
  y_train = refs.forward_nhwc(refs.build_reference(sd).train(), z)
  got = np.asarray(module.apply(variables, z, batch_statistics=True))
  assert _max_abs(got, y_train) <= ATOL and _max_abs(got, y) > 1e-2


# --------------------------------------------------------------------------------------------
# Compression sees the folded kernels; MACs count the attention


def test_fake_quantize_selects_the_folded_kernels():
  net = refs.random_sagan(GEN, "heykeetae", seed=6, z_dim=16, conv_dim=8)
  _, variables = convert.convert_state_dict(net.state_dict())
  q = jax.jit(compress.fake_quantize, static_argnames="config")(
      variables, config=compress.QuantConfig(bits=4))
  changed = sorted(
      compress.selection.path_str(p) for (p, a), (_, b) in zip(
          jax.tree_util.tree_flatten_with_path(variables)[0],
          jax.tree_util.tree_flatten_with_path(q)[0]) if not np.array_equal(a, b))
  want = sorted([f"params/l{i}/kernel" for i in range(1, 5)] + ["params/last/kernel"]
                + [f"params/attn{a}/{c}/kernel" for a in (1, 2)
                   for c in ("key_conv", "query_conv", "value_conv")])
  assert changed == want  # never the spectral vectors, sigma, gamma or biases
  k, kq = variables["params"]["l2"]["kernel"], np.asarray(q["params"]["l2"]["kernel"])
  step = np.max(np.abs(k), axis=(0, 1, 2)) / 7  # symmetric 4-bit, per output channel
  assert np.all(np.abs(kq - k) <= step / 2 + 1e-7)  # the grid of the folded kernel


def test_count_macs_counts_the_attention_matmuls():
  z_dim, cd = 16, 8
  module = models.SAGANGenerator(z_dim=z_dim, conv_dim=cd)
  variables = jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, z_dim), np.float32))

  def convt(side, cout, cin):  # torchprofile: every tap at every output position
    return side * side * cout * 16 * cin

  def attn(side, c):
    n = side * side
    return n * (2 * c * (c // 8) + c * c) + n * n * (c // 8) + n * n * c  # 1x1 convs, q k^T, a v

  want = (convt(4, 8 * cd, z_dim) + convt(8, 4 * cd, 8 * cd) + convt(16, 2 * cd, 4 * cd)
          + convt(32, cd, 2 * cd) + convt(64, 3, cd) + attn(16, 2 * cd) + attn(32, cd))
  assert stats.count_macs(module, variables, np.zeros((2, z_dim), np.float32)) == want


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the problem


def test_checkpoint_without_spectral_vectors_is_refused():
  sd = refs.random_sagan(GEN, "heykeetae", seed=8, z_dim=16, conv_dim=8).state_dict()
  cut = {k: v for k, v in sd.items() if not k.endswith("weight_u")}
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(cut, source="G.pth")
  assert ("G.pth: sagan_generator (heykeetae spectral-norm layout) without its spectral-norm "
          "vectors l1.0.module.weight_u, l2.0.module.weight_u") in _one_line(e)
  plain = {k.replace(".module.weight_bar", ".weight").replace(".module.", "."): v
           for k, v in sd.items() if not k.endswith(("weight_u", "weight_v"))}
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(plain, source="G.pth")
  assert "without its spectral-norm parameters" in _one_line(e)
  assert "plain weights [l1.0.weight, l2.0.weight" in str(e.value)


def test_state_dicts_of_another_family_or_size_are_refused():
  sd = refs.random_sagan(DIS, "torch", seed=9, conv_dim=8).state_dict()
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(sd, arch=GEN, source="D.pth")
  assert "D.pth does not match arch 'sagan_generator'" in _one_line(e)
  with pytest.raises(CheckpointError) as e:  # a conv_dim 8 discriminator read as conv_dim 64
    convert.convert_state_dict(sd, conv_dim=64, source="D.pth")
  assert "mis-shaped" in _one_line(e) and "l1.0.weight_orig (8, 3, 4, 4)" in str(e.value)
  small = {k: v for k, v in sd.items() if not k.startswith("l4.")}  # upstream at image_size 32
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(small, source="D32.pth")
  assert "missing 4 keys [l4.0.bias, l4.0.weight_orig" in _one_line(e)
  dcgan = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 4, 4), torch.nn.BatchNorm2d(4))
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict({f"main.{k}": v for k, v in dcgan.state_dict().items()},
                               arch=DIS, source="dcgan.pth")
  assert "does not match arch 'sagan_discriminator'" in _one_line(e)
  with pytest.raises(ValueError, match=r"images must be \[batch, 64, 64, 3\].*\(1, 32, 32, 3\)"):
    models.SAGANDiscriminator(conv_dim=8).init(jax.random.key(0),
                                               np.zeros((1, 32, 32, 3), np.float32))


# --------------------------------------------------------------------------------------------
# scripts/convert_heykeetae_sagan.py and scripts/convert_studiogan.py


def _script(name: str):
  spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _check_folder(out: pathlib.Path, result: dict, net, arch: str, z_dim: int = 16) -> None:
  assert result["arch"] == arch and result["parity_max_abs"] <= ATOL
  assert sorted(p.name for p in out.iterdir()) == ["jaxgc-manifest.json", "samples.png",
                                                   "spec.json", "variables"]
  manifest = json.loads((out / "jaxgc-manifest.json").read_text())
  assert manifest["files"]["samples.png"] == (out / "samples.png").stat().st_size
  module, variables = load_model(out)
  x = _inputs(arch, 11, z_dim=z_dim)
  assert _max_abs(module.apply(variables, x), refs.forward_nhwc(net, x)) <= ATOL


def test_heykeetae_script(tmp_path, capsys):
  script = _script("convert_heykeetae_sagan")
  net = refs.random_sagan(GEN, "heykeetae", seed=10, z_dim=16, conv_dim=8)
  # upstream trainer.py with --parallel saves nn.DataParallel keys: module.l1.0.module...
  torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "100_G.pth")
  argv = [str(tmp_path / "100_G.pth"), str(tmp_path / "G"), "--samples", "4"]
  assert script.main(argv) == 0
  result = json.loads(capsys.readouterr().out.splitlines()[0])
  assert result["layout"] == "heykeetae"
  _check_folder(tmp_path / "G", result, net, GEN)
  assert script.main(argv) == 0  # its own folder is replaced on a rerun
  capsys.readouterr()
  torch.save(refs.random_sagan(GEN, "torch", z_dim=16, conv_dim=8).state_dict(),
             tmp_path / "sn.pth")
  assert script.main([str(tmp_path / "sn.pth"), str(tmp_path / "X")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "'torch' layout" in err and "use scripts/convert_studiogan.py" in err


def test_studiogan_script(tmp_path, capsys):
  script = _script("convert_studiogan")
  net = refs.random_sagan(DIS, "torch", seed=12, conv_dim=8)
  opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.0, 0.999))
  torch.save({"state_dict": net.state_dict(), "optimizer": opt.state_dict(), "seed": 0,
              "run_name": "CIFAR10-SAGAN", "step": 100, "epoch": 1, "best_step": 100,
              "best_fid": 31.5, "best_fid_checkpoint_path": "/ckpt/best.pth"},
             tmp_path / "model=D-best-weights-step=100.pth")
  argv = [str(tmp_path / "model=D-best-weights-step=100.pth"), str(tmp_path / "D")]
  assert script.main(argv) == 0
  result = json.loads(capsys.readouterr().out.splitlines()[0])
  assert result["layout"] == "torch"
  _check_folder(tmp_path / "D", result, net, DIS)
  own = {"linear0.weight_orig": torch.zeros(4, 8), "blocks.0.0.conv2d1.weight_orig":
         torch.zeros(4, 4, 3, 3)}
  torch.save({"state_dict": own}, tmp_path / "resnet.pth")
  assert script.main([str(tmp_path / "resnet.pth"), str(tmp_path / "Y")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "StudioGAN's own ResNet/BigGAN networks" in err
  assert not (tmp_path / "Y").exists()
