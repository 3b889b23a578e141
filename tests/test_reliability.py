"""Never lose a user's file, never score a broken model, one line for every failure (issue 13).

Each test runs the real command line in-process on a real temporary file system and checks the
exit status, the single ``jaxgc: error:`` line on stderr and that every file jaxgc did not write
is still there byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import jax
import numpy as np
import pytest

from conftest import one_error_line
from conftest import require_asset

from jaxgc import cli
from jaxgc.checkpoint import load_model
from jaxgc.checkpoint import save_model
from jaxgc.convert import CheckpointError
from jaxgc.data import inputs
from jaxgc.models import MLPGenerator


def _digest(root: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}




def _small_generator(tmp_path: pathlib.Path, nan: bool = False) -> pathlib.Path:
  g = MLPGenerator(z_dim=8, hidden=(16,), image_shape=(4, 4, 1))
  v = jax.tree.map(np.array, g.init(jax.random.key(0), np.zeros((1, 8), np.float32)))
  if nan:
    v["params"]["dense_1"]["kernel"][0, 0] = np.nan
  out = tmp_path / ("nan_model" if nan else "model")
  save_model(out, g, v)
  return out


def test_convert_refuses_a_folder_holding_user_files(tmp_path, capsys):
  ckpt = require_asset("mnist-mlpgan/G--300.ckpt")
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  project = tmp_path / "project"
  project.mkdir()
  (project / "notes.txt").write_text("mine")
  (project / "data").mkdir()
  (project / "data" / "x.bin").write_bytes(b"\x00\x01")
  before = _digest(project)
  one_error_line(capsys, ["convert", str(ckpt), str(project), "--arch", "mlp_generator"],
                  "is not a jaxgc model folder", "it holds 'data'")
  assert _digest(project) == before
  # A model folder jaxgc wrote is replaced; an existing file is refused.
  out = tmp_path / "model"
  assert cli.main(["convert", str(ckpt), str(out), "--arch", "mlp_generator"]) == 0
  assert cli.main(["convert", str(ckpt), str(out), "--arch", "mlp_generator"]) == 0
  (tmp_path / "afile").write_text("keep")
  one_error_line(capsys, ["convert", str(ckpt), str(tmp_path / "afile")],
                  "exists and is not a folder")
  assert (tmp_path / "afile").read_text() == "keep"


def test_compress_refuses_foreign_files_in_its_checkpoints_folder(tmp_path, capsys):
  workdir = tmp_path / "wd"
  (workdir / "checkpoints" / "mine").mkdir(parents=True)
  (workdir / "checkpoints" / "mine" / "weights.bin").write_bytes(b"user data")
  (workdir / "checkpoints" / "readme.txt").write_text("user notes")
  before = _digest(workdir)
  # Without a manifest, and without the layout of an earlier compress run: not jaxgc's.
  one_error_line(capsys, ["compress", "--config", "mnist_mlp_ptq", "--workdir", str(workdir),
                           "--no-progress"], "was not written by jaxgc", "'checkpoints'")
  assert _digest(workdir) == before
  # The layout of an earlier run (checkpoints/ and report.json): checkpoints/ is checked too.
  (workdir / "report.json").write_text("{}")
  before = _digest(workdir)
  one_error_line(capsys, ["compress", "--config", "mnist_mlp_ptq", "--workdir", str(workdir),
                           "--no-progress"], "which jaxgc did not write", "mine")
  assert _digest(workdir) == before


def test_a_model_folder_with_nan_weights_is_refused(tmp_path, capsys):
  path = _small_generator(tmp_path, nan=True)
  with pytest.raises(CheckpointError, match=r"NaN or Inf weights .* params/dense_1/kernel"):
    load_model(path)
  line = one_error_line(
      capsys, ["evaluate", "--workdir", str(tmp_path / "out"), f"--config.generators=('{path}',)",
               "--config.reference.kind=generator", f"--config.reference.path={path}",
               "--config.extractor=pixels", "--config.num_samples=16", "--no-progress"],
      "NaN or Inf", "params/dense_1/kernel")
  assert str(path) in line
  assert not (tmp_path / "out").exists()
  load_model(_small_generator(tmp_path))   # a finite one loads


def test_nan_outputs_never_become_pixels():
  x = np.zeros((3, 2, 2, 1), np.float32)
  x[1, 0, 0, 0] = np.nan
  with pytest.raises(FloatingPointError, match=r"1 of 3 images hold NaN or Inf \(first: image 1\)"):
    inputs.to_uint8(x)
  assert inputs.to_uint8(np.zeros((2, 2, 2, 1), np.float32)).dtype == np.uint8


@pytest.mark.parametrize("body, needles", [
    ("def get_config(:\n  pass\n", ["line 1", "SyntaxError"]),
    ("import ml_collections\n\n\ndef get_config():\n  return 1 / 0\n",
     ["line 5", "ZeroDivisionError: division by zero"]),
    ("def get_config():\n  return 3\n", ["get_config() returned int"]),
    ("x = 1\n", ["defines no get_config()"]),
])
def test_config_file_errors_name_the_file_and_line(tmp_path, capsys, body, needles):
  cfg = tmp_path / "bad_config.py"
  cfg.write_text(body)
  one_error_line(capsys, ["compress", "--config", str(cfg), "--workdir", str(tmp_path / "w")],
                  str(cfg), *needles)
  assert not (tmp_path / "w").exists()


def test_unexpected_errors_are_one_line_unless_debugging(tmp_path, capsys, monkeypatch):
  from jaxgc.jobs import compress as job  # pylint: disable=import-outside-toplevel

  def broken(*args, **kwargs):
    raise RuntimeError("something deep broke\nsecond line")

  monkeypatch.setattr(job, "run", broken)
  argv = ["compress", "--config", "mnist_mlp_ptq", "--workdir", str(tmp_path / "w")]
  one_error_line(capsys, argv, "RuntimeError: something deep broke", "--debug")
  with pytest.raises(RuntimeError, match="something deep broke"):
    cli.main(argv + ["--debug"])
  monkeypatch.setenv("JAXGC_DEBUG", "1")
  with pytest.raises(RuntimeError):
    cli.main(argv)
  monkeypatch.delenv("JAXGC_DEBUG")

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(job, "run", interrupted)
  one_error_line(capsys, argv, "interrupted", status=130)


def test_every_job_documents_config_overrides(capsys):
  for name in cli.JOBS:
    with pytest.raises(SystemExit):
      cli.main([name, "--help"])
    assert "--config.KEY=VALUE" in capsys.readouterr().out, name


@pytest.mark.parametrize("override, needle", [
    ("--config.sweep.weight_bits=None", "'sweep.weight_bits' must be a tuple of int, got None"),
    ("--config.sweep.weight_bits=[[8, 4]]", "must be a tuple of int, got [[8, 4]]"),
    ("--config.batch_size=abc", "'batch_size' must be a int, got 'abc'"),
    ("--config.sweep.clip=(1,)", "'sweep.clip' must be a tuple of bool"),
])
def test_overrides_of_the_wrong_type_name_the_key(tmp_path, capsys, override, needle):
  one_error_line(capsys, ["compress", "--config", "mnist_mlp_ptq", "--workdir",
                           str(tmp_path / "w"), override], needle)
  assert not (tmp_path / "w").exists()


def test_a_truncated_or_corrupt_image_is_named(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from jaxgc.data import reference  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "imgs"
  folder.mkdir()
  for i in range(3):
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
  good = (folder / "1.png").read_bytes()
  (folder / "1.png").write_bytes(good[:len(good) // 2])        # truncated
  with pytest.raises(ValueError, match=r"cannot decode image .*1\.png"):
    reference.load_images(str(folder))
  (folder / "1.png").write_bytes(b"not a png at all")            # corrupt
  with pytest.raises(ValueError, match=r"cannot decode image .*1\.png"):
    reference.load_images(str(folder))


def test_a_folder_larger_than_the_open_file_limit_loads(tmp_path):
  """300 images under ``ulimit -n 256``: one file is open at a time."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "many"
  folder.mkdir()
  for i in range(300):
    Image.fromarray(np.full((4, 4), i % 256, np.uint8)).save(folder / f"{i:03d}.png")
  code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
          "from jaxgc.data import reference; x = reference.load_images(sys.argv[1]); "
          "print(x.shape, int(x[299, 0, 0, 0]))")
  proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                        text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "(300, 4, 4, 1) 43"


