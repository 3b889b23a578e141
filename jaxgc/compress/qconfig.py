"""Quantization settings that every other compression module shares: a leaf module.

:class:`ActQuantConfig` (activation fake quantization) and :class:`PrecisionRule` (per-layer
weight and activation bit widths, with the ``"@first"`` / ``"@last"`` markers of Andreev,
Fritzler and Vetrov 2021, arXiv 2108.13996) and their checks. Weight settings are
:class:`jaxgc.compress.quantize.QuantConfig`. Both :mod:`jaxgc.compress.activations` and
:mod:`jaxgc.compress.rules` import this module, and it imports neither.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Sequence

import numpy as np

from jaxgc.compress import quantize

ACT_MIN_BITS = 2
ACT_MAX_BITS = 16
MODES = ("static", "dynamic")
METHODS = ("minmax", "percentile", "mse", "ema")
FIRST = "@first"
LAST = "@last"
MARKERS = (FIRST, LAST)


def check_act_bits(bits: Any) -> None:
  """Raises ``ValueError`` unless ``bits`` is a Python/NumPy int in ``[2, 16]``."""
  if (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
      or not ACT_MIN_BITS <= bits <= ACT_MAX_BITS):
    raise ValueError(f"activation bits must be in {ACT_MIN_BITS}..{ACT_MAX_BITS}, got {bits!r}")


@dataclasses.dataclass(frozen=True)
class ActQuantConfig:
  """Activation quantization settings. Hashable: a valid static argument of ``jax.jit``.

  Attributes:
    bits: int in ``[2, 16]``, activation bit width (the default of every layer; per-layer widths
      come from :class:`jaxgc.compress.rules.PrecisionRule` rules).
    symmetric: signed restricted codes ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` with zero point 0 and
      range ``[-max(|lo|, |hi|), max(|lo|, |hi|)]`` when true; unsigned ``[0, 2**b - 1]`` with an
      integer zero point when false (the better choice after ReLU or for images in [-1, 1]).
    granularity: ``"per_tensor"`` (one range per layer input) or ``"per_channel"`` (one range per
      channel, the last axis of the input).
    mode: ``"static"`` (calibrated ranges) or ``"dynamic"`` (min/max of each input).

  Raises:
    ValueError: ``bits`` outside ``[2, 16]``, unknown ``granularity`` or ``mode``.
  """

  bits: int
  symmetric: bool = False
  granularity: str = "per_tensor"
  mode: str = "static"

  def __post_init__(self):
    check_act_bits(self.bits)
    quantize.check_granularity(self.granularity)
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class PrecisionRule:
  """Bit widths for the layers whose path matches ``pattern``.

  Attributes:
    pattern: regex searched (:func:`re.search`, unanchored) in layer paths such as
      ``block_0/sep_0/depthwise``, or one of the markers ``"@first"`` / ``"@last"``.
    weight_bits: int in ``[2, 8]``, or ``None`` to keep the kernel in full precision.
    act_bits: int in ``[2, 16]``, or ``None`` to keep the layer input in full precision.

  Raises:
    ValueError: an invalid regex or bit width.
  """

  pattern: str
  weight_bits: int | None = None
  act_bits: int | None = None

  def __post_init__(self):
    if not isinstance(self.pattern, str):
      raise ValueError(f"rule pattern must be a str, got {self.pattern!r}")
    if self.pattern not in MARKERS:
      try:
        re.compile(self.pattern)
      except re.error as e:
        raise ValueError(f"invalid rule pattern '{self.pattern}': {e}") from None
    if self.weight_bits is not None:
      quantize.check_bits(self.weight_bits)
    if self.act_bits is not None:
      check_act_bits(self.act_bits)

  def matches(self, path: str) -> bool:
    """Whether the (marker-free) pattern is found in ``path``."""
    if self.pattern in MARKERS:
      raise ValueError(f"rule pattern '{self.pattern}' is a marker: expand it first with "
                       "expand_markers(rules, first_last_layers(module, variables))")
    return re.search(self.pattern, path) is not None


def as_rules(rules: Iterable[Any] | None) -> tuple[PrecisionRule, ...]:
  """Normalises rules given as :class:`PrecisionRule` or ``(pattern, weight_bits, act_bits)``.

  Raises:
    ValueError: a rule that is neither, or invalid.
  """
  out = []
  for r in rules or ():
    if isinstance(r, PrecisionRule):
      out.append(r)
    elif isinstance(r, (tuple, list)) and len(r) == 3:
      out.append(PrecisionRule(*r))
    else:
      raise ValueError(f"a rule must be a PrecisionRule or (pattern, weight_bits, act_bits), "
                       f"got {r!r}")
  return tuple(out)


def has_markers(rules: Iterable[Any] | None) -> bool:
  """Whether some rule uses ``"@first"`` or ``"@last"``."""
  return any(r.pattern in MARKERS for r in as_rules(rules))


def expand_markers(rules: Iterable[Any] | None, first_last: tuple[str, str]
                   ) -> tuple[PrecisionRule, ...]:
  """Replaces ``"@first"`` / ``"@last"`` by anchored, escaped patterns of the given layers.

  Args:
    rules: rules (see :func:`as_rules`).
    first_last: ``(first_layer_path, last_layer_path)``, e.g. from :func:`first_last_layers`.

  Returns:
    The rules, markers replaced by ``^<escaped path>$``; order kept.
  """
  first, last = first_last
  swap = {FIRST: f"^{re.escape(first)}$", LAST: f"^{re.escape(last)}$"}
  return tuple(dataclasses.replace(r, pattern=swap[r.pattern]) if r.pattern in MARKERS else r
               for r in as_rules(rules))


def first_match(path: str, rules: Sequence[PrecisionRule]) -> PrecisionRule | None:
  """The first rule whose pattern matches ``path``, or ``None``."""
  for r in rules:
    if r.matches(path):
      return r
  return None
