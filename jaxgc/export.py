"""Serialized generators: one ``jax.export`` artifact that runs without jaxgc's model code.

:func:`save` traces a (compressed) generator once with a symbolic batch dimension and lowers it
for several platforms at once (CPU, CUDA and TPU by default: ``jax.export.export(...,
platforms=...)``), with every weight embedded in the graph as a constant. Weights stored low-bit
(:class:`jaxgc.compress.QuantizedTensor`: int8/uint8 codes, or 4-bit codes packed two per byte)
stay low-bit constants, with their float32 scales and zero points, and are dequantized by ops in
the graph (``(codes - zero_point) * scale``, :mod:`jaxgc.compress.storage`), so the artifact is
about the size of the compressed weights. Calibrated activation fake quantization
(:mod:`jaxgc.compress.activations`, static ranges) is traced into the graph too. :func:`load`
deserializes the artifact (``jax.export.deserialize``) and runs it: no Flax module, no jaxgc model
code is needed, only ``jax``.

An export folder holds ``model.jaxexport`` (the serialized ``jax.export.Exported``),
``export.json`` (what it is: input and output shapes, platforms, weight and activation formats,
sizes, versions) and, on request, ``model.stablehlo.mlir`` (the StableHLO text of the module, for
reading). It is written to a temporary sibling folder and renamed into place; a path holding
anything jaxgc did not write is refused.

Source: ``jax.export`` (JAX's "Exporting and serializing staged-out computations" guide):
``export``, ``symbolic_shape``, ``Exported.serialize`` / ``deserialize`` / ``call``; the
serialization needs the ``flatbuffers`` package.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.nnx import bridge

import jaxgc
from jaxgc import checkpoint
from jaxgc import compress
from jaxgc import convert
from jaxgc import models
from jaxgc import ownership
from jaxgc._fileio import atomic_write_text
from jaxgc.compress import selection
from jaxgc.compress import storage

ARTIFACT_FILE = "model.jaxexport"
META_FILE = "export.json"
STABLEHLO_FILE = "model.stablehlo.mlir"
EXPORT_ENTRIES = frozenset({ARTIFACT_FILE, META_FILE, STABLEHLO_FILE})
FORMAT = "jaxgc.export"
FORMAT_VERSION = 1
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


# ------------------------------------------------------------------------------------------------
# Checks.


def check_replaceable(path: str | os.PathLike) -> None:
  """Raises unless ``path`` is absent, an empty folder, or an export folder jaxgc wrote.

  An export folder holds what its ``jaxgc-manifest.json`` lists (``model.jaxexport``,
  ``export.json``, ``model.stablehlo.mlir``); anything else (or a file, or a link) is the
  user's (:func:`jaxgc.ownership.check_replaceable`).

  Raises:
    FileExistsError: ``path`` is a file or link, or a folder holding something jaxgc did not
      write (named).
  """
  ownership.check_replaceable(path, EXPORT_ENTRIES, META_FILE, "export folder")


def _check_platforms(platforms: Any) -> tuple[str, ...]:
  if isinstance(platforms, str):
    platforms = tuple(p.strip() for p in platforms.split(","))
  platforms = tuple(platforms)
  if not platforms:
    raise ValueError("platforms is empty: name at least one of " + ", ".join(PLATFORMS))
  for p in platforms:
    if p not in PLATFORMS:
      raise ValueError(f"unknown platform {p!r}; expected some of {', '.join(PLATFORMS)}")
  if len(set(platforms)) != len(platforms):
    raise ValueError(f"platforms {platforms} name one platform twice")
  return platforms


def input_shape_of(module: nn.Module, size: int = 256) -> tuple[int, ...]:
  """The shape of one input of ``module`` without the batch axis: ``(size, size, input_nc)``
  for image-to-image generators, ``(z_dim,)`` for unconditional ones, the image shape for
  discriminators.

  Raises:
    ValueError: ``size`` is not an int >= 4 divisible by 4 (the zoo's generators halve twice),
      or ``module`` is not a zoo model (naming its class).
  """
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4 or size % 4:
    raise ValueError(f"size must be an int >= 4 divisible by 4, got {size!r}")
  kind = getattr(module, "kind", None)
  if kind == "image_to_image":
    return (int(size), int(size), int(module.input_nc))
  if kind is None:
    raise ValueError(f"{type(module).__name__} is not a jaxgc zoo model: give input_shape")
  return tuple(int(d) for d in models.example_input(module).shape[1:])


def _is_qt(x: Any) -> bool:
  return isinstance(x, storage.QuantizedTensor)


def _weights_summary(variables: Any) -> dict[str, Any]:
  """Counts of leaves and bytes by storage format (``float32``, ``int8``, ``int4 packed``...)."""
  by_format: dict[str, dict[str, int]] = {}
  for leaf in jax.tree_util.tree_leaves(variables, is_leaf=_is_qt):
    if _is_qt(leaf):
      name = f"int{leaf.bits}" + (" packed" if leaf.packed else "")
      nbytes = leaf.nbytes
    else:
      name = jnp.dtype(jnp.result_type(leaf)).name
      nbytes = int(np.asarray(leaf).nbytes)
    entry = by_format.setdefault(name, {"tensors": 0, "bytes": 0})
    entry["tensors"] += 1
    entry["bytes"] += nbytes
  return by_format


def _check_leaves(variables: Any) -> None:
  for path, leaf in selection.flatten_with_paths(variables, is_leaf=_is_qt)[0]:
    if path is None or _is_qt(leaf):
      continue
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(f"cannot export '{path}': dtype {jnp.result_type(leaf)} is not floating "
                       "point (low-bit weights must be QuantizedTensor leaves)")


# ------------------------------------------------------------------------------------------------
# Save.


def _forward(module: nn.Module, variables: Any, act_config: Any, calibration: Any,
             act_rules: Any):
  """``x -> module.apply(dequantized variables, x)``, activations fake-quantized when asked.

  ``variables`` are closed over: their leaves become constants of the traced graph, low-bit
  codes included (every op on them is staged out, so dequantization happens in the graph).
  """
  def forward(x):
    v = storage.dequantize_variables(variables)
    if act_config is None:
      return module.apply(v, x)
    return compress.apply_quantized(module, v, x, act_config, calibration, rules=act_rules)

  return forward


def save(
    module: nn.Module | bridge.ToNNX,
    variables: Any,
    path: str | os.PathLike,
    *,
    size: int = 256,
    input_shape: Sequence[int] | None = None,
    act_config: compress.ActQuantConfig | None = None,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    act_rules: Sequence[Any] | None = None,
    platforms: Sequence[str] | str = DEFAULT_PLATFORMS,
    stablehlo: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Exports ``module`` with ``variables`` as a serialized ``jax.export`` artifact in ``path``.

  The artifact computes ``y = module.apply(variables, x)`` for ``x`` of shape ``[batch,
  *input_shape]`` float32 with a symbolic ``batch`` (any batch >= 1 runs from the one artifact);
  for the image-to-image generators ``x`` is ``[batch, height, width, channels]`` in [-1, 1]
  and ``y`` is ``[batch, height, width, output_nc]`` in [-1, 1]; for the unconditional ones ``x``
  is ``[batch, z_dim]`` latents. :class:`~jaxgc.compress.QuantizedTensor` leaves (from
  :func:`jaxgc.compress.quantize_variables` or :func:`jaxgc.compress.load_quantized`) are
  embedded as their int8 / packed-int4 codes and dequantized in the graph, which equals the
  fake-quantized model (:mod:`jaxgc.compress.storage`'s invariant). With ``act_config`` the
  layer inputs are fake-quantized as by :func:`jaxgc.compress.apply_quantized` with the
  ``calibration`` ranges baked in.

  Args:
    module: a Flax Linen module of the zoo (or any Linen module with ``input_shape``), or an NNX
      model bridged by :func:`jaxgc.convert.to_nnx` (then ``variables`` may be ``None``: the
      model's own are used).
    variables: Linen variables (nested dicts of float arrays and/or ``QuantizedTensor``), or an
      ``nnx.State`` of them (``nnx.split`` of the bridged model).
    path: output folder; created; replaced only if it is empty or an export folder jaxgc
      wrote.
    size: image side for image-to-image generators, an int >= 4 divisible by 4; ignored when
      ``input_shape`` is given or the model takes latents.
    input_shape: the shape of one input without the batch axis, e.g. ``(256, 256, 3)``.
    act_config: activation quantization, static mode with ``calibration`` (or dynamic); None
      for none.
    calibration: ``{layer_path: {"min", "max"}}`` from :func:`jaxgc.compress.calibrate` or
      :func:`jaxgc.compress.load_calibration`.
    act_rules: per-layer activation rules (:func:`jaxgc.compress.act_rules`), may use
      ``"@first"`` / ``"@last"``.
    platforms: some of ``"cpu"``, ``"cuda"``, ``"rocm"``, ``"tpu"`` (a sequence or a comma
      separated string); the artifact runs on each.
    stablehlo: also write ``model.stablehlo.mlir``, the StableHLO text (large: constants are
      printed in hex).
    metadata: JSON-serialisable facts stored under ``"source"`` in ``export.json``.

  Returns:
    The content of ``export.json``: ``{"format", "version", "input": {"shape": ["batch", ...],
    "dtype"}, "output": {...}, "platforms", "weights": {format: {"tensors", "bytes"}},
    "activations", "artifact_bytes", "jax_version", "jaxgc_version", "model", "source"}``.

  Raises:
    FileExistsError: ``path`` holds something jaxgc did not write (nothing is changed).
    PermissionError: the parent folder is not writable.
    TypeError: ``module`` is neither a Linen module nor a ``ToNNX`` model.
    ValueError: an unknown platform, a bad ``size`` / ``input_shape``, a non-float leaf, static
      activation quantization without calibration, or a model that fails on the input shape
      (naming it).
  """
  if isinstance(module, bridge.ToNNX):
    bridged_module, bridged_vars = convert.from_nnx(module)
    module, variables = bridged_module, bridged_vars if variables is None else variables
  if not isinstance(module, nn.Module):
    raise TypeError(f"save needs a flax.linen Module or a ToNNX model, got "
                    f"{type(module).__name__}")
  if selection.has_variables(variables):
    variables = selection.linen_dict(variables, is_leaf=_is_qt)
  platforms = _check_platforms(platforms)
  if input_shape is None:
    shape = input_shape_of(module, size)
  else:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                            and d >= 1 for d in shape):
      raise ValueError(f"input_shape must be positive ints without the batch axis, got "
                       f"{input_shape!r}")
    shape = tuple(int(d) for d in shape)
  if act_config is not None:
    if not isinstance(act_config, compress.ActQuantConfig):
      raise TypeError(f"act_config must be an ActQuantConfig, got {type(act_config).__name__}")
    if act_config.mode == "static" and calibration is None:
      raise ValueError("static activation quantization needs a calibration to export")
  _check_leaves(variables)
  path = os.path.abspath(os.fspath(path))
  check_replaceable(path)

  variables = jax.tree.map(np.asarray, variables)  # host constants, whatever the device
  calibration = None if calibration is None else jax.tree.map(np.asarray, dict(calibration))
  forward = _forward(module, variables, act_config, calibration, act_rules)
  batch, = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch,) + shape, jnp.float32)
  try:
    exported = jax.export.export(jax.jit(forward), platforms=platforms)(spec)
  except (TypeError, ValueError, flax.errors.FlaxError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f"{type(module).__name__} cannot be exported for inputs [batch, "
                     f"{', '.join(map(str, shape))}]: {first}") from e
  blob = exported.serialize()

  out = exported.out_avals[0] if len(exported.out_avals) == 1 else None
  meta = {
      "format": FORMAT, "version": FORMAT_VERSION,
      "input": {"shape": ["batch", *shape], "dtype": "float32"},
      "output": None if out is None else {
          "shape": [str(d) if not isinstance(d, int) else d for d in out.shape],
          "dtype": jnp.dtype(out.dtype).name},
      "platforms": list(exported.platforms),
      "weights": _weights_summary(variables),
      "activations": None if act_config is None else {
          "bits": act_config.bits, "symmetric": act_config.symmetric,
          "granularity": act_config.granularity, "mode": act_config.mode,
          "calibrated_layers": 0 if calibration is None else len(calibration)},
      "artifact_bytes": len(blob),
      "jax_version": jax.__version__, "jaxgc_version": jaxgc.__version__,
      "model": _model_spec(module),
      "source": dict(metadata or {}),
  }
  with ownership.staged_folder(path, "export") as tmp:
    with open(os.path.join(tmp, ARTIFACT_FILE), "wb") as f:
      f.write(blob)
    if stablehlo:
      atomic_write_text(os.path.join(tmp, STABLEHLO_FILE), exported.mlir_module())
    atomic_write_text(os.path.join(tmp, META_FILE), json.dumps(meta, indent=2))
  return meta