def test_evaluate_streams_a_reference_folder_in_bounded_batches(tmp_path, monkeypatch):
  """``jaxgc evaluate`` against a folder of 600 images, as a real subprocess under
  ``ulimit -n 256``; images reach the extractor in batches of at most ``STREAM_CHUNK``."""
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from jaxgc.data import reference  # pylint: disable=import-outside-toplevel
  from jaxgc.eval import extractors  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "ref"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(600):
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(folder / f"{i:03d}.png")
  # In-process: the extractor never sees more than a chunk, and the result equals the whole set.
  seen = []
  real = extractors.extract_features
  monkeypatch.setattr(extractors, "extract_features",
                      lambda images, *a, **k: seen.append(len(images)) or real(images, *a, **k))
  feats = extractors.reference_features(str(folder), "pixels", chunk=256, progress=False,
                                        cache_dir=str(tmp_path / "cache"))
  assert seen == [256, 256, 88]
  np.testing.assert_array_equal(feats, extractors.pixel_features(
      reference.load_images(str(folder))))
  assert [len(b) for b in reference.iter_images(str(folder), limit=300, chunk=128)] == [128, 128,
                                                                                      44]
  # As a user runs it: a subprocess with 256 open files at most.
  model = _small_generator(tmp_path)
  out = tmp_path / "out"
  argv = [sys.executable, "-m", "jaxgc", "evaluate", "--workdir", str(out),
          f"--config.generators=('{model}',)", f"--config.reference.path={folder}",
          "--config.extractor=pixels", "--config.num_samples=64", "--config.kid_subset_size=32",
          "--no-progress"]
  proc = subprocess.run(["bash", "-c", 'ulimit -n 256 && exec "$@"', "bash", *argv],
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAXGC_CACHE": str(tmp_path / "cache2"),
                             "PYTHONPATH": str(pathlib.Path(__file__).parents[1])})
  assert proc.returncode == 0, proc.stderr[-2000:]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["reference"]["n"] == 600 and metrics["results"][0]["n"] == 64


