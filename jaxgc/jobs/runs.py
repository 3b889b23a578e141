"""What every training job shares: paths, the resumable run folder, logs and the step loop.

A run folder holds ``checkpoints/<step>/`` (orbax), the resolved config (a resumed run must agree
on every training key), ``metrics.jsonl`` (one JSON line per step) and ``tensorboard/`` event
files (tensorboardX ``SummaryWriter``). A run killed at any point resumes from its latest
checkpoint; since every batch is a function of ``(seed, step)``, it ends with the same weights as
an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxgc import _fileio
from jaxgc import _signals
from jaxgc import checkpoint
from jaxgc import ownership
from jaxgc import parallel
from jaxgc import train as train_lib
from jaxgc.data import inputs as inputs_lib

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


def resolve_path(path: str) -> str:
  """A path as given if it exists, else relative to ``$JAXGC_ASSETS`` (FileNotFoundError)."""
  return os.path.abspath(path) if os.path.exists(path) else inputs_lib.resolve_asset(path)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON through a temporary file and a rename."""
  _fileio.atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """``{"a.b": value}`` for every leaf of a nested config dict (lists and tuples are leaves)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) and v:
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_resume(path: str, current: dict[str, Any], resumable_keys: tuple[str, ...],
                 has_checkpoint: bool, defaults: dict[str, Any] | None = None) -> None:
  """Refuses to resume checkpoints written under a different config; records ``current``.

  Configs are compared key by key, nested keys as ``data.size``. A key the recorded config
  lacks (a run written before jaxgc added it) agrees when ``current`` holds its default (from
  ``defaults``, the job's ``default_config().to_dict()``): a new key's default keeps the old
  behaviour.

  Raises:
    ValueError: ``has_checkpoint`` and the config recorded at ``path`` differs from ``current``
      in a key outside ``resumable_keys`` (naming the key and both values).
  """
  if has_checkpoint and os.path.isfile(path):
    with open(path) as f:
      previous = _flat(json.load(f))
    now = _flat(json.loads(json.dumps(current)))
    default = _flat(json.loads(json.dumps(defaults or {})))
    for key in sorted(set(previous) | set(now)):
      if key.split(".")[0] in resumable_keys:
        continue
      old, new = previous.get(key), now.get(key)
      if key not in previous and key in default and new == default[key]:
        continue
      if new != old:
        raise ValueError(f"{os.path.dirname(path)} holds checkpoints of a run with {key}={old!r}, "
                         f"but the config says {key}={new!r}; use a fresh workdir to start over")
  if parallel.is_primary():   # every process checks; process 0 writes
    write_json(path, current)


LOCK_FILE = ".jaxgc.lock"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _take_lock(workdir: str) -> str:
  """Creates ``workdir/.jaxgc.lock`` (``host pid``) exclusively; takes over a stale one (same
  host, process gone).

  Raises:
    ValueError: another live jaxgc process holds the lock (naming host and PID).
  """
  path = os.path.join(workdir, LOCK_FILE)
  me = f"{socket.gethostname()} {os.getpid()}"
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          host, _, pid = f.read().strip().partition(" ")
      except FileNotFoundError:
        continue   # released meanwhile: try again
      if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        try:
          os.remove(path)   # stale: the job that held it is gone
        except FileNotFoundError:
          pass
        continue
      raise ValueError(f"workdir {workdir} is in use by another jaxgc job (pid {pid or '?'} on "
                       f"host {host or '?'}); wait for it to finish, or delete {path} if that "
                       "job is gone") from None
    with os.fdopen(fd, "w") as f:
      f.write(me + "\n")
    return path
  raise ValueError(f"could not take the lock {path}; retry")


def _first_missing(path: str) -> str | None:
  """The topmost folder of ``path`` (itself or an ancestor) that does not exist yet."""
  top = None
  while not os.path.exists(path):
    top, parent = path, os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return top


def _remove_if_empty(workdir: str, created: str | None) -> None:
  """Removes ``workdir`` and its ancestors up to ``created`` (the folders this process made)
  while they are empty."""
  if created is None:
    return
  path = workdir
  while os.path.isdir(path) and not os.listdir(path):
    os.rmdir(path)
    if path == created:
      break
    path = os.path.dirname(path)


def locked_workdir(job: str, outputs: tuple[str, ...], signature: tuple[str, ...] = ()
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Decorates a job's ``run(config, workdir, ...)``: one job per workdir, writing only what
  jaxgc owns there.

  The workdir is created if needed and locked (``.jaxgc.lock``: host and PID, taken over when
  stale), then claimed for the job's ``outputs`` (:func:`jaxgc.ownership.claim`: a non-empty
  folder without a manifest is refused unless it has the layout of an earlier jaxgc run of this
  job, recognised by ``signature``; an output name the user's file holds is refused). When
  ``run`` returns or raises, the manifest records the run's status and every file it owns, and
  the lock is released. The folders this call created (the workdir and any missing parents) are
  removed again while empty, so a rejected config leaves nothing behind. In a multi-process run
  only process 0 takes the lock and keeps the manifest; the other processes wait for its claim
  before they start (:func:`jaxgc.parallel.primary_value`) and stop with a one-line error when
  it was refused.

  Args:
    job: the command's name, recorded in the manifest.
    outputs: every top-level name the job may write into its workdir.
    signature: names that together show a folder without a manifest is an earlier run of
      this job.

  Raises:
    ValueError: the workdir is locked by a live job.
    FileExistsError: the workdir holds files jaxgc did not write (named).
    PermissionError: the workdir cannot be created.
    ValueError: on a process other than 0, process 0 refused the workdir.
  """

  def decorate(run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(run)
    def wrapper(config, workdir, *args, **kwargs):
      workdir = checkpoint.check_writable_dir(workdir)
      if not parallel.is_primary():
        # Wait for process 0's lock and claim; when it refused the workdir, stop here too
        # (else this process would wait for it in the run's first collective forever).
        if not bool(parallel.primary_value(np.bool_(False))):
          raise ValueError(f"process 0 refused the workdir {workdir}; its error says why")
        return run(config, workdir, *args, **kwargs)
      announced = []

      def announce(ok: bool) -> None:   # tell the other processes whether the claim held
        if not announced:
          announced.append(ok)
          parallel.primary_value(np.bool_(ok))

      created = _first_missing(workdir)   # the top folder this call creates, or None
      try:
        try:
          os.makedirs(workdir, exist_ok=True)
        except OSError as e:
          raise PermissionError(f"workdir {workdir} cannot be created: {e.strerror or e}"
                                ) from None
        try:
          lock = _take_lock(workdir)
        except BaseException:
          _remove_if_empty(workdir, created)
          raise
      except BaseException:
        announce(False)
        raise
      status, previous = "failed", None
      claimed = None   # the owned files right after the claim; None until it is recorded
      try:
        # A Ctrl-C here waits until the claim is recorded together with its file listing, so
        # finish() can always put back a manifest the run never used.
        with _signals.deferred():
          previous = ownership.snapshot(workdir)
          manifest = ownership.claim(workdir, job, outputs, signature, config)
          claimed = ownership.listing(workdir, manifest["entries"])
        announce(True)
        result = run(config, workdir, *args, **kwargs)
        status = "ok"
        return result
      except KeyboardInterrupt:
        status = "interrupted"
        raise
      finally:
        announce(False)   # the claim was refused or interrupted: the other processes stop too
        try:
          if claimed is not None:
            ownership.finish(workdir, status, previous, claimed)
        finally:
          try:
            os.remove(lock)
          except FileNotFoundError:
            pass
          _remove_if_empty(workdir, created)

    return wrapper

  return decorate


def remove_stale_staging(workdir: str, prefix: str = ".staging-") -> None:
  """Removes the staging folders (``prefix*``) a killed run of this job left in ``workdir``;
  call it only while holding the workdir's lock."""
  for name in os.listdir(workdir):
    p = os.path.join(workdir, name)
    if name.startswith(prefix) and os.path.isdir(p) and not os.path.islink(p):
      shutil.rmtree(p, ignore_errors=True)


FAILED = "failed"


def failed_row(row: dict[str, Any], error: BaseException) -> dict[str, Any]:
  """A sweep's row for a setting that failed (``status: "failed"`` and the error's first line
  as ``reason``): the sweep records it and goes on with the other settings."""
  text = str(error).strip().splitlines()
  return {**row, "status": FAILED, "reason": text[0] if text else type(error).__name__}


def failed_settings(report: dict[str, Any], name_key: str = "setting") -> list[str]:
  """``"NAME (reason)"`` for every failed row of a sweep's report (``report["rows"]``)."""
  rows = report.get("rows")
  return [f"{r.get(name_key, '?')} ({r.get('reason', '')})" for r in
          (rows if isinstance(rows, list) else []) if isinstance(r, dict)
          and r.get("status") == FAILED]


def holds_progress(root: str) -> bool:
  """Whether ``root`` holds the work of an earlier run: an orbax step folder under some
  ``checkpoints/``, or a finished ``result.json`` (a run that failed validation left neither)."""
  if not os.path.isdir(root):
    return False
  for folder, dirs, files in os.walk(root):
    if "result.json" in files:
      return True
    if os.path.basename(folder) == CHECKPOINT_DIR and any(d.isdigit() for d in dirs):
      return True
  return False


def rewind_metrics(path: str, start: int) -> None:
  """Keeps the log lines of steps ``<= start`` (a resumed run rewrites the later ones); only
  process 0 of a multi-process run, which keeps the logs, touches the file."""
  if not parallel.is_primary():
    return
  kept = []
  if start > 0 and os.path.isfile(path):
    with open(path) as f:
      for line in f:
        try:
          if json.loads(line)["step"] <= start:
            kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
          break  # a line cut by a kill: drop it and everything after
  _fileio.atomic_write_text(path, "".join(kept))


class MetricsLog:
  """Per-step scalars to ``metrics.jsonl`` and to TensorBoard event files (tensorboardX).

  In a multi-process run only process 0 writes (on the others :meth:`write` does nothing): the
  metrics are global, and two processes appending to one file on a shared file system would
  log every step twice.

  Args:
    run_dir: the run folder; writes ``run_dir/metrics.jsonl`` (appending) and
      ``run_dir/tensorboard/``.
    tensorboard: also write event files.
  """

  def __init__(self, run_dir: str, tensorboard: bool = True):
    self._jsonl, self._tb = None, None
    if not parallel.is_primary():   # a multi-process run: process 0 keeps the logs
      return
    self._jsonl = open(os.path.join(run_dir, METRICS_FILE), "a")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(run_dir, TENSORBOARD_DIR), flush_secs=30)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    """Appends ``{"step": step, **metrics}`` (Python floats) to both logs."""
    if self._jsonl is None:
      return
    self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f"train/{k}", v, step)

  def close(self) -> None:
    """Closes the JSONL file and the TensorBoard writer (flushing both)."""
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def restore(manager, state, steps: int, run_dir: str):
  """``(state, start)``: the latest checkpoint of ``manager`` (or ``state`` at step 0).

  Raises:
    ValueError: the latest checkpoint is past ``steps``.
  """
  restored = train_lib.restore_latest(manager, state)
  if restored is None:
    return state, 0
  start = int(jax.device_get(restored.step))
  if start > steps:
    raise ValueError(f"{run_dir} holds a checkpoint at step {start}, past steps={steps}; "
                     "raise steps or use a fresh workdir")
  return restored, start


