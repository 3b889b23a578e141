"""Real low-bit weight storage: integer codes in memory and on disk, not float fake-quant.

:func:`quantize_variables` turns the selected leaves of a variables tree into
:class:`QuantizedTensor` (int8/uint8 codes for 5-8 bits, two 4-bit codes per byte for 2-4 bits,
plus float32 scales and zero points); :func:`save_quantized` writes that tree to a single ``.npz``
file, so the file really is about 1/4 (int8) or 1/8 (int4) of the float32 one.

Invariant: ``dequantize_variables(quantize_variables(v, cfg))`` equals
``quantize.fake_quantize(v, cfg)`` bit for bit, for every bit width, range and granularity: both
compute the scale with :func:`jaxgc.compress.quantize.compute_scale_zero_point`, the codes with
:func:`~jaxgc.compress.quantize.quantize_int` and the values with
:func:`~jaxgc.compress.quantize.dequantize`, ``(q - zero_point) * scale`` in float32.

Scheme: Jacob et al. 2018 (eq. 1-3); per-channel low-bit weights for GANs: Andreev et al. 2021
(arXiv 2108.13996).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgc._fileio import atomic_savez
from jaxgc.compress import quantize
from jaxgc.compress import selection

FORMAT = "jaxgc.quantized"
FORMAT_VERSION = 1
_META_KEY = "__meta__"
_MAX_PACKED_BITS = 4


def pack_int4(codes: jax.Array) -> jax.Array:
  """Packs 4-bit codes two per byte.

  Codes are flattened in C order; code ``2i`` goes to the low nibble of byte ``i`` and code
  ``2i + 1`` to its high nibble; an odd count is padded with a zero nibble. Signed codes
  (``[-8, 7]``) are stored as their two's-complement nibble (``-1 -> 0xF``, ``-7 -> 0x9``),
  unsigned codes (``[0, 15]``) as they are; :func:`unpack_int4` undoes either given ``signed``.

  Args:
    codes: integer array of any shape with values in ``[-8, 15]``.

  Returns:
    uint8 array of shape ``[ceil(codes.size / 2)]``.

  Raises:
    ValueError: (concrete input only) a code outside ``[-8, 15]`` or a non-integer dtype.
  """
  if not jnp.issubdtype(jnp.result_type(codes), jnp.integer):
    raise ValueError(f"pack_int4 needs integer codes, got dtype {jnp.result_type(codes)}")
  flat = jnp.asarray(codes).astype(jnp.int32).reshape(-1)
  if not isinstance(codes, jax.core.Tracer) and flat.size:
    lo, hi = int(flat.min()), int(flat.max())
    if lo < -8 or hi > 15:
      raise ValueError(f"pack_int4 codes must be in [-8, 15], got range [{lo}, {hi}]")
  nib = flat & 0xF
  if nib.size % 2:
    nib = jnp.concatenate([nib, jnp.zeros((1,), jnp.int32)])
  return (nib[0::2] | (nib[1::2] << 4)).astype(jnp.uint8)


def unpack_int4(packed: jax.Array, n: int, signed: bool) -> jax.Array:
  """Inverse of :func:`pack_int4`.

  Args:
    packed: uint8 array of shape ``[ceil(n / 2)]``.
    n: number of codes (static).
    signed: sign-extend the nibbles to ``[-8, 7]`` when true; ``[0, 15]`` when false.

  Returns:
    int32 codes of shape ``[n]``.

  Raises:
    ValueError: ``packed`` does not hold exactly ``ceil(n / 2)`` bytes.
  """
  packed = jnp.asarray(packed)
  if packed.size != (n + 1) // 2:
    raise ValueError(f"unpack_int4: {packed.size} bytes cannot hold exactly {n} 4-bit codes")
  p = packed.reshape(-1).astype(jnp.int32)
  codes = jnp.stack([p & 0xF, (p >> 4) & 0xF], axis=-1).reshape(-1)[:n]
  if signed:
    codes = jnp.where(codes >= 8, codes - 16, codes)
  return codes


@flax.struct.dataclass
class QuantizedTensor:
  """A weight tensor stored as low-bit integer codes with float32 scales.

  Represents ``(codes - zero_point) * scale`` cast to ``dtype`` (Jacob et al. 2018, eq. 1).

  Invariants:
    * ``bits`` in ``[2, 8]``; ``packed == (bits <= 4)``.
    * ``packed``: ``qvalue`` is uint8 ``[ceil(prod(shape) / 2)]``, two codes per byte
      (:func:`pack_int4`); otherwise ``qvalue`` has shape ``shape`` and dtype int8 (symmetric,
      codes in ``[-(2**(b-1) - 1), 2**(b-1) - 1]``) or uint8 (asymmetric, ``[0, 2**b - 1]``).
    * ``scale`` and ``zero_point`` are float32 of shape ``[1, ..., 1]`` or ``[1, ..., 1, out]``
      (``ndim == len(shape)``); ``zero_point`` is integer valued and 0 when ``symmetric``.

  ``qvalue``, ``scale`` and ``zero_point`` are pytree children; ``bits``, ``symmetric``,
  ``shape``, ``packed`` and ``dtype`` are static metadata.
  """

  qvalue: jax.Array
  scale: jax.Array
  zero_point: jax.Array
  bits: int = flax.struct.field(pytree_node=False)
  symmetric: bool = flax.struct.field(pytree_node=False)
  shape: tuple[int, ...] = flax.struct.field(pytree_node=False)
  packed: bool = flax.struct.field(pytree_node=False)
  dtype: str = flax.struct.field(pytree_node=False, default="float32")

  def codes(self) -> jax.Array:
    """The integer codes, int32 of shape ``shape``."""
    if self.packed:
      n = int(np.prod(self.shape, dtype=np.int64))
      return unpack_int4(self.qvalue, n, self.symmetric).reshape(self.shape)
    return jnp.asarray(self.qvalue).astype(jnp.int32)

  def dequantize(self) -> jax.Array:
    """The real-valued weights, shape ``shape``, dtype ``dtype``."""
    return quantize.dequantize(self.codes(), self.scale, self.zero_point).astype(
        jnp.dtype(self.dtype))

  @property
  def nbytes(self) -> int:
    """Bytes held by codes, scales and zero points."""
    return int(sum(np.asarray(x).nbytes for x in (self.qvalue, self.scale, self.zero_point)))


def _is_qt(x: Any) -> bool:
  return isinstance(x, QuantizedTensor)


def quantize_tensor(
    w: jax.Array,
    bits: int,
    symmetric: bool = True,
    granularity: str = "per_channel",
) -> QuantizedTensor:
  """Quantizes one weight tensor to low-bit storage.

  Args:
    w: weights, e.g. ``[kh, kw, in, out]``, any float dtype; arithmetic in float32.
    bits: bit width in ``[2, 8]``.
    symmetric: symmetric signed or asymmetric unsigned codes.
    granularity: ``"per_channel"`` (last axis) or ``"per_tensor"``.

  Returns:
    A :class:`QuantizedTensor` whose :meth:`~QuantizedTensor.dequantize` equals
    ``quantize.fake_quant(w, bits, symmetric, granularity)`` bit for bit.

  Raises:
    ValueError: ``bits`` outside ``[2, 8]`` or an unknown ``granularity``.
  """
  quantize.check_bits(bits)
  quantize.check_granularity(granularity)
  w = jnp.asarray(w)
  w32 = w.astype(jnp.float32)
  scale, zero_point = quantize.compute_scale_zero_point(w32, bits, symmetric, granularity)
  codes = quantize.quantize_int(w32, scale, zero_point, bits, symmetric)
  packed = bits <= _MAX_PACKED_BITS
  if packed:
    qvalue = pack_int4(codes)
  else:
    qvalue = codes.astype(jnp.int8 if symmetric else jnp.uint8)
  return QuantizedTensor(
      qvalue=qvalue, scale=scale, zero_point=zero_point, bits=int(bits),
      symmetric=bool(symmetric), shape=tuple(int(d) for d in w.shape), packed=packed,
      dtype=jnp.dtype(w.dtype).name)


def quantize_variables(
    variables: Any,
    config: quantize.QuantConfig,
    include: str = selection.DEFAULT_INCLUDE,
    exclude: str | None = None,
) -> Any:
  """Replaces the selected leaves of a variables tree by :class:`QuantizedTensor`.

  Pure: the input is not modified; leaves that are not selected are kept as they are (float
  arrays).

  Args:
    variables: nested dicts of arrays, e.g. ``{"params": {...}, "batch_stats": {...}}``, or
      an ``nnx.State`` (``nnx.split(model)``; selected by its Linen-style paths, returned as an
      ``nnx.State``: :mod:`jaxgc.compress.selection`).
    config: the :class:`~jaxgc.compress.quantize.QuantConfig`.
    include: regex on "/"-joined paths; by default every ``kernel`` under ``params``.
    exclude: optional regex of paths to keep in full precision.

  Returns:
    A tree of the same structure with :class:`QuantizedTensor` at the selected leaves.

  Raises:
    ValueError: no leaf selected, or a selected leaf is not floating point or holds NaN/Inf (the
      message names the path).
  """
  return selection.map_selected(
      lambda w: quantize_tensor(w, config.bits, config.symmetric, config.granularity),
      variables, include, exclude)


def dequantize_variables(tree: Any) -> Any:
  """Replaces every :class:`QuantizedTensor` by its dequantized array (original dtype).

  Args:
    tree: a tree from :func:`quantize_variables` or :func:`load_quantized`.

  Returns:
    A variables tree of plain arrays.
  """
  return jax.tree_util.tree_map(
      lambda x: x.dequantize() if _is_qt(x) else x, tree, is_leaf=_is_qt)


def _dict_path(keypath) -> str:
  parts = []
  for key in keypath:
    if not isinstance(key, jax.tree_util.DictKey) or not isinstance(key.key, str):
      raise ValueError(
          f"save_quantized supports nested dicts with str keys only; got key {key!r} at "
          f"'{selection.path_str(keypath)}'")
    if "/" in key.key or ":" in key.key or not key.key:
      raise ValueError(f"save_quantized: key {key.key!r} must be non-empty without '/' or ':'")
    parts.append(key.key)
  path = "/".join(parts)
  if path == _META_KEY:
    raise ValueError(f"save_quantized: path '{_META_KEY}' is reserved")
  return path


def _to_storable(x: Any) -> tuple[np.ndarray, str]:
  """NumPy array that np.save writes without pickle, plus the dtype name to restore."""
  arr = np.asarray(x)
  name = jnp.dtype(arr.dtype).name
  if arr.dtype.kind not in "biuf":  # bfloat16 & co. (ml_dtypes) are saved as raw unsigned bits.
    arr = arr.view(f"u{arr.dtype.itemsize}")
  return arr, name


def _from_storable(arr: np.ndarray, name: str) -> np.ndarray:
  dtype = jnp.dtype(name)
  return arr if arr.dtype == dtype else arr.view(dtype)


def save_quantized(tree: Any, path: str | os.PathLike) -> int:
  """Writes a (partly) quantized variables tree to one uncompressed ``.npz`` file.

  Entry names are the "/"-joined leaf paths; a :class:`QuantizedTensor` at ``p`` becomes
  ``p:qvalue``, ``p:scale`` and ``p:zero_point``. A JSON entry ``__meta__`` (stored as uint8
  bytes) records the format, version and, per leaf, its kind, shape, dtype and for quantized
  leaves ``bits``, ``symmetric`` and ``packed``. Nothing is pickled. Dtypes NumPy cannot save
  natively (bfloat16) are stored as their raw bits and restored from the metadata.

  The file is written to a temporary file in the same directory and moved into place with
  ``os.replace``, so ``path`` is never half-written. It is written exactly at ``path`` (no
  ``.npz`` suffix is added).

  Args:
    tree: nested dicts with str keys (no "/" or ":" in a key) whose leaves are arrays or
      :class:`QuantizedTensor`; or an ``nnx.State`` of them, written under its Linen-style
      paths (``params/conv_in/kernel``; RNG state left out), so the file is the one its Linen
      variables give and :func:`load_quantized` returns Linen variables.
    path: destination file.

  Returns:
    The size of the file in bytes (``os.path.getsize``).

  Raises:
    ValueError: the tree is not nested dicts with valid str keys.
  """
  if selection.has_variables(tree):  # an nnx.State: written under its Linen paths
    tree = selection.linen_dict(tree, is_leaf=_is_qt)
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_qt)
  entries: dict[str, np.ndarray] = {}
  meta_leaves: dict[str, dict[str, Any]] = {}
  for keypath, leaf in leaves:
    p = _dict_path(keypath)
    if _is_qt(leaf):
      entries[f"{p}:qvalue"] = np.asarray(leaf.qvalue)
      entries[f"{p}:scale"] = np.asarray(leaf.scale, np.float32)
      entries[f"{p}:zero_point"] = np.asarray(leaf.zero_point, np.float32)
      meta_leaves[p] = {
          "kind": "quantized", "bits": leaf.bits, "symmetric": leaf.symmetric,
          "shape": list(leaf.shape), "packed": leaf.packed, "dtype": leaf.dtype}
    else:
      arr, name = _to_storable(leaf)
      entries[p] = arr
      meta_leaves[p] = {"kind": "array", "shape": list(arr.shape), "dtype": name}
  meta = {"format": FORMAT, "version": FORMAT_VERSION, "leaves": meta_leaves}
  entries[_META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
  return atomic_savez(path, entries)


def load_quantized(path: str | os.PathLike) -> Any:
  """Reads a file written by :func:`save_quantized` (``allow_pickle=False``).

  Args:
    path: the file.

  Returns:
    Nested dicts with NumPy arrays and :class:`QuantizedTensor` leaves (holding NumPy arrays),
    in the order they were saved.

  Raises:
    ValueError: the file is not a jaxgc quantized file of a known version.
  """
  with np.load(os.fspath(path), allow_pickle=False) as z:
    if _META_KEY not in z.files:
      raise ValueError(f"{os.fspath(path)} is not a {FORMAT} file (no '{_META_KEY}' entry)")
    meta = json.loads(bytes(z[_META_KEY]).decode("utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
      raise ValueError(
          f"{os.fspath(path)}: unsupported format {meta.get('format')!r} "
          f"version {meta.get('version')!r}")
    tree: dict[str, Any] = {}
    for p, info in meta["leaves"].items():
      if info["kind"] == "quantized":
        quantize.check_bits(info["bits"])
        leaf = QuantizedTensor(
            qvalue=z[f"{p}:qvalue"], scale=z[f"{p}:scale"], zero_point=z[f"{p}:zero_point"],
            bits=info["bits"], symmetric=info["symmetric"], shape=tuple(info["shape"]),
            packed=info["packed"], dtype=info["dtype"])
      else:
        leaf = _from_storable(z[p], info["dtype"])
      node = tree
      *parents, name = p.split("/")
      for key in parents:
        node = node.setdefault(key, {})
      node[name] = leaf
  return tree


def fp32_bytes(variables: Any) -> int:
  """Size in bytes of ``variables`` saved by :func:`save_quantized` with every leaf as float32.

  :class:`QuantizedTensor` leaves are dequantized first, so the result is the float32 baseline of
  either a plain or a quantized tree, written by the same writer: ``save_quantized(q, p) /
  fp32_bytes(v)`` is an honest size ratio.

  Args:
    variables: nested dicts of arrays and/or :class:`QuantizedTensor`.

  Returns:
    Bytes of the float32 file.
  """
  fp32 = jax.tree_util.tree_map(
      lambda x: np.asarray(x.dequantize() if _is_qt(x) else x, dtype=np.float32),
      variables, is_leaf=_is_qt)
  with tempfile.TemporaryDirectory() as d:
    return save_quantized(fp32, os.path.join(d, "fp32.npz"))
