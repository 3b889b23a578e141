"""`jaxgc gan`: training GAN teachers from scratch (losses fall, exact resume, the sharded step,
one-line errors on bad input) and the teacher cache."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from conftest import one_error_line
from conftest import run_on_fake_devices

from jaxgc.checkpoint import load_model
from jaxgc.data import gan_images
from jaxgc.jobs import gan
from jaxgc.train import gan_losses

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _folder(path, n=48, size=16, seed=0):
  """``n`` grayscale ``size`` x ``size`` images: a bright square at a random place."""
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    img = np.zeros((size, size), np.uint8)
    y, x = rng.integers(0, size - 6, 2)
    img[y:y + 6, x:x + 6] = 255
    Image.fromarray(img).save(os.path.join(path, f"{i:03d}.png"))
  return str(path)


def _tiny(folder, **kw):
  cfg = {"data": {"source": folder, "resolution": 16, "channels": 1},
         "model": {"z_dim": 8, "g_width": 8, "d_width": 8}, "batch_size": 8,
         "steps": 6, "checkpoint_every": 3, "sample_every": 3, "tensorboard": False,
         "d_learning_rate": 1e-3,
         "fid": {"every": 3, "num_samples": 16, "reference": 4, "extractor": "pixels"}}
  for k, v in kw.items():
    cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
  return cfg


def test_hinge_and_training_losses():
  real, fake = np.float32([2.0, 0.5]), np.float32([-2.0, 0.0])
  loss, r, f = gan_losses.training_discriminator_loss(real, fake, "hinge")
  assert float(r) == pytest.approx(0.25) and float(f) == pytest.approx(0.5)
  assert float(loss) == pytest.approx(0.75)
  assert float(gan_losses.generator_loss(fake, "hinge")) == pytest.approx(1.0)
  loss, _, _ = gan_losses.training_discriminator_loss(np.float32([0.5]), np.float32([0.5]),
                                                      "non_saturating_prob")
  assert float(loss) == pytest.approx(2 * np.log(2), rel=1e-5)
  with pytest.raises(ValueError, match="the GAN training loss must be one of"):
    gan_losses.training_discriminator_loss(real, fake, "wgan")


def test_real_batches_are_a_function_of_seed_and_step():
  images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
  a = gan_images.real_batch(images, 4, 0, 2)
  np.testing.assert_array_equal(a, gan_images.real_batch(images, 4, 0, 2))
  epoch = np.concatenate([gan_images.real_batch(images, 5, 0, s) for s in (0, 1)])
  assert sorted(((epoch[:, 0, 0, 0] + 1) * 127.5).round().astype(int)) == list(range(10))


def test_losses_fall_and_resume_is_exact(tmp_path):
  """D learns (its loss falls from 2 log 2); a run stopped at step 3 and resumed ends with the
  bits of an uninterrupted run, logs included; the teacher folder loads as a zoo model."""
  folder = _folder(tmp_path / "data")
  a, b = tmp_path / "a", tmp_path / "b"
  report = gan.run(_tiny(folder, steps=12, checkpoint_every=6, sample_every=6,
                         fid={"every": 6}), a, progress=False)
  with open(a / "metrics.jsonl") as f:
    d_loss = [json.loads(line)["d_loss"] for line in f]
  assert len(d_loss) == 12
  assert d_loss[0] == pytest.approx(2 * np.log(2), abs=0.1)
  assert np.mean(d_loss[-3:]) < d_loss[0] - 0.1, d_loss
  assert [c["step"] for c in report["fid_curve"]] == [6, 12]
  assert all(c["fid"] is not None and c["fid"] >= 0 for c in report["fid_curve"])
  gan.run(_tiny(folder, steps=6, checkpoint_every=6, sample_every=6, fid={"every": 6}), b,
          progress=False)
  recorded = json.loads((b / "gan_config.json").read_text())
  del recorded["l1_weight"], recorded["model"]["n_mlp"]   # as an older jaxgc recorded it
  (b / "gan_config.json").write_text(json.dumps(recorded))
  resumed = gan.run(_tiny(folder, steps=12, checkpoint_every=6, sample_every=6,
                          fid={"every": 6}), b, progress=False)
  assert resumed["resumed_from"] == 6
  for name in ("generator", "discriminator"):
    _, va = load_model(a / name)
    _, vb = load_model(b / name)
    jax.tree.map(np.testing.assert_array_equal, va, vb)
  for log in ("metrics.jsonl", "fid.jsonl"):
    assert (a / log).read_text() == (b / log).read_text()
  g, v = load_model(a / "generator")
  out = g.apply(v, np.zeros((2, 8), np.float32))
  assert out.shape == (2, 16, 16, 1) and np.all(np.abs(out) <= 1)
  assert (a / "samples.png").is_file() and (a / "fid.png").is_file()
  assert "final FID" in (a / "report.md").read_text()


def test_sharded_gan_step_equals_single_device():
  run_on_fake_devices("_sharded_gan_check.py", timeout=300)


def test_bad_input_is_one_line(tmp_path, capsys):
  folder = _folder(tmp_path / "data", n=8)
  wd = tmp_path / "wd"
  base = ["gan", "--config", str(ROOT / "configs" / "gan_dcgan_fmnist.py"), "--workdir", str(wd), "--no-progress",
          f"--config.data.source={folder}", "--config.fid.extractor=pixels"]
  one_error_line(capsys, base + ["--config.data.resolution=48"],
                 "config.data.resolution 48 cannot be produced by dcgan")
  one_error_line(capsys, base + ["--config.arch=biggan"], "unknown arch 'biggan'")
  one_error_line(capsys, base + ["--config.data.channels=2"], "data.channels must be 1 or 3")
  one_error_line(capsys, base + ["--config.fid.extractor=domain"],
                 "fid.extractor 'domain' trains a classifier on class labels")
  Image.fromarray(np.zeros((20, 20), np.uint8)).save(os.path.join(folder, "zz_odd.png"))
  one_error_line(capsys, base, "have different sizes", "zz_odd.png")
  assert not wd.exists()


def _ab_folder(root, n=24, seed=0):
  """pix2pix AB folders ``root/{train,test}``: A a square's outline, B the filled square."""
  rng = np.random.default_rng(seed)
  for split, count in (("train", n), ("test", 8)):
    os.makedirs(root / split, exist_ok=True)
    for i in range(count):
      b = np.zeros((32, 32), np.uint8)
      y, x = rng.integers(0, 20, 2)
      b[y:y + 12, x:x + 12] = 200
      a = np.zeros_like(b)
      a[y, x:x + 12] = a[y + 11, x:x + 12] = a[y:y + 12, x] = a[y:y + 12, x + 11] = 255
      Image.fromarray(np.concatenate([a, b], axis=1)).save(root / split / f"{i:03d}.png")
  return str(root)