def run_steps(step_fn: Callable, state, batch_fn: Callable[[int], Any], args: tuple, *,
              manager, run_dir: str, start: int, steps: int, desc: str, progress: bool,
              tensorboard: bool = True, on_step: Callable[[int, Any], None] | None = None):
  """Steps ``start + 1 .. steps``: ``state, metrics = step_fn(state, batch_fn(s), *args)``.

  Every step's metrics go to :class:`MetricsLog`; the state is checkpointed at the manager's
  interval and at the end. Ctrl-C takes effect between steps (:func:`jaxgc._signals.deferred`),
  never inside a step or its checkpoint. ``on_step(step, state)`` runs after each step (sample grids).

  Returns:
    ``(state, seconds)``: the final state and the wall time of the steps.

  Raises:
    FloatingPointError: the loss became NaN or Inf (naming the step).
  """
  rewind_metrics(os.path.join(run_dir, METRICS_FILE), start)
  t0 = time.perf_counter()
  with MetricsLog(run_dir, tensorboard) as log:
    bar = tqdm(range(start, steps), desc=desc, initial=start, total=steps,
               disable=not progress or not parallel.is_primary(), unit="step", leave=False)
    for s in bar:
      with _signals.deferred():   # Ctrl-C takes effect between steps, checkpoints whole
        state, metrics = step_fn(state, batch_fn(s), *args)
        m = parallel.host_metrics(metrics)
        if not math.isfinite(m["loss"]):
          raise FloatingPointError(f"{desc}: the loss is {m['loss']} at step {s + 1}; lower "
                                   "the learning rate")
        log.write(s + 1, m)
        bar.set_postfix(loss=f"{m['loss']:.4g}", refresh=False)
        train_lib.save_state(manager, state)
        if on_step is not None:
          on_step(s + 1, state)
  seconds = time.perf_counter() - t0
  train_lib.save_state(manager, state, force=True)
  return state, seconds


