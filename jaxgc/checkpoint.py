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

from jaxgc import convert
from jaxgc import models
from jaxgc._fileio import give_default_mode
from jaxgc.compress import storage

SPEC_FILE = "spec.json"
VARIABLES_DIR = "variables"
QUANTIZED_FILE = "weights.npz"  # written by `jaxgc compress`: low-bit storage


def check_writable_dir(path: str | os.PathLike) -> str:
  """Checks, without creating anything, that ``path`` is or can be made a writable directory.

  Returns:
    The absolute path.

  Raises:
    PermissionError: ``path`` (or its nearest existing ancestor) is not a writable directory,
      naming it.
  """
  path = os.path.abspath(os.fspath(path))
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise PermissionError(f"workdir {path} is not writable: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise PermissionError(f"workdir {path} is not writable: no write permission on {probe}")
  return path


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
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
  except OSError as e:
    raise PermissionError(f"output folder {parent} is not writable: {e.strerror or e}") from None
  try:
    spec = {**models.model_spec(module), **(extra or {})}
    with open(os.path.join(tmp, SPEC_FILE), "w") as f:
      json.dump(spec, f, indent=2)
    tree = jax.tree.map(np.asarray, variables)
    ocp.PyTreeCheckpointer().save(os.path.join(tmp, VARIABLES_DIR), tree)
    give_default_mode(tmp)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
  """Loads a model directory without torch: one written by ``save_model`` / ``jaxgc convert``
  (orbax ``variables/``), or a ``jaxgc compress`` checkpoint (``weights.npz``, dequantized).

  Returns:
    ``(module, variables)`` with numpy float32 leaves.

  Raises:
    FileNotFoundError: ``path`` has no ``spec.json`` or ``variables/``.
  """
  path = os.path.abspath(os.fspath(path))
  spec_path = os.path.join(path, SPEC_FILE)
  quantized = os.path.join(path, QUANTIZED_FILE)
  has_vars = os.path.isdir(os.path.join(path, VARIABLES_DIR))
  if not os.path.isfile(spec_path) or not (has_vars or os.path.isfile(quantized)):
    raise FileNotFoundError(f"not a jaxgc model directory (no {SPEC_FILE}, or neither "
                            f"{VARIABLES_DIR}/ nor {QUANTIZED_FILE}): {path}")
  with open(spec_path) as f:
    spec = json.load(f)
  module = models.build(spec["arch"], **spec["kwargs"])
  if has_vars:
    variables = ocp.PyTreeCheckpointer().restore(os.path.join(path, VARIABLES_DIR))
  else:
    variables = storage.dequantize_variables(storage.load_quantized(quantized))
  return module, jax.tree.map(np.asarray, variables)


def load_any_model(path: str | os.PathLike, arch: str | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
  """A generator from a PyTorch checkpoint file (converted; needs torch), a ``jaxgc convert``
  directory, or a ``jaxgc compress`` checkpoint directory (dequantized)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return load_model(path)
  return convert.load_torch_checkpoint(path, arch)
