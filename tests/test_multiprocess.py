"""Two local processes (``jax.distributed.initialize`` on 127.0.0.1, gloo CPU collectives), two
CPU devices each: a 4-device ``'data'`` mesh spanning both. Each process holds its own half of
the features or of the batch; FID statistics, exact k-NN and LSH precision/recall, and one CRD
distillation train step equal what one device computes holding everything
(``tests/_multiprocess_check.py`` runs in each process and prints what it compared).
"""

import os
import pathlib
import socket
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).with_name("_multiprocess_check.py")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_device():
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(i), port], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=SCRIPT.parent)
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
  assert all("equal to one device" in out for out in outs), report