def batch_mesh(batch_size: int) -> jax.sharding.Mesh:
  """The data-parallel mesh over every device (:func:`jaxgc.parallel.data_mesh`), checked: a
  training job's global ``batch_size`` must split evenly over its devices and processes.

  Raises:
    ValueError: ``batch_size`` is not a multiple of the device and process counts.
  """
  mesh = parallel.data_mesh()
  n_dev, n_proc = mesh.shape[parallel.DATA_AXIS], jax.process_count()
  if batch_size % n_dev or batch_size % n_proc:
    raise ValueError(f"batch_size {batch_size} is not a multiple of the {n_dev} devices "
                     f"and {n_proc} processes")
  return mesh


def load_generator_and_discriminator(generator: str, discriminator: str, job: str,
                                     generator_kinds: tuple[str, ...],
                                     discriminator_kinds: tuple[str, ...]):
  """A training job's generator and optional frozen discriminator, checked by kind.

  Args:
    generator: a PyTorch checkpoint, ``jaxgc convert`` folder or compressed checkpoint folder,
      absolute or relative to ``$JAXGC_ASSETS``.
    discriminator: the same for the discriminator, or ``""`` for none.
    job: the job's name, for the error messages.
    generator_kinds, discriminator_kinds: the ``kind`` values the job accepts.

  Returns:
    ``(generator, its variables (numpy), its path, discriminator or None, its variables or
    None, its path or "")``.

  Raises:
    ValueError: a model of another kind.
    FileNotFoundError, CheckpointError: as :func:`jaxgc.checkpoint.load_any_model`.
  """
  g_path = resolve_path(generator)
  module, variables = checkpoint.load_any_model(g_path)
  if module.kind not in generator_kinds:
    raise ValueError(f"{job} needs a generator of kind {' or '.join(generator_kinds)}; {g_path} "
                     f"is a {module.kind} ({type(module).__name__})")
  disc, disc_vars, d_path = None, None, ""
  if discriminator:
    d_path = resolve_path(discriminator)
    disc, disc_vars = checkpoint.load_any_model(d_path)
    if disc.kind not in discriminator_kinds:
      raise ValueError(f"config.discriminator {d_path} is a {disc.kind}, not a discriminator")
  return module, jax.tree.map(np.asarray, variables), g_path, disc, disc_vars, d_path
