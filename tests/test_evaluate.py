"""Reference-set loaders, the ``jaxgc evaluate`` job, and ``jaxgc compress``'s metrics option."""

import gzip
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from conftest import assets_root
from conftest import require_asset
from jaxgc import cli
from jaxgc.data import reference as data_lib
from jaxgc.eval import scoring as eval_lib
from jaxgc.jobs import evaluate as evaluate_job

MLP_G = "mnist-mlpgan/G--300.ckpt"
MNIST = "mnist10k/mnist10k_uint8.npz"


@pytest.fixture(scope="module")
def assets() -> pathlib.Path:
  for rel in (MLP_G, MNIST, "mnist-lenet5/lenet5_mnist.pth",
              "fashion-mnist/t10k-images-idx3-ubyte.gz"):
    require_asset(rel)
  return assets_root()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
  monkeypatch.setenv("JAXGC_CACHE", str(tmp_path_factory.getbasetemp() / "jaxgc-cache"))


def test_idx_npz_and_folder_loaders(tmp_path):
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (7, 5, 6), dtype=np.uint8)
  header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in imgs.shape)
  with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as f:
    f.write(header + imgs.tobytes())
  np.savez(tmp_path / "x.npz", images=imgs)
  folder = tmp_path / "folder"
  folder.mkdir()
  for i, im in enumerate(imgs):
    Image.fromarray(im).save(folder / f"{i:02d}.png")
  for path in (tmp_path / "x-idx3-ubyte.gz", tmp_path / "x.npz", folder):
    out = data_lib.load_images(str(path))
    np.testing.assert_array_equal(out, imgs[..., None])
  sub = data_lib.load_images(str(tmp_path / "x.npz"), limit=3, seed=1)
  assert sub.shape == (3, 5, 6, 1)
  np.testing.assert_array_equal(sub, data_lib.load_images(str(folder), limit=3, seed=1))
  with gzip.open(tmp_path / "bad-idx3-ubyte.gz", "wb") as f:
    f.write(header + imgs.tobytes()[:-1])
  with pytest.raises(ValueError, match="header says"):
    data_lib.load_images(str(tmp_path / "bad-idx3-ubyte.gz"))
  with pytest.raises(FileNotFoundError, match="reference set not found"):
    data_lib.load_images(str(tmp_path / "nope"))


def test_limit_draws_a_random_subset_not_the_first_images(assets):
  # mnist10k is sorted by label: its first 500 digits are all zeros.
  labels = np.load(assets / MNIST)["labels"]
  assert np.all(labels[:500] == 0)
  idx = data_lib._subset(len(labels), 500, seed=0)  # pylint: disable=protected-access
  assert len(np.unique(labels[idx])) == 10
  assert len(data_lib.load_images(str(assets / MNIST), limit=500)) == 500


def test_real_fashion_mnist_idx(assets):
  out = data_lib.load_images(str(assets / "fashion-mnist/t10k-images-idx3-ubyte.gz"))
  assert out.shape == (10000, 28, 28, 1) and out.dtype == np.uint8


def _evaluate(tmp_path, capsys, *flags):
  rc = cli.main(["evaluate", "--workdir", str(tmp_path / "wd"), "--no-progress",
                 f"--config.generators={MLP_G}", "--config.extractor=lenet5",
                 "--config.batch_size=250", "--config.kid_subset_size=200", *flags])
  assert rc == 0, capsys.readouterr().err
  return json.loads((tmp_path / "wd" / "metrics.json").read_text())


def test_evaluate_against_real_digits(assets, tmp_path, capsys):
  out = _evaluate(tmp_path, capsys, f"--config.reference.path={MNIST}",
                  "--config.reference.limit=600", "--config.num_samples=600")
  (r,) = out["results"]
  assert set(eval_lib.METRIC_KEYS) <= set(r)
  assert out["extractor"] == "lenet5" and out["reference"]["n"] == 600 and r["n"] == 600
  for key in ("precision", "recall", "density", "coverage", "lsh_precision", "lsh_recall"):
    assert 0.0 <= r[key] <= (2.0 if key == "density" else 1.0), key
  assert r["fid"] > 1.0  # an MLP GAN is far from real digits in LeNet space
  md = (tmp_path / "wd" / "metrics.md").read_text()
  assert "| `G--300.ckpt` | 600 |" in md


