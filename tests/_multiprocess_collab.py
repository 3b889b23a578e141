"""Subprocess body of tests/test_multiprocess.py's collab check: one of 2 local processes with 2
CPU devices each runs ``jaxgc collab --distributed`` on a config file.

Run as ``python _multiprocess_collab.py PROCESS_ID PORT CONFIG WORKDIR``: the CLI's
``--distributed`` calls ``jax.distributed.initialize()``, which on a pod finds its peers from the
environment; here it is pointed at 127.0.0.1:PORT (2 processes, gloo CPU collectives). Prints
``RESULT <json>`` (per setting the fields the test compares with a one-process run) and ``OK``.
"""

import functools
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

from jaxgc import cli  # noqa: E402
from jaxgc.jobs import collab  # noqa: E402

FIELDS = ("name", "g_keep", "d_keep", "g_macs", "d_macs", "g_budget_ratio", "d_budget_ratio",
          "psnr", "ssim", "fid")


def main() -> None:
  captured = {}
  real_run = collab.run

  def run(*args, **kwargs):
    captured["report"] = real_run(*args, **kwargs)
    return captured["report"]

  collab.run = run
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
