"""Two local processes (``jax.distributed.initialize`` on 127.0.0.1, gloo CPU collectives), two
CPU devices each: a 4-device ``'data'`` mesh spanning both. Each process holds its own half of
the features or of the batch; FID statistics, exact k-NN and LSH precision/recall, and one CRD
distillation train step equal what one device computes holding everything
(``tests/_multiprocess_check.py`` runs in each process and prints what it compared); and
``jaxgc collab --distributed`` equals a one-process run (``tests/_multiprocess_collab.py``).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

SCRIPT = pathlib.Path(__file__).with_name("_multiprocess_check.py")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(script: pathlib.Path, *args: str) -> list[str]:
  """Runs ``script PROCESS_ID PORT *args`` as processes 0 and 1; asserts both exit 0 and end
  with ``OK``; returns their outputs (gloo's chatter dropped)."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(script), str(i), port, *args], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=script.parent)
           for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  report = "\n".join(f"--- process {i} (exit {p.returncode}) ---\n" + "\n".join(
      l for l in out.splitlines() if not l.startswith("[Gloo]"))
      for i, (p, out) in enumerate(zip(procs, outs)))
  print(report)
  assert all(p.returncode == 0 for p in procs), report
  assert all(out.rstrip().endswith("OK") for out in outs), report
  return outs


def test_two_processes_equal_one_device():
  outs = _two_processes(SCRIPT)
  assert all("equal to one device" in out for out in outs), "\n".join(outs)


def test_collab_distributed_equals_one_process(tmp_path):
  """``jaxgc collab --distributed`` on 2 processes x 2 CPU devices (each process placing its
  devices' rows of every global batch) trains, prunes and measures what one process does (to
  1e-4), and a rerun skips the finished settings on both; process 0 alone writes (process 1
  raises on any file write outside orbax's checkpoints): one log line per step, one report.
  The pair is pix2pix-style (a conditional PatchGAN reading input and output), so the
  one-process reference also compiles and runs the collaborative step with a conditional D.

  Tolerances: one device here and 4 devices over gloo sum the batch in different orders
  (float32); the first runs differed by under 1e-5 in every compared value, so 1e-4 leaves
  room for other CPUs while a wrong batch, a lost update or a duplicated step is far outside."""
  import _collab_fixture as fx  # pylint: disable=import-outside-toplevel
  from jaxgc.checkpoint import load_any_model  # pylint: disable=import-outside-toplevel
  from jaxgc.checkpoint import save_model  # pylint: disable=import-outside-toplevel
  from jaxgc.jobs import collab  # pylint: disable=import-outside-toplevel
  mods, _, _, gv, dv, _ = fx.tiny_image_pair(conditional=True)
  save_model(tmp_path / "g", mods.generator, gv)
  save_model(tmp_path / "d", mods.discriminator, dv)
  config = {"generator": str(tmp_path / "g"), "discriminator": str(tmp_path / "d"),
            "methods": ("collab", "magnitude_l1"), "budgets": (0.5,), "search_steps": 2,
            "finetune_steps": 1, "batch_size": 8, "k": 3, "m": 1, "sigma": 0.05,
            "d_outputs": "logits", "feature_layer": "conv_3",
            "data": {"size": fx.IMAGE_SIZE, "photos": ("coffee",),
                     "eval_photos": ("chelsea",)},
            "eval_samples": 8, "checkpoint_every": 1, "latency_repeats": 1,
            "latency_batch": 2, "tensorboard": True, "agent_dim": 8,
            "metrics": {"extractor": "pixels", "nearest_k": 3}}
  (tmp_path / "config.py").write_text(f"def get_config():\n  return {config!r}\n")
  one = collab.run(config, tmp_path / "one", progress=False)
  row = one["rows"][0]
  assert abs(row["g_budget_ratio"] / 0.5 - 1) <= 0.02, row["g_budget_ratio"]
  assert abs(row["d_budget_ratio"] / 0.5 - 1) <= 0.02, row["d_budget_ratio"]
  assert row["d_macs"] < one["teacher"]["d_macs"] and np.isfinite(row["psnr"])

  (tmp_path / "two_foreign").mkdir()
  (tmp_path / "two_foreign" / "notes.txt").write_text("a user's file")
  outs = _two_processes(SCRIPT.with_name("_multiprocess_collab.py"), str(tmp_path / "config.py"),
                        str(tmp_path / "two"))
  assert all("refused workdir" in out for out in outs), outs   # both stopped, none waited
  assert os.listdir(tmp_path / "two_foreign") == ["notes.txt"]
  results = [json.loads(l[7:]) for out in outs for l in out.splitlines()
             if l.startswith("RESULT ")]
  assert len(results) == 4, outs   # two runs on each process, the second skipping every setting
  for rows in results:
    assert [r["name"] for r in rows] == [r["name"] for r in one["rows"]]
    for a, b in zip(one["rows"], rows):
      for key in ("g_keep", "d_keep", "g_macs", "d_macs"):
        assert a[key] == b[key], (a["name"], key, a[key], b[key])
      for key in ("g_budget_ratio", "d_budget_ratio", "psnr", "ssim", "fid"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-4,
                                   err_msg=f"{a['name']} {key}")
  assert "| collab | 0.5 |" in outs[0] and "| collab | 0.5 |" not in outs[1]   # 0 prints it
  for name in ("collab_b0.50/search", "collab_b0.50/finetune", "magnitude_l1_b0.50/finetune"):
    log = lambda wd: [json.loads(l) for l in (tmp_path / wd / "runs" / name /  # noqa: E731
                                             "metrics.jsonl").read_text().splitlines()]
    single, multi = log("one"), log("two")
    assert [r["step"] for r in multi] == [r["step"] for r in single], name   # each step once
    for a, b in zip(single, multi):
      np.testing.assert_allclose([b[k] for k in a], [a[k] for k in a], rtol=1e-4, atol=1e-5,
                                 err_msg=name)
  # The saved pairs compute the same function. (Their parameters are compared through it: the
  # biases before an instance norm get no gradient but float noise, which Adam scales up to a
  # step of about its learning rate, and the norm cancels.)
  x = np.random.default_rng(0).uniform(-1, 1, (4, fx.IMAGE_SIZE, fx.IMAGE_SIZE, 3)).astype(
      np.float32)
  applied = {}
  for wd in ("one", "two"):
    g, g_v = load_any_model(tmp_path / wd / "runs" / "collab_b0.50" / "model_g")
    d, d_v = load_any_model(tmp_path / wd / "runs" / "collab_b0.50" / "model_d")
    y = g.apply(g_v, x)
    applied[wd] = (np.asarray(y), np.asarray(d.apply(d_v, np.concatenate([x, y], -1))))
  for a, b in zip(applied["one"], applied["two"]):
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
  two = json.loads((tmp_path / "two" / "report.json").read_text())
  assert two["dynamics"]["collab_b0.50"]["step"] == [1, 2]
  assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
      p.name for p in (tmp_path / "one").iterdir())
