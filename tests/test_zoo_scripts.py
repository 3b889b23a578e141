"""scripts/convert_gan_compression.py, convert_dcgan_tutorial.py and convert_csinva_mnist.py:
each converts (architecture inferred), reports parity with its ``jaxgc.convert.torch_refs_zoo``
reference, writes the model folder with ``samples.png`` recorded in its manifest, and refuses
other families in one line (exit status 2, nothing written).

Random-weight references at tiny sizes need no assets; the real checkpoints of
``$JAXGC_ASSETS`` run on one or two small inputs.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import asset_path  # noqa: E402
from jaxgc.checkpoint import load_model  # noqa: E402
from jaxgc.convert import torch_refs_zoo as zoo  # noqa: E402

ATOL = 1e-4
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script(name: str):
  path = ROOT / "scripts" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _save(obj, path: pathlib.Path) -> pathlib.Path:
  torch.save(obj, str(path))
  return path


def _run(script, argv, capsys) -> dict:
  assert script.main([str(a) for a in argv]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert "parity vs the PyTorch reference: max |jaxgc - torch|" in lines[1]
  return json.loads(lines[0])


def _check_folder(out: pathlib.Path, result: dict) -> None:
  assert result["parity_max_abs"] <= ATOL
  assert sorted(p.name for p in out.iterdir()) == ["jaxgc-manifest.json", "samples.png",
                                                   "spec.json", "variables"]
  manifest = json.loads((out / "jaxgc-manifest.json").read_text())
  assert manifest["files"]["samples.png"] == (out / "samples.png").stat().st_size
  assert json.loads((out / "spec.json").read_text())["parity_max_abs"] == result[
      "parity_max_abs"]


def test_gan_compression_script_converts_a_mobile_generator(tmp_path, capsys):
  sd = zoo.random_state_dict("mobile_resnet_generator", seed=1, ngf=4, n_blocks=3,
                             norm="batch")
  ckpt = _save(sd, tmp_path / "latest_net_G.pth")
  out = tmp_path / "model"
  result = _run(_script("convert_gan_compression"),
                [ckpt, out, "--size", "32", "--samples", "1"], capsys)
  assert result["arch"] == "mobile_resnet_generator"
  _check_folder(out, result)
  module, variables = load_model(out)
  x = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
  net = zoo.build_reference(sd)
  assert np.max(np.abs(np.asarray(module.apply(variables, x))
                       - zoo.forward(net, result["arch"], x))) <= ATOL


def test_dcgan_tutorial_script_unwraps_netG_state_dict(tmp_path, capsys):
  torch.manual_seed(0)
  net = zoo.DCGANGenerator(nz=8, ngf=2, nc=3)
  ckpt = _save({"netG_state_dict": net.state_dict()}, tmp_path / "weights.tar")
  out = tmp_path / "model"
  result = _run(_script("convert_dcgan_tutorial"), [ckpt, out, "--samples", "2"], capsys)
  assert result["arch"] == "dcgan_generator" and result["kwargs"]["z_dim"] == 8
  _check_folder(out, result)


@pytest.mark.parametrize("arch", ["mlp_discriminator", "lenet5"])
def test_csinva_script_scores_digits_without_assets(arch, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("JAXGC_ASSETS", raising=False)  # noise images instead of mnist10k
  torch.manual_seed(0)
  net = zoo.mlp_discriminator(hidden_size=8) if arch == "mlp_discriminator" else zoo.LeNet5()
  ckpt = _save(net.state_dict(), tmp_path / "net.pth")
  out = tmp_path / "model"
  result = _run(_script("convert_csinva_mnist"), [ckpt, out, "--samples", "3"], capsys)
  assert result["arch"] == arch and len(result["outputs"]) == 3
  _check_folder(out, result)
  assert "noise" in json.loads((out / "spec.json").read_text())["parity_inputs"]


def test_scripts_refuse_other_families_in_one_line(tmp_path, capsys):
  torch.manual_seed(0)
  ckpt = _save(zoo.mlp_generator(latent_size=4, hidden_size=8).state_dict(),
               tmp_path / "G.pth")
  for name in ("convert_gan_compression", "convert_dcgan_tutorial"):
    assert _script(name).main([str(ckpt), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a mlp_generator, not a" in err and "\n" not in err
  assert not (tmp_path / "out").exists()
  assert _script("convert_csinva_mnist").main([str(tmp_path / "missing.pth"),
                                               str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert "error:" in err and "\n" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, rel, argv", [
    ("convert_gan_compression", "cyclegan-h2z-gancompression/latest_net_G.pth",
     ["--size", "32", "--samples", "1"]),
    ("convert_dcgan_tutorial", "dcgan-digiface64/weights.tar", ["--samples", "1"]),
    ("convert_csinva_mnist", "mnist-dcgan-d/netD_epoch_99.pth", ["--samples", "2"]),
])
def test_scripts_convert_the_real_checkpoints(assets, name, rel, argv, tmp_path, capsys):
  out = tmp_path / "model"
  result = _run(_script(name), [asset_path(assets, rel), out, *argv], capsys)
  _check_folder(out, result)
