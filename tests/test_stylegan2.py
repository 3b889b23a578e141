"""StyleGAN2 in the rosinality and NVlabs layouts: generators and discriminators converted from
PyTorch, rosinality training checkpoints, NVlabs ``.pkl`` refusal, the two scripts.

Parity: every case is a PyTorch reference of ``jaxgc.convert.torch_refs_stylegan2`` (upstream's
fused, grouped modulated convolution) with random weights, biases, noise strengths and
``w_avg``, saved with ``torch.save``, converted by ``jaxgc convert CKPT OUTDIR`` (architecture
inferred) and read back with ``jaxgc.checkpoint.load_model``; outputs agree to ``ATOL``
(max abs, float32, ``noise_mode="const"``; seen: about 4e-6 for generators with outputs of
std ~1, 1e-7 for discriminator logits). Narrow 16x16 models keep the whole file near 30 s on
one CPU core.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import pickle
import sys
import types

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxgc import cli  # noqa: E402
from jaxgc import convert  # noqa: E402
from jaxgc import models  # noqa: E402
from jaxgc.checkpoint import load_model  # noqa: E402
from jaxgc.convert import CheckpointError  # noqa: E402
from jaxgc.convert import torch_refs_stylegan2 as refs  # noqa: E402
from jaxgc.models import stylegan2  # noqa: E402

ATOL = 1e-4
ROOT = pathlib.Path(__file__).resolve().parents[1]
G, D = "stylegan2_generator", "stylegan2_discriminator"
C_DIM = 5

# (case id, arch, layout, reference kwargs)
CASES = [
    ("rosinality-G", G, "rosinality",
     dict(size=16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 4})),
    ("rosinality-D", D, "rosinality", dict(size=16, channels={4: 8, 8: 8, 16: 4})),
    ("nvlabs-G", G, "nvlabs", dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16,
                                   num_layers=2, channel_base=64, channel_max=8)),
    ("nvlabs-G-conditional", G, "nvlabs",
     dict(z_dim=12, c_dim=C_DIM, w_dim=16, img_resolution=16, num_layers=2, channel_base=64,
          channel_max=8)),
    ("nvlabs-D", D, "nvlabs", dict(c_dim=0, img_resolution=16, channel_base=64, channel_max=8)),
    ("nvlabs-D-conditional", D, "nvlabs",
     dict(c_dim=C_DIM, img_resolution=16, channel_base=64, channel_max=8, num_layers=2)),
]


def _max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _inputs(module, seed: int, n: int = 4):
  """Latents or images for ``module``, and one-hot labels when it is conditional."""
  rng = np.random.default_rng(seed)
  c = (np.eye(module.c_dim, dtype=np.float32)[rng.integers(0, module.c_dim, n)]
       if module.c_dim else None)
  if isinstance(module, models.StyleGAN2Generator):
    return rng.standard_normal((n, module.z_dim)).astype(np.float32), c
  s = module.image_size
  return rng.uniform(-1, 1, (n, s, s, module.input_nc)).astype(np.float32), c


def _training_checkpoint(g, d, path: pathlib.Path) -> pathlib.Path:
  """A checkpoint as rosinality's ``train.py`` writes it (``g_ema`` a copy of ``g`` here)."""
  g_optim = torch.optim.Adam(g.parameters(), lr=0.002, betas=(0.0, 0.99))
  d_optim = torch.optim.Adam(d.parameters(), lr=0.002, betas=(0.0, 0.99))
  args = argparse.Namespace(size=16, n_mlp=2, latent=16, channel_multiplier=2, r1=10.0,
                            path="lmdb/ffhq", ckpt=None, augment=False, wandb=False)
  torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
              "g_optim": g_optim.state_dict(), "d_optim": d_optim.state_dict(), "args": args},
             path)
  return path


@pytest.fixture(scope="module")
def nets():
  return {case: refs.random_network(arch, layout, seed=i, **kw)
          for i, (case, arch, layout, kw) in enumerate(CASES)}


# --------------------------------------------------------------------------------------------
# Parity through `jaxgc convert` and load_model