def test_pix2pix_l1_falls_and_its_outputs_are_measured(tmp_path):
  source = _ab_folder(tmp_path / "ab")
  cfg = _tiny(source, arch="pix2pix", data={"resolution": 32}, steps=12, batch_size=8,
              sample_every=0,
              g_learning_rate=1e-3, loss="non_saturating_logits",
              model={"g_width": 4, "d_width": 4, "num_downs": 5, "n_layers": 3},
              fid={"every": 12, "num_samples": 8, "reference": 8})
  report = gan.run(cfg, tmp_path / "wd", progress=False)
  with open(tmp_path / "wd" / "metrics.jsonl") as f:
    l1 = [json.loads(line)["l1"] for line in f]
  assert np.mean(l1[-3:]) < l1[0] - 0.05, l1   # 0.95 -> 0.88 here
  assert report["held_out"]["pairs"] == 8 and 0 < report["held_out"]["l1"] < 2
  assert report["generator"]["arch"] == "unet_generator"
  assert report["fid_curve"][-1]["step"] == 12


def test_canny_edges_beside_the_garment():
  img = np.zeros((1, 28, 28), np.uint8)
  img[0, 8:20, 8:20] = 255
  ab = gan_images.canny_ab(img)
  assert ab.shape == (1, 32, 64) and ab.dtype == np.uint8
  np.testing.assert_array_equal(ab[0, :, 32:], np.pad(img[0], 2))
  edges = ab[0, :, :32] > 0
  assert set(np.unique(ab[0, :, :32])) <= {0, 255}
  assert edges[10:22, 9:11].any() and not edges[14:18, 14:18].any()   # the border, not inside


def test_teacher_is_trained_on_first_use_then_loaded(tmp_path, monkeypatch, capsys):
  from jaxgc.jobs import teachers  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("JAXGC_CACHE", str(tmp_path / "cache"))
  monkeypatch.setitem(teachers.TEACHERS, "tiny", ("gan_dcgan_fmnist", "seconds"))
  folder = _folder(tmp_path / "data")
  monkeypatch.setattr(teachers, "teacher_config",
                      lambda name: ml_collections.ConfigDict(_tiny(folder, steps=2)))
  with pytest.raises(ValueError, match="unknown teacher 'nope'"):
    teachers.teacher("nope")
  g, v = teachers.teacher("tiny", progress=False)
  err = capsys.readouterr().err
  assert "jaxgc: note: teacher 'tiny' is not in" in err and "training it now" in err
  assert teachers.is_trained("tiny")
  g2, v2 = teachers.teacher("tiny", progress=False)
  assert capsys.readouterr().err == ""
  assert g2 == g
  jax.tree.map(np.testing.assert_array_equal, v, v2)
  d, _ = teachers.teacher("tiny", network="discriminator", progress=False)
  assert d.kind == "discriminator"


