"""Self-supervised compression of pruned generators: the loss, the sharded step, `jaxgc selfsup`."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import require_asset
from conftest import run_on_fake_devices
from jaxgc import cli
from jaxgc import models
from jaxgc import parallel
from jaxgc import train
from jaxgc.checkpoint import load_model
from jaxgc.jobs import selfsup as job

G_CKPT = "mnist-mlpgan/G--300.ckpt"
D_CKPT = "mnist-mlpgan/D--300.ckpt"
H2Z = "cyclegan-h2z-gancompression/latest_net_G.pth"


# ---------------------------------------------------------------------------------------------
# the loss


def test_selfsup_loss_is_zero_for_the_teacher_and_grows_with_a_perturbation():
  gen = models.MLPGenerator()
  v = gen.init(jax.random.key(0), jnp.zeros((1, gen.z_dim)))
  z = jax.random.normal(jax.random.key(1), (8, gen.z_dim))
  out = gen.apply(v, z)
  cfg = train.SelfSupConfig()
  loss, aux = train.selfsup_loss(v["params"], {}, z, out, None, generator=gen,
                                 discriminator=None, config=cfg)
  assert float(loss) == 0.0 and float(aux["adv"]) == 0.0
  losses = []
  for eps in (1e-3, 1e-2, 1e-1):
    p = jax.tree.map(lambda w, e=eps: w + e, v["params"])
    losses.append(float(train.selfsup_loss(p, {}, z, out, None, generator=gen,
                                           discriminator=None, config=cfg)[0]))
  assert 0 < losses[0] < losses[1] < losses[2]


@pytest.mark.parametrize("kind, d_out, expected", [
    ("non_saturating_prob", [0.5, 0.25], -(np.log(0.5 + 1e-7) + np.log(0.25 + 1e-7)) / 2),
    ("non_saturating_logits", [0.0, 2.0], (np.log(2.0) + np.log1p(np.exp(-2.0))) / 2),
    ("lsgan", [0.0, 3.0], (1.0 + 4.0) / 2),
])
def test_adversarial_losses_by_hand(kind, d_out, expected):
  got = float(train.generator_loss(jnp.asarray(d_out, jnp.float32), kind))
  assert got == pytest.approx(expected, rel=1e-5)


def test_bad_loss_config():
  with pytest.raises(ValueError, match="adv_loss must be one of"):
    train.SelfSupConfig(adv_loss="hinge")
  with pytest.raises(ValueError, match="both 0"):
    train.SelfSupConfig(distill_weight=0.0, adv_weight=0.0)


def test_sharded_selfsup_step_equals_single_device():
  run_on_fake_devices("_sharded_selfsup_check.py", timeout=600)


# ---------------------------------------------------------------------------------------------
# the job


def _mnist_config(**kw):
  cfg = {"generator": str(require_asset(G_CKPT)), "discriminator": str(require_asset(D_CKPT)),
         "adv_weight": 0.01, "granularities": ("unstructured", "n:m", "channel"),
         "sparsities": (0.75,), "nm_group": 8, "channel_exclude": "dense_2",
         "learning_rate": 3e-4, "steps": 6, "batch_size": 16, "checkpoint_every": 3,
         "sample_every": 3, "eval_samples": 32, "latency_repeats": 1, "latency_batch": 2}
  cfg.update(kw)
  return cfg


def _kernels(run_dir):
  _, v = load_model(os.path.join(run_dir, "model"))
  return {k: np.asarray(v["params"][k]["kernel"]) for k in v["params"]}


def test_mnist_job_prunes_trains_reports_and_resumes(tmp_path, monkeypatch):
  full = tmp_path / "full"
  report = job.run(_mnist_config(), full, progress=False)
  rows = {r["granularity"]: r for r in report["rows"]}
  assert set(rows) == {"unstructured", "n:m", "channel"}
  for r in report["rows"]:
    assert r["resumed_from"] == 0
    # Training moved the student towards the teacher.
    assert r["after"]["psnr_db"] > r["before"]["psnr_db"], r["name"]
  # Unstructured: 75% of every kernel is zero (rounding: within one weight).
  k = _kernels(full / "runs" / rows["unstructured"]["name"])
  for name, w in k.items():
    assert abs(np.mean(w == 0) - 0.75) <= 1.0 / w.size, name
  # N:M with m = 8 at 0.75: exactly 2 of every 8 consecutive inputs kept.
  k = _kernels(full / "runs" / rows["n:m"]["name"].replace(":", "of"))
  groups = (k["dense_1"] != 0).reshape(256 // 8, 8, 256).sum(axis=1)
  assert rows["n:m"]["n"] == 2 and np.all(groups <= 2) and np.mean(groups == 2) > 0.99
  # Channel: the MLP generator is slimmed (compress.slim supports the MLP pair): a quarter of
  # the 256 hidden units of dense_0 / dense_1 kept, the 784 outputs of dense_2 all kept.
  k = _kernels(full / "runs" / rows["channel"]["name"])
  assert {n: w.shape for n, w in k.items()} == {"dense_0": (64, 64), "dense_1": (64, 64),
                                                 "dense_2": (64, 784)}
  assert not np.any(np.all(k["dense_2"] == 0, axis=0))
  for name in ("report.md", "report.json", "tradeoff.png", "samples.png", "train_config.json"):
    assert (full / name).is_file(), name
  run_dir = full / "runs" / rows["unstructured"]["name"]
  assert (run_dir / "samples" / "step_000006.png").is_file()
  assert any((run_dir / "tensorboard").iterdir())
  log = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
  assert [m["step"] for m in log] == list(range(1, 7))

  # Killed during step 5 of the second setting (last checkpoint: 3), then rerun.
  killed = tmp_path / "killed"
  calls = {"n": 0}
  real = parallel.host_metrics

  def dying(metrics):
    calls["n"] += 1
    if calls["n"] == 6 + 5:
      raise KeyboardInterrupt("killed")
    return real(metrics)

  monkeypatch.setattr(parallel, "host_metrics", dying)
  two = _mnist_config(granularities=("unstructured", "n:m"))
  with pytest.raises(KeyboardInterrupt):
    job.run(two, killed, progress=False)
  monkeypatch.setattr(parallel, "host_metrics", real)
  resumed = job.run(two, killed, progress=False)
  assert [r["resumed_from"] for r in resumed["rows"]] == [0, 3]
  for r in report["rows"][:2]:
    name = r["name"].replace(":", "of")
    a, b = _kernels(full / "runs" / name), _kernels(killed / "runs" / name)
    for layer in a:
      np.testing.assert_allclose(a[layer], b[layer], atol=1e-6, rtol=0, err_msg=name)
  log = [json.loads(line) for line in open(killed / "runs" / rows["n:m"]["name"].replace(
      ":", "of") / "metrics.jsonl")]
  assert [m["step"] for m in log] == list(range(1, 7))


def test_h2z_channel_pruning_trains_a_slimmed_student(tmp_path):
  cfg = {"generator": str(require_asset(H2Z)), "granularities": ("channel",),
         "sparsities": (0.5,), "steps": 2, "batch_size": 2, "crop_size": 64,
         "checkpoint_every": 2, "sample_every": 0, "latency_repeats": 1, "latency_batch": 1,
         "tensorboard": False, "eval_photos": ("astronaut",)}
  report = job.run(cfg, tmp_path, progress=False)
  (row,) = report["rows"]
  t = report["teacher"]
  assert row["how"].startswith("slimmed")
  # Half the channels of every group: about 4x fewer MACs and params (quadratic in width).
  assert 3.0 < t["macs"] / row["macs"] < 5.0
  assert 3.0 < t["params"] / row["params"] < 5.0
  assert row["nonzero_params"] >= 0.99 * row["params"]  # no zeros left: they were removed
  student, _ = load_model(tmp_path / "runs" / row["name"] / "model")
  assert student.stem < 16 or student.down[1] < 128


@pytest.mark.parametrize("override, message", [
    ({"sparsities": (1.0,)}, "sparsity must be in"),
    ({"granularities": ("block",)}, "unknown granularity"),
    ({"adv_weight": 0.1, "discriminator": ""}, "config.discriminator is empty"),
    ({"nm_group": 7, "granularities": ("n:m",)}, "7"),
    ({"schedule": "cosine"}, "unknown schedule"),
])
def test_bad_input_one_line_error(tmp_path, capsys, override, message):
  cfg_file = tmp_path / "cfg.py"
  cfg = _mnist_config(**override)
  cfg_file.write_text("def get_config():\n  return " + repr(cfg) + "\n")
  workdir = tmp_path / "w"
  assert cli.main(["selfsup", "--config", str(cfg_file), "--workdir", str(workdir),
                   "--no-progress"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("jaxgc: error:") and message in err[0], err
