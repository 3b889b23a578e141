"""Subprocess body of tests/test_multiprocess.py's collab check: one of 2 local processes with 2
CPU devices each runs ``jaxgc collab --distributed`` on a config file.

Run as ``python _multiprocess_collab.py PROCESS_ID PORT CONFIG WORKDIR``: the CLI's
``--distributed`` calls ``jax.distributed.initialize()``, which on a pod finds its peers from the
environment; here it is pointed at 127.0.0.1:PORT (2 processes, gloo CPU collectives). On
process 1 any file written under WORKDIR outside orbax's collective ``checkpoints/`` raises.
First both processes are pointed at ``WORKDIR_foreign``, which holds a user's file: process 0
refuses it and process 1 stops with it (exit status 2 on both).
The command runs twice: the second run finds every setting finished (process 0's decision,
broadcast) and measures the saved models again. Prints ``RESULT <json>`` for each run (per
setting the fields the test compares with a one-process run) and ``OK``.
"""

import builtins
import contextlib
import functools
import io
import json
import os
import sys

PROCESS_ID, PORT, CONFIG, WORKDIR = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAXGC_NO_COMPILATION_CACHE"] = "1"

import jax  # noqa: E402  (after the environment, on purpose)

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize = functools.partial(   # what a pod's environment would say
    jax.distributed.initialize, f"127.0.0.1:{PORT}", num_processes=2, process_id=PROCESS_ID)

from jaxgc import _fileio  # noqa: E402
from jaxgc import cli  # noqa: E402
from jaxgc.jobs import collab  # noqa: E402

FIELDS = ("name", "g_keep", "d_keep", "g_macs", "d_macs", "g_budget_ratio", "d_budget_ratio",
          "psnr", "ssim", "fid")


def _forbid_writes_under(root: str) -> None:
  """Makes every file write under ``root`` outside a ``checkpoints/`` folder raise."""
  root = os.path.abspath(root) + os.sep

  def forbidden(path) -> bool:
    path = os.path.abspath(os.fspath(path))
    return path.startswith(root) and f"{os.sep}checkpoints{os.sep}" not in path

  real_open, real_atomic = builtins.open, _fileio.atomic_write_text

  def guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and forbidden(file):
      raise AssertionError(f"process {PROCESS_ID} wrote {file}")
    return real_open(file, mode, *args, **kwargs)

  def guarded_atomic(path, *args, **kwargs):
    if forbidden(path):
      raise AssertionError(f"process {PROCESS_ID} wrote {path}")
    return real_atomic(path, *args, **kwargs)

  builtins.open, _fileio.atomic_write_text = guarded_open, guarded_atomic


def main() -> None:
  captured = {}
  real_run = collab.run

  def run(*args, **kwargs):
    captured["report"] = real_run(*args, **kwargs)
    return captured["report"]

  collab.run = run
  # A workdir holding a user's file: process 0 refuses it, and process 1 stops with it instead
  # of waiting for process 0 in the run's first collective.
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    status = cli.main(["collab", "--config", CONFIG, "--workdir", WORKDIR + "_foreign",
                       "--distributed", "--no-progress"])
  assert status == 2, (status, err.getvalue())
  assert ("was not written by jaxgc" if PROCESS_ID == 0 else
          "process 0 refused the workdir") in err.getvalue(), err.getvalue()
  print(f"process {PROCESS_ID}: refused workdir -> {err.getvalue().strip()}")
  if PROCESS_ID != 0:
    _forbid_writes_under(WORKDIR)
  for _ in range(2):   # the second run skips every finished setting
    status = cli.main(["collab", "--config", CONFIG, "--workdir", WORKDIR, "--distributed",
                       "--no-progress"])
    assert status == 0, status
    assert jax.process_count() == 2 and len(jax.devices()) == 4, jax.devices()
    rows = [{k: r.get(k) for k in FIELDS} for r in captured["report"]["rows"]]
    print("RESULT " + json.dumps(rows))
  print("OK")


if __name__ == "__main__":
  main()
  sys.exit(0)
