"""The ``jaxgc`` command line: bad input, ``convert`` round trips, a ``compress`` smoke run.

Most tests call ``jaxgc.cli.main([...])`` in-process (``capsys`` reads stderr); one runs the
installed ``jaxgc`` console script to prove the entry point and its exit status, and one runs a
Python with ``torch`` blocked to prove converted models load without it.

Every bad input must give exactly one stderr line ``jaxgc: error: ...`` naming the problem and
the offending value, exit status 2, and leave the workdir (or the convert output's folder)
exactly as it was, byte for byte, hidden files included.

Real checkpoints come from ``$JAXGC_ASSETS`` (see the assets README): tests needing them skip
when it is unset, and fail naming the path when it is set but a file is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jax

from conftest import asset_path
from jaxgc import cli
from jaxgc import compress
from jaxgc import convert
from jaxgc import models
from jaxgc import report as report_lib
from jaxgc.checkpoint import load_model
from jaxgc.data import inputs as inputs_lib
from jaxgc.jobs import compress as job

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*_ptq.py"))          # jaxgc compress configs
EVAL_CONFIGS = sorted((REPO / "configs").glob("eval_*.py"))    # jaxgc evaluate configs

MLP_G = "mnist-mlpgan/G--300.ckpt"          # legacy (non-zip) torch.save format
DCGAN_G = "dcgan-digiface64/weights.tar"    # zip format
REAL_CHECKPOINTS = {
    # asset path: arch
    "cyclegan-h2z-gancompression/latest_net_G.pth": "sub_mobile_resnet_generator",
    DCGAN_G: "dcgan_generator",
    MLP_G: "mlp_generator",
    "mnist-mlpgan/D--300.ckpt": "mlp_discriminator",
    "mnist-dcgan-d/netD_epoch_99.pth": "dcgan_discriminator",
}
# The settings of the reduced sweep used by the bad-input tests' "previous run".
SMALL_SWEEP = {"weight_bits": (8, 4), "granularities": ("per_channel",), "clip": (False,)}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------




def snapshot(root: pathlib.Path) -> dict[str, str] | None:
  """``{relative path: "dir" | sha256 of the bytes}`` of everything under ``root`` (hidden
  files included; ``__pycache__`` of loaded config files ignored), or None if absent."""
  if not root.exists():
    return None
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d != "__pycache__"]
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
    for f in filenames:
      p = os.path.join(dirpath, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
  return dict(sorted(out.items()))


def expect_cli_error(capsys, argv: list[str], *needles: str) -> str:
  """Runs ``cli.main(argv)``; checks exit 2, one stderr line ``jaxgc: error: ...`` containing
  every needle (regular expressions), and nothing on stdout. Returns the line."""
  capsys.readouterr()
  rc = cli.main(argv)
  out, err = capsys.readouterr()
  lines = err.splitlines()
  assert rc == 2, f"exit status {rc}, stderr:\n{err}"
  assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
  line = lines[0]
  assert line.startswith("jaxgc: error: "), line
  for needle in needles:
    assert re.search(needle, line), f"{needle!r} not in error line: {line}"
  assert out == "", f"stdout on error: {out!r}"
  return line


def write_config(path: pathlib.Path, checkpoint: str, arch: str = "mlp_generator",
                 extra: str = "", full_sweep: bool = False) -> pathlib.Path:
  """A config file on the MLP generator; the reduced sweep unless ``full_sweep``."""
  sweep = "" if full_sweep else textwrap.dedent(f"""\
      c.inputs = ml_collections.ConfigDict({{"num_samples": 4}})
      c.sweep = ml_collections.ConfigDict({SMALL_SWEEP!r})
  """)
  body = textwrap.dedent(f"""\
      import ml_collections


      def get_config():
        c = ml_collections.ConfigDict()
        c.checkpoint = {checkpoint!r}
        c.arch = {arch!r}
  """) + textwrap.indent(sweep + textwrap.dedent(extra), "  ") + "  return c\n"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(body)
  return path


def example_batch(module, seed: int = 0) -> np.ndarray:
  shape = models.example_input(module, batch=2).shape
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def apply_batched(module, variables, x: np.ndarray, batch_size: int) -> np.ndarray:
  """As ``jaxgc.jobs.compress`` runs a model: jitted apply over batches."""
  return job._run_model(jax.jit(module.apply), variables, x, batch_size)  # pylint: disable=protected-access


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------

class _WritesMarker:
  """Unpickling this would run ``open(marker, "w")``, creating the marker file."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def bad_files(assets, tmp_path_factory) -> dict[str, pathlib.Path]:
  """Broken checkpoints: truncated (legacy and zip), pickled code (zip and legacy), NaN, Inf."""
  torch = pytest.importorskip("torch")
  root = tmp_path_factory.mktemp("bad_ckpts")
  files = {"missing": root / "no_such_checkpoint.pth", "marker": root / "EXECUTED"}
  for name, rel in [("truncated_legacy", MLP_G), ("truncated_zip", DCGAN_G)]:
    data = asset_path(assets, rel).read_bytes()
    files[name] = root / f"{name}{pathlib.Path(rel).suffix}"
    files[name].write_bytes(data[:len(data) // 2])
  sd = torch.load(asset_path(assets, MLP_G), map_location="cpu", weights_only=True)
  evil = {**sd, "payload": _WritesMarker(str(files["marker"]))}
  files["pickled_zip"] = root / "pickled_zip.pth"
  torch.save(evil, files["pickled_zip"])
  files["pickled_legacy"] = root / "pickled_legacy.pth"
  torch.save(evil, files["pickled_legacy"], _use_new_zipfile_serialization=False)
  for name, key, value in [("nan", "0.weight", float("nan")), ("inf", "2.weight", float("inf"))]:
    bad = {k: v.clone() for k, v in sd.items()}
    bad[key][3, 5] = value
    files[name] = root / f"{name}.pth"
    torch.save(bad, files[name])
  assert not files["marker"].exists()
  return files


# id: (checkpoint (a bad_files key, or an asset path), arch, CLI overrides, config-file lines,
#      regular expressions the error line must contain)
COMPRESS_CASES = {
    "missing_checkpoint": ("missing", "mlp_generator", [], "",
                           [r"not found", r"no_such_checkpoint\.pth"]),
    "missing_relative_checkpoint": ("@no-such-folder/G.ckpt", "mlp_generator", [], "",
                                    [r"not found", r"no-such-folder/G\.ckpt"]),
    "truncated_legacy": ("truncated_legacy", "mlp_generator", [], "",
                         [r"truncated", r"truncated_legacy\.ckpt"]),
    "truncated_zip": ("truncated_zip", "dcgan_generator", [], "",
                      [r"truncated", r"truncated_zip\.tar"]),
    "pickled_code_zip": ("pickled_zip", "mlp_generator", [], "",
                         [r"pickled code", r"pickled_zip\.pth"]),
    "pickled_code_legacy": ("pickled_legacy", "mlp_generator", [], "",
                            [r"pickled code", r"pickled_legacy\.pth"]),
    "wrong_arch": ("@" + MLP_G, "dcgan_generator", [], "",
                   [r"dcgan_generator", r"missing \d+ keys", r"main\.0\.weight",
                    r"unexpected \d+ keys", r"\b0\.weight"]),
    "nan_weight": ("nan", "mlp_generator", [], "", [r"NaN or Inf", r"\b0\.weight", r"nan\.pth"]),
    "inf_weight": ("inf", "mlp_generator", [], "", [r"NaN or Inf", r"\b2\.weight", r"inf\.pth"]),
    "bits_9": ("@" + MLP_G, "mlp_generator", ["--config.sweep.weight_bits=(8,9)"], "",
               [r"bits", r"2\.\.8", r"\b9\b"]),
    "bits_1": ("@" + MLP_G, "mlp_generator", ["--config.sweep.weight_bits=(1,)"], "",
               [r"bits", r"2\.\.8", r"\b1\b"]),
    "unknown_key_override": ("@" + MLP_G, "mlp_generator", ["--config.wieght_bits=4"], "",
                             [r"unknown config key", r"wieght_bits"]),
    "unknown_key_in_file": ("@" + MLP_G, "mlp_generator", [], "c.wieght_bits = 4\n",
                            [r"unknown config key", r"wieght_bits"]),
    "unknown_nested_key_in_file": ("@" + MLP_G, "mlp_generator", [],
                                   "c.sweep.weight_bit = (4,)\n",
                                   [r"unknown config key", r"sweep\.weight_bit\b"]),
    # A scalar where the config holds a tuple (``--config.sweep.weight_bits=4`` is what a user
    # asking for "just 4 bits" types) must be a clean error too, naming the key.
    "bits_not_an_int": ("@" + MLP_G, "mlp_generator", ["--config.sweep.symmetric=3"], "",
                        [r"symmetric", r"\b3\b"]),
    "zero_samples": ("@" + MLP_G, "mlp_generator", ["--config.inputs.num_samples=0"], "",
                     [r"num_samples", r"\b0\b"]),
}


@pytest.fixture(scope="module")
def previous_run(assets, tmp_path_factory) -> pathlib.Path:
  """A workdir holding a finished (reduced) compress run: report.json, checkpoints/, ..."""
  root = tmp_path_factory.mktemp("previous")
  cfg = write_config(root / "cfg" / "small.py", str(asset_path(assets, MLP_G)))
  wd = root / "wd"
  assert cli.main(["compress", "--config", str(cfg), "--workdir", str(wd), "--no-progress"]) == 0
  assert (wd / "report.json").is_file() and (wd / "checkpoints" / "w4_per_channel").is_dir()
  return wd


def _checkpoint_arg(spec: str, bad_files, assets) -> str:
  if spec.startswith("@"):
    rel = spec[1:]
    return str(assets / rel) if (assets / rel).exists() else rel  # relative: via JAXGC_ASSETS
  return str(bad_files[spec])


@pytest.mark.parametrize("workdir_state", ["empty", "previous_run"])
@pytest.mark.parametrize("case", list(COMPRESS_CASES))
def test_compress_bad_input(case, workdir_state, bad_files, assets, previous_run, tmp_path,
                            capsys):
  ckpt, arch, overrides, extra, needles = COMPRESS_CASES[case]
  cfg = write_config(tmp_path / "cfg" / "job.py", _checkpoint_arg(ckpt, bad_files, assets),
                     arch, extra)
  wd = tmp_path / "wd"
  if workdir_state == "empty":
    wd.mkdir()
  else:
    shutil.copytree(previous_run, wd)
  report_before = (wd / "report.json").read_bytes() if workdir_state == "previous_run" else None
  before = snapshot(tmp_path)

  expect_cli_error(capsys, ["compress", "--config", str(cfg), "--workdir", str(wd),
                            "--no-progress", *overrides], *needles)

  assert snapshot(tmp_path) == before, "the failed job changed the workdir or its folder"
  if report_before is not None:
    assert (wd / "report.json").read_bytes() == report_before
  assert not bad_files["marker"].exists(), "pickled code was executed"


def test_compress_bad_input_leaves_absent_workdir_absent(bad_files, tmp_path, capsys):
  """A job that fails does not create the workdir it was given (nor its parents)."""
  cfg = write_config(tmp_path / "cfg" / "job.py", str(bad_files["missing"]))
  wd = tmp_path / "runs" / "wd"
  before = snapshot(tmp_path)
  expect_cli_error(capsys, ["compress", "--config", str(cfg), "--workdir", str(wd),
                            "--no-progress"], r"not found", r"no_such_checkpoint\.pth")
  assert snapshot(tmp_path) == before


# id: (checkpoint, --arch or None, regular expressions the error line must contain)
CONVERT_CASES = {
    "missing_checkpoint": ("missing", None, [r"not found", r"no_such_checkpoint\.pth"]),
    "truncated_legacy": ("truncated_legacy", None, [r"truncated", r"truncated_legacy\.ckpt"]),
    "truncated_zip": ("truncated_zip", None, [r"truncated", r"truncated_zip\.tar"]),
    "pickled_code_zip": ("pickled_zip", None, [r"pickled code", r"pickled_zip\.pth"]),
    "pickled_code_legacy": ("pickled_legacy", None, [r"pickled code", r"pickled_legacy\.pth"]),
    "wrong_arch_mlp_as_dcgan": ("@" + MLP_G, "dcgan_generator",
                                [r"dcgan_generator", r"missing \d+ keys", r"main\.0\.weight",
                                 r"unexpected \d+ keys", r"\b0\.weight"]),
    "wrong_arch_dcgan_as_mlp": ("@" + DCGAN_G, "mlp_generator",
                                [r"mlp_generator", r"missing \d+ keys", r"\b0\.weight",
                                 r"unexpected \d+ keys", r"main\.0\.weight"]),
    "unknown_arch": ("@" + MLP_G, "no_such_arch", [r"unknown arch", r"no_such_arch"]),
    "nan_weight": ("nan", None, [r"NaN or Inf", r"\b0\.weight"]),
    "inf_weight": ("inf", None, [r"NaN or Inf", r"\b2\.weight"]),
}


@pytest.mark.parametrize("case", list(CONVERT_CASES))
def test_convert_bad_input(case, bad_files, assets, tmp_path, capsys):
  ckpt, arch, needles = CONVERT_CASES[case]
  out = tmp_path / "out" / "model"
  (tmp_path / "out").mkdir()
  before = snapshot(tmp_path)
  argv = ["convert", _checkpoint_arg(ckpt, bad_files, assets), str(out)]
  expect_cli_error(capsys, argv + (["--arch", arch] if arch else []), *needles)
  assert snapshot(tmp_path) == before
  assert not bad_files["marker"].exists(), "pickled code was executed"


def test_compress_workdir_under_a_file(assets, tmp_path, capsys):
  cfg = write_config(tmp_path / "cfg" / "job.py", str(asset_path(assets, MLP_G)))
  (tmp_path / "file.txt").write_text("not a folder\n")
  wd = tmp_path / "file.txt" / "wd"
  before = snapshot(tmp_path)
  expect_cli_error(capsys, ["compress", "--config", str(cfg), "--workdir", str(wd),
                            "--no-progress"], r"not writable", re.escape(str(wd)))
  assert snapshot(tmp_path) == before


def test_convert_outdir_under_a_file(assets, tmp_path, capsys):
  (tmp_path / "file.txt").write_text("not a folder\n")
  out = tmp_path / "file.txt" / "model"
  before = snapshot(tmp_path)
  expect_cli_error(capsys, ["convert", str(asset_path(assets, MLP_G)), str(out)],
                   r"file\.txt")
  assert snapshot(tmp_path) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions; chmod 0o500 cannot make an "
                    "unwritable workdir")
@pytest.mark.parametrize("workdir_state", ["empty", "previous_run"])
def test_compress_workdir_read_only(workdir_state, assets, previous_run, tmp_path, capsys):
  cfg = write_config(tmp_path / "cfg" / "job.py", str(asset_path(assets, MLP_G)))
  wd = tmp_path / "wd"
  if workdir_state == "empty":
    wd.mkdir()
  else:
    shutil.copytree(previous_run, wd)
  before = snapshot(tmp_path)
  os.chmod(wd, 0o500)
  try:
    expect_cli_error(capsys, ["compress", "--config", str(cfg), "--workdir", str(wd),
                              "--no-progress"], r"not writable", re.escape(str(wd)))
  finally:
    os.chmod(wd, 0o755)
  assert snapshot(tmp_path) == before


def test_console_script_exit_status(assets, tmp_path):
  """The installed ``jaxgc`` entry point: one error line and exit status 2 in a real process."""
  script = pathlib.Path(sys.executable).with_name("jaxgc")
  if not script.exists():
    script = shutil.which("jaxgc")
  assert script, "the jaxgc console script is not installed (pip install -e .)"
  cfg = write_config(tmp_path / "cfg" / "job.py", str(asset_path(assets, MLP_G)))
  wd = tmp_path / "wd"
  wd.mkdir()
  proc = subprocess.run(
      [str(script), "compress", "--config", str(cfg), "--workdir", str(wd), "--no-progress",
       "--config.sweep.weight_bits=(8,9)"],
      capture_output=True, text=True, timeout=100, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxgc: error: "), proc.stderr
  assert re.search(r"\b9\b", lines[0]), lines[0]
  assert proc.stdout == ""
  assert snapshot(wd) == {}


# --------------------------------------------------------------------------------------------
# jaxgc convert round trip
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(assets, tmp_path_factory) -> dict[str, pathlib.Path]:
  """Every real checkpoint through ``jaxgc convert`` (arch inferred)."""
  pytest.importorskip("torch")
  root = tmp_path_factory.mktemp("converted")
  out = {}
  for rel in REAL_CHECKPOINTS:
    src = asset_path(assets, rel)
    dst = root / rel.replace("/", "__")
    assert cli.main(["convert", str(src), str(dst)]) == 0
    out[rel] = dst
  return out


@pytest.mark.parametrize("rel", list(REAL_CHECKPOINTS))
def test_convert_round_trip(rel, converted, assets):
  arch = REAL_CHECKPOINTS[rel]
  path = converted[rel]
  spec = json.loads((path / "spec.json").read_text())
  assert spec["arch"] == arch
  assert spec["source"] == os.path.abspath(asset_path(assets, rel))
  assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == [], \
      "temporary folders left beside the converted model"

  module, variables = load_model(path)
  ref_module, ref_variables = convert.load_torch_checkpoint(asset_path(assets, rel))
  assert module == ref_module
  assert jax.tree.structure(variables) == jax.tree.structure(ref_variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(ref_variables)):
    assert a.dtype == np.float32 and np.array_equal(a, b)
  x = example_batch(module)
  np.testing.assert_array_equal(np.asarray(module.apply(variables, x)),
                                np.asarray(ref_module.apply(ref_variables, x)))


_NO_TORCH_SCRIPT = """
import sys
sys.modules["torch"] = None  # any "import torch" now raises ImportError
import json
import numpy as np
from jaxgc import cli
from jaxgc.checkpoint import load_model

dirs, x_path, out_path, ckpt = json.loads(sys.argv[1])
xs = np.load(x_path)
outs = {}
for key, d in dirs.items():
  module, variables = load_model(d)
  outs[key] = np.asarray(module.apply(variables, xs[key]))
np.savez(out_path, **outs)
assert sys.modules["torch"] is None
# Converting does need torch: a clean error, not a traceback.
rc = cli.main(["convert", ckpt, out_path + ".model"])
print("convert exit status", rc)
"""


def test_converted_models_load_without_torch(converted, assets, tmp_path):
  keys = {rel: f"m{i}" for i, rel in enumerate(REAL_CHECKPOINTS)}
  expected, xs = {}, {}
  for rel, key in keys.items():
    module, variables = convert.load_torch_checkpoint(asset_path(assets, rel))
    xs[key] = example_batch(module, seed=1)
    expected[key] = np.asarray(module.apply(variables, xs[key]))
  np.savez(tmp_path / "x.npz", **xs)
  arg = json.dumps([{keys[rel]: str(d) for rel, d in converted.items()}, str(tmp_path / "x.npz"),
                    str(tmp_path / "out.npz"), str(asset_path(assets, MLP_G))])
  proc = subprocess.run([sys.executable, "-c", _NO_TORCH_SCRIPT, arg], capture_output=True,
                        text=True, timeout=110, check=False)
  assert proc.returncode == 0, proc.stderr
  assert "convert exit status 2" in proc.stdout, proc.stdout
  assert re.search(r"^jaxgc: error: .*torch", proc.stderr, re.M), proc.stderr
  with np.load(tmp_path / "out.npz") as got:
    for key, want in expected.items():
      np.testing.assert_array_equal(got[key], want, err_msg=key)


# --------------------------------------------------------------------------------------------
# jaxgc compress smoke run (MLP generator, full default sweep)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compress_run(assets, tmp_path_factory) -> tuple[pathlib.Path, dict]:
  root = tmp_path_factory.mktemp("compress")
  cfg = write_config(root / "cfg" / "mlp.py", str(asset_path(assets, MLP_G)), full_sweep=True)
  wd = root / "wd"
  assert cli.main(["compress", "--config", str(cfg), "--workdir", str(wd), "--no-progress"]) == 0
  return wd, json.loads((wd / "report.json").read_text())


ROW_KEYS = {"setting", "weight_bits", "clip", "granularity", "bytes_on_disk", "size_ratio",
            "params", "macs", "psnr_db", "ssim", "max_abs_error"}


def _row(report, name):
  return next(r for r in report["rows"] if r["setting"] == name)


def test_compress_report(compress_run):
  wd, report = compress_run
  assert set(report) >= {"model", "inputs", "rows"}
  assert report["model"]["arch"] == "mlp_generator"
  assert report["inputs"]["shape"] == [8, 64]
  rows = report["rows"]
  assert len(rows) == 21  # fp32 + 5 bit widths x 2 clip x 2 granularities
  for r in rows:
    assert set(r) >= ROW_KEYS, sorted(ROW_KEYS - set(r))
  fp32 = rows[0]
  assert fp32["setting"] == "fp32" and fp32["weight_bits"] == 32
  assert fp32["size_ratio"] == 1 and fp32["max_abs_error"] == 0
  assert fp32["psnr_db"] is None and fp32["ssim"] == 1
  w8, w4 = _row(report, "w8_per_channel"), _row(report, "w4_per_channel")
  assert w8["psnr_db"] > 30
  assert w8["psnr_db"] > w4["psnr_db"]
  assert w8["size_ratio"] < 0.3
  assert w4["size_ratio"] < 0.2
  for r in rows:
    assert r["params"] == fp32["params"] > 0 and r["macs"] == fp32["macs"] > 0
    assert r["bytes_on_disk"] == (wd / "checkpoints" / r["setting"] / "weights.npz").stat().st_size
    assert r["size_ratio"] == pytest.approx(r["bytes_on_disk"] / fp32["bytes_on_disk"])
  assert (wd / "report.md").read_text().count("\n| w") == 20


def test_compress_workdir_contents(compress_run):
  wd, report = compress_run
  assert sorted(os.listdir(wd)) == ["checkpoints", "jaxgc-manifest.json", "report.json",
                                    "report.md", "samples.png"], \
      "leftover staging / temporary files in the workdir"
  assert sorted(os.listdir(wd / "checkpoints")) == sorted(r["setting"] for r in report["rows"])
  for r in report["rows"]:
    assert sorted(os.listdir(wd / "checkpoints" / r["setting"])) == [
        "jaxgc-manifest.json", "spec.json", "weights.npz"]


def test_compress_checkpoints_reproduce_metrics(compress_run, assets):
  """Each stored checkpoint, dequantized, gives exactly the outputs behind its row."""
  wd, report = compress_run
  cfg = job.resolve_config({"checkpoint": MLP_G})
  x = inputs_lib.latents(8, 64, report["inputs"]["seed"])
  src_module, src_variables = convert.load_torch_checkpoint(asset_path(assets, MLP_G))
  reference = None
  for r in report["rows"]:
    spec = json.loads((wd / "checkpoints" / r["setting"] / "spec.json").read_text())
    assert spec["arch"] == "mlp_generator"
    assert {k: spec["compression"][k] for k in ("setting", "weight_bits", "clip",
                                                "granularity")} == \
        {k: r[k] for k in ("setting", "weight_bits", "clip", "granularity")}
    module = models.build(spec["arch"], **spec["kwargs"])
    assert module == src_module
    stored = compress.load_quantized(wd / "checkpoints" / r["setting"] / "weights.npz")
    variables = compress.dequantize_variables(stored)
    # The weights the sweep ran are exactly the stored ones.
    fq, _ = job.compress_variables(src_variables, r, cfg)
    assert jax.tree.structure(variables) == jax.tree.structure(fq)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(fq)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=r["setting"])
    out = apply_batched(module, variables, x, int(cfg.batch_size))
    if reference is None:
      assert r["setting"] == "fp32"
      reference = out
      np.testing.assert_array_equal(
          out, apply_batched(src_module, src_variables, x, int(cfg.batch_size)))
    m = report_lib.image_metrics(reference, out)
    if r["psnr_db"] is None:
      assert m["psnr_db"] is None
    else:
      assert abs(m["psnr_db"] - r["psnr_db"]) <= 1e-6, r["setting"]
    assert abs(m["ssim"] - r["ssim"]) <= 1e-6, r["setting"]
    assert abs(m["max_abs_error"] - r["max_abs_error"]) <= 1e-6, r["setting"]


def test_compress_samples_png(compress_run, assets):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  wd, report = compress_run
  png = wd / "samples.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with Image.open(png) as im:
    im.verify()
  cell, pad, label_w = 128, 2, 210  # default sample_cell; jaxgc.report.sample_grid's layout
  n_rows = len(report["rows"])  # unconditional: no input row
  n_cols = report["inputs"]["shape"][0]
  with Image.open(png) as im:
    assert im.format == "PNG"
    assert im.size == (label_w + n_cols * (cell + pad), n_rows * (cell + pad))
    grid = np.asarray(im.convert("RGB"))
  # The first and last rows hold the fp32 and the last setting's outputs, in input order.
  x = inputs_lib.latents(8, 64, report["inputs"]["seed"])
  for i, r in [(0, report["rows"][0]), (n_rows - 1, report["rows"][-1])]:
    module = models.build("mlp_generator", **report["model"]["kwargs"])
    variables = compress.dequantize_variables(
        compress.load_quantized(wd / "checkpoints" / r["setting"] / "weights.npz"))
    imgs = inputs_lib.to_uint8(apply_batched(module, variables, x, 4))
    for j in (0, n_cols - 1):
      want = np.asarray(Image.fromarray(imgs[j][..., 0]).convert("RGB")
                        .resize((cell, cell), Image.Resampling.NEAREST))
      y0, x0 = i * (cell + pad), label_w + j * (cell + pad)
      np.testing.assert_array_equal(grid[y0:y0 + cell, x0:x0 + cell], want,
                                    err_msg=f"{r['setting']} sample {j}")


def test_compress_rerun_replaces_outputs(compress_run, assets, tmp_path):
  """A second run into a used workdir replaces its outputs and leaves nothing else behind."""
  wd = tmp_path / "wd"
  shutil.copytree(compress_run[0], wd)
  (wd / "notes.txt").write_text("mine\n")
  cfg = write_config(tmp_path / "cfg" / "small.py", str(asset_path(assets, MLP_G)))
  assert cli.main(["compress", "--config", str(cfg), "--workdir", str(wd), "--no-progress"]) == 0
  assert sorted(os.listdir(wd)) == ["checkpoints", "jaxgc-manifest.json", "notes.txt",
                                    "report.json", "report.md", "samples.png"]
  report = json.loads((wd / "report.json").read_text())
  assert [r["setting"] for r in report["rows"]] == ["fp32", "w8_per_channel", "w4_per_channel"]
  assert sorted(os.listdir(wd / "checkpoints")) == sorted(r["setting"] for r in report["rows"])
  assert (wd / "notes.txt").read_text() == "mine\n"


# --------------------------------------------------------------------------------------------
# the shipped configs
# --------------------------------------------------------------------------------------------


def test_configs_exist():
  names = [p.name for p in CONFIGS]
  assert "cyclegan_h2z_ptq.py" in names and "dcgan_digiface_ptq.py" in names
  assert EVAL_CONFIGS


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=[p.stem for p in EVAL_CONFIGS])
def test_eval_config_resolves(path):
  from jaxgc.jobs import evaluate as evaluate_job  # pylint: disable=import-outside-toplevel
  cfg = evaluate_job.resolve_config(cli.load_config(str(path)))
  assert cfg.generators and cfg.reference.path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_real_config_resolves(path):
  cfg = job.resolve_config(cli.load_config(str(path)))
  rows = job.settings(cfg)
  assert len(rows) == 21
  assert rows[0]["setting"] == "fp32"
  assert len({r["setting"] for r in rows}) == 21
  assert cfg.arch in models.ARCHS
  root = os.environ.get("JAXGC_ASSETS")
  if root:
    full = pathlib.Path(root) / cfg.checkpoint
    if not full.is_file():
      pytest.fail(f"JAXGC_ASSETS is set but the config's checkpoint is missing: {full}")
    assert inputs_lib.resolve_asset(cfg.checkpoint) == str(full)


