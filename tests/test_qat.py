"""Quantization-aware training: loss, STE gradients, jitted/sharded step, checkpoints, job."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import require_asset
from conftest import run_on_fake_devices
from jaxgc import compress
from jaxgc import parallel
from jaxgc import report as report_lib
from jaxgc import train
from jaxgc.checkpoint import load_model
from jaxgc.jobs import qat as job

G_CKPT = "mnist-mlpgan/G--300.ckpt"
D_CKPT = "mnist-mlpgan/D--300.ckpt"


@pytest.fixture(scope="module")
def mlp_pair():
  from jaxgc import convert  # pylint: disable=import-outside-toplevel
  gen, g_vars = convert.load_torch_checkpoint(require_asset(G_CKPT))
  disc, d_vars = convert.load_torch_checkpoint(require_asset(D_CKPT))
  return gen, g_vars, disc, d_vars


def _copy(tree):
  return jax.tree.map(np.array, tree)


def _job_config(**kw):
  cfg = {"generator": str(require_asset(G_CKPT)), "discriminator": str(require_asset(D_CKPT)),
         "weight_bits": 4, "learning_rate": 3e-4, "batch_size": 16, "adv_weight": 0.01,
         "eval_samples": 32}
  cfg.update(kw)
  return cfg


# ---------------------------------------------------------------------------------------------
# the step


def test_one_step_smoke(mlp_pair):
  gen, g_vars, disc, d_vars = mlp_pair
  cfg = train.QATConfig(compress.QuantConfig(4), adv_weight=0.01)
  state = train.create_train_state(g_vars["params"], optax.adam(1e-3))
  step = train.make_train_step(gen, cfg, disc)
  z = train.sample_latents(jax.random.key(0), 0, 16, gen.z_dim)
  state, metrics = step(state, z, g_vars, d_vars)
  assert set(metrics) == set(train.selfsup_step.METRIC_NAMES)
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  assert float(metrics["adv"]) > 0 and float(metrics["distill"]) > 0
  np.testing.assert_allclose(metrics["loss"], metrics["distill"] + 0.01 * metrics["adv"],
                             rtol=1e-6)
  assert int(state.step) == 1
  for path in ("dense_0", "dense_1", "dense_2"):
    assert not np.array_equal(state.params[path]["kernel"], g_vars["params"][path]["kernel"])

  # The deployed model (real low-bit storage, dequantized) computes exactly what the loss saw.
  fq = compress.fake_quantize(state.variables, cfg.quant)
  stored = compress.dequantize_variables(compress.quantize_variables(state.variables, cfg.quant))
  jax.tree.map(np.testing.assert_array_equal, fq, stored)
  np.testing.assert_array_equal(gen.apply(stored, z), gen.apply(fq, z))
  assert len(np.unique(np.asarray(fq["params"]["dense_1"]["kernel"])[:, 0])) <= 2**4
  # The loss at the new state is the MSE of that forward pass to the teacher.
  loss, aux = train.qat_loss(state.params, {}, z, gen.apply(g_vars, z), d_vars, generator=gen,
                             discriminator=disc, config=cfg)
  mse = jnp.mean((gen.apply(fq, z) - gen.apply(g_vars, z)) ** 2)
  np.testing.assert_allclose(aux["distill"], mse, rtol=1e-6)
  assert np.isfinite(float(loss))


def test_ste_gradients_reach_every_quantized_kernel(mlp_pair):
  gen, g_vars, _, _ = mlp_pair
  cfg = train.QATConfig(compress.QuantConfig(3), distill="l1")
  z = train.sample_latents(jax.random.key(1), 0, 8, gen.z_dim)
  teacher = gen.apply(g_vars, z)
  grads, _ = jax.grad(train.qat_loss, has_aux=True)(
      g_vars["params"], {}, z, teacher, None, generator=gen, discriminator=None, config=cfg)
  for name, layer in grads.items():
    g = np.asarray(layer["kernel"])
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, name
  # The estimator itself: d/dw sum(c * fake_quant(w)) == c, exactly.
  w = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  c = jnp.arange(15.0).reshape(5, 3)
  g = jax.grad(lambda w: jnp.sum(c * compress.fake_quant(w, 3)))(w)
  np.testing.assert_array_equal(g, c)


def test_step_does_not_retrace(mlp_pair):
  gen, g_vars, _, _ = mlp_pair
  cfg = train.QATConfig(compress.QuantConfig(4))
  mesh = train.data_mesh()
  state = train.replicate(train.create_train_state(g_vars["params"], optax.adam(1e-4)), mesh)
  teacher = train.replicate(g_vars, mesh)
  step = train.make_train_step(gen, cfg, None, mesh)
  for s in range(3):
    z = train.shard_batch(train.sample_latents(jax.random.key(0), s, 8, gen.z_dim), mesh)
    state, _ = step(state, z, teacher, None)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 3


def test_qat_improves_on_ptq(mlp_pair):
  gen, g_vars, disc, d_vars = mlp_pair
  cfg = train.QATConfig(compress.QuantConfig(4))
  state = train.create_train_state(g_vars["params"], optax.adam(3e-4))
  step = train.make_train_step(gen, cfg, disc)
  key = jax.random.key(0)
  for s in range(50):
    state, metrics = step(state, train.sample_latents(key, s, 64, gen.z_dim), g_vars, d_vars)
    assert np.isfinite(float(metrics["loss"]))
  held_out = np.random.default_rng(123).standard_normal((256, gen.z_dim)).astype(np.float32)
  reference = gen.apply(g_vars, held_out)
  ptq = gen.apply(compress.fake_quantize(g_vars, cfg.quant), held_out)
  qat = gen.apply(train.quantized_variables(state.variables, cfg), held_out)
  before = report_lib.image_metrics(reference, ptq)["psnr_db"]
  after = report_lib.image_metrics(reference, qat)["psnr_db"]
  assert after > before + 1.0, (before, after)


def test_sharded_step_equals_single_device():
  run_on_fake_devices("_sharded_qat_check.py")


def test_sharded_online_qat_equals_single_device():
  run_on_fake_devices("_sharded_qat_online_check.py")


# ---------------------------------------------------------------------------------------------
# the job: checkpoints, resume, outputs


def _log_steps(workdir):
  with open(os.path.join(workdir, job.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


def test_resumed_run_matches_uninterrupted(tmp_path, monkeypatch):
  full_dir, resumed_dir, killed_dir = tmp_path / "full", tmp_path / "resumed", tmp_path / "killed"
  full, report = job.train(_job_config(steps=10, checkpoint_every=3), full_dir)
  full = _copy(full.params)

  # Stopped after step 6 (checkpoints at 3 and 6), then continued to 10 by a fresh call.
  job.train(_job_config(steps=6, checkpoint_every=3), resumed_dir)
  resumed, report_r = job.train(_job_config(steps=10, checkpoint_every=3), resumed_dir)
  assert report_r["resumed_from"] == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), full,
               _copy(resumed.params))

  # Killed during step 8 (last checkpoint: 6): the rerun redoes steps 7 and 8.
  calls = {"n": 0}
  real_host_metrics = parallel.host_metrics

  def dying(metrics):
    calls["n"] += 1
    if calls["n"] == 8:
      raise KeyboardInterrupt("killed")
    return real_host_metrics(metrics)

  monkeypatch.setattr(parallel, "host_metrics", dying)
  with pytest.raises(KeyboardInterrupt):
    job.train(_job_config(steps=10, checkpoint_every=3), killed_dir)
  monkeypatch.setattr(parallel, "host_metrics", real_host_metrics)
  # Orbax also keeps the first save of a fresh directory (step 1).
  assert sorted(os.listdir(killed_dir / job.CHECKPOINT_DIR), key=int) == ["1", "3", "6"]
  killed, report_k = job.train(_job_config(steps=10, checkpoint_every=3), killed_dir)
  assert report_k["resumed_from"] == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), full,
               _copy(killed.params))
  log_full, log_killed = _log_steps(full_dir), _log_steps(killed_dir)
  assert [r["step"] for r in log_killed] == list(range(1, 11))
  for a, b in zip(log_full, log_killed):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)

  # Outputs: the report, the fake-quantized model and the real low-bit storage agree.
  assert (full_dir / job.REPORT_MD).read_text().startswith("# jaxgc qat")
  assert set(report["rows"]) == {"FP32 teacher", "PTQ (step 0)", "QAT (step 10)"}
  _, model_vars = load_model(full_dir / job.MODEL_DIR)
  _, stored_vars = load_model(full_dir / job.QUANTIZED_DIR)
  jax.tree.map(np.testing.assert_array_equal, model_vars, stored_vars)
  expected = compress.fake_quantize({"params": full}, compress.QuantConfig(4))
  jax.tree.map(np.testing.assert_array_equal, expected, model_vars)
  assert report["size_ratio"] < 0.2

  # A resumed run must not change the training recipe.
  with pytest.raises(ValueError, match="learning_rate"):
    job.train(_job_config(steps=12, checkpoint_every=3, learning_rate=1e-3), full_dir)


@pytest.mark.parametrize("override, match", [
    ({"bogus": 1}, "unknown config key 'bogus'"),
    ({"weight_bits": 9}, "weight bits"),
    ({"weight_bits": "4"}, "weight_bits"),
    ({"granularity": "per_row"}, "granularity"),
    ({"distill": "l2"}, "distill"),
    ({"adv_weight": -1.0}, "weights"),
    ({"adv_weight": 0.1, "discriminator": ""}, "discriminator"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"batch_size": 0}, "batch_size"),
    ({"include": "("}, "include"),
    ({"generator": ""}, "generator"),
])
def test_bad_config_errors(override, match):
  cfg = {"generator": "G.ckpt", "discriminator": "D.ckpt", **override}
  with pytest.raises(ValueError, match=match):
    job.resolve_config(cfg)


def test_default_and_shipped_configs_resolve():
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "qat_mnist_mlp.py"
  spec = importlib.util.spec_from_file_location("qat_mnist_mlp", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = job.resolve_config(mod.get_config())
  assert cfg.weight_bits == 4 and cfg.granularity == "per_channel" and cfg.adv_weight > 0


def test_image_to_image_qat_with_an_online_patchgan_resumes(tmp_path):
  """A tiny random ResNet generator on 16x16 photo crops, with an online PatchGAN: the run
  stopped at step 2 and resumed to 3 ends where an uninterrupted 3-step run ends."""
  from jaxgc import models  # pylint: disable=import-outside-toplevel
  from jaxgc.checkpoint import save_model  # pylint: disable=import-outside-toplevel
  gen = models.build("resnet_generator", ngf=4, n_blocks=1)
  g_vars = jax.jit(gen.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  save_model(tmp_path / "g", gen, jax.tree.map(np.asarray, g_vars))
  cfg = {"generator": str(tmp_path / "g"), "weight_bits": 4, "batch_size": 2,
         "adv_weight": 0.1, "online_discriminator": True, "disc_ndf": 8, "disc_layers": 1,
         "inputs": {"crop_size": 16}, "eval_samples": 4, "checkpoint_every": 1,
         "tensorboard": False}
  full, report = job.train({**cfg, "steps": 3}, tmp_path / "full")
  job.train({**cfg, "steps": 2}, tmp_path / "resumed")
  resumed, report_r = job.train({**cfg, "steps": 3}, tmp_path / "resumed")
  assert report_r["resumed_from"] == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
               _copy(full.params), _copy(resumed.params))
  assert set(full.params) == {"generator", "discriminator"}   # the PatchGAN trains too
  log = _log_steps(tmp_path / "full")
  assert [r["step"] for r in log] == [1, 2, 3] and all(r["d_loss"] > 0 for r in log)
  assert set(report["rows"]) == {"FP32 teacher", "PTQ (step 0)", "QAT (step 3)"}
  assert report["rows"]["FP32 teacher"]["psnr_db"] is None
  md = (tmp_path / "full" / job.REPORT_MD).read_text()
  assert "trained online" in md and "16px crops" in md
  _, stored = load_model(tmp_path / "full" / job.QUANTIZED_DIR)
  assert set(stored["params"]) == set(g_vars["params"])


def test_online_discriminator_needs_an_image_to_image_generator(tmp_path):
  with pytest.raises(ValueError, match="online_discriminator=True needs an image-to-image"):
    job.train(_job_config(discriminator="", online_discriminator=True, steps=1), tmp_path / "w")
  assert not (tmp_path / "w").exists()