def test_stylegan2_lazy_r1_and_ema(tmp_path):
  """R1 is computed on steps 0, 2, ... (lazy, every 2 here) and 0 between; the saved generator
  is the EMA (with ramp-up) of the trained one, not the trained weights themselves."""
  folder = _folder(tmp_path / "data", size=8)
  cfg = _tiny(folder, arch="stylegan2", data={"resolution": 8}, steps=4, batch_size=8,
              sample_every=0,
              loss="non_saturating_logits", r1_gamma=1.0, r1_every=2, ema_decay=0.9,
              ema_rampup=0.5,
              model={"z_dim": 8, "g_width": 8, "d_width": 8, "n_mlp": 1},
              fid={"every": 4})
  gan.run(cfg, tmp_path / "wd", progress=False)
  with open(tmp_path / "wd" / "metrics.jsonl") as f:
    r1 = [json.loads(line)["r1"] for line in f]
  assert r1[0] > 0 and r1[2] > 0 and r1[1] == 0 and r1[3] == 0, r1
  g, v = load_model(tmp_path / "wd" / "generator")
  assert type(g).__name__ == "StyleGAN2Generator" and g.layout == "nvlabs"
  from jaxgc.train import checkpoint_manager  # pylint: disable=import-outside-toplevel
  manager = checkpoint_manager(tmp_path / "wd" / "checkpoints", 1)
  leaves = manager.restore(4)
  manager.close()
  trained, ema = leaves["params"]["g"], leaves["frozen"]["ema"]
  diff = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
          for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(ema))]
  assert max(diff) > 0
  jax.tree.map(np.testing.assert_array_equal, v["params"], jax.tree.map(np.asarray, ema))


def test_sagan_trains_with_spectral_norm_and_folds_exactly(tmp_path):
  """Tiny SAGAN 32x32 (hinge, TTUR): D's hinge loss falls; a trained D kernel divided by
  its power-iteration sigma has spectral norm in [1, 1.25); the saved (folded) networks equal the
  training-mode forward on the checkpointed variables to 1e-5."""
  from jaxgc.models import sagan  # pylint: disable=import-outside-toplevel
  from jaxgc.train import checkpoint_manager  # pylint: disable=import-outside-toplevel
  folder = _folder(tmp_path / "data", size=32)
  cfg = _tiny(folder, arch="sagan", data={"resolution": 32}, steps=8, checkpoint_every=8,
              sample_every=0, loss="hinge", g_learning_rate=1e-4, d_learning_rate=4e-4,
              beta1=0.0, beta2=0.9, fid={"every": 8})
  gan.run(cfg, tmp_path / "wd", progress=False)
  with open(tmp_path / "wd" / "metrics.jsonl") as f:
    d_loss = [json.loads(line)["d_loss"] for line in f]
  assert np.mean(d_loss[-3:]) < d_loss[0] - 0.1, d_loss
  manager = checkpoint_manager(tmp_path / "wd" / "checkpoints", 1)
  leaves = manager.restore(8)
  manager.close()
  g_train, d_train = gan.build_models(gan.resolve_config(cfg))
  z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
  for net, module, x in (("generator", g_train, z),
                         ("discriminator", d_train, np.tanh(np.float32(
                             np.random.default_rng(1).standard_normal((4, 32, 32, 1)))))):
    key = net[0]
    variables = {"params": leaves["params"][key], **leaves["frozen"][key]}
    folded_module, folded = load_model(tmp_path / "wd" / net)
    assert not folded_module.spectral_training and folded_module.image_size == 32
    np.testing.assert_allclose(jax.jit(folded_module.apply)(folded, x),
                               jax.jit(module.apply)(variables, x), atol=1e-5, rtol=0)
  _, d_folded = sagan.fold_spectral(d_train, {"params": leaves["params"]["d"],
                                              **leaves["frozen"]["d"]})
  for name in ("l1", "l2", "l3"):
    kernel = d_folded["params"][name]["kernel"]
    norm = np.linalg.norm(np.asarray(sagan.spectral_matrix(kernel, False)), 2)
    # power iteration never overestimates the norm, so W / sigma has norm >= 1; 8 iterations
    # from a constant vector leave it below 1.25 (1.08 at most in a 10-step run)
    assert 1.0 - 1e-5 <= norm < 1.25, (name, norm)
