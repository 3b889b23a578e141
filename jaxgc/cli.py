"""The ``jaxgc`` command line.

  jaxgc convert CHECKPOINT OUTDIR [--arch NAME] [--key ENTRY]
  jaxgc export CHECKPOINT_DIR OUT [--size N] [--platforms cpu,cuda,tpu] [--stablehlo]
  jaxgc compress --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc evaluate --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc qat --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc study --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc selfsup --config CONFIG --workdir DIR [--config.KEY=VALUE ...]   (alias: train)
  jaxgc distill --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc collab --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc gan --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
  jaxgc --version

``CONFIG`` is a path to a Python file defining ``get_config()`` (``configs/NAME.py``) or the
name of a config shipped with jaxgc (``cyclegan_h2z_ptq``: see ``configs/``). Errors are one
line on stderr (``jaxgc: error: ...``) with exit status 2; a sweep whose settings partly failed
writes its report, names the failed settings in one such line and exits with status 1.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import errno
import importlib
import importlib.resources
import importlib.util
import os
import signal
import sys
import threading
from typing import Any, Sequence

import ml_collections

import jaxgc
from jaxgc import _signals

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
    "collab": ("collab", "collaborative G/D pruning preserving local density structure"),
    "gan": ("gan", "train a DCGAN, pix2pix or StyleGAN2 teacher, FID as it goes"),
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
      cfg = _run_config_file(file, path)
  if not isinstance(cfg, ml_collections.ConfigDict):
    try:
      cfg = ml_collections.ConfigDict(cfg)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"config file {path}: get_config() returned {type(cfg).__name__}, "
                       f"expected a ConfigDict or dict ({e})") from None
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


def _error_line(file: str, e: BaseException) -> int | None:
  """The line of ``file`` where ``e`` was raised (its innermost frame in that file)."""
  if isinstance(e, SyntaxError) and e.filename == file:
    return e.lineno
  line = None
  tb = e.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_filename == file:
      line = tb.tb_lineno
    tb = tb.tb_next
  return line


def _run_config_file(file: str, shown: str) -> Any:
  """Executes a config file and returns ``get_config()``; any error in it is one ValueError
  naming the file and line."""
  file = os.path.abspath(file)   # the frames and SyntaxErrors of the file carry this name
  spec = importlib.util.spec_from_file_location("jaxgc_user_config", file)
  mod = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
      raise ValueError(f"config file {shown} defines no get_config()")
    return mod.get_config()
  except ValueError as e:
    if str(e).startswith(f"config file {shown}"):
      raise
    where = _error_line(file, e)
    raise ValueError(f"config file {shown}" + (f", line {where}" if where else "")
                     + f": {type(e).__name__}: {_first_line(e)}") from None
  except Exception as e:  # pylint: disable=broad-except
    where = _error_line(file, e)
    raise ValueError(f"config file {shown}" + (f", line {where}" if where else "")
                     + f": {type(e).__name__}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
  text = str(e.msg if isinstance(e, SyntaxError) else e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _convert(args) -> int:
  from jaxgc import convert  # pylint: disable=import-outside-toplevel
  from jaxgc import stats  # pylint: disable=import-outside-toplevel
  from jaxgc.checkpoint import save_model  # pylint: disable=import-outside-toplevel
  module, variables = convert.load_torch_checkpoint(args.checkpoint, args.arch, key=args.key)
  out = save_model(args.outdir, module, variables,
                   extra={"source": os.path.abspath(args.checkpoint)})
  print(f"{type(module).__name__}: {stats.count_params(variables):,} params -> {out}")
  return 0


def _export(args) -> int:
  from jaxgc import export  # pylint: disable=import-outside-toplevel
  meta = export.export_checkpoint(args.checkpoint_dir, args.out, size=args.size,
                                  platforms=args.platforms, stablehlo=args.stablehlo)
  print(f"{meta['model'].get('arch', meta['model'].get('class'))}: "
        f"{meta['artifact_bytes']:,} bytes, inputs {meta['input']['shape']}, platforms "
        f"{','.join(meta['platforms'])} -> {os.path.abspath(args.out)}")
  return 0


def _compress(args, overrides) -> int:
  from jaxgc.jobs import compress as job  # pylint: disable=import-outside-toplevel
  cfg = load_config(args.config, overrides)
  report = job.run(cfg, args.workdir, progress=not args.no_progress)
  print(open(os.path.join(args.workdir, "report.md")).read() if args.print_report else
        f"wrote {len(report['rows'])} settings to {os.path.abspath(args.workdir)}: "
        "report.json, report.md, samples.png, checkpoints/")
  return _failures(report, args.workdir)


def _failures(report: Any, workdir: str, name_key: str = "setting") -> int:
  """Exit status of a sweep: 1 after one ``jaxgc: error:`` line naming its failed settings
  (recorded in its report, the others measured), else 0."""
  from jaxgc.jobs import runs  # pylint: disable=import-outside-toplevel
  failed = runs.failed_settings(report, name_key) if isinstance(report, dict) else []
  if not failed:
    return 0
  print(f"jaxgc: error: {len(failed)} of {len(report['rows'])} settings failed and were not "
        f"measured: {'; '.join(failed)} (see {os.path.join(workdir, 'report.md')})",
        file=sys.stderr)
  return 1


def _evaluate(args, overrides) -> int:
  from jaxgc.jobs import evaluate as job  # pylint: disable=import-outside-toplevel
  job.run(load_config(args.config, overrides), args.workdir, progress=not args.no_progress)
  print(open(os.path.join(args.workdir, "metrics.md")).read())
  return 0


def _training_job(name: str, args, overrides) -> int:
  """Runs ``jaxgc.jobs.<name>.run`` and prints its ``report.md`` (process 0 of a multi-process
  run; the others print nothing)."""
  if args.command == "train":
    print("jaxgc: note: `jaxgc train` is an alias of `jaxgc selfsup` (self-supervised "
          "compression); use that name", file=sys.stderr)
  job = importlib.import_module(f"jaxgc.jobs.{name}")
  report = job.run(load_config(args.config, overrides), args.workdir,
                   progress=not args.no_progress)
  from jaxgc import parallel  # pylint: disable=import-outside-toplevel
  from jaxgc.jobs import runs  # pylint: disable=import-outside-toplevel
  if not parallel.is_primary():   # a multi-process run: process 0 wrote and prints the report
    failed = isinstance(report, dict) and runs.failed_settings(
        report, getattr(job, "SETTING_KEY", "setting"))
    return 1 if failed else 0
  print(open(os.path.join(args.workdir, getattr(job, "REPORT_MD", "report.md"))).read())
  return _failures(report, args.workdir, getattr(job, "SETTING_KEY", "setting"))


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="jaxgc", description="Compress pretrained GANs in JAX/Flax and measure honestly "
      "what compression costs.", epilog="`jaxgc COMMAND --help` for a command's options.")
  parser.add_argument("--version", action="version", version=f"jaxgc {jaxgc.__version__}")
  parser.add_argument("--debug", action="store_true",
                      help="show the full traceback of an error (also JAXGC_DEBUG=1)")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                              title="commands")
  p = sub.add_parser("convert", help="PyTorch checkpoint -> Flax model folder (orbax + spec)")
  p.add_argument("checkpoint")
  p.add_argument("outdir")
  p.add_argument("--arch", default=None, help="architecture name; inferred when omitted")
  p.add_argument("--key", default=None,
                 help="the checkpoint entry holding the state dict (g, d or g_ema of a "
                      "rosinality StyleGAN2 training checkpoint; default g_ema)")
  p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                 help="show the full traceback of an error (also JAXGC_DEBUG=1)")
  p = sub.add_parser("export", help="model folder -> jax.export artifact (symbolic batch, low-bit)",
                     description="Serializes a jaxgc convert folder or a jaxgc compress "
                     "checkpoint (WORKDIR/checkpoints/SETTING) with jax.export: one artifact for "
                     "several platforms, a symbolic batch dimension, int8 / packed int4 weights "
                     "kept low-bit and calibrated activation quantization included. Run it with "
                     "jaxgc.export.load(OUT)(x).")
  p.add_argument("checkpoint_dir")
  p.add_argument("out", help="export folder (new, empty, or an earlier export)")
  p.add_argument("--size", type=int, default=256,
                 help="image side of image-to-image generators (default 256)")
  p.add_argument("--platforms", default="cpu,cuda,tpu",
                 help="comma-separated platforms of the artifact (default cpu,cuda,tpu)")
  p.add_argument("--stablehlo", action="store_true",
                 help="also write model.stablehlo.mlir, the StableHLO text")
  p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                 help="show the full traceback of an error (also JAXGC_DEBUG=1)")
  resumable = "output folder; rerunning with the same one resumes from its checkpoints"
  config_help = ("a Python file defining get_config(), or the name of a shipped config "
                 f"({', '.join(shipped_configs())})")
  workdir_help = {"compress": "output folder", "evaluate": "output folder for metrics.json/md",
                  "study": "output folder for report.md, tradeoff.png"}
  for name, (_, help_) in JOBS.items():
    p = sub.add_parser(
        name, help=help_, description=help_,
        epilog="Any key of the config can be overridden with --config.KEY=VALUE (VALUE is read "
        "as a Python literal, else a string), e.g. --config.batch_size=8 "
        "--config.sweep.weight_bits='(8,4)'. Unknown keys and values of the wrong type are "
        "errors.")
    # Only `evaluate` runs from flags alone; every other job needs a config.
    p.add_argument("--config", required=name != "evaluate", default=None,
                   help=config_help + ("; or give every key as --config.KEY=VALUE flags"
                                       if name == "evaluate" else ""))
    p.add_argument("--workdir", required=True, help=workdir_help.get(name, resumable))
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--no-compilation-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (on by default, in "
                   "the jaxgc cache folder, $JAXGC_CACHE/xla or ~/.cache/jaxgc/xla)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error (also JAXGC_DEBUG=1)")
    if name == "compress":
      p.add_argument("--print-report", action="store_true", help="print report.md when done")
    if name in ("distill", "collab"):   # the jobs that feed each process its rows of a batch
      p.add_argument("--distributed", action="store_true",
                     help="multi-host: call jax.distributed.initialize() first (TPU pods, "
                     "SLURM, Open MPI detect their peers); run the same command on every host")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the ``jaxgc`` command line on ``argv`` (default ``sys.argv[1:]``); returns the exit
  status: 0, 2 after a one-line ``jaxgc: error: ...`` on stderr for any failure, 1 when a
  sweep finished but some of its settings failed (named in one such line), 130 after Ctrl-C. With ``--debug`` or ``JAXGC_DEBUG=1`` the exception propagates with its traceback."""
  parser = _parser()
  args, extra = parser.parse_known_args(argv)
  overrides = [a for a in extra if a.startswith("--config.")]
  rest = [a for a in extra if not a.startswith("--config.")]
  if rest or (overrides and args.command in ("convert", "export")):
    parser.error(f"unrecognized arguments: {' '.join(rest or overrides)}")

  debug = bool(getattr(args, "debug", False)) or os.environ.get("JAXGC_DEBUG", "") not in (
      "", "0")
  _quiet_libraries()
  _signals.reset()
  restore_hooks = _install_sigint()
  try:
    status = _dispatch(args, overrides)
    _signals.check()   # a Ctrl-C that landed where Python ignores exceptions
    return status
  except KeyboardInterrupt:
    if debug:
      raise
    print("jaxgc: error: interrupted (Ctrl-C); rerun the same command to resume from the last "
          "checkpoint", file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except  # the one error boundary
    if debug:
      raise
    print(f"jaxgc: error: {_describe(e)}", file=sys.stderr)
    return 2
  finally:
    restore_hooks()


def _compilation_cache(args) -> None:
  """JAX's persistent compilation cache for the config jobs, unless ``--no-compilation-cache``
  (or ``JAXGC_NO_COMPILATION_CACHE=1``): in ``cache_root()/xla``, every compilation kept
  (minimum compile time 0), so a second run of the same job loads its compiled kernels instead
  of compiling them again."""
  if (args.command not in JOBS or getattr(args, "no_compilation_cache", False)
      or os.environ.get("JAXGC_NO_COMPILATION_CACHE", "") not in ("", "0")):
    return
  import jax  # pylint: disable=import-outside-toplevel
  from jaxgc._fileio import cache_root  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", os.path.join(cache_root(), "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _dispatch(args, overrides) -> int:
  """Runs the command of ``args``; returns its exit status."""
  _compilation_cache(args)
  if args.command == "convert":
    return _convert(args)
  if args.command == "export":
    return _export(args)
  if args.command == "evaluate":
    return _evaluate(args, overrides)
  if getattr(args, "distributed", False):
    import jax  # pylint: disable=import-outside-toplevel
    if not jax.distributed.is_initialized():   # once per process (main() may run again)
      jax.distributed.initialize()
  if args.command == "compress":
    return _compress(args, overrides)
  return _training_job(JOBS[args.command][0], args, overrides)


def _install_sigint():
  """Installs :func:`jaxgc._signals.handler` for SIGINT (main thread only) and keeps a Ctrl-C
  that lands in a garbage-collection callback from printing "Exception ignored" (it is recorded
  and raised at the next check); returns a function that puts both hooks back as they were."""
  if threading.current_thread() is not threading.main_thread():
    return lambda: None
  default = sys.unraisablehook

  def hook(unraisable):
    if unraisable.exc_type is not KeyboardInterrupt:
      default(unraisable)

  sys.unraisablehook = hook
  previous = signal.signal(signal.SIGINT, _signals.handler)

  def restore():
    signal.signal(signal.SIGINT, previous)
    sys.unraisablehook = default

  return restore


# Errors whose message already says what went wrong, in jaxgc's words.
_PLAIN = (ValueError, FileNotFoundError, FileExistsError, PermissionError, FloatingPointError,
          ImportError)
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def _describe(e: BaseException) -> str:
  """One line for any exception: its message, prefixed with its type unless it is one of the
  errors jaxgc raises on bad input; the path for OS errors; a hint to see the traceback."""
  from jaxgc.convert import CheckpointError  # pylint: disable=import-outside-toplevel
  text = _first_line(e)
  if isinstance(e, OSError) and e.errno in _DISK_ERRORS:   # full disk, read-only, quota
    return f"{e.strerror}" + (f" ({e.filename})" if e.filename else "")
  if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
    text = f"{text} ({e.filename})"
  if isinstance(e, (CheckpointError,) + _PLAIN):
    return text
  return f"{type(e).__name__}: {text} (run with --debug or JAXGC_DEBUG=1 for the traceback)"


def _quiet_libraries() -> None:
  """Library logging below warnings (absl / orbax checkpoint chatter) stays out of the way."""
  import logging  # pylint: disable=import-outside-toplevel
  for name in ("absl", "orbax", "jax._src.xla_bridge"):
    logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
  sys.exit(main())
