"""Shared test helpers: the real assets of ``$JAXGC_ASSETS``.

A test that needs an asset skips, saying why, only when ``JAXGC_ASSETS`` is unset, and fails
naming the path when it is set but the file is missing (CI sets it).
"""

import os
import pathlib
import subprocess
import sys

import pytest

# CLI jobs run inside the test process must not turn JAX's persistent compilation cache on for
# the rest of the session (tests/test_cli.py tests it with this unset).
os.environ.setdefault("JAXGC_NO_COMPILATION_CACHE", "1")


def assets_root() -> pathlib.Path:
  """``$JAXGC_ASSETS``; skips the calling test when it is unset."""
  root = os.environ.get("JAXGC_ASSETS")
  if not root:
    pytest.skip("JAXGC_ASSETS is unset: real checkpoints and data not available")
  return pathlib.Path(root)


def require_asset(rel: str) -> pathlib.Path:
  """The asset ``rel`` under ``$JAXGC_ASSETS``; skip if unset, fail if missing."""
  path = assets_root() / rel
  if not path.is_file():
    pytest.fail(f"JAXGC_ASSETS is set but the asset is missing: {path}")
  return path


@pytest.fixture(scope="module")
def assets() -> pathlib.Path:
  """``$JAXGC_ASSETS`` as a path; skips the module's asset tests when it is unset."""
  return assets_root()


def asset_path(assets: pathlib.Path, rel: str) -> pathlib.Path:
  """``assets / rel``; fails, naming the path, when the file is missing."""
  path = assets / rel
  if not path.is_file():
    pytest.fail(f"JAXGC_ASSETS is set but the asset is missing: {path}")
  return path


def one_error_line(capsys, argv, *needles, status=2) -> str:
  """Runs ``jaxgc`` in-process on ``argv`` and asserts the exit ``status``, nothing on stdout and
  exactly one ``jaxgc: error:`` line on stderr (a ``jaxgc: note:`` of an alias aside) holding
  every needle; returns that line."""
  from jaxgc import cli  # pylint: disable=import-outside-toplevel
  capsys.readouterr()
  rc = cli.main(argv)
  out, err = capsys.readouterr()
  lines = [x for x in err.splitlines() if not x.startswith("jaxgc: note: ")]
  assert rc == status, err
  assert len(lines) == 1 and lines[0].startswith("jaxgc: error: "), err
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  assert out == ""
  return lines[0]


def run_on_fake_devices(script: str, devices: int = 8, timeout: float = 300) -> str:
  """Runs ``tests/<script>`` in a fresh Python with ``devices`` fake CPU devices (XLA_FLAGS is
  read only when jax starts, so sharding checks need their own process); asserts that it exits
  0 and prints ``OK``, and returns its stdout."""
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                      + f" --xla_force_host_platform_device_count={devices}")
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
  proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name(script))],
                        env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "OK" in proc.stdout
  return proc.stdout
