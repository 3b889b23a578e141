"""Collaborative G/D pruning (jaxgc.train.collab_step): the sharded step, the hardened and
slimmed pair, bad input."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _collab_fixture as fx
from conftest import run_on_fake_devices
from jaxgc import models
from jaxgc.compress import slim as slim_lib
from jaxgc.train import agents
from jaxgc.train import collab_step as cs


def test_sharded_collab_step_equals_single_device():
  run_on_fake_devices("_sharded_collab_check.py")


def test_steps_train_everything_and_slimmed_pair_equals_gated():
  mods, state, z, gv, dv, cfg = fx.tiny_pair()
  step = fx.step_fn(mods, cfg)
  start = jax.device_get((state.g.params, state.ga.params, state.da.params, state.pair.params))
  for i in range(3):
    state, m = step(state, z[i], gv, dv)
    assert all(np.isfinite(float(v)) for v in m.values()), m
  assert float(m["density"]) > 0 and 0 < float(m["g_ratio"]) <= 1
  after = jax.device_get((state.g.params, state.ga.params, state.da.params, state.pair.params))
  for a, b in zip(start, after):   # G, both agents and the pair discriminator all moved
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  g_vars = {"params": state.g.params}
  d_vars = {"params": state.d.params}
  g_masks, d_masks, g_keep, d_keep = cs.final_masks(mods, state, cfg, g_vars, d_vars)
  for spec, keep, target in ((mods.g_spec, g_keep, cfg.g_budget),
                             (mods.d_spec, d_keep, cfg.d_target)):
    ratio = float(agents.expected_macs(spec, [jnp.asarray(k, jnp.float32) for k in keep]))
    assert abs(ratio / spec.total_macs / target - 1) <= 0.05, (ratio / spec.total_macs, target)
  for module, variables, masks, spec, keep, x in (
      (mods.generator, g_vars, g_masks, mods.g_spec, g_keep, z[0]),
      (mods.discriminator, d_vars, d_masks, mods.d_spec, d_keep,
       mods.generator.apply(g_vars, z[0]))):
    small, small_v = slim_lib.slim(module, variables, masks)
    gated = module.apply(agents.apply_gates(spec, variables,
                                            [jnp.asarray(k, jnp.float32) for k in keep]), x)
    np.testing.assert_allclose(small.apply(small_v, x), gated, atol=1e-5)


def test_bad_input_is_one_line():
  mods, _, z, gv, dv, cfg = fx.tiny_pair()
  cases = [
      (lambda: cs.CollabConfig(g_budget=1.5), "g_budget must be a MACs fraction in (0, 1]"),
      (lambda: cs.CollabConfig(d_budget=0.0), "d_budget must be a MACs fraction"),
      (lambda: cs.build_models(mods.generator, gv, None, None, z[0], cfg),
       "needs a discriminator"),
      (lambda: cs.build_models(mods.generator, gv, mods.discriminator, dv, z[0],
                               cs.CollabConfig(k=16)), "neighbours k must be an int in [1, batch=16)"),
      (lambda: cs.build_models(mods.generator, gv, mods.discriminator, dv, z[0],
                               cs.CollabConfig(m=16)), "perturbed copies M"),
  ]
  lenet = models.LeNet5()
  x = models.example_input(lenet)
  cases.append((lambda: cs.build_models(mods.generator, gv, lenet,
                                        jax.eval_shape(lenet.init, jax.random.key(0), x),
                                        z[0], cfg), "LeNet5 cannot be gated"))
  for fn, needle in cases:
    with pytest.raises(ValueError) as e:
      fn()
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------------
# The job.

_TINY = {"generator": "mnist-mlpgan/G--300.ckpt", "discriminator": "mnist-mlpgan/D--300.ckpt",
         "methods": ("collab",), "budgets": (0.5,), "search_steps": 4, "finetune_steps": 0,
         "batch_size": 16, "checkpoint_every": 1, "eval_samples": 16, "latency_repeats": 1,
         "tensorboard": False, "agent_dim": 8, "metrics": {"extractor": "none"}}


@pytest.fixture
def compile_cache(tmp_path):
  """A persistent compilation cache for the test: the three runs of the job compile the same
  steps, so the second and third read them from the cache (about 3x faster on 2 cores)."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  before = {n: getattr(jax.config, n) for n in names}
  for n, v in zip(names, (str(tmp_path / "xla_cache"), 0, 0)):
    jax.config.update(n, v)
  yield
  for n, v in before.items():
    jax.config.update(n, v)
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  getattr(compilation_cache, "reset_cache", lambda: None)()


