"""Ctrl-C that is never lost.

Python turns SIGINT into a ``KeyboardInterrupt`` in whatever Python code runs at that moment;
when that is a garbage-collection callback or a ``__del__`` (JAX runs one after each
collection), the exception is printed as "ignored" and the job goes on. The command line
installs :func:`handler`, which also records the request; long loops (training steps, sweep
settings, batches) call :func:`check`, which raises it again at a safe point.

A training step and the checkpoint written after it run under :func:`deferred`: Ctrl-C there
takes effect when the step is done and its checkpoint is consistent (a second Ctrl-C does not
wait).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_requested = threading.Event()
_deferring = [0]   # depth of nested deferred() sections


def handler(signum, frame) -> None:  # pylint: disable=unused-argument
  """SIGINT handler: records the request, then raises ``KeyboardInterrupt`` as Python's own,
  unless inside :func:`deferred` (the first Ctrl-C there waits for the section's end)."""
  again = _requested.is_set()
  _requested.set()
  if not _deferring[0] or again:
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """A section Ctrl-C does not cut (a training step and its checkpoint): a Ctrl-C inside it
  raises ``KeyboardInterrupt`` when it ends."""
  _deferring[0] += 1
  try:
    yield
  finally:
    _deferring[0] -= 1
  if not _deferring[0]:
    check()


def requested() -> bool:
  """Whether Ctrl-C was pressed since :func:`reset`."""
  return _requested.is_set()


def check() -> None:
  """Raises ``KeyboardInterrupt`` when Ctrl-C was pressed (and perhaps swallowed)."""
  if _requested.is_set():
    raise KeyboardInterrupt


def reset() -> None:
  """Forgets an earlier Ctrl-C (the command line calls it before each command)."""
  _requested.clear()
