"""Where a job's generator comes from: the ``model`` block of a job config.

``model.source`` is one of

* ``"checkpoint"``: ``model.checkpoint``, a PyTorch file (absolute or relative to
  ``$JAXGC_ASSETS``; ``model.arch`` forces the architecture), a ``jaxgc convert`` folder or a
  ``jaxgc compress`` checkpoint folder (:func:`jaxgc.checkpoint.load_any_model`);
* ``"registry"``: ``jaxgc.models.build(model.arch, **model.kwargs)`` with random weights from
  ``model.seed`` (``module.init``), for tests and for timing a family without its weights;
* ``"teacher"``: ``model.teacher``, a generator trained by ``jaxgc gan`` and found in the user
  cache, through :func:`load_teacher`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxgc import models
from jaxgc.checkpoint import load_any_model
from jaxgc.data import inputs as inputs_lib
from jaxgc.jobs import teachers

SOURCES = ("checkpoint", "registry", "teacher")


def default_config() -> ml_collections.ConfigDict:
  """The ``model`` block: every key, with its default."""
  c = ml_collections.ConfigDict()
  c.source = ""          # checkpoint | registry | teacher ("" : checkpoint)
  c.checkpoint = ""      # source "checkpoint": file or folder
  c.arch = ""            # a jaxgc.models.ARCHS name: forced for a .pth, required for registry
  c.kwargs = None        # source "registry": the module's keyword arguments (a dict)
  c.seed = 0             # source "registry": the random initialisation
  c.teacher = ""         # source "teacher": the name given to `jaxgc gan`
  return c


def check(cfg: ml_collections.ConfigDict) -> str:
  """Validates a ``model`` block before anything is read; returns its source.

  Raises:
    ValueError: an unknown source, or the key that source needs is empty or wrong (named).
  """
  source = cfg.source or "checkpoint"
  if source not in SOURCES:
    raise ValueError(f"model.source must be one of {SOURCES}, got {cfg.source!r}")
  if source == "checkpoint" and not cfg.checkpoint:
    raise ValueError("model.checkpoint is empty: name a generator checkpoint (or set "
                     "model.source='registry' or 'teacher')")
  if cfg.arch and cfg.arch not in models.ARCHS:
    raise ValueError(f"unknown model.arch {cfg.arch!r}; expected one of {', '.join(models.ARCHS)}")
  if source == "registry":
    if not cfg.arch:
      raise ValueError("model.source='registry' needs model.arch")
    if cfg.kwargs is not None and not isinstance(cfg.kwargs, (dict, ml_collections.ConfigDict)):
      raise ValueError(f"model.kwargs must be a dict of the module's arguments, got "
                       f"{cfg.kwargs!r}")
    models.build(cfg.arch, **_kwargs(cfg))
  if source == "teacher" and not cfg.teacher:
    raise ValueError("model.source='teacher' needs model.teacher, the name given to jaxgc gan")
  if source == "teacher":
    teachers.teacher_dir(cfg.teacher)   # an unknown name: one line, before anything is written
  return source


def _kwargs(cfg) -> dict[str, Any]:
  kw = cfg.kwargs or {}
  return dict(kw.to_dict() if hasattr(kw, "to_dict") else kw)


def load_teacher(name: str) -> tuple[Any, dict[str, Any], str]:
  """``(module, variables, folder)`` of the generator ``jaxgc gan`` trained as teacher ``name``,
  from the user cache (``<cache>/teachers/<name>/generator``); trained there first when it is
  missing, with a note on stderr (:func:`jaxgc.jobs.teachers.teacher`, which loads it once).

  Raises:
    ValueError: an unknown teacher (naming the ones jaxgc trains).
  """
  module, variables = teachers.teacher(name, progress=False)   # trains it on first use
  return module, variables, os.path.join(teachers.teacher_dir(name), "generator")


def load(cfg: ml_collections.ConfigDict) -> tuple[Any, dict[str, Any], str]:
  """``(module, variables as numpy arrays, description)`` of the ``model`` block.

  The description is the checkpoint path, ``registry:<arch>:seed=<seed>`` or
  ``teacher:<name> (<path>)``.

  Raises:
    ValueError: as :func:`check`; an unavailable teacher.
    FileNotFoundError, CheckpointError: a missing or unreadable checkpoint.
  """
  source = check(cfg)
  if source == "registry":
    module = models.build(cfg.arch, **_kwargs(cfg))
    variables = jax.jit(module.init)(jax.random.key(int(cfg.seed)), models.example_input(module))
    return module, jax.tree.map(np.asarray, variables), f"registry:{cfg.arch}:seed={cfg.seed}"
  if source == "teacher":
    module, variables, path = load_teacher(cfg.teacher)
    return module, jax.tree.map(np.asarray, variables), f"teacher:{cfg.teacher} ({path})"
  path = cfg.checkpoint if os.path.isdir(cfg.checkpoint) else \
      inputs_lib.resolve_asset(cfg.checkpoint)
  module, variables = load_any_model(path, cfg.arch or None)
  return module, jax.tree.map(np.asarray, variables), path
