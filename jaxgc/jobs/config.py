"""Job configs: ml_collections defaults overridden by a user's config, strictly."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import ml_collections


@contextlib.contextmanager
def checking(key: str) -> Iterator[None]:
  """Validation of the config value ``key``: a ValueError inside names the key
  (``config key 'sweep.weight_bits': weight bits must be in 2..8, got 1``)."""
  try:
    yield
  except ValueError as e:
    if f"{key!r}" in str(e) or f"config.{key}" in str(e):
      raise
    raise ValueError(f"config key {key!r}: {e}") from None


def coerce(key: str, old: Any, value: Any) -> Any:
  """``value`` in the type of the default ``old``: a scalar given for a tuple becomes a
  1-tuple, an int for a float a float; the items of a tuple must have the type of the
  default's items when those share one scalar type.

  Raises:
    ValueError: the types cannot be reconciled, naming the key and the value.
  """
  if isinstance(old, tuple):
    new = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    kinds = {type(x) for x in old}
    if len(kinds) == 1 and kinds <= {bool, int, float, str}:  # a tuple of one scalar type
      kind = kinds.pop()
      for x in new:
        if not _is_a(x, kind):
          raise ValueError(f"config key {key!r} must be a tuple of {kind.__name__}, got "
                           f"{value!r}")
    return new
  if isinstance(old, bool) != isinstance(value, bool):
    raise ValueError(f"config key {key!r} must be a {type(old).__name__}, got {value!r}")
  if isinstance(old, float) and isinstance(value, int):
    return float(value)
  if isinstance(old, (int, float, str)) and not isinstance(value, type(old)):
    raise ValueError(f"config key {key!r} must be a {type(old).__name__}, got {value!r}")
  return value


def _is_a(x: Any, kind: type) -> bool:
  """``x`` has the scalar type ``kind`` (an int passes for a float; a bool never for a number)."""
  if kind is bool or isinstance(x, bool):
    return kind is bool and isinstance(x, bool)
  if kind is float:
    return isinstance(x, (int, float))
  return isinstance(x, kind)


def _merge_into(defaults: ml_collections.ConfigDict, user: Any, prefix: str = "") -> None:
  for key in user.keys():
    if key not in defaults:
      known = ", ".join(sorted(prefix + k for k in defaults.keys()))
      raise ValueError(f"unknown config key {prefix + key!r}; known keys: {known}")
    value = user[key]
    if isinstance(defaults[key], ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ValueError(f"config key {prefix + key!r} must be a group, got {value!r}")
      _merge_into(defaults[key], value, prefix + key + ".")
    else:
      defaults[key] = coerce(prefix + key, defaults[key], value)


def merge(defaults: ml_collections.ConfigDict, user: Any) -> ml_collections.ConfigDict:
  """``defaults`` overridden by ``user`` (a ConfigDict or dict), in place, and returned.

  Raises:
    ValueError: a key of ``user`` that ``defaults`` does not have (listing the known keys), or
      a value whose type cannot be reconciled with the default's.
  """
  with defaults.unlocked():
    _merge_into(defaults, user)
  return defaults
