"""Reliability over the command line's job table (issue 13): every job, present and future.

Each test is parametrized over ``cli.JOBS``, so a new job inherits it: a folder jaxgc did not
write, a workdir that is a file, a user's file under one of the job's output names, and Ctrl-C
sent to a real ``jaxgc`` subprocess once it is working. Each asserts the exit status, the single
``jaxgc: error:`` line on stderr and that every foreign file survives byte for byte. A full
disk is injected (ENOSPC) where jaxgc writes files.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from conftest import one_error_line
from conftest import require_asset

from jaxgc import cli
from jaxgc import ownership

ROOT = pathlib.Path(__file__).resolve().parents[1]
MLP_G = "mnist-mlpgan/G--300.ckpt"

# A run of each job that takes seconds on 2 CPU cores (on the MNIST MLP GAN), and where its
# progress shows once it is working: a file under the workdir whose appearance means the job
# holds its workdir (the lock) or is computing. A new job adds its row (test_every_job_has_a_row).
TINY = {
    "compress": (["--config", "mnist_mlp_ptq", "--config.sweep.weight_bits=(8,4,3,2)",
                  "--config.metrics.enabled=False"], ".staging-*"),
    "evaluate": (["--config", "eval_mnist_mlp", "--config.num_samples=2000",
                  "--config.reference.limit=2000", "--config.extractor=pixels",
                  "--config.kid_subset_size=500"], ".jaxgc.lock"),
    "qat": (["--config", "qat_mnist_mlp", "--config.steps=2000", "--config.checkpoint_every=1",
             "--config.eval_samples=64"], "metrics.jsonl"),
    "study": (["--config", "study_mnist_mlp", "--config.num_samples=500",
               "--config.extractor=pixels", "--config.real_reference.path="],
              ".jaxgc.lock"),
    "selfsup": (["--config", "selfsup_mnist_mlp", "--config.steps=2000",
                 "--config.granularities=('unstructured',)", "--config.sparsities=(0.5,)",
                 "--config.checkpoint_every=1", "--config.eval_samples=64",
                 "--config.metrics.extractor=none"], "runs/*/metrics.jsonl"),
    "train": None,     # the alias of selfsup
    "collab": (["--config", str(ROOT / "configs" / "collab_mnist_mlp.py"),
                "--config.search_steps=2000",
                "--config.methods=('collab',)", "--config.budgets=(0.5,)",
                "--config.checkpoint_every=1", "--config.eval_samples=64",
                "--config.metrics.extractor=none"], "runs/*/search/metrics.jsonl"),
    "distill": None,   # its teacher is the 2.5 GMACs horse->zebra generator: refusals only
    "gan": (["--config", str(ROOT / "configs" / "gan_dcgan_fmnist.py"), "--config.steps=2000",
             "--config.checkpoint_every=1", "--config.batch_size=8", "--config.model.g_width=8",
             "--config.model.d_width=8", "--config.fid.extractor=pixels",
             "--config.fid.every=0", "--config.sample_every=0"], "metrics.jsonl"),
}


def _digest(root: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def _outputs(job: str) -> tuple[str, ...]:
  return importlib.import_module(f"jaxgc.jobs.{cli.JOBS[job][0]}").OUTPUTS


def _argv(job: str, workdir: pathlib.Path) -> list[str]:
  row = TINY.get(job) or TINY["selfsup" if job == "train" else "compress"]
  config = row[0] if job not in ("distill",) else ["--config", "crd_h2z"]
  return [job, "--workdir", str(workdir), "--no-progress", *config]




def test_every_job_has_a_row():
  assert set(TINY) == set(cli.JOBS), "add the new job to TINY"
  for job in cli.JOBS:
    assert _outputs(job), job


@pytest.mark.parametrize("job", list(cli.JOBS))
def test_a_folder_jaxgc_did_not_write_is_refused_untouched(job, tmp_path, capsys):
  project = tmp_path / "project"
  (project / "data").mkdir(parents=True)
  (project / "notes.txt").write_text("mine")
  (project / "data" / "x.bin").write_bytes(b"\x00\x01")
  before = _digest(tmp_path)
  one_error_line(capsys, _argv(job, project), f"folder {project} is not empty",
                  "was not written by jaxgc", "'data'")
  assert _digest(tmp_path) == before
  assert sorted(os.listdir(project)) == ["data", "notes.txt"]


@pytest.mark.parametrize("job", list(cli.JOBS))
def test_a_workdir_that_is_a_file_is_refused(job, tmp_path, capsys):
  path = tmp_path / "results"
  path.write_text("keep")
  one_error_line(capsys, _argv(job, path), f"workdir {path} is not writable",
                  f"{path} is not a directory")
  assert path.read_text() == "keep"


@pytest.mark.parametrize("job", list(cli.JOBS))
def test_a_users_file_under_an_output_name_survives(job, tmp_path, capsys):
  """A workdir of jaxgc's (another job's manifest) where the user put a file under a name this
  job writes: refused before any work, the file and the manifest unchanged."""
  workdir = tmp_path / "wd"
  workdir.mkdir()
  ownership.claim(str(workdir), "other", ("other.txt",))
  (workdir / "other.txt").write_text("jaxgc's")
  ownership.finish(str(workdir), "ok")
  name = sorted(_outputs(job))[0]
  (workdir / name).write_bytes(b"the user's")
  before = _digest(tmp_path)
  one_error_line(capsys, _argv(job, workdir), f"{workdir / name} was not written by jaxgc")
  assert _digest(tmp_path) == before


def _wait_for(pattern: str, root: pathlib.Path, proc: subprocess.Popen, timeout: float) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    hits = list(root.glob(pattern))
    if any(p.is_dir() or p.stat().st_size for p in hits if p.exists()):
      return
    if proc.poll() is not None:
      raise AssertionError(f"the job ended (status {proc.returncode}) before it worked: "
                           f"{proc.stderr.read()[-2000:]}")
    time.sleep(0.05)
  proc.kill()
  raise AssertionError(f"{pattern} did not appear in {timeout} s")


@pytest.mark.parametrize("job", [j for j in cli.JOBS if TINY[j] is not None])
def test_ctrl_c_in_a_real_subprocess(job, tmp_path):
  """SIGINT once the job is working: status 130, one line, checkpoints consistent (the same
  command then runs to the end), the user's file in the workdir untouched."""
  require_asset(MLP_G)
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  workdir = tmp_path / "wd"
  workdir.mkdir()
  ownership.claim(str(workdir), job, ())   # the workdir of an earlier jaxgc run ...
  ownership.finish(str(workdir), "ok")
  (workdir / "notes.txt").write_text("the user's notes\n")   # ... where the user keeps notes
  manifest_before = (workdir / ownership.MANIFEST).read_text()
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  proc = subprocess.Popen([sys.executable, "-m", "jaxgc", *_argv(job, workdir)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  try:
    _wait_for(TINY[job][1], workdir, proc, timeout=240)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  lines = [x for x in err.splitlines() if not x.startswith("jaxgc: note: ")]
  assert proc.returncode == 130, err[-3000:]
  assert lines == ["jaxgc: error: interrupted (Ctrl-C); rerun the same command to resume from "
                   "the last checkpoint"], err[-3000:]
  assert (workdir / "notes.txt").read_text() == "the user's notes\n"
  assert not list(workdir.glob(".staging-*")) and not (workdir / ".jaxgc.lock").exists()
  text = (workdir / ownership.MANIFEST).read_text()
  on_disk = {k for k in _digest(workdir) if k not in (ownership.MANIFEST, "notes.txt")}
  if not on_disk:    # interrupted before it wrote a file: the manifest is as it was
    assert text == manifest_before
  else:              # the manifest lists what the interrupted run left, to resume from
    manifest = json.loads(text)
    assert manifest["runs"][-1]["status"] == "interrupted"
    assert set(manifest["files"]) == on_disk
  if job == "qat":   # its checkpoints are whole: the same command, two steps longer, resumes
    with open(workdir / "metrics.jsonl") as f:
      done = [json.loads(line)["step"] for line in f]
    assert done == list(range(1, len(done) + 1))
    argv = _argv(job, workdir)
    argv[argv.index("--config.steps=2000")] = f"--config.steps={done[-1] + 2}"
    assert cli.main(argv) == 0
    with open(workdir / "metrics.jsonl") as f:
      assert [json.loads(line)["step"] for line in f] == list(range(1, done[-1] + 3))
    assert (workdir / "notes.txt").read_text() == "the user's notes\n"


def test_a_full_disk_names_the_path_and_leaves_nothing_partial(tmp_path, capsys, monkeypatch):
  """ENOSPC injected where jaxgc writes: a report (``_fileio``) and a model folder (orbax)."""
  from jaxgc import _fileio  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckpt = require_asset(MLP_G)
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  real_fsync = os.fsync

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(_fileio.os, "fsync", full)
  workdir = tmp_path / "wd"
  line = one_error_line(capsys, ["evaluate", "--workdir", str(workdir), "--no-progress",
                                  "--config", "eval_mnist_mlp", "--config.num_samples=100",
                                  "--config.reference.limit=100", "--config.extractor=pixels",
                                  "--config.kid_subset_size=50"],
                         "No space left on device", str(workdir))
  assert "metrics.json" in line or ownership.MANIFEST in line
  assert not [p for p in _digest(tmp_path) if ".tmp" in p]
  monkeypatch.setattr(_fileio.os, "fsync", real_fsync)

  def full_save(self, directory, *args, **kwargs):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "half"), "wb") as f:
      f.write(b"\0" * 10)
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", full_save)
  out = tmp_path / "model"
  one_error_line(capsys, ["convert", str(ckpt), str(out), "--arch", "mlp_generator"],
                  "No space left on device", str(out))
  assert not out.exists() and not list(tmp_path.glob(".model*"))
