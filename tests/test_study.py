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