def _model_spec(module: nn.Module) -> dict[str, Any]:
  try:
    return models.model_spec(module)
  except ValueError:  # not a zoo module
    return {"class": type(module).__name__}


# ------------------------------------------------------------------------------------------------
# Load.


class ExportedGenerator:
  """A generator deserialized from an export folder; calling it runs the artifact.

  Invariant: ``metadata["input"]["shape"]`` is ``["batch", *input_shape]`` and the artifact was
  lowered for ``platforms``.

  Attributes:
    exported: the ``jax.export.Exported``.
    metadata: the content of ``export.json``.
    input_shape: one input's shape without the batch axis.
    platforms: the platforms the artifact runs on.
  """

  def __init__(self, exported: jax.export.Exported, metadata: dict[str, Any]):
    self.exported = exported
    self.metadata = metadata
    self.input_shape = tuple(metadata["input"]["shape"][1:])
    self.platforms = tuple(exported.platforms)
    self._call = jax.jit(exported.call)

  def __call__(self, x: Any) -> jax.Array:
    """Runs the artifact on ``x``, ``[batch, *input_shape]`` float32 (batch >= 1).

    Raises:
      ValueError: ``x`` has another shape, or the current platform is not one of
        ``platforms``.
    """
    x = jnp.asarray(x)
    if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape or (
        x.shape[0] < 1):
      raise ValueError(f"input has shape {tuple(x.shape)}, the artifact takes [batch, "
                       f"{', '.join(map(str, self.input_shape))}] with batch >= 1")
    backend = jax.default_backend()
    if backend not in self.platforms and not (backend == "gpu" and "cuda" in self.platforms):
      raise ValueError(f"the artifact runs on {', '.join(self.platforms)}, not on the current "
                       f"platform {backend}")
    return self._call(x.astype(jnp.float32))