def test_job_resume_equals_uninterrupted(tmp_path, monkeypatch, compile_cache):
  from conftest import require_asset  # pylint: disable=import-outside-toplevel
  from jaxgc.checkpoint import load_any_model  # pylint: disable=import-outside-toplevel
  from jaxgc.jobs import collab as job  # pylint: disable=import-outside-toplevel
  require_asset(_TINY["generator"])
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  whole = job.run(_TINY, tmp_path / "whole", progress=False)
  real_make = cs.make_collab_step
  calls = {"n": 0}

  def interrupted_make(*a, **k):
    step = real_make(*a, **k)

    def wrapped(*args):
      calls["n"] += 1
      if calls["n"] == 3:
        raise KeyboardInterrupt
      return step(*args)
    return wrapped

  monkeypatch.setattr(cs, "make_collab_step", interrupted_make)
  with pytest.raises(KeyboardInterrupt):
    job.run(_TINY, tmp_path / "resumed", progress=False)
  monkeypatch.setattr(cs, "make_collab_step", real_make)
  resumed = job.run(_TINY, tmp_path / "resumed", progress=False)
  a, b = whole["rows"][0], resumed["rows"][0]
  for key in ("g_macs", "d_macs", "g_keep", "d_keep", "g_params", "d_params"):
    assert a[key] == b[key], key
  np.testing.assert_allclose(a["psnr"], b["psnr"], rtol=1e-5)
  assert whole["dynamics"]["collab_b0.50"]["step"] == [1, 2, 3, 4]
  for k, v in whole["dynamics"]["collab_b0.50"].items():
    np.testing.assert_allclose(v, resumed["dynamics"]["collab_b0.50"][k], rtol=1e-5, atol=1e-6,
                               err_msg=k)
  ga = load_any_model(tmp_path / "whole" / "runs" / "collab_b0.50" / "model_g")[1]
  gb = load_any_model(tmp_path / "resumed" / "runs" / "collab_b0.50" / "model_g")[1]
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), ga, gb)
  assert abs(a["g_budget_ratio"] / 0.5 - 1) <= 0.02 and abs(a["d_budget_ratio"] / 0.5 - 1) <= 0.02
  for name in ("report.md", "dynamics.png", "keep_ratios.png", "widths.png", "samples.png"):
    assert (tmp_path / "whole" / name).is_file(), name


@pytest.mark.parametrize("override,needle", [
    ({"budgets": (0.5, 1.5)}, "budget must be a MACs fraction in (0, 1], got 1.5"),
    ({"k": 16}, "neighbours k must be an int in [1, batch=16), got 16"),
    ({"m": 20}, "perturbed copies M"),
    ({"discriminator": ""}, "collaborative pruning needs the trained discriminator"),
    ({"methods": ("collab", "bogus")}, "unknown method 'bogus'"),
    ({"features": "inception"}, "features 'inception' is refused: the FID Inception"),
    ({"data.source": "bogus"}, "unknown data.source 'bogus'"),
    ({"d_warmup_steps": -1}, "d_warmup_steps must be >= 0, got -1"),
])
def test_job_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, override, needle):
  from conftest import one_error_line  # pylint: disable=import-outside-toplevel
  config = pathlib.Path(__file__).resolve().parents[1] / "configs" / "collab_mnist_mlp.py"
  argv = ["collab", "--workdir", str(tmp_path / "wd"), "--no-progress", "--config",
          str(config), "--config.batch_size=16"]
  for k, v in override.items():
    argv.append(f"--config.{k}={v!r}")
  one_error_line(capsys, argv, needle)
  assert not (tmp_path / "wd").exists()


# ------------------------------------------------------------------------------------------------
# The image-to-image path: a ResNet generator and a PatchGAN.