@pytest.mark.parametrize("case,arch,layout,kw", CASES, ids=[c[0] for c in CASES])
def test_convert_cli_parity(case, arch, layout, kw, nets, tmp_path, capsys):
  net = nets[case]
  ckpt = tmp_path / "net.pt"
  torch.save(net.state_dict(), ckpt)
  assert cli.main(["convert", str(ckpt), str(tmp_path / "model")]) == 0
  capsys.readouterr()
  module, variables = load_model(tmp_path / "model")
  assert models.registry.arch_name(module) == arch and module.layout == layout
  assert module.c_dim == kw.get("c_dim", 0)
  x, c = _inputs(module, seed=len(case))
  want = refs.run_nhwc(net, x, c)
  got = jax.jit(module.apply)(variables, x, c)
  err = _max_abs(got, want)
  print(f"\n{case}: max |jaxgc - torch| = {err:.3g} (output std {np.std(want):.3g})")
  assert got.shape == want.shape == ((4, 16, 16, 3) if arch == G else (4, 1))
  assert float(np.std(want)) > 1e-2  # not a degenerate output
  assert err <= ATOL


def test_upstream_widths_parity():
  """rosinality's own width table and mapping (style_dim 512, n_mlp 8, 512 channels) at
  64x64: the widths are read from the keys and the output matches (seen: 2.5e-5, outputs of
  std 2.5), truncation too."""
  net = refs.random_network(G, "rosinality", seed=7, size=64)
  module, variables = convert.convert_state_dict(net.state_dict())
  assert (module.channels, module.n_mlp, module.z_dim) == ((512,) * 5, 8, 512)
  z, _ = _inputs(module, 7, n=1)
  err = _max_abs(jax.jit(module.apply)(variables, z), refs.run_nhwc(net, z))
  w_avg = variables["buffers"]["mapping"]["w_avg"]
  err_psi = _max_abs(module.apply(variables, z, truncation_psi=0.5),
                     refs.run_nhwc(net, z, truncation_psi=0.5, w_avg=w_avg))
  print(f"\nrosinality-G 64x64, upstream widths: max abs {err:.3g}, psi 0.5: {err_psi:.3g}")
  assert err <= ATOL and err_psi <= ATOL


def test_truncation_w_avg(nets):
  """NVlabs: the stored ``mapping.w_avg``; rosinality: ``w_avg`` computed at conversion as
  ``mean_latent`` of 4096 latents of numpy seed 0 (equal to the PyTorch mapping's mean of the
  same latents), or passed explicitly."""
  nv = nets["nvlabs-G"]
  module, variables = convert.convert_state_dict(nv.state_dict())
  x, _ = _inputs(module, 1)
  np.testing.assert_array_equal(variables["buffers"]["mapping"]["w_avg"],
                                nv.mapping.w_avg.numpy())
  got = module.apply(variables, x, truncation_psi=0.5)
  assert _max_abs(got, refs.run_nhwc(nv, x, truncation_psi=0.5)) <= ATOL
  assert _max_abs(got, module.apply(variables, x)) > 1e-2

  ros = nets["rosinality-G"]
  module, variables = convert.convert_state_dict(ros.state_dict())
  w_avg = variables["buffers"]["mapping"]["w_avg"]
  z = np.random.default_rng(0).standard_normal((4096, 16)).astype(np.float32)
  with torch.no_grad():
    want = ros.style(torch.from_numpy(z)).mean(0).numpy()
  assert w_avg.shape == (16,) and _max_abs(w_avg, want) <= ATOL * np.max(np.abs(want))
  x, _ = _inputs(module, 2)
  got = module.apply(variables, x, truncation_psi=0.7)
  assert _max_abs(got, refs.run_nhwc(ros, x, truncation_psi=0.7, w_avg=w_avg)) <= ATOL
  other = np.full((16,), 0.5, np.float32)
  got = module.apply(variables, x, truncation_psi=0.7, w_avg=other)
  assert _max_abs(got, refs.run_nhwc(ros, x, truncation_psi=0.7, w_avg=other)) <= ATOL
  with pytest.raises(ValueError, match=r"w_avg must be \[16\], got shape \(3,\)"):
    module.apply(variables, x, truncation_psi=0.7, w_avg=np.zeros(3, np.float32))


@pytest.mark.parametrize("case", ["nvlabs-G", "nvlabs-D"])
def test_nvlabs_conv_clamp(case, nets):
  """``conv_clamp`` (not in the state dict; NVlabs ``train.py`` uses 256) clamps as upstream;
  0.3 here, so that it bites."""
  arch, kw = next((a, k) for c, a, _, k in CASES if c == case)
  cls = refs.NVlabsGenerator if arch == G else refs.NVlabsDiscriminator
  net = cls(**kw, conv_clamp=0.3)
  net.load_state_dict(nets[case].state_dict())
  net.eval()
  module, variables = convert.convert_state_dict(net.state_dict(), conv_clamp=0.3)
  x, c = _inputs(module, 8)
  got = module.apply(variables, x, c)
  assert _max_abs(got, refs.run_nhwc(net, x, c)) <= ATOL
  assert _max_abs(got, refs.run_nhwc(nets[case], x, c)) > 1e-3