def test_a_config_rejected_late_does_not_block_the_corrected_rerun(tmp_path, capsys):
  """selfsup finds an N:M group that does not divide a layer only when it prunes: the rejected
  run must not leave a workdir that refuses the corrected config."""
  g = require_asset("mnist-mlpgan/G--300.ckpt")
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  workdir = tmp_path / "w"
  base = ["selfsup", "--config", "selfsup_mnist_mlp", "--workdir", str(workdir),
          f"--config.generator={g}", "--config.discriminator=", "--config.adv_weight=0.0",
          "--config.granularities=('n:m',)", "--config.sparsities=(0.75,)",
          "--config.steps=1", "--config.eval_samples=8", "--config.batch_size=8",
          "--config.checkpoint_every=1", "--config.sample_every=0", "--config.latency_repeats=1",
          "--config.latency_batch=1", "--config.metrics.extractor=none", "--no-progress"]
  one_error_line(capsys, base + ["--config.nm_group=7"], "7")
  assert cli.main(base + ["--config.nm_group=8"]) == 0


def _small_compress(workdir) -> list[str]:
  return ["compress", "--config", "mnist_mlp_ptq", "--workdir", str(workdir),
          "--config.sweep.weight_bits=(8,)", "--config.sweep.granularities=('per_channel',)",
          "--config.sweep.clip=(False,)", "--config.metrics.enabled=False", "--no-progress"]