@pytest.mark.parametrize("conditional", [False, True], ids=["cyclegan_d", "pix2pix_d"])
def test_image_pair_hardened_and_slimmed_equals_gated(conditional):
  """The agents' decisions on a ResNet generator and a PatchGAN (reading the output, or input
  and output concatenated), hardened onto the budgets (within 2%), slimmed: the slimmed
  networks compute what the gated ones do (G to 1e-4, as tests/test_slim.py allows for its
  instance norms; D to 1e-5), at the MACs the budget estimated. (The job test below runs the
  warm-up and the steps themselves.)"""
  from jaxgc import stats  # pylint: disable=import-outside-toplevel
  mods, state, x, gv, dv, cfg = fx.tiny_image_pair(conditional)
  g_masks, d_masks, g_keep, d_keep = cs.final_masks(mods, state, cfg, gv, dv)
  y = cs.d_input(cfg, x[0], mods.generator.apply(gv, x[0]))
  assert y.shape[-1] == (6 if conditional else 3)
  for module, variables, masks, spec, keep, inp, target, tol in (
      (mods.generator, gv, g_masks, mods.g_spec, g_keep, x[0], cfg.g_budget, 1e-4),
      (mods.discriminator, dv, d_masks, mods.d_spec, d_keep, y, cfg.d_target, 1e-5)):
    gates = [jnp.asarray(k, jnp.float32) for k in keep]
    macs = float(agents.expected_macs(spec, gates))
    assert abs(macs / spec.total_macs / target - 1) <= 0.02, (type(module).__name__, macs)
    small, small_v = slim_lib.slim(module, variables, masks)
    assert stats.count_macs(small, small_v, inp) == pytest.approx(macs, rel=1e-5)
    gated = module.apply(agents.apply_gates(spec, variables, gates), inp)
    assert float(jnp.max(jnp.abs(gated - module.apply(variables, inp)))) > 1e-3   # pruned
    np.testing.assert_allclose(small.apply(small_v, inp), gated, atol=tol)


def test_image_job_end_to_end(tmp_path, compile_cache):
  """A tiny ResNet generator, an online PatchGAN with a D warm-up, 16 x 16 photo crops: the
  job meets both budgets within 2% and reports the image metrics."""
  from jaxgc.checkpoint import load_any_model  # pylint: disable=import-outside-toplevel
  from jaxgc.checkpoint import save_model  # pylint: disable=import-outside-toplevel
  from jaxgc.jobs import collab as job  # pylint: disable=import-outside-toplevel
  mods, _, x, gv, _, _ = fx.tiny_image_pair()
  save_model(tmp_path / "g", mods.generator, gv)
  config = {"generator": str(tmp_path / "g"), "discriminator": "online",
            "disc": {"ndf": 8, "n_layers": 2}, "d_warmup_steps": 2, "methods": ("collab",),
            "budgets": (0.5,), "search_steps": 2, "finetune_steps": 0, "batch_size": 8,
            "k": 3, "m": 1, "sigma": 0.05, "d_outputs": "logits", "feature_layer": "conv_3",
            "data": {"size": fx.IMAGE_SIZE, "photos": ("coffee",), "eval_photos": ("chelsea",)},
            "eval_samples": 8, "checkpoint_every": 1,
            "latency_repeats": 1, "latency_batch": 2, "tensorboard": False, "agent_dim": 8,
            "metrics": {"extractor": "pixels", "nearest_k": 3}}
  report = job.run(config, tmp_path / "wd", progress=False)
  row = report["rows"][0]
  assert abs(row["g_budget_ratio"] / 0.5 - 1) <= 0.02, row["g_budget_ratio"]
  assert abs(row["d_budget_ratio"] / 0.5 - 1) <= 0.02, row["d_budget_ratio"]
  assert row["g_macs"] < report["teacher"]["macs"] and row["d_macs"] < report["teacher"]["d_macs"]
  assert np.isfinite(row["psnr"]) and np.isfinite(row["fid"]) and 0 <= row["coverage"] <= 1
  assert report["d_warmup"]["steps"] == 2
  dyn = report["dynamics"]["collab_b0.50"]
  assert dyn["step"] == [1, 2] and all(np.isfinite(v) for v in dyn["loss"] + dyn["d_loss"])
  assert min(dyn["density"]) > 0
  d, dv = load_any_model(tmp_path / "wd" / "runs" / "collab_b0.50" / "model_d")
  assert type(d).__name__ == "PatchGANDiscriminator" and d.features is not None
  assert "D warm-up" in (tmp_path / "wd" / "report.md").read_text()


@pytest.mark.parametrize("name", sorted(p.stem for p in (
    pathlib.Path(__file__).resolve().parents[1] / "configs").glob("collab_*.py")))
def test_every_collab_config_resolves(name):
  """Each shipped collab config (the pod ones built from their CPU config) loads and passes
  validation; a pod config keeps its base config's pair and scales the run up."""
  from jaxgc.cli import load_config  # pylint: disable=import-outside-toplevel
  from jaxgc.jobs import collab as job  # pylint: disable=import-outside-toplevel
  root = pathlib.Path(__file__).resolve().parents[1] / "configs"
  cfg = job.resolve_config(load_config(str(root / f"{name}.py")))
  if name.endswith("_pod"):
    base = job.resolve_config(load_config(str(root / f"{name[:-4]}.py")))
    assert (cfg.generator, cfg.discriminator) == (base.generator, base.discriminator)
    assert cfg.search_steps > base.search_steps and cfg.batch_size > base.batch_size
