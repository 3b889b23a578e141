"""The ``jaxgc`` command line.

  jaxgc convert CHECKPOINT OUTDIR [--arch NAME]
  jaxgc compress --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]
  jaxgc evaluate --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]
  jaxgc qat --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]
  jaxgc study --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]
  jaxgc distill --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]

Errors are one line on stderr (``jaxgc: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
from typing import Any, Sequence

import ml_collections


def load_config(path: str | None, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Imports ``path`` (a Python file with ``get_config()``; None for an empty config) and applies
  ``--config.a.b=v``.

  Values are read as Python literals (``--config.sweep.weight_bits=8,4``) or else strings.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file has no ``get_config``, or a malformed override.
  """
  if path is None:
    cfg = ml_collections.ConfigDict()
  elif not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  else:
    spec = importlib.util.spec_from_file_location("jaxgc_user_config", path)
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
  job = importlib.import_module(f"jaxgc.jobs.{name}")
  job.run(load_config(args.config, overrides), args.workdir, progress=not args.no_progress)
  print(open(os.path.join(args.workdir, getattr(job, "REPORT_MD", "report.md"))).read())
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="jaxgc", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("convert", help="PyTorch checkpoint -> orbax checkpoint + JSON spec")
  p.add_argument("checkpoint")
  p.add_argument("outdir")
  p.add_argument("--arch", default=None, help="architecture name; inferred when omitted")
  resumable = "output folder; rerunning with the same one resumes from its checkpoints"
  for name, help_, config_help, workdir_help in (
      ("compress", "post-training compression sweep and report", None, "output folder"),
      ("evaluate", "FID/KID, k-NN and LSH precision/recall vs a reference",
       "configs/NAME.py defining get_config(); or give every key as --config.KEY=VALUE flags",
       "output folder for metrics.json/md"),
      ("qat", "quantization-aware training of a generator (distillation to FP32 + frozen "
       "discriminator)", None, resumable),
      ("train", "prune a generator (unstructured, N:M, channel) and recover it by "
       "self-supervised compression (distillation + frozen discriminator)", None, resumable),
      ("study", "weight bits x activation bits x clipping trade-off study", None,
       "output folder for report.md, tradeoff.png"),
      ("distill", "distill a narrower image-to-image generator with content relationship "
       "distillation and an online discriminator", None, resumable)):
    p = sub.add_parser(name, help=help_)
    # Only `evaluate` runs from flags alone; every other job needs a config file.
    p.add_argument("--config", required=config_help is None, default=None,
                   help=config_help or "configs/NAME.py defining get_config()")
    p.add_argument("--workdir", required=True, help=workdir_help)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    if name == "compress":
      p.add_argument("--print-report", action="store_true", help="print report.md when done")
    if name == "distill":
      p.add_argument("--distributed", action="store_true",
                     help="multi-host: call jax.distributed.initialize() first (TPU pods, "
                     "SLURM, Open MPI detect their peers); run the same command on every host")
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
    if args.command in ("qat", "study", "train", "distill"):
      return _training_job(args.command, args, overrides)
    return _compress(args, overrides)
  except (CheckpointError, ValueError, FileNotFoundError, PermissionError, ImportError,
          FloatingPointError) as e:
    print(f"jaxgc: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