def test_workdir_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path, capsys):
  import socket  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  require_asset("mnist-mlpgan/G--300.ckpt")
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  workdir = tmp_path / "wd"
  workdir.mkdir()
  lock = workdir / ".jaxgc.lock"
  host = socket.gethostname()
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    lock.write_text(f"{host} {live.pid}\n")
    one_error_line(capsys, _small_compress(workdir), "is in use by another jaxgc job",
                    f"pid {live.pid} on host {host}")
    lock.write_text(f"some-other-host {live.pid}\n")
    one_error_line(capsys, _small_compress(workdir), "on host some-other-host")
  finally:
    live.kill()
    live.wait()
  # The holder is gone: its lock is stale and taken over; a killed run's staging folder goes.
  lock.write_text(f"{host} {live.pid}\n")
  (workdir / ".staging-killed").mkdir()
  (workdir / ".staging-killed" / "partial.npz").write_bytes(b"half")
  assert cli.main(_small_compress(workdir)) == 0
  # A file the user adds later to jaxgc's workdir survives reruns.
  (workdir / "mine.txt").write_text("user file")
  lock.write_text(f"{host} {live.pid}\n")
  assert cli.main(_small_compress(workdir)) == 0
  assert sorted(os.listdir(workdir)) == ["checkpoints", "jaxgc-manifest.json", "mine.txt",
                                         "report.json", "report.md", "samples.png"]
  assert (workdir / "mine.txt").read_text() == "user file"