def test_noise_modes(nets):
  """``none`` equals the reference with zero noise strengths; ``random`` draws from the
  explicit key (same key, same image) and needs one; ``const`` differs from both."""
  net = nets["rosinality-G"]
  module, variables = convert.convert_state_dict(net.state_dict())
  x, _ = _inputs(module, 3, n=2)
  apply = jax.jit(module.apply, static_argnames=("noise_mode",))
  const = apply(variables, x)
  none = apply(variables, x, noise_mode="none")
  r1 = apply(variables, x, noise_mode="random", rng=jax.random.key(1))
  r2 = apply(variables, x, noise_mode="random", rng=jax.random.key(2))
  np.testing.assert_array_equal(r1, apply(variables, x, noise_mode="random",
                                          rng=jax.random.key(1)))
  assert min(_max_abs(const, none), _max_abs(r1, r2), _max_abs(r1, const)) > 1e-3
  quiet = refs.randomize(refs.RosinalityGenerator(**CASES[0][3]), 0)
  quiet.load_state_dict(net.state_dict())
  with torch.no_grad():
    for name, p in quiet.named_parameters():
      if name.endswith("noise.weight"):
        p.zero_()
  assert _max_abs(none, refs.run_nhwc(quiet, x)) <= ATOL
  with pytest.raises(ValueError, match="noise_mode='random' needs an explicit rng"):
    module.apply(variables, x, noise_mode="random")
  with pytest.raises(ValueError, match="noise_mode must be one of"):
    module.apply(variables, x, noise_mode="fresh")


