"""Small file-system helpers shared by every writer: atomic outputs keep ordinary permissions."""

from __future__ import annotations

import os


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
