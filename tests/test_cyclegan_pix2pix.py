"""pytorch-CycleGAN-and-pix2pix generators as users bring them: the vintage CycleGAN layout
(affine InstanceNorm, ``block.N``) and the pix2pix U-Net, inferred from their keys.

Parity: every case is a PyTorch reference of ``jaxgc.convert.torch_refs`` with random weights
(random norm parameters and running statistics), saved with ``torch.save``, converted by
``jaxgc convert CKPT OUTDIR`` (architecture inferred) and read back with
``jaxgc.checkpoint.load_model``; outputs agree to ``ATOL`` (max abs, float32, outputs in
[-1, 1]; seen: about 1e-6). The real vintage generator of ``$JAXGC_ASSETS`` reproduces the
output its own PyTorch code wrote to ``ATOL``.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import asset_path  # noqa: E402
from jaxgc import cli  # noqa: E402
from jaxgc import convert  # noqa: E402
from jaxgc import models  # noqa: E402
from jaxgc import stats  # noqa: E402
from jaxgc.checkpoint import load_model  # noqa: E402
from jaxgc.convert import CheckpointError  # noqa: E402
from jaxgc.convert import torch_refs as refs  # noqa: E402

ATOL = 1e-4
VINTAGE = "cyclegan-vintage-resnet9"
ROOT = pathlib.Path(__file__).resolve().parents[1]

# (case id, arch, reference kwargs, image side)
CASES = [
    ("vintage-resnet", "resnet_generator",
     dict(ngf=4, n_blocks=2, norm="instance_affine", layout="vintage"), 32),
    ("unet5-batch-dropout", "unet_generator",
     dict(num_downs=5, ngf=4, norm="batch", use_dropout=True), 32),
    ("unet6-instance", "unet_generator", dict(num_downs=6, ngf=4, norm="instance"), 64),
    ("unet8-batch", "unet_generator", dict(num_downs=8, ngf=2, norm="batch"), 256),
]


def _images(seed: int, side: int, batch: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1, 1, (batch, side, side, 3)).astype(np.float32)


def _max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _save(net, path: pathlib.Path) -> pathlib.Path:
  torch.save(net.state_dict(), path)
  return path


# --------------------------------------------------------------------------------------------
# The real vintage generator


def test_vintage_generator_reproduces_its_reference_output(assets):
  """The full-size vintage CycleGAN (11.4M params, 56.8 GMACs at 256x256), converted with the
  architecture inferred from its keys, reproduces the output its own code wrote."""
  from PIL import Image

  module, variables = convert.load_torch_checkpoint(
      asset_path(assets, f"{VINTAGE}/latest_net_G_A2B.pth"))
  assert isinstance(module, models.ResnetGenerator)
  assert (module.ngf, module.n_blocks, module.norm) == (64, 9, "instance_affine")
  u8 = np.asarray(Image.open(asset_path(assets, f"{VINTAGE}/refpair1_input.png")).convert("RGB"))
  x = ((u8.astype(np.float32) / 255.0 - 0.5) / 0.5)[None]  # ToTensor + Normalize(0.5, 0.5)
  want = np.load(asset_path(assets, f"{VINTAGE}/refpair1_output_float32.npy"))
  got = np.asarray(jax.jit(module.apply)(variables, x))[0]
  err = _max_abs(got, want)
  print(f"\nvintage generator vs its reference output (256x256): max abs {err:.3g}")
  assert got.shape == want.shape == (256, 256, 3)
  assert err <= ATOL
  # The size the assets README states: 11.39M params, 56.8 GMACs at 256x256 (torchprofile).
  assert round(stats.count_params(variables) / 1e6, 2) == 11.39
  assert round(stats.count_macs(module, variables, x) / 1e9, 1) == 56.8


def test_vintage_generator_matches_its_torch_reference(assets):
  """The same weights in ``torch_refs.ResnetGenerator(layout="vintage")`` (a small input)."""
  path = asset_path(assets, f"{VINTAGE}/latest_net_G_A2B.pth")
  sd = convert.unwrap_state_dict(convert.read_torch_file(path))
  module, variables = convert.convert_state_dict(sd)
  x = _images(0, 32, batch=1)
  err = refs.parity(np.asarray(module.apply(variables, x)), sd, x)
  print(f"\nvintage generator vs torch_refs (32x32): max abs {err:.3g}")
  assert err <= ATOL


# --------------------------------------------------------------------------------------------
# Random weights through `jaxgc convert` and load_model


@pytest.mark.parametrize("case,arch,kw,side", CASES, ids=[c[0] for c in CASES])
def test_convert_cli_parity(case, arch, kw, side, tmp_path, capsys):
  net = refs.random_generator(arch, seed=len(case), **kw)
  ckpt = _save(net, tmp_path / "G.pth")
  assert cli.main(["convert", str(ckpt), str(tmp_path / "model")]) == 0
  capsys.readouterr()
  module, variables = load_model(tmp_path / "model")
  assert models.registry.arch_name(module) == arch
  x = _images(len(case), side)
  y_torch = refs.forward_nhwc(net, x)
  assert float(np.std(y_torch)) > 1e-2  # not a degenerate, constant output
  err = _max_abs(jax.jit(module.apply)(variables, x), y_torch)
  print(f"\n{case} ({side}x{side}): max |jaxgc - torch| = {err:.3g}")
  assert err <= ATOL


def test_unet_widths_and_kwargs_are_read_from_the_keys():
  net = refs.random_generator("unet_generator", num_downs=7, ngf=3, norm="instance",
                              input_nc=1, output_nc=2)
  module, variables = convert.convert_state_dict(net.state_dict())
  assert (module.num_downs, module.ngf, module.norm, module.input_nc, module.output_nc) == (
      7, 3, "instance", 1, 2)
  p = variables["params"]
  assert p["down_0"]["kernel"].shape == (4, 4, 1, 3)
  assert p["up_out"]["kernel"].shape == (4, 4, 6, 2)  # reads concat([skip, up_0])
  assert p["up_5"]["kernel"].shape == (4, 4, 24, 24)  # the innermost reads down[6] only
  assert "down_norm_0" not in p and "down_norm_6" not in p  # outermost and innermost: none


def test_unet_batch_statistics_is_upstream_test_py_default():
  """``batch_statistics=True`` equals the PyTorch module left in training mode (upstream
  ``test.py`` without ``--eval``), dropout aside; it differs from the eval-mode output."""
  net = refs.random_generator("unet_generator", seed=3, num_downs=5, ngf=4, norm="batch")
  module, variables = convert.convert_state_dict(net.state_dict())
  x = _images(3, 32, batch=3)
  y_eval = refs.forward_nhwc(net, x)
  y_train = refs.forward_nhwc(net.train(), x)
  got = np.asarray(module.apply(variables, x, batch_statistics=True))
  assert _max_abs(got, y_train) <= ATOL
  assert _max_abs(got, y_eval) > 1e-2


def test_unet_dropout_is_seeded():
  net = refs.random_generator("unet_generator", seed=4, num_downs=6, ngf=2, norm="batch",
                              use_dropout=True)
  module, variables = convert.convert_state_dict(net.state_dict(), use_dropout=True)
  x = _images(4, 64, batch=1)
  apply = jax.jit(module.apply, static_argnames=("deterministic",))
  y_eval = apply(variables, x)
  y1, y2 = (apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(k)})
            for k in (1, 2))
  assert _max_abs(y_eval, refs.forward_nhwc(net, x)) <= ATOL
  assert _max_abs(y1, y_eval) > 1e-3 and _max_abs(y1, y2) > 1e-3
  np.testing.assert_array_equal(
      y1, apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}))


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the problem


def _one_line(excinfo) -> str:
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  return msg


def test_state_dict_of_another_family_is_refused():
  unet = refs.random_generator("unet_generator", num_downs=5, ngf=2).state_dict()
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(unet, arch="resnet_generator", source="unet.pth")
  msg = _one_line(e)
  assert "unet.pth does not match arch 'resnet_generator'" in msg and "model.model.0" in msg
  vintage = refs.random_generator("resnet_generator", ngf=2, n_blocks=1,
                                  norm="instance_affine", layout="vintage").state_dict()
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(vintage, arch="unet_generator", source="vintage.pth")
  assert "missing" in _one_line(e) and "model.10.block.1.weight" in str(e.value)


def test_state_dict_of_another_size_is_refused():
  sd = refs.random_generator("unet_generator", num_downs=6, ngf=2).state_dict()
  with pytest.raises(CheckpointError) as e:  # a unet_128 state dict read as a unet_256
    convert.convert_state_dict(sd, num_downs=7, source="G.pth")
  assert "missing" in _one_line(e) and "mis-shaped" in str(e.value)
  sd = dict(sd)
  key = "model.model.1.model.2.weight"
  sd[key] = sd[key][:-1]
  with pytest.raises(CheckpointError) as e:
    convert.convert_state_dict(sd, source="G.pth")
  assert f"{key} (3,) != expected (4,)" in _one_line(e)


def test_unet_images_of_the_wrong_size_are_refused():
  module = models.UnetGenerator(num_downs=5, ngf=2)
  with pytest.raises(ValueError, match=r"multiples of 2\*\*num_downs = 32, got shape "
                                       r"\(1, 48, 48, 3\)"):
    jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 48, 48, 3), np.float32))
  with pytest.raises(ValueError, match="num_downs must be >= 5"):
    jax.eval_shape(models.UnetGenerator(num_downs=4).init, jax.random.key(0),
                   np.zeros((1, 32, 32, 3), np.float32))


# --------------------------------------------------------------------------------------------
# scripts/convert_pytorch_cyclegan_pix2pix.py


@pytest.fixture(scope="module")
def script():
  path = ROOT / "scripts" / "convert_pytorch_cyclegan_pix2pix.py"
  spec = importlib.util.spec_from_file_location("convert_pytorch_cyclegan_pix2pix", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_script_converts_reports_parity_and_writes_samples(script, tmp_path, capsys):
  net = refs.random_generator("unet_generator", seed=5, num_downs=5, ngf=4, norm="batch")
  ckpt = _save(net, tmp_path / "latest_net_G.pth")
  out = tmp_path / "model"
  argv = [str(ckpt), str(out), "--size", "32", "--photos", "2"]
  assert script.main(argv) == 0
  result = json.loads(capsys.readouterr().out.splitlines()[0])
  assert result["arch"] == "unet_generator" and result["parity_max_abs"] <= ATOL
  assert sorted(p.name for p in out.iterdir()) == ["jaxgc-manifest.json", "samples.png",
                                                   "spec.json", "variables"]
  manifest = json.loads((out / "jaxgc-manifest.json").read_text())
  assert manifest["files"]["samples.png"] == (out / "samples.png").stat().st_size
  spec = json.loads((out / "spec.json").read_text())
  assert spec["parity_max_abs"] == result["parity_max_abs"]
  module, variables = load_model(out)
  x = _images(5, 32)
  assert _max_abs(module.apply(variables, x), refs.forward_nhwc(net, x)) <= ATOL
  assert script.main(argv) == 0  # its own folder is replaced on a rerun


def test_script_refuses_other_families_in_one_line(script, tmp_path, capsys):
  mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                            torch.nn.Tanh())
  ckpt = _save(mlp, tmp_path / "G.pth")
  assert script.main([str(ckpt), str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "is a mlp_generator, not a pytorch-CycleGAN-and-pix2pix" in err
  assert not (tmp_path / "out").exists()
  unet = _save(refs.random_generator("unet_generator", num_downs=5, ngf=2), tmp_path / "U.pth")
  assert script.main([str(unet), str(tmp_path / "out"), "--size", "48"]) == 2
  assert "--size must be a positive multiple of 32" in capsys.readouterr().err