def test_unfused_modulated_conv_equals_grouped():
  """The unfused form (scale inputs, convolve, demodulate outputs) equals per-sample
  modulated weights (the grouped form) to 5e-6."""
  rng = np.random.default_rng(0)
  layer = stylegan2.ModulatedConv(6, 3, resolution=8, up=False, layout="nvlabs")
  x = rng.standard_normal((3, 8, 8, 5)).astype(np.float32)
  w = rng.standard_normal((3, 7)).astype(np.float32)
  v = layer.init(jax.random.key(0), x, w, "none")
  got = np.asarray(layer.apply(v, x, w, "none"))
  p = v["params"]
  s = x.shape[0]
  styles = w @ p["affine"]["kernel"] / np.sqrt(7) + p["affine"]["bias"]
  want = []
  for i in range(s):
    k = np.asarray(p["kernel"]) * styles[i][None, None, :, None]
    k = k / np.sqrt(np.sum(k**2, axis=(0, 1, 2)) + 1e-8)
    y = jax.lax.conv_general_dilated(x[i:i + 1], k, (1, 1), [(1, 1)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    want.append(np.asarray(jax.nn.leaky_relu(y + p["bias"], 0.2)) * np.sqrt(2))
  assert _max_abs(got, np.concatenate(want)) <= 5e-6


def test_jitted_generator_does_not_recompile(nets):
  module, variables = convert.convert_state_dict(nets["nvlabs-G"].state_dict())
  traces = []

  def f(v, z):
    traces.append(1)
    return module.apply(v, z, truncation_psi=0.7)

  jf = jax.jit(f)
  x, _ = _inputs(module, 4)
  jf(variables, x)
  jf(variables, x + 1)
  assert len(traces) == 1


# --------------------------------------------------------------------------------------------
# Real checkpoint files


def test_rosinality_training_checkpoint(nets, tmp_path, capsys):
  """``{"g", "d", "g_ema", "g_optim", "d_optim", "args"}`` with an ``argparse.Namespace``: read
  without executing code, ``g_ema`` by default, ``--key d`` for the discriminator."""
  g, d = nets["rosinality-G"], nets["rosinality-D"]
  ckpt = _training_checkpoint(g, d, tmp_path / "000100.pt")
  obj = convert.read_torch_file(ckpt)
  assert obj["args"]["size"] == 16 and obj["args"]["path"] == "lmdb/ffhq"
  module, variables = convert.load_torch_checkpoint(ckpt)
  assert isinstance(module, models.StyleGAN2Generator)
  x, _ = _inputs(module, 5)
  assert _max_abs(module.apply(variables, x), refs.run_nhwc(g, x)) <= ATOL
  assert cli.main(["convert", str(ckpt), str(tmp_path / "d"), "--key", "d"]) == 0
  capsys.readouterr()
  module, variables = load_model(tmp_path / "d")
  assert isinstance(module, models.StyleGAN2Discriminator)
  x, _ = _inputs(module, 6)
  assert _max_abs(module.apply(variables, x), refs.run_nhwc(d, x)) <= ATOL
  # convert_weight.py's {"g_ema", "latent_avg"}: latent_avg is the stored w_avg
  avg = torch.linspace(-1, 1, 16)
  torch.save({"g_ema": g.state_dict(), "latent_avg": avg}, tmp_path / "official.pt")
  module, variables = convert.load_torch_checkpoint(tmp_path / "official.pt")
  np.testing.assert_array_equal(variables["buffers"]["mapping"]["w_avg"], avg.numpy())
  torch.save({"g_ema": g.state_dict(), "latent_avg": avg[:3]}, tmp_path / "bad.pt")
  with pytest.raises(CheckpointError, match=r"latent_avg\) must be 16 finite values, got shape"):
    convert.load_torch_checkpoint(tmp_path / "bad.pt")
  assert cli.main(["convert", str(ckpt), str(tmp_path / "x"), "--key", "generator"]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "has no entry 'generator'" in err and "'g_ema'" in err


class _Persistent:  # stands for NVlabs' persistence-pickled network classes
  pass


def test_nvlabs_pkl_is_refused_naming_the_export(tmp_path):
  package, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
  package.persistence, mod.Network = mod, _Persistent
  _Persistent.__module__, _Persistent.__qualname__ = "torch_utils.persistence", "Network"
  sys.modules.update({"torch_utils": package, "torch_utils.persistence": mod})
  try:
    blob = pickle.dumps({"G_ema": _Persistent(), "D": _Persistent()}, protocol=2)
  finally:
    del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]
  for name in ("network-snapshot-000100.pkl", "snapshot.pt"):
    (tmp_path / name).write_bytes(blob)
    with pytest.raises(CheckpointError) as e:
      convert.read_torch_file(tmp_path / name)
    msg = str(e.value)
    assert "\n" not in msg and "pickle code" in msg and "G.state_dict()" in msg


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the problem


def _one_line(excinfo) -> str:
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  return msg


def test_state_dict_of_another_family_is_refused(nets):
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(nets["rosinality-G"].state_dict(), arch=D, source="g.pt")
  msg = _one_line(e)
  assert "g.pt does not match arch 'stylegan2_discriminator'" in msg and "conv1.conv.weight" in msg
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(nets["nvlabs-D"].state_dict(), arch=G, source="D.pt")
  msg = _one_line(e)
  assert "missing" in msg and "unexpected" in msg and "b16.conv0.weight" in msg
  unet = {"model.model.0.weight": np.zeros((4, 3, 4, 4), np.float32)}
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(unet, arch=G, source="unet.pth")
  msg = _one_line(e)
  assert "missing 123 keys" in msg and "unexpected 1 keys [model.model.0.weight]" in msg


def test_convert_cli_arch_forced(nets, tmp_path, capsys):
  ckpt = tmp_path / "G_ema.pt"
  torch.save(nets["nvlabs-G"].state_dict(), ckpt)
  assert cli.main(["convert", str(ckpt), str(tmp_path / "g"), "--arch", G]) == 0
  assert cli.main(["convert", str(ckpt), str(tmp_path / "d"), "--arch", D]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert "does not match arch 'stylegan2_discriminator'" in err and "mapping.fc0.weight" in err
  assert not (tmp_path / "d").exists()


def test_state_dict_of_another_size_is_refused(nets):
  sd = nets["nvlabs-G"].state_dict()
  with pytest.raises(CheckpointError) as e:  # a 16x16 generator read as a 32x32 one
    convert.convert_state_dict(sd, size=32, channels=(8, 8, 4, 4), source="G_ema.pt")
  assert "missing" in _one_line(e) and "synthesis.b32.conv0.weight" in str(e.value)
  sd = dict(nets["rosinality-G"].state_dict())
  sd["convs.1.conv.weight"] = sd["convs.1.conv.weight"][:, :-1]
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(sd, source="g.pt")
  assert "convs.1.conv.weight (1, 7, 8, 3, 3) != expected (1, 8, 8, 3, 3)" in _one_line(e)
  sd = dict(nets["rosinality-D"].state_dict())
  sd["convs.1.conv2.0.kernel"] = torch.ones(4, 4) / 16
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(sd, source="d.pt")
  assert "convs.1.conv2.0.kernel is not the [1,3,3,1] filter" in _one_line(e)


def test_inputs_of_the_wrong_shape_are_refused(nets):
  module, variables = convert.convert_state_dict(nets["nvlabs-G-conditional"].state_dict())
  z = np.zeros((2, 12), np.float32)
  with pytest.raises(ValueError, match=r"conditional: pass c \[batch, 5\]"):
    module.apply(variables, z)
  with pytest.raises(ValueError, match=r"labels c must be \[2, 5\], got shape \(2, 4\)"):
    module.apply(variables, z, np.zeros((2, 4), np.float32))
  with pytest.raises(ValueError, match=r"latents must be \[batch, 12\], got shape \(2, 16\)"):
    module.apply(variables, np.zeros((2, 16), np.float32), np.zeros((2, 5), np.float32))
  module, variables = convert.convert_state_dict(nets["rosinality-D"].state_dict())
  with pytest.raises(ValueError, match=r"batch \(6\) must be a multiple of the minibatch-std"):
    module.apply(variables, np.zeros((6, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match=r"images must be \[batch, 16, 16, 3\]"):
    module.apply(variables, np.zeros((4, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="unconditional"):
    module.apply(variables, np.zeros((4, 16, 16, 3), np.float32), np.zeros((4, 5)))


# --------------------------------------------------------------------------------------------
# scripts/convert_rosinality_stylegan2.py, scripts/convert_nvlabs_stylegan2_ada.py


def _script(name: str):
  path = ROOT / "scripts" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_rosinality_script(nets, tmp_path, capsys):
  script = _script("convert_rosinality_stylegan2")
  ckpt = _training_checkpoint(nets["rosinality-G"], nets["rosinality-D"], tmp_path / "c.pt")
  out = tmp_path / "model"
  argv = [str(ckpt), str(out), "--samples", "4", "--truncation", "0.7"]
  assert script.main(argv) == 0
  result = json.loads(capsys.readouterr().out.splitlines()[0])
  assert result["arch"] == G and result["layout"] == "rosinality"
  assert result["parity_max_abs"] <= ATOL
  assert sorted(p.name for p in out.iterdir()) == ["jaxgc-manifest.json", "samples.png",
                                                   "spec.json", "variables"]
  manifest = json.loads((out / "jaxgc-manifest.json").read_text())
  assert manifest["files"]["samples.png"] == (out / "samples.png").stat().st_size
  assert script.main(argv) == 0  # its own folder is replaced on a rerun
  capsys.readouterr()
  assert script.main([str(ckpt), str(tmp_path / "d"), "--key", "d"]) == 0
  result = json.loads(capsys.readouterr().out.splitlines()[0])
  assert result["arch"] == D and result["parity_max_abs"] <= ATOL
  nv = tmp_path / "G_ema.pt"
  torch.save(nets["nvlabs-G"].state_dict(), nv)
  assert script.main([str(nv), str(tmp_path / "nv")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "stylegan2_generator (nvlabs layout), not a rosinality" in err
  assert not (tmp_path / "nv").exists()


def test_nvlabs_script(nets, tmp_path, capsys):
  script = _script("convert_nvlabs_stylegan2_ada")
  ckpt = tmp_path / "G_ema.pt"
  torch.save(nets["nvlabs-G-conditional"].state_dict(), ckpt)
  out = tmp_path / "model"
  assert script.main([str(ckpt), str(out), "--samples", "5"]) == 0
  result = json.loads(capsys.readouterr().out.splitlines()[0])
  assert result["arch"] == G and result["kwargs"]["c_dim"] == C_DIM
  assert result["parity_max_abs"] <= ATOL
  assert (out / "samples.png").is_file()
  spec = json.loads((out / "spec.json").read_text())
  assert spec["parity_max_abs"] == result["parity_max_abs"]
  pkl = tmp_path / "network-snapshot.pkl"
  pkl.write_bytes(b"\x80\x02junk")
  assert script.main([str(pkl), str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "NVlabs .pkl files pickle code" in err
  ros = tmp_path / "g.pt"
  torch.save(nets["rosinality-D"].state_dict(), ros)
  assert script.main([str(ros), str(tmp_path / "o")]) == 2
  assert "stylegan2_discriminator (rosinality layout), not a NVlabs" in capsys.readouterr().err