def test_evaluate_a_generator_against_itself(assets, tmp_path, capsys):
  # Reference = the same generator with the same latents: identical sets.
  out = _evaluate(tmp_path, capsys, "--config.reference.kind=generator",
                  f"--config.reference.path={MLP_G}", "--config.reference.seed=0",
                  "--config.num_samples=300")
  (r,) = out["results"]
  assert abs(r["fid"]) < 1e-6
  assert r["precision"] == r["recall"] == r["coverage"] == 1.0
  assert r["lsh_knn_precision"] == r["lsh_knn_recall"] == 1.0


def test_evaluate_bad_config(tmp_path, capsys):
  rc = cli.main(["evaluate", "--workdir", str(tmp_path / "wd"), "--config.generators=x.pth"])
  assert rc == 2
  assert "reference.path is empty" in capsys.readouterr().err
  assert not (tmp_path / "wd").exists()
  with pytest.raises(ValueError, match="unknown extractor 'vgg'"):
    evaluate_job.resolve_config({"generators": ("a",), "reference": {"path": "b"},
                                 "extractor": "vgg"})


def test_compress_metrics_option(assets, tmp_path, capsys):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(
      "import ml_collections\n\n\ndef get_config():\n"
      "  c = ml_collections.ConfigDict()\n"
      f"  c.checkpoint = {MLP_G!r}\n"
      "  c.sweep = ml_collections.ConfigDict({'weight_bits': (8, 2), 'granularities': "
      "('per_channel',), 'clip': (False,)})\n"
      "  c.metrics = ml_collections.ConfigDict({'enabled': True, 'extractor': 'lenet5', "
      "'num_samples': 500, 'batch_size': 250})\n"
      "  return c\n")
  rc = cli.main(["compress", "--config", str(cfg), "--workdir", str(tmp_path / "wd"),
                 "--no-progress"])
  assert rc == 0, capsys.readouterr().err
  report = json.loads((tmp_path / "wd" / "report.json").read_text())
  rows = {r["setting"]: r for r in report["rows"]}
  assert report["metrics"]["extractor"] == "lenet5"
  for r in rows.values():
    assert set(eval_lib.METRIC_KEYS) <= set(r)
  # Mordido et al. 2021: low bits keep precision but lose recall. 8-bit is about as good as
  # FP32; 2-bit weights collapse the MNIST generator's diversity.
  assert rows["w8_per_channel"]["recall"] > 0.9
  assert rows["w2_per_channel"]["recall"] < 0.5 * rows["w8_per_channel"]["recall"]
  assert rows["w2_per_channel"]["fid"] > 10 * rows["w8_per_channel"]["fid"]
  assert "Distribution metrics" in (tmp_path / "wd" / "report.md").read_text()


def test_bad_reference_sets(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no images .* in folder .*empty"):
    data_lib.load_images(str(tmp_path / "empty"))
  np.savez(tmp_path / "rgba.npz", images=np.zeros((4, 8, 8, 4), np.uint8))
  rgba = data_lib.load_images(str(tmp_path / "rgba.npz"))
  from jaxgc.eval import extractors as features_lib
  with pytest.raises(ValueError, match=r"\[n, height, width, 1 or 3\], got shape \(4, 8, 8, 4\)"):
    features_lib.extract_features(rgba, "pixels")
  with pytest.raises(ValueError, match=r"must be uint8 in \[0, 255\], got dtype float32"):
    features_lib.extract_features(np.zeros((2, 8, 8, 3), np.float32), "pixels")
  np.savez(tmp_path / "f.npz", images=np.zeros((4, 8, 8), np.float32))
  with pytest.raises(ValueError, match="must be uint8, got float32"):
    data_lib.load_images(str(tmp_path / "f.npz"))
