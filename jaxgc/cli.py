"""The ``jaxgc`` command line.

  jaxgc convert CHECKPOINT OUTDIR [--arch NAME]
  jaxgc compress --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc evaluate --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc qat --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc study --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc selfsup --config CONFIG --workdir DIR [--config.KEY=VALUE ...]   (alias: train)
  jaxgc distill --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc --version

``CONFIG`` is a path to a Python file defining ``get_config()`` (``configs/NAME.py``) or the
name of a config shipped with jaxgc (``cyclegan_h2z_ptq``: see ``configs/``). Errors are one
line on stderr (``jaxgc: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.resources
import importlib.util
import os
import sys
from typing import Any, Sequence

import ml_collections

import jaxgc

CONFIGS_PACKAGE = "jaxgc.configs"
# command -> (module of jaxgc.jobs, one-line help)
JOBS = {
    "compress": ("compress", "post-training quantization sweep of a PyTorch GAN, with a report"),
    "evaluate": ("evaluate", "FID/KID, k-NN and LSH precision/recall against a reference"),
    "qat": ("qat", "quantization-aware training with distillation and a frozen D"),
    "study": ("study", "weight bits x activation bits x clipping trade-off study"),
    "selfsup": ("selfsup", "prune, then recover by self-supervised compression"),
    "train": ("selfsup", "alias of selfsup, its old name"),
    "distill": ("distill", "CRD distillation into a narrower generator, online D"),
}


def shipped_configs() -> list[str]:
  """Names of the job configs shipped with jaxgc (``jaxgc.configs``)."""
  try:
    files = importlib.resources.files(CONFIGS_PACKAGE)
  except ModuleNotFoundError:
    return []
  return sorted(f.name[:-3] for f in files.iterdir()
                if f.name.endswith(".py") and not f.name.startswith("_"))


@contextlib.contextmanager
def _config_file(path: str):
  """The file of ``path``: itself when it exists, else a shipped config of that name."""
  if os.path.isfile(path):
    yield path
    return
  name = path[:-3] if path.endswith(".py") else path
  if os.sep not in path and "/" not in path and name in shipped_configs():
    with importlib.resources.as_file(
        importlib.resources.files(CONFIGS_PACKAGE) / f"{name}.py") as f:
      yield str(f)
    return
  raise FileNotFoundError(f"config file not found: {path} (shipped configs: "
                          f"{', '.join(shipped_configs()) or 'none'})")


def load_config(path: str | None, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Imports ``path`` (a Python file with ``get_config()``; None for an empty config) and applies
  ``--config.a.b=v``.

  Values are read as Python literals (``--config.sweep.weight_bits=8,4``) or else strings.

  ``path`` may also name a config shipped with jaxgc (:func:`shipped_configs`), without a
  folder or ``.py``: ``"cyclegan_h2z_ptq"``.

  Raises:
    FileNotFoundError: no such file and no shipped config of that name.
    ValueError: the file has no ``get_config``, or a malformed override.
  """
  if path is None:
    cfg = ml_collections.ConfigDict()
  else:
    with _config_file(path) as file:
      spec = importlib.util.spec_from_file_location("jaxgc_user_config", file)
      mod = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(mod)
      if not hasattr(mod, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
      cfg = mod.get_config()
  if not isinstance(cfg, ml_collections.ConfigDict):
    cfg = ml_collections.ConfigDict(cfg)
  for item in overrides:
    key, sep, raw = item[len("--config."):].partition("=")
    if not sep or not key:
      raise ValueError(f"malformed override {item!r}; expected --config.KEY=VALUE")
    try:
      value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node = cfg
    parts = key.split(".")
    with cfg.unlocked():
      for p in parts[:-1]:
        if p not in node:
          node[p] = ml_collections.ConfigDict()
        node = node[p]
      if parts[-1] in node:  # the job checks and coerces types (jobs.compress.coerce)
        del node[parts[-1]]
      node[parts[-1]] = value
  return cfg


def _convert(args) -> int:
  from jaxgc import convert  # pylint: disable=import-outside-toplevel
  from jaxgc import stats  # pylint: disable=import-outside-toplevel
  from jaxgc.checkpoint import save_model  # pylint: disable=import-outside-toplevel
  module, variables = convert.load_torch_checkpoint(args.checkpoint, args.arch)
  out = save_model(args.outdir, module, variables,
                   extra={"source": os.path.abspath(args.checkpoint)})
  print(f"{type(module).__name__}: {stats.count_params(variables):,} params -> {out}")
  return 0


def _compress(args, overrides) -> int:
  from jaxgc.jobs import compress as job  # pylint: disable=import-outside-toplevel
  cfg = load_config(args.config, overrides)
  report = job.run(cfg, args.workdir, progress=not args.no_progress)
  print(open(os.path.join(args.workdir, "report.md")).read() if args.print_report else
        f"wrote {len(report['rows'])} settings to {os.path.abspath(args.workdir)}: "
        "report.json, report.md, samples.png, checkpoints/")
  return 0


def _evaluate(args, overrides) -> int:
  from jaxgc.jobs import evaluate as job  # pylint: disable=import-outside-toplevel
  job.run(load_config(args.config, overrides), args.workdir, progress=not args.no_progress)
  print(open(os.path.join(args.workdir, "metrics.md")).read())
  return 0


def _training_job(name: str, args, overrides) -> int:
  """Runs ``jaxgc.jobs.<name>.run`` and prints its ``report.md``."""
  if args.command == "train":
    print("jaxgc: note: `jaxgc train` is an alias of `jaxgc selfsup` (self-supervised "
          "compression); use that name", file=sys.stderr)
  job = importlib.import_module(f"jaxgc.jobs.{name}")
  job.run(load_config(args.config, overrides), args.workdir, progress=not args.no_progress)
  print(open(os.path.join(args.workdir, getattr(job, "REPORT_MD", "report.md"))).read())
  return 0


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="jaxgc", description="Compress pretrained GANs in JAX/Flax and measure honestly "
      "what compression costs.", epilog="`jaxgc COMMAND --help` for a command's options.")
  parser.add_argument("--version", action="version", version=f"jaxgc {jaxgc.__version__}")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                              title="commands")
  p = sub.add_parser("convert", help="PyTorch checkpoint -> Flax model folder (orbax + spec)")
  p.add_argument("checkpoint")
  p.add_argument("outdir")
  p.add_argument("--arch", default=None, help="architecture name; inferred when omitted")
  resumable = "output folder; rerunning with the same one resumes from its checkpoints"
  config_help = ("a Python file defining get_config(), or the name of a shipped config "
                 f"({', '.join(shipped_configs())})")
  workdir_help = {"compress": "output folder", "evaluate": "output folder for metrics.json/md",
                  "study": "output folder for report.md, tradeoff.png"}
  for name, (_, help_) in JOBS.items():
    p = sub.add_parser(name, help=help_, description=help_)
    # Only `evaluate` runs from flags alone; every other job needs a config.
    p.add_argument("--config", required=name != "evaluate", default=None,
                   help=config_help + ("; or give every key as --config.KEY=VALUE flags"
                                       if name == "evaluate" else ""))
    p.add_argument("--workdir", required=True, help=workdir_help.get(name, resumable))
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    if name == "compress":
      p.add_argument("--print-report", action="store_true", help="print report.md when done")
    if name == "distill":
      p.add_argument("--distributed", action="store_true",
                     help="multi-host: call jax.distributed.initialize() first (TPU pods, "
                     "SLURM, Open MPI detect their peers); run the same command on every host")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the ``jaxgc`` command line on ``argv`` (default ``sys.argv[1:]``); returns the exit
  status (0, or 2 after a one-line error on stderr)."""
  parser = _parser()
  args, extra = parser.parse_known_args(argv)
  overrides = [a for a in extra if a.startswith("--config.")]
  rest = [a for a in extra if not a.startswith("--config.")]
  if rest or (overrides and args.command == "convert"):
    parser.error(f"unrecognized arguments: {' '.join(rest or overrides)}")

  from jaxgc.convert import CheckpointError  # pylint: disable=import-outside-toplevel
  try:
    if args.command == "convert":
      return _convert(args)
    if args.command == "evaluate":
      return _evaluate(args, overrides)
    if getattr(args, "distributed", False):
      import jax  # pylint: disable=import-outside-toplevel
      jax.distributed.initialize()
    if args.command != "compress":
      return _training_job(JOBS[args.command][0], args, overrides)
    return _compress(args, overrides)
  except (CheckpointError, ValueError, FileNotFoundError, PermissionError, ImportError,
          FloatingPointError) as e:
    print(f"jaxgc: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
