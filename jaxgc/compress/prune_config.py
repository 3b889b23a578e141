"""Pruning settings: :class:`PruneConfig`, its choices and checks (a leaf of the pruning modules)."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import numpy as np


# Every ``kernel`` leaf, with or without a leading "params/": the optax transform sees the
# ``params`` collection itself (paths ``dense_0/kernel``), where ``selection.DEFAULT_INCLUDE``
# (which needs the "params/" component of a full variables tree) would select nothing.
DEFAULT_INCLUDE = r"(^|/)kernel$"

GRANULARITIES = ("unstructured", "n:m", "channel")
SCORES = ("magnitude", "random", "saliency")
SCOPES = ("layer", "global")
DISTRIBUTIONS = ("uniform", "erk")
NORMS = ("l1", "l2")
SCHEDULES = ("one_shot", "iterative", "polynomial")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _is_real(value: Any) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def check_fraction(name: str, value: Any) -> None:
  """Raises ``ValueError`` naming ``name`` unless ``value`` is a real number in [0, 1)."""
  if not _is_real(value) or not 0 <= value < 1:
    raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_regex(name: str, pattern: str | None) -> None:
  if pattern is None:
    return
  try:
    re.compile(pattern)
  except (re.error, TypeError) as e:
    raise ValueError(f"{name} is not a valid regex: {pattern!r} ({e})") from None


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  """What to prune, how much, how, and when. Hashable, so it can be static under ``jax.jit``.

  Attributes:
    sparsity: float in [0, 1), the target fraction of weights set to zero in the pruned leaves
      (param-weighted over all of them under ``"erk"``). For ``"n:m"`` it must equal
      ``1 - n / m`` (0.5 for 2:4 and 4:8), the only sparsity N:M can have.
    granularity: ``"unstructured"`` (single weights), ``"n:m"`` (keep ``n`` of every ``m``
      consecutive weights along the input-channel axis -2; Mishra et al. 2021, "Accelerating
      Sparse Deep Neural Networks", arXiv 2104.08378) or ``"channel"`` (whole output filters,
      the last axis; Li et al. 2017, "Pruning Filters for Efficient ConvNets").
    n: int >= 1, weights kept per group for ``"n:m"``.
    m: int > n, group size for ``"n:m"``; must divide axis -2 of every pruned leaf.
    score: ``"magnitude"`` (``|w|``), ``"random"`` (uniform, needs a key) or ``"saliency"``
      (``|w * grad|``, the first-order Taylor estimate of the loss change when ``w`` is zeroed;
      needs gradients). The lowest scores are pruned.
    scope: ``"layer"`` (each leaf pruned to its own sparsity) or ``"global"`` (one ranking over
      all pruned leaves, so leaves end up with different sparsities; ``"unstructured"`` and
      ``"uniform"`` only; a leaf may then lose every weight).
    distribution: ``"uniform"`` (every leaf at ``sparsity``) or ``"erk"`` (Erdos-Renyi-Kernel,
      see :func:`erk_sparsities`; needs ``sparsity > 0``).
    norm: ``"l1"`` or ``"l2"``, the norm of a filter's weight scores for ``"channel"``
      (``"l1"`` of magnitudes is Li et al.'s ``sum |w|``).
    norm_scales: pairs ``(kernel_path, scale_path)`` of paths in the same tree: the filters of
      ``kernel_path`` are scored by ``|scale|`` of the normalisation layer that follows it (the
      scaling factors of Liu et al. 2017, "Learning Efficient Convolutional Networks through
      Network Slimming") instead of their weight norm. ``"channel"`` only. The pairing is
      explicit because a generic tree does not say which norm follows which layer (in the DCGAN
      generator ``convt_i`` feeds ``bn_i``).
    include: regex a "/"-joined path must match to be pruned (:func:`re.search`); by default
      every ``kernel``, with or without a leading "params/".
    exclude: optional regex of paths never pruned (e.g. ``"conv_in|conv_out"``).
    schedule: ``"one_shot"``, ``"iterative"`` or ``"polynomial"``, see :func:`sparsity_at`.
    begin_step: int >= 0, first step of the schedule.
    end_step: int >= begin_step, step at which ``"iterative"`` and ``"polynomial"`` reach
      ``sparsity``; ``end_step - begin_step`` must be a multiple of ``frequency``. Ignored by
      ``"one_shot"``.
    frequency: int >= 1, steps between mask updates for ``"iterative"`` and ``"polynomial"``
      (Zhu and Gupta's ``Δt``). Ignored by ``"one_shot"``.
    power: float > 0, exponent of the polynomial schedule (3 in Zhu and Gupta 2017).
    initial_sparsity: float in [0, sparsity], the sparsity before ``begin_step`` (and at
      ``begin_step`` for ``"polynomial"``); 0 for ``"n:m"``.

  Raises:
    ValueError: any field out of its range or an unsupported combination (one line naming the
      field and the value).
  """

  sparsity: float
  granularity: str = "unstructured"
  n: int = 2
  m: int = 4
  score: str = "magnitude"
  scope: str = "layer"
  distribution: str = "uniform"
  norm: str = "l1"
  norm_scales: tuple[tuple[str, str], ...] = ()
  include: str = DEFAULT_INCLUDE
  exclude: str | None = None
  schedule: str = "one_shot"
  begin_step: int = 0
  end_step: int = 0
  frequency: int = 1
  power: float = 3.0
  initial_sparsity: float = 0.0

  def __post_init__(self):
    check_fraction("sparsity", self.sparsity)
    _check_choice("granularity", self.granularity, GRANULARITIES)
    _check_choice("score", self.score, SCORES)
    _check_choice("scope", self.scope, SCOPES)
    _check_choice("distribution", self.distribution, DISTRIBUTIONS)
    _check_choice("norm", self.norm, NORMS)
    _check_choice("schedule", self.schedule, SCHEDULES)
    _check_regex("include", self.include)
    _check_regex("exclude", self.exclude)
    _check_int("begin_step", self.begin_step, 0)
    _check_int("frequency", self.frequency, 1)
    _check_int("n", self.n, 1)
    _check_int("m", self.m, 2)
    if not _is_real(self.power) or not self.power > 0:
      raise ValueError(f"power must be a number > 0, got {self.power!r}")
    if not _is_real(self.initial_sparsity) or not 0 <= self.initial_sparsity <= self.sparsity:
      raise ValueError(f"initial_sparsity must be in [0, sparsity={self.sparsity}], "
                       f"got {self.initial_sparsity!r}")
    if self.schedule != "one_shot":
      _check_int("end_step", self.end_step, self.begin_step)
      if (self.end_step - self.begin_step) % self.frequency:
        raise ValueError(f"end_step - begin_step must be a multiple of frequency for schedule "
                         f"{self.schedule!r}, got {self.end_step} - {self.begin_step} and "
                         f"frequency {self.frequency}")
    if self.granularity == "n:m":
      if self.n >= self.m:
        raise ValueError(f"n:m needs n < m, got {self.n}:{self.m}")
      if not math.isclose(self.sparsity, 1 - self.n / self.m, abs_tol=1e-9):
        raise ValueError(f"sparsity must be 1 - n/m = {1 - self.n / self.m:g} for n:m "
                         f"granularity {self.n}:{self.m}, got {self.sparsity!r}")
      if self.schedule != "one_shot" or self.initial_sparsity != 0:
        raise ValueError(f"n:m granularity needs schedule 'one_shot' with initial_sparsity 0, "
                         f"got {self.schedule!r} with {self.initial_sparsity!r}")
    if self.granularity != "unstructured" and self.scope == "global":
      raise ValueError(f"scope 'global' needs granularity 'unstructured', "
                       f"got {self.granularity!r}")
    if self.distribution == "erk":
      if self.scope == "global" or self.granularity == "n:m":
        raise ValueError(f"distribution 'erk' needs scope 'layer' and no n:m granularity, got "
                         f"scope {self.scope!r} and granularity {self.granularity!r}")
      if self.sparsity == 0:
        raise ValueError("distribution 'erk' needs sparsity > 0, got 0")
    pairs = tuple(tuple(p) for p in self.norm_scales)
    if not all(len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs):
      raise ValueError(f"norm_scales must be (kernel_path, scale_path) pairs of str, "
                       f"got {self.norm_scales!r}")
    if pairs and self.granularity != "channel":
      raise ValueError(f"norm_scales needs granularity 'channel', got {self.granularity!r}")
    object.__setattr__(self, "norm_scales", pairs)