def load(path: str | os.PathLike) -> ExportedGenerator:
  """Reads an export folder written by :func:`save` (or ``jaxgc export``).

  Needs only ``jax`` (and ``flatbuffers``): the graph and its weights come from the artifact.

  Args:
    path: the export folder.

  Returns:
    An :class:`ExportedGenerator`; ``load(path)(x)`` gives the outputs, e.g. ``[batch, 256,
    256, 3]`` float32 in [-1, 1] for an image-to-image generator.

  Raises:
    FileNotFoundError: ``path`` has no ``export.json`` or ``model.jaxexport``.
    ValueError: ``export.json`` is not a jaxgc export of a known version, or the artifact
      cannot be deserialized (truncated or corrupt), naming the file.
  """
  path = os.path.abspath(os.fspath(path))
  meta_path, blob_path = os.path.join(path, META_FILE), os.path.join(path, ARTIFACT_FILE)
  for p in (meta_path, blob_path):
    if not os.path.isfile(p):
      raise FileNotFoundError(f"not a jaxgc export folder (no {os.path.basename(p)}): {path}")
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{meta_path} is not readable JSON: {e}") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT or (
      meta.get("version") != FORMAT_VERSION):
    raise ValueError(f"{meta_path}: not a {FORMAT} version {FORMAT_VERSION} export")
  with open(blob_path, "rb") as f:
    blob = f.read()
  try:
    exported = jax.export.deserialize(bytearray(blob))
  except Exception as e:  # pylint: disable=broad-except  # flatbuffers raises many kinds
    raise ValueError(f"cannot deserialize {blob_path} (truncated or corrupt?): "
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
  return ExportedGenerator(exported, meta)


# ------------------------------------------------------------------------------------------------
# Model folders.


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, Any, dict[str, Any]]:
  """A model folder, its weights kept low-bit, and the activation settings it was made with.

  Args:
    path: a ``jaxgc convert`` folder (float32 ``variables/``) or a ``jaxgc compress``
      checkpoint (``weights.npz``, maybe ``calibration.json``).

  Returns:
    ``(module, variables, act)``: ``variables`` with :class:`~jaxgc.compress.QuantizedTensor`
    leaves where the checkpoint stores codes; ``act`` the keyword arguments ``act_config``,
    ``calibration`` and ``act_rules`` of :func:`save` (empty without ``calibration.json``).

  Raises:
    FileNotFoundError: not a model folder.
    CheckpointError: corrupt or mismatched weights (see :func:`jaxgc.checkpoint.load_model`).
    ValueError: ``calibration.json`` without the activation settings in ``spec.json`` (a
      checkpoint of an older jaxgc, other than a shipped recipe's).
  """
  path = os.path.abspath(os.fspath(path))
  module, variables = checkpoint.load_model(path)  # checks spec, shapes, finiteness
  quantized = os.path.join(path, checkpoint.QUANTIZED_FILE)
  if os.path.isfile(quantized) and not os.path.isdir(os.path.join(path, checkpoint.VARIABLES_DIR)):
    variables = storage.load_quantized(quantized)
  calib_path = os.path.join(path, checkpoint.CALIBRATION_FILE)
  if not os.path.isfile(calib_path):
    return module, variables, {}
  with open(os.path.join(path, checkpoint.SPEC_FILE), encoding="utf-8") as f:
    spec = json.load(f)
  act = spec.get("activations")
  if act is None:
    recipe_name = (spec.get("compression") or {}).get("recipe")
    if not recipe_name:
      raise ValueError(f"{calib_path} exists but {checkpoint.SPEC_FILE} does not record the "
                       "activation settings (an older jaxgc compress): rerun jaxgc compress")
    recipe = compress.load_recipe(recipe_name)
    act_config = recipe.act_config()
    rules = compress.act_rules(recipe.rules, recipe.default_act_bits)
  else:
    act_config = compress.ActQuantConfig(int(act["bits"]), bool(act["symmetric"]),
                                         act.get("granularity", "per_tensor"),
                                         act.get("mode", "static"))
    rules = None if act.get("rules") is None else [tuple(r) for r in act["rules"]]
  return module, variables, {"act_config": act_config,
                             "calibration": compress.load_calibration(calib_path),
                             "act_rules": rules}


def export_checkpoint(checkpoint_dir: str | os.PathLike, out: str | os.PathLike, *,
                      size: int = 256, platforms: Sequence[str] | str = DEFAULT_PLATFORMS,
                      stablehlo: bool = False) -> dict[str, Any]:
  """``jaxgc export CHECKPOINT_DIR OUT``: :func:`load_checkpoint`, then :func:`save`.

  Args:
    checkpoint_dir: a ``jaxgc convert`` folder or a ``jaxgc compress`` checkpoint
      (``WORKDIR/checkpoints/<setting>``).
    out: the export folder.
    size: image side of image-to-image generators (int >= 4, divisible by 4).
    platforms: see :func:`save`.
    stablehlo: also write the StableHLO text.

  Returns:
    The content of ``export.json``.

  Raises:
    The errors of :func:`load_checkpoint` and :func:`save`.
  """
  out_abs = os.path.abspath(os.fspath(out))
  check_replaceable(out_abs)  # before the work
  _check_platforms(platforms)
  module, variables, act = load_checkpoint(checkpoint_dir)
  return save(module, variables, out_abs, size=size, platforms=platforms, stablehlo=stablehlo,
              metadata={"checkpoint": os.path.abspath(os.fspath(checkpoint_dir))}, **act)