def test_truncated_weights_and_a_mismatched_spec_name_the_files(tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  from jaxgc import compress  # pylint: disable=import-outside-toplevel
  g = MLPGenerator(z_dim=8, hidden=(16,), image_shape=(4, 4, 1))
  v = g.init(jax.random.key(0), np.zeros((1, 8), np.float32))
  folder = tmp_path / "q"
  folder.mkdir()
  (folder / "spec.json").write_text(json.dumps(
      {"arch": "mlp_generator", "kind": "unconditional",
       "kwargs": {"z_dim": 8, "hidden": [16], "image_shape": [4, 4, 1]}}))
  compress.save_quantized(compress.quantize_variables(v, compress.QuantConfig(8)),
                          folder / "weights.npz")
  load_model(folder)                                             # intact: loads
  data = (folder / "weights.npz").read_bytes()
  (folder / "weights.npz").write_bytes(data[:len(data) // 2])     # truncated
  with pytest.raises(CheckpointError, match=r"cannot read the weights .*weights\.npz"):
    load_model(folder)
  (folder / "weights.npz").write_bytes(data)
  (folder / "spec.json").write_text(json.dumps(
      {"arch": "mlp_generator", "kind": "unconditional",
       "kwargs": {"z_dim": 8, "hidden": [32], "image_shape": [4, 4, 1]}}))   # wrong width
  with pytest.raises(CheckpointError, match=r"does not match .*spec\.json: params/dense_0"):
    load_model(folder)
  (folder / "spec.json").write_text("{not json")
  with pytest.raises(CheckpointError, match=r"cannot read the model spec .*spec\.json"):
    load_model(folder)


def test_every_output_is_listed_in_a_manifest_and_old_workdirs_are_adopted(tmp_path, capsys):
  import json  # pylint: disable=import-outside-toplevel
  from jaxgc import ownership  # pylint: disable=import-outside-toplevel
  from jaxgc.jobs import compress  # pylint: disable=import-outside-toplevel
  require_asset("mnist-mlpgan/G--300.ckpt")
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  workdir = tmp_path / "wd"
  assert cli.main(_small_compress(workdir)) == 0
  manifest = json.loads((workdir / ownership.MANIFEST).read_text())
  assert manifest["entries"] == sorted(compress.OUTPUTS)
  assert manifest["runs"][-1]["job"] == "compress" and manifest["runs"][-1]["status"] == "ok"
  on_disk = {k: os.path.getsize(workdir / k) for k in _digest(workdir)
             if k != ownership.MANIFEST}
  assert manifest["files"] == on_disk            # every file, with its bytes
  assert any(k.startswith("checkpoints/") and k.endswith("weights.npz") for k in on_disk)
  # Each model folder lists its own files too.
  setting = next(p for p in (workdir / "checkpoints").iterdir())
  assert "weights.npz" in json.loads((setting / ownership.MANIFEST).read_text())["files"]

  # A workdir written before manifests existed is recognised by its layout and adopted.
  (workdir / ownership.MANIFEST).unlink()
  for p in (workdir / "checkpoints").glob(f"*/{ownership.MANIFEST}"):
    p.unlink()
  assert cli.main(_small_compress(workdir)) == 0
  manifest = json.loads((workdir / ownership.MANIFEST).read_text())
  assert "earlier jaxgc compress run" in manifest["adopted"]

  # A folder holding the user's report.json (no manifest, not jaxgc's layout) is refused.
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "report.json").write_text('{"my": "results"}')
  one_error_line(capsys, _small_compress(mine), f"folder {mine} is not empty",
                  "'report.json'")
  assert sorted(os.listdir(mine)) == ["report.json"]
  assert (mine / "report.json").read_text() == '{"my": "results"}'

  # Another job's output name holding the user's file in jaxgc's workdir: refused, untouched.
  (workdir / "tradeoff.png").write_bytes(b"user picture")
  with pytest.raises(FileExistsError, match=r"tradeoff.png was not written by jaxgc"):
    ownership.claim(str(workdir), "study", ("report.json", "report.md", "tradeoff.png"))
  assert (workdir / "tradeoff.png").read_bytes() == b"user picture"


def test_a_refused_job_leaves_the_folder_as_it_found_it(tmp_path, capsys):
  from jaxgc import ownership  # pylint: disable=import-outside-toplevel
  fresh = tmp_path / "a" / "b"
  one_error_line(capsys, ["compress", "--config", "mnist_mlp_ptq", "--workdir", str(fresh),
                           "--config.sweep.weight_bits=(1,)", "--no-progress"], "sweep.weight_bits", "got 1")
  assert not (tmp_path / "a").exists()
  empty = tmp_path / "empty"
  empty.mkdir()
  one_error_line(capsys, ["compress", "--config", "mnist_mlp_ptq", "--workdir", str(empty),
                           "--config.sweep.weight_bits=(1,)", "--no-progress"], "sweep.weight_bits", "got 1")
  assert os.listdir(empty) == []
  with pytest.raises(ValueError, match=r"cannot read the jaxgc manifest"):
    (empty / ownership.MANIFEST).write_text("{not json")
    ownership.read(empty)


def test_a_sweep_records_a_broken_setting_goes_on_and_exits_1(tmp_path, capsys, monkeypatch):
  import json  # pylint: disable=import-outside-toplevel
  from jaxgc.jobs import compress as job  # pylint: disable=import-outside-toplevel
  require_asset("mnist-mlpgan/G--300.ckpt")
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  real = job.compress_variables

  def w4_is_broken(variables, row, cfg):   # a setting whose model outputs NaN
    fq, stored = real(variables, row, cfg)
    if row["weight_bits"] == 4:
      fq = jax.tree.map(lambda a: np.full_like(np.asarray(a), np.nan), fq)
    return fq, stored

  monkeypatch.setattr(job, "compress_variables", w4_is_broken)
  workdir = tmp_path / "wd"
  argv = _small_compress(workdir)
  argv[argv.index("--config.sweep.weight_bits=(8,)")] = "--config.sweep.weight_bits=(8,4)"
  capsys.readouterr()
  assert cli.main(argv) == 1
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith("jaxgc: error: 1 of 3 settings failed"), err
  assert "w4_per_channel (16 of 16 images hold NaN or Inf (first: image 0)" in err[0]
  report = json.loads((workdir / "report.json").read_text())
  status = {r["setting"]: r.get("status", "ok") for r in report["rows"]}
  assert status == {"fp32": "ok", "w8_per_channel": "ok", "w4_per_channel": "failed"}
  ok = [r for r in report["rows"] if r["setting"] == "w8_per_channel"][0]
  assert ok["psnr_db"] > 20 and "psnr_db" not in report["rows"][-1]   # no number for NaN
  assert sorted(os.listdir(workdir / "checkpoints")) == ["fp32", "w8_per_channel"]
  assert "- `w4_per_channel`: 16 of 16 images hold NaN" in (workdir / "report.md").read_text()


def test_the_manifest_on_disk_holds_only_what_a_user_reads(tmp_path):
  """A claim writes the job, its config hash and status; the file listing the run compares
  against on failure stays in memory (no derivable state in the user's folder mid-run)."""
  import json  # pylint: disable=import-outside-toplevel
  from jaxgc import ownership  # pylint: disable=import-outside-toplevel
  (tmp_path / "report.json").write_text("{}")
  manifest = ownership.claim(str(tmp_path), "study", ("report.json",),
                             signature=("report.json",))
  on_disk = json.loads((tmp_path / ownership.MANIFEST).read_text())
  assert on_disk == manifest and "files_at_claim" not in on_disk
  assert on_disk["runs"][-1]["status"] == "running"
  claimed = ownership.listing(str(tmp_path), manifest["entries"])
  ownership.finish(str(tmp_path), "failed", None, claimed)   # nothing changed: put back
  assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_the_cli_puts_the_signal_hooks_back(tmp_path):
  import signal  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  hook, handler = sys.unraisablehook, signal.getsignal(signal.SIGINT)
  assert cli.main(["compress", "--config", "mnist_mlp_ptq", "--workdir", str(tmp_path / "w"),
                   "--config.sweep.weight_bits=(1,)", "--no-progress"]) == 2
  assert sys.unraisablehook is hook and signal.getsignal(signal.SIGINT) is handler


def test_a_ctrl_c_right_after_the_claim_leaves_the_manifest_as_it_was(tmp_path, monkeypatch):
  """The claim and its file listing are one section a Ctrl-C does not cut: interrupted right
  after the manifest is written, the run still puts the old manifest back."""
  import signal  # pylint: disable=import-outside-toplevel
  from jaxgc import _signals  # pylint: disable=import-outside-toplevel
  from jaxgc import ownership  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "wd"
  workdir.mkdir()
  ownership.claim(str(workdir), "compress", ())
  ownership.finish(str(workdir), "ok")
  before = (workdir / ownership.MANIFEST).read_text()
  claim = ownership.claim

  def claim_then_ctrl_c(*args, **kwargs):
    out = claim(*args, **kwargs)
    _signals.handler(signal.SIGINT, None)   # as if Ctrl-C landed here
    return out

  monkeypatch.setattr(ownership, "claim", claim_then_ctrl_c)
  try:
    assert cli.main(["compress", "--config", "mnist_mlp_ptq", "--workdir", str(workdir),
                     "--config.sweep.weight_bits=(8,)", "--no-progress"]) == 130
  finally:
    _signals.reset()   # the recorded Ctrl-C would stop the next test's job
  assert (workdir / ownership.MANIFEST).read_text() == before
  assert sorted(os.listdir(workdir)) == [ownership.MANIFEST]


def test_resume_refuses_another_config_and_accepts_keys_added_since(tmp_path):
  """``runs.check_resume``: a changed key, nested ones by their dotted name, is refused in one
  line naming both values; resumable keys may change; a key the recorded config lacks (a run
  written before jaxgc added it) agrees only when the config holds its default."""
  from jaxgc.jobs import runs  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "config.json")
  defaults = {"steps": 10, "data": {"size": 64, "source": "photos"}, "checkpoint_every": 5,
              "new_key": 0.0}
  recorded = {"steps": 10, "data": {"size": 64}, "checkpoint_every": 5}
  runs.write_json(path, recorded)
  with pytest.raises(ValueError, match=r"with data\.size=64, but the config says data\.size=32"):
    runs.check_resume(path, {**defaults, "data": {"size": 32, "source": "photos"}}, (), True,
                      defaults)
  with pytest.raises(ValueError, match=r"new_key=None, but the config says new_key=1\.0"):
    runs.check_resume(path, {**defaults, "new_key": 1.0}, (), True, defaults)
  with pytest.raises(ValueError, match=r"data\.source=None, but the config says"):
    runs.check_resume(path, defaults, (), True, None)   # without defaults: refused
  assert json.loads(open(path).read()) == recorded   # nothing written on a refusal
  runs.check_resume(path, {**defaults, "checkpoint_every": 7}, ("checkpoint_every",), True,
                    defaults)
  assert json.loads(open(path).read())["checkpoint_every"] == 7   # the new config recorded
  runs.check_resume(path, {**defaults, "steps": 11}, (), False, defaults)   # no checkpoint yet
