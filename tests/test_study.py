"""``jaxgc study``: a tiny real sweep, and its config checks."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import require_asset
from jaxgc import cli
from jaxgc.jobs import study


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
  monkeypatch.setenv("JAXGC_CACHE", str(tmp_path_factory.getbasetemp() / "jaxgc-cache"))


def test_tiny_study_on_the_mnist_mlp(tmp_path, capsys):
  ckpt = require_asset("mnist-mlpgan/G--300.ckpt")
  require_asset("mnist-lenet5/lenet5_mnist.pth")
  rc = cli.main(["study", "--config", "configs/study_mnist_mlp.py", "--workdir",
                 str(tmp_path / "wd"), "--no-progress", f"--config.checkpoint={ckpt}",
                 "--config.num_samples=300", "--config.batch_size=100",
                 "--config.weight_bits=(8, 2)", "--config.act_bits=(32, 8)",
                 "--config.clips=('none',)", "--config.real_reference.path="])
  assert rc == 0, capsys.readouterr().err
  report = json.loads((tmp_path / "wd" / "report.json").read_text())
  rows = {(r["weight_bits"], r["act_bits"]): r for r in report["rows"]}
  assert set(rows) == {(32, 32), (8, 32), (2, 32), (8, 8), (2, 8), ("auto", 32)}
  assert report["allocation"]["average_bits"] <= 4.0 + 1e-9
  assert "## Automatic bit allocation" in (tmp_path / "wd" / "report.md").read_text()
  # W8A8 is about as good as FP32; 2-bit weights keep precision and lose recall.
  assert rows[(8, 8)]["recall"] > rows[(32, 32)]["recall"] - 0.05
  assert rows[(2, 32)]["recall"] < 0.5 * rows[(8, 32)]["recall"]
  assert rows[(2, 32)]["precision"] > rows[(2, 32)]["recall"]
  png = np.asarray(Image.open(tmp_path / "wd" / "tradeoff.png"))
  assert png.ndim == 3 and png.shape[0] > 200
  assert "| 8 | 8 | none |" in (tmp_path / "wd" / "report.md").read_text()


@pytest.mark.parametrize("key,value,match", [
    ("weight_bits", (9,), "weight bits must be in 2..8, got 9"),
    ("act_bits", (1,), "activation bits must be in 2..16, got 1"),
    ("clips", ("percentile",), "clip must be 'none' or 'mode:value'"),
    ("clips", ("percentile:150",), "150"),
    ("num_samples", 3, "need num_samples > nearest_k"),
])
def test_bad_study_config(key, value, match):
  with pytest.raises(ValueError, match=match):
    study.resolve_config({"checkpoint": "g.pth", key: value})


_RECIPE_GRID = {"weight_bits": (), "act_bits": (32,), "clips": ("none",),
                "allocation_budget": 0.0, "extractor": "pixels", "nearest_k": 3,
                "num_samples": 12, "batch_size": 12, "calibration_batches": 1}


def test_recipe_grid_on_a_random_stylegan2(tmp_path):
  """Recipe x calibration x PTQ/QAT on a random-init tiny StyleGAN2 (registry source)."""
  cfg = {**_RECIPE_GRID, "recipes": ("w8a8", "w4a4"), "calibrations": ("minmax",),
         "modes": ("ptq", "qat"), "qat": {"steps": 2, "batch_size": 4},
         "reference_seed": 0,    # the FP32 samples of the same latents: FP32 scores FID 0
         "model": {"source": "registry", "arch": "stylegan2_generator",
                   "kwargs": {"size": 8, "channels": (8, 8), "z_dim": 8, "w_dim": 8,
                              "n_mlp": 2}}}
  report = study.run(cfg, tmp_path / "wd", progress=False)
  rows = {r.get("setting", "fp32"): r for r in report["rows"]}
  assert set(rows) == {"fp32", "ptq_w8a8_minmax", "qat_w8a8_minmax", "ptq_w4a4_minmax",
                       "qat_w4a4_minmax"}
  # W8A8 is much closer to the FP32 samples than W4A4 in pixel space.
  assert abs(rows["fp32"]["fid"]) < 1e-3
  assert rows["ptq_w8a8_minmax"]["fid"] < 0.5 * rows["ptq_w4a4_minmax"]["fid"]
  assert report["verdict"].startswith("stylegan2_generator: W8A8 PTQ (minmax)")
  assert ["^mapping/", 8, 8] in report["recipes"]["family_rules"]
  md = (tmp_path / "wd" / "report.md").read_text()
  assert "| qat_w4a4_minmax |" in md and "**Verdict.**" in md
  assert np.asarray(Image.open(tmp_path / "wd" / "recipes.png")).ndim == 3


def test_image_to_image_study_on_photo_crops(tmp_path):
  """A random-init ResNet generator on 16x16 crops: the FP32 row is the reference itself."""
  cfg = {**_RECIPE_GRID, "recipes": ("w8a8",), "inputs": {"size": 16},
         "model": {"source": "registry", "arch": "resnet_generator",
                   "kwargs": {"ngf": 4, "n_blocks": 1}}}
  report = study.run(cfg, tmp_path / "wd", progress=False)
  fp32, w8a8 = report["rows"]
  assert abs(fp32["fid"]) < 1e-3 and fp32["precision"] == fp32["recall"] == 1.0
  assert w8a8["setting"] == "ptq_w8a8_percentile" and w8a8["fid"] > fp32["fid"]
  assert report["inputs"]["num_crops"] == 12 and report["inputs"]["size"] == 16
  assert "random 16x16 crops" in (tmp_path / "wd" / "report.md").read_text()


@pytest.mark.parametrize("override,match", [
    ({"recipes": ("w3a3",)}, "unknown recipe 'w3a3'"),
    ({"calibrations": ("kl",)}, "unknown method 'kl'"),
    ({"modes": ("qat_then_ptq",)}, "unknown mode 'qat_then_ptq'"),
    ({"recipes": ("w8a8",), "modes": ("qat",), "qat": {"steps": -1}}, "steps >= 0"),
    ({"inputs": {"size": 30}}, "multiple of 4, got 30"),
])
def test_bad_recipe_grid_config(override, match):
  with pytest.raises(ValueError, match=match):
    study.resolve_config({"checkpoint": "g.pth", **override})


@pytest.mark.parametrize("model,match", [
    ({"source": "registry"}, "needs model.arch"),
    ({"source": "registry", "arch": "sagan_generator", "kwargs": {"width": 3}}, "width"),
    ({"source": "hub"}, "model.source must be one of"),
    ({"source": "teacher"}, "needs model.teacher"),
])
def test_bad_model_block(model, match):
  with pytest.raises(ValueError, match=match):
    study.resolve_config({"model": model})


def test_an_unknown_teacher_is_one_clear_line(tmp_path):
  with pytest.raises(ValueError, match="unknown teacher 'biggan'; jaxgc trains .*dcgan_fmnist"
                     ) as e:
    study.run({"model": {"source": "teacher", "teacher": "biggan"}}, tmp_path / "wd",
              progress=False)
  assert "\n" not in str(e.value) and not (tmp_path / "wd").exists()


def test_a_cached_teacher_is_loaded_once_with_its_folder(tmp_path, monkeypatch):
  import jax
  import ml_collections
  from jaxgc import checkpoint, models
  from jaxgc.jobs import model_source, teachers
  monkeypatch.setenv("JAXGC_CACHE", str(tmp_path / "cache"))
  folder = tmp_path / "cache" / "teachers" / "dcgan_fmnist"
  g = models.build("dcgan_generator")
  v = g.init(jax.random.key(0), models.example_input(g))
  for net in teachers.NETWORKS:
    checkpoint.save_model(str(folder / net), g, v)
  (folder / "report.json").write_text("{}")
  loads = []
  monkeypatch.setattr(teachers, "load_model",
                      lambda *a: loads.append(a) or checkpoint.load_model(*a))
  monkeypatch.setattr(model_source, "load_any_model",
                      lambda *a: loads.append(a) or checkpoint.load_model(*a))
  cfg = ml_collections.ConfigDict({"source": "teacher", "teacher": "dcgan_fmnist",
                                   "checkpoint": "", "arch": "", "seed": 0, "kwargs": {}})
  module, variables, desc = model_source.load(cfg)
  assert len(loads) == 1 and desc == f"teacher:dcgan_fmnist ({folder / 'generator'})"
  x = models.example_input(g)
  np.testing.assert_array_equal(np.asarray(module.apply(variables, x)), np.asarray(g.apply(v, x)))