def test_scalar_override_of_a_tuple_is_a_one_element_sweep(assets, tmp_path, capsys):
  cfg = tmp_path / "cfg.py"
  write_config(cfg, str(asset_path(assets, MLP_G)))
  rc = cli.main(["compress", "--config", str(cfg), "--workdir", str(tmp_path / "wd"),
                 "--no-progress", "--config.sweep.weight_bits=4", "--config.sweep.clip=True"])
  assert rc == 0, capsys.readouterr().err
  rows = json.loads((tmp_path / "wd" / "report.json").read_text())["rows"]
  assert [r["setting"] for r in rows] == ["fp32", "w4_per_channel_clip"]


def test_compress_with_calibrated_activations(assets, tmp_path, capsys):
  cfg = tmp_path / "cfg.py"
  write_config(cfg, str(asset_path(assets, MLP_G)))
  rc = cli.main(["compress", "--config", str(cfg), "--workdir", str(tmp_path / "wd"),
                 "--no-progress", "--config.activations.bits=8"])
  assert rc == 0, capsys.readouterr().err
  report = json.loads((tmp_path / "wd" / "report.json").read_text())
  row = next(r for r in report["rows"] if r["setting"] == "w8_per_channel_a8")
  assert row["act_bits"] == 8 and row["psnr_db"] > 30
  # The calibration is stored with the checkpoint and reproduces the row's outputs.
  ckdir = tmp_path / "wd" / "checkpoints" / "w8_per_channel_a8"
  calibration = compress.load_calibration(ckdir / "calibration.json")
  module, fp32 = convert.load_torch_checkpoint(asset_path(assets, MLP_G))
  _, stored = load_model(ckdir)
  z = inputs_lib.latents(4, module.z_dim, 0)
  ref = np.asarray(module.apply(fp32, z))
  out = np.asarray(compress.apply_quantized(module, stored, z, compress.ActQuantConfig(8),
                                            calibration))
  # float32: the job's jitted batches vs this eager call (ulp-level outputs: ~5e-4 dB at 34 dB), and
  # an 8-bit activation within an ulp of a .5 boundary may round one step the other way (~1e-3
  # dB each); a wrong or missing calibration moves PSNR by far more than 0.01 dB.
  assert report_lib.image_metrics(ref, out)["psnr_db"] == pytest.approx(row["psnr_db"], abs=1e-2)


@pytest.mark.parametrize("flag", [False, True])
def test_persistent_compilation_cache_is_on_by_default(flag, tmp_path, monkeypatch):
  monkeypatch.setenv("JAXGC_CACHE", str(tmp_path))
  monkeypatch.delenv("JAXGC_NO_COMPILATION_CACHE", raising=False)  # conftest sets it
  args = cli._parser().parse_args(
      ["evaluate", "--workdir", str(tmp_path / "w")] + (["--no-compilation-cache"] if flag else []))
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
          "jax_persistent_cache_min_entry_size_bytes")
  before = {k: getattr(jax.config, k) for k in keys}
  try:
    cli._compilation_cache(args)
    after = {k: getattr(jax.config, k) for k in keys}
  finally:
    for k, v in before.items():
      jax.config.update(k, v)
  if flag:
    assert after == before
  else:
    assert after == {keys[0]: str(tmp_path / "xla"), keys[1]: 0.0, keys[2]: 0}
