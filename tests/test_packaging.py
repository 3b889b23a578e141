"""jaxgc as a user installs it: a non-editable ``pip install``, run from outside the repository.

Recipes and job configs must come from the installed package (``importlib.resources``), never
from the repository's folders, and the ``jaxgc`` command must know its version and commands.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

from conftest import require_asset

from jaxgc import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_package_list_is_the_tree():
  """pyproject.toml lists packages by hand (configs/ is mapped to jaxgc.configs): every package
  folder of jaxgc/ must be in it, so that none is missing from a wheel."""
  listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
               ["packages"])
  tree = {".".join(p.parent.relative_to(REPO).parts)
          for p in (REPO / "jaxgc").rglob("__init__.py")}
  assert listed == tree | {"jaxgc.configs"}


def test_help_has_one_line_per_command_and_version(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for name in ("convert", "export") + tuple(cli.JOBS):
    lines = [l for l in out.splitlines() if l.strip().startswith(name + " ")]
    assert len(lines) == 1, (name, out)
    i = out.splitlines().index(lines[0])
    nxt = out.splitlines()[i + 1] if i + 1 < len(out.splitlines()) else ""
    assert not nxt.startswith(" " * 10), f"the help of {name} wraps onto a second line"
  with pytest.raises(SystemExit) as e:
    cli.main(["--version"])
  assert e.value.code == 0
  import jaxgc  # pylint: disable=import-outside-toplevel
  assert capsys.readouterr().out.strip() == f"jaxgc {jaxgc.__version__}"


def test_configs_by_name_and_unknown_names():
  named = cli.load_config("cyclegan_h2z_ptq")
  by_path = cli.load_config(str(REPO / "configs" / "cyclegan_h2z_ptq.py"))
  assert named.to_dict() == by_path.to_dict()
  assert "cyclegan_h2z_ptq" in cli.shipped_configs()
  with pytest.raises(FileNotFoundError, match="config file not found: no_such_config"):
    cli.load_config("no_such_config")


def test_train_is_an_alias_of_selfsup(tmp_path, capsys):
  rc = cli.main(["train", "--config", str(tmp_path / "missing.py"), "--workdir",
                 str(tmp_path / "w")])
  err = capsys.readouterr().err
  assert rc == 2 and "alias of `jaxgc selfsup`" in err and "config file not found" in err


def _forget(*names):
  """Forgets old aliases imported earlier in this process, so importing them warns again."""
  for name in names:
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules and hasattr(sys.modules[parent], child):
      delattr(sys.modules[parent], child)


def test_old_module_paths_warn_and_reexport():
  _forget("jaxgc.train.selfsup", "jaxgc.train.distill")
  with pytest.warns(DeprecationWarning, match="jaxgc.train.selfsup is deprecated; import "
                    "jaxgc.train.selfsup_step"):
    from jaxgc.train import selfsup  # pylint: disable=import-outside-toplevel
  from jaxgc.train import gan_losses  # pylint: disable=import-outside-toplevel
  from jaxgc.train import selfsup_step  # pylint: disable=import-outside-toplevel
  assert selfsup.make_train_step is selfsup_step.make_train_step
  # Names that moved to another module are still found under the old one.
  assert selfsup.adversarial_loss is gan_losses.generator_loss
  with pytest.warns(DeprecationWarning):
    from jaxgc.train import distill  # pylint: disable=import-outside-toplevel
  assert distill.discriminator_gan_loss is gan_losses.discriminator_loss
  import jaxgc.train  # pylint: disable=import-outside-toplevel
  with pytest.warns(DeprecationWarning, match="jaxgc.train.generator_loss"):
    assert jaxgc.train.adversarial_loss is gan_losses.generator_loss
  _forget("jaxgc.train.selfsup", "jaxgc.train.distill")   # no alias leaks into later tests


def _venv_python(venv: pathlib.Path) -> pathlib.Path:
  return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def test_non_editable_install_runs_a_recipe_job_outside_the_repository(tmp_path):
  """``pip install --no-deps .`` (a wheel, not the source tree) into a venv whose dependencies
  come from the running environment, then ``jaxgc compress`` with the w4a8 recipe and a config
  named without a path, from a folder outside the repository."""
  ckpt = require_asset("mnist-mlpgan/G--300.ckpt")
  pytest.importorskip("torch", reason="torch reads the PyTorch checkpoint")
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
  py = _venv_python(venv)
  # The running environment may itself be a venv, whose packages --system-site-packages does
  # not reach: add its site-packages as a plain path (a .pth line is appended to sys.path and
  # its own .pth files, such as an editable install of jaxgc, are not run).
  inner_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                               "['purelib'])"], check=True, capture_output=True,
                              text=True).stdout.strip()
  pathlib.Path(inner_site, "outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  src = tmp_path / "src"   # a copy: pip's build/ folder must not land in the repository
  for name in ("jaxgc", "configs"):
    shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, src / name)
  install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                           capture_output=True, text=True, timeout=600)
  assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
  run_dir = tmp_path / "elsewhere"
  run_dir.mkdir()
  env = {**os.environ, "JAXGC_ASSETS": str(ckpt.parents[1].resolve()), "PYTHONPATH": ""}
  where = subprocess.run(
      [str(py), "-c", "import jaxgc, jaxgc.configs, jaxgc.compress.recipes as r; "
       "print(jaxgc.__file__); print(jaxgc.configs.__file__); print(r.__file__)"],
      cwd=run_dir, env=env, check=True, capture_output=True, text=True).stdout.split()
  assert all(pathlib.Path(p).is_relative_to(venv) for p in where), where
  proc = subprocess.run(
      [str(py), "-m", "jaxgc", "compress", "--config", "mnist_mlp_ptq", "--workdir", "out",
       "--config.sweep.weight_bits=(8,)", "--config.sweep.granularities=('per_channel',)",
       "--config.sweep.clip=(False,)", "--config.sweep.recipes=('w4a8',)",
       "--config.metrics.enabled=False", "--no-progress"],
      cwd=run_dir, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads((run_dir / "out" / "report.json").read_text())
  rows = {r["setting"]: r for r in report["rows"]}
  assert set(rows) == {"fp32", "w8_per_channel", "recipe_w4a8"}
  # w4a8 keeps the first and last layers at 8 bits and quantizes activations: it stores fewer
  # bytes than W8 and loses more PSNR than weights alone at 8 bits.
  assert rows["recipe_w4a8"]["bytes_on_disk"] < rows["w8_per_channel"]["bytes_on_disk"]
  assert rows["recipe_w4a8"]["psnr_db"] < rows["w8_per_channel"]["psnr_db"]
  assert (run_dir / "out" / "checkpoints" / "recipe_w4a8" / "calibration.json").is_file()
