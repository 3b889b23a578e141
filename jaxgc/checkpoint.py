"""Saving and loading converted models: an orbax checkpoint plus a JSON model spec.

A model directory holds ``spec.json`` (``{"arch", "kind", "kwargs", ...}``) and ``variables/``
(an orbax PyTree checkpoint of the plain nested dict). Loading needs neither torch nor pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgc import models

SPEC_FILE = "spec.json"
VARIABLES_DIR = "variables"


def ensure_writable_dir(path: str | os.PathLike) -> str:
  """Creates ``path`` if needed and checks that files can be written in it.

  Raises:
    PermissionError: the directory cannot be created or written, naming it.
  """
  path = os.path.abspath(os.fspath(path))
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
      pass
  except OSError as e:
    raise PermissionError(f"workdir {path} is not writable: {e.strerror or e}") from None
  return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` to a temporary file beside ``path`` and renames it over ``path``."""
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_model(path: str | os.PathLike, module: nn.Module, variables: dict[str, Any],
               extra: dict[str, Any] | None = None) -> str:
  """Writes ``module`` and ``variables`` to the directory ``path`` atomically.

  Everything goes to a temporary sibling directory first, which is renamed to ``path`` only
  when complete, so an interrupted save leaves no half-written model.

  Args:
    path: target directory; replaced if it exists.
    module: a ``jaxgc.models`` zoo module.
    variables: its variables, a nested dict of arrays.
    extra: JSON-serialisable metadata stored in ``spec.json`` (e.g. the source checkpoint).

  Returns:
    The absolute path written.
  """
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    spec = {**models.model_spec(module), **(extra or {})}
    with open(os.path.join(tmp, SPEC_FILE), "w") as f:
      json.dump(spec, f, indent=2)
    tree = jax.tree.map(np.asarray, variables)
    ocp.PyTreeCheckpointer().save(os.path.join(tmp, VARIABLES_DIR), tree)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
  """Loads a directory written by ``save_model`` (or ``jaxgc convert``), without torch.

  Returns:
    ``(module, variables)`` with numpy float32 leaves.

  Raises:
    FileNotFoundError: ``path`` has no ``spec.json`` or ``variables/``.
  """
  path = os.path.abspath(os.fspath(path))
  spec_path = os.path.join(path, SPEC_FILE)
  if not os.path.isfile(spec_path) or not os.path.isdir(os.path.join(path, VARIABLES_DIR)):
    raise FileNotFoundError(f"not a jaxgc model directory (no {SPEC_FILE} or {VARIABLES_DIR}/): "
                            f"{path}")
  with open(spec_path) as f:
    spec = json.load(f)
  module = models.build(spec["arch"], **spec["kwargs"])
  variables = ocp.PyTreeCheckpointer().restore(os.path.join(path, VARIABLES_DIR))
  return module, jax.tree.map(np.asarray, variables)
