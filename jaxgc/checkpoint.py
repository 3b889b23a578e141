"""Saving and loading converted models: an orbax checkpoint plus a JSON model spec.

A model directory holds ``spec.json`` (``{"arch", "kind", "kwargs", ...}``) and ``variables/``
(an orbax PyTree checkpoint of the plain nested dict). Loading needs neither torch nor pickle.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgc import convert
from jaxgc import models
from jaxgc import ownership
from jaxgc.compress import storage
from jaxgc.convert import CheckpointError

SPEC_FILE = "spec.json"
VARIABLES_DIR = "variables"
QUANTIZED_FILE = "weights.npz"  # written by `jaxgc compress`: low-bit storage
CALIBRATION_FILE = "calibration.json"  # written by `jaxgc compress` with activation bits
SAMPLES_FILE = "samples.png"  # written by the conversion scripts of scripts/
# Everything a model folder written by jaxgc may hold; a folder with anything else is not ours.
MODEL_ENTRIES = frozenset({SPEC_FILE, VARIABLES_DIR, QUANTIZED_FILE, CALIBRATION_FILE,
                           SAMPLES_FILE})


def check_replaceable(path: str | os.PathLike) -> None:
  """Raises unless ``path`` is absent, an empty folder, or a model folder jaxgc wrote.

  jaxgc replaces only what it wrote: a model folder is replaced as a whole, so it may hold
  nothing its ``jaxgc-manifest.json`` does not list (:mod:`jaxgc.ownership`). A folder written by
  an earlier jaxgc has no manifest and is recognised by its layout: ``spec.json`` and nothing
  but ``variables/``, ``weights.npz``, ``calibration.json`` and ``samples.png``. Anything else
  (or a file, or a link) is the user's.

  Raises:
    FileExistsError: ``path`` is a file or link, or a folder holding something jaxgc did not
      write (named).
  """
  ownership.check_replaceable(path, MODEL_ENTRIES, SPEC_FILE, "model folder")


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


def _process_local_checkpointer() -> ocp.Checkpointer:
  """orbax's PyTree checkpointer for host (numpy) trees that only this process takes part in:
  in a multi-process job (``jax.distributed.initialize``) process 0 alone saves a model, and any
  process may load one, with no barrier across processes."""
  if jax.process_count() == 1:
    return ocp.PyTreeCheckpointer()
  local = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                             active_processes={jax.process_index()})
  return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=local),
                          multiprocessing_options=local)


def save_model(path: str | os.PathLike, module: nn.Module, variables: dict[str, Any],
               extra: dict[str, Any] | None = None) -> str:
  """Writes ``module`` and ``variables`` to the directory ``path`` atomically.

  Everything goes to a temporary sibling directory first, which is renamed to ``path`` only
  when complete, so an interrupted save leaves no half-written model. Only the calling process
  takes part: in a multi-process job process 0 saves, the others do not call it.

  Args:
    path: target directory; replaced if it exists and is an empty folder or a model folder
      jaxgc wrote (:func:`check_replaceable`), refused otherwise.
    module: a ``jaxgc.models`` zoo module.
    variables: its variables, a nested dict of arrays.
    extra: JSON-serialisable metadata stored in ``spec.json`` (e.g. the source checkpoint).

  Returns:
    The absolute path written.

  Raises:
    FileExistsError: ``path`` holds something jaxgc did not write (nothing is changed).
    PermissionError: the parent folder is not writable.
    OSError: writing failed (a full disk), naming ``path``; nothing partial is left.
  """
  path = os.path.abspath(os.fspath(path))
  check_replaceable(path)
  with ownership.staged_folder(path, "save_model") as tmp:
    spec = {**models.model_spec(module), **(extra or {})}
    with open(os.path.join(tmp, SPEC_FILE), "w") as f:
      json.dump(spec, f, indent=2)
    tree = jax.tree.map(np.asarray, variables)
    _process_local_checkpointer().save(os.path.join(tmp, VARIABLES_DIR), tree)
  return path


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
  """Loads a model directory without torch: one written by ``save_model`` / ``jaxgc convert``
  (orbax ``variables/``), or a ``jaxgc compress`` checkpoint (``weights.npz``, dequantized).

  Returns:
    ``(module, variables)`` with numpy float32 leaves.

  Raises:
    FileNotFoundError: ``path`` has no ``spec.json`` or ``variables/``.
    CheckpointError: NaN or Inf in the weights (naming the first tensor).
  """
  path = os.path.abspath(os.fspath(path))
  spec_path = os.path.join(path, SPEC_FILE)
  quantized = os.path.join(path, QUANTIZED_FILE)
  has_vars = os.path.isdir(os.path.join(path, VARIABLES_DIR))
  if not os.path.isfile(spec_path) or not (has_vars or os.path.isfile(quantized)):
    raise FileNotFoundError(f"not a jaxgc model directory (no {SPEC_FILE}, or neither "
                            f"{VARIABLES_DIR}/ nor {QUANTIZED_FILE}): {path}")
  try:
    with open(spec_path) as f:
      spec = json.load(f)
    module = models.build(spec["arch"], **spec["kwargs"])
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"cannot read the model spec {spec_path}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
  source = os.path.join(path, VARIABLES_DIR) if has_vars else quantized
  try:
    if has_vars:
      variables = _process_local_checkpointer().restore(source)
    else:
      variables = storage.dequantize_variables(storage.load_quantized(quantized))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"cannot read the weights {source} (truncated or corrupt?): "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          ) from None
  variables = jax.tree.map(np.asarray, variables)
  _check_matches_spec(spec, variables, spec_path, source)
  bad = nonfinite_leaves(variables)
  if bad:
    raise CheckpointError(f"model folder {path} has NaN or Inf weights in {len(bad)} "
                          f"tensor(s), first {bad[0]}: refusing to load a broken model")
  return module, variables


@functools.lru_cache(maxsize=64)
def _expected_shapes(arch: str, kwargs_json: str) -> dict[str, tuple[int, ...]] | None:
  """``{path: shape}`` of the variables the model ``arch(**kwargs)`` makes (traced abstractly,
  once per spec: about 1 s for the large ResNet generators), or None when it cannot say."""
  module = models.build(arch, **json.loads(kwargs_json))
  try:
    want = jax.eval_shape(module.init, jax.random.key(0), models.example_input(module))
  except Exception:  # pylint: disable=broad-except  # no abstract init: nothing to compare
    return None
  return {"/".join(str(getattr(k, "key", k)) for k in kp): tuple(v.shape)
          for kp, v in jax.tree_util.tree_flatten_with_path(want)[0]}


def _check_matches_spec(spec: dict[str, Any], variables: Any, spec_path: str,
                        source: str) -> None:
  """Raises CheckpointError unless ``variables`` have the paths and shapes the model of
  ``spec`` makes."""
  want = _expected_shapes(spec["arch"], json.dumps(spec["kwargs"], sort_keys=True))
  if want is None:
    return
  got = {"/".join(str(getattr(k, "key", k)) for k in kp): tuple(np.shape(v))
         for kp, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  for p in sorted(set(want) | set(got)):
    if want.get(p) != got.get(p):
      raise CheckpointError(f"{source} does not match {spec_path}: {p} is "
                            f"{got.get(p, 'missing')} in the weights, "
                            f"{want.get(p, 'absent')} in the model the spec describes")


def nonfinite_leaves(variables: Any) -> list[str]:
  """Paths (``params/conv_in/kernel``) of the float leaves holding NaN or Inf, in tree order."""
  bad = []
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    a = np.asarray(leaf)
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
      bad.append("/".join(str(getattr(k, "key", k)) for k in keypath))
  return bad


def load_any_model(path: str | os.PathLike, arch: str | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
  """A generator from a PyTorch checkpoint file (converted; needs torch), a ``jaxgc convert``
  directory, or a ``jaxgc compress`` checkpoint directory (dequantized)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return load_model(path)
  return convert.load_torch_checkpoint(path, arch)
