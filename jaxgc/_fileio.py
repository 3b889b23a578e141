"""Small file-system helpers shared by every writer: atomic outputs keep ordinary permissions."""

from __future__ import annotations

import os
import tempfile

import numpy as np


def cache_root() -> str:
  """``$JAXGC_CACHE``, or ``~/.cache/jaxgc``: converted extractor weights and feature caches."""
  return os.environ.get("JAXGC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxgc")


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def give_default_mode(path: str) -> None:
  """Gives a ``mkstemp``/``mkdtemp`` product the mode a plain ``open``/``mkdir`` would have had
  (``0o666`` / ``0o777`` less the umask) before it is renamed into place."""
  base = 0o777 if os.path.isdir(path) else 0o666
  os.chmod(path, base & ~_umask())


def _atomic_write(path: str | os.PathLike, write, binary: bool) -> int:
  """Calls ``write(file)`` on a temporary file beside ``path``, fsyncs it, gives it ordinary
  permissions and renames it over ``path``: ``path`` is never half-written. Returns its bytes.

  Raises:
    OSError: the write failed (a full disk: ``ENOSPC``), naming ``path``; the temporary file is
      removed and ``path`` is as it was.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    give_default_mode(tmp)
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and not e.filename:   # name the file a full disk refused
      raise OSError(e.errno, e.strerror or str(e), path) from None
    raise
  return os.path.getsize(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> int:
  """Writes ``text`` (UTF-8) at ``path`` atomically; returns the bytes written."""
  return _atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> int:
  """Writes ``array`` as ``.npy`` (no pickles) at ``path`` atomically; returns the bytes."""
  return _atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), binary=True)


def atomic_savez(path: str | os.PathLike, entries: dict[str, np.ndarray]) -> int:
  """Writes ``entries`` as an uncompressed ``.npz`` at ``path`` atomically (temporary file in
  the same folder, fsync, rename): ``path`` is never half-written. Returns the bytes written."""
  return _atomic_write(path, lambda f: np.savez(f, **entries), binary=True)
