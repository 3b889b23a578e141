"""Default inputs of the jobs: natural photos shipped in scikit-image, or seeded latents."""

from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np
from PIL import Image

from jaxgc.convert.torch_io import CheckpointError

# Photos shipped inside the scikit-image wheel (CC0 / public domain), no download needed.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def assets_dir() -> str | None:
  """``$JAXGC_ASSETS`` (the folder of real checkpoints and data), or None when unset."""
  return os.environ.get("JAXGC_ASSETS") or None


def resolve_asset(path: str) -> str:
  """An absolute path, or one relative to ``$JAXGC_ASSETS``.

  Raises:
    FileNotFoundError: the file does not exist (naming it and whether JAXGC_ASSETS is set).
  """
  if os.path.isabs(path) or os.path.exists(path):
    full = path
  else:
    root = assets_dir()
    if root is None:
      raise FileNotFoundError(f"checkpoint {path!r} is relative and JAXGC_ASSETS is unset; "
                              "set JAXGC_ASSETS to the assets folder (e.g. ../shared/assets)")
    full = os.path.join(root, path)
  if not os.path.isfile(full):
    raise FileNotFoundError(f"checkpoint not found: {full}")
  return full


# Photos scikit-image ships that the held-out set (SKIMAGE_PHOTOS) does not use: the training
# inputs of image-to-image jobs on this machine.
# (``cat`` is ``chelsea``: not used.)
TRAIN_PHOTOS = ("hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
                "colorwheel")


@functools.lru_cache(maxsize=8)
def _photo_uint8(name: str) -> np.ndarray:
  """uint8 ``[h, w, 3]`` photo ``name`` from scikit-image (cached; callers must not write it)."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  loader = getattr(skimage.data, name, None)
  if loader is None:
    raise ValueError(f"scikit-image has no photo named {name!r}; try one of "
                     f"{SKIMAGE_PHOTOS + TRAIN_PHOTOS}")
  img = loader()
  img = np.asarray(img[0] if isinstance(img, tuple) else img)
  if img.ndim != 3 or img.shape[-1] < 3:
    raise ValueError(f"scikit-image photo {name!r} is not RGB (shape {img.shape})")
  img = img[..., :3]
  img.setflags(write=False)
  return img


def photo_batch(names=SKIMAGE_PHOTOS, size: int = 256) -> np.ndarray:
  """scikit-image photos, centre-cropped to a square and resized (Lanczos) to ``size``.

  Returns:
    float32 ``[len(names), size, size, 3]`` in [-1, 1] (``(uint8 / 255 - 0.5) / 0.5``, the
    CycleGAN test transform).

  Raises:
    ValueError: a name that scikit-image does not ship as an RGB photo.
  """
  out = []
  for name in names:
    img = _photo_uint8(name)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS)
    out.append(np.asarray(img, np.float32) / 127.5 - 1.0)
  return np.stack(out)


def photo_crops(names: Sequence[str], n: int, size: int, seed: int, step: int) -> np.ndarray:
  """``n`` random ``size x size`` crops (random scale and horizontal flip) of the photos.

  A function of ``(seed, step)`` only (``numpy.random.default_rng((seed, step))``), so a resumed
  run sees the same batches. Each crop takes a random photo, a random square of side between
  ``size`` and the photo's shorter side, resized (Lanczos) to ``size``: CycleGAN's
  resize-and-crop augmentation on an in-memory set.

  Returns:
    float32 ``[n, size, size, 3]`` in [-1, 1].

  Raises:
    ValueError: an unknown or non-RGB photo name, or a photo smaller than ``size``.
  """
  rng = np.random.default_rng((seed, step))
  photos = [_photo_uint8(name) for name in names]
  out = np.empty((n, size, size, 3), np.float32)
  for i in range(n):
    img = photos[rng.integers(len(photos))]
    h, w = img.shape[:2]
    if min(h, w) < size:
      raise ValueError(f"photo of shape {img.shape} is smaller than the crop size {size}")
    side = int(rng.integers(size, min(h, w) + 1))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(img[y:y + side, x:x + side])
    crop = np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS), np.float32)
    if rng.random() < 0.5:
      crop = crop[:, ::-1]
    out[i] = crop / 127.5 - 1.0
  return out


def latents(n: int, z_dim: int, seed: int) -> np.ndarray:
  """``[n, z_dim]`` float32 standard-normal latents from ``numpy.random.default_rng(seed)``."""
  return np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)


def default_inputs(module, cfg) -> tuple[np.ndarray, dict]:
  """The job's inputs for ``module`` and a JSON description of them.

  Image-to-image generators get the scikit-image photos ``cfg.names`` at ``cfg.size``;
  unconditional generators ``cfg.num_samples`` latents from ``cfg.seed``.

  Raises:
    CheckpointError: the module is a discriminator (nothing to generate).
  """
  if module.kind == "image_to_image":
    x = photo_batch(tuple(cfg.names), int(cfg.size))
    return x, {"kind": "skimage_photos", "names": list(cfg.names), "shape": list(x.shape),
               "range": [-1.0, 1.0]}
  if module.kind == "unconditional":
    x = latents(int(cfg.num_samples), int(module.z_dim), int(cfg.seed))
    return x, {"kind": "latents", "distribution": "N(0, 1)", "seed": int(cfg.seed),
               "shape": list(x.shape)}
  raise CheckpointError(f"compress needs a generator; the checkpoint is a {module.kind} "
                        f"({type(module).__name__})")


def to_uint8(images: np.ndarray) -> np.ndarray:
  """``[-1, 1]`` float images ``[n, h, w, c]`` -> uint8 as pytorch-CycleGAN's ``tensor2im``
  (``(y + 1) / 2 * 255``, truncated).

  Raises:
    FloatingPointError: NaN or Inf in ``images`` (naming the first bad image): they would
      otherwise become arbitrary but valid-looking pixels.
  """
  images = check_finite(images, "refusing to turn them into pixels")
  return ((np.clip(images, -1.0, 1.0) + 1.0) / 2.0 * 255.0).astype(np.uint8)


def check_finite(outputs: np.ndarray, consequence: str = "refusing to measure them"
                 ) -> np.ndarray:
  """``outputs`` (a model's ``[n, ...]`` float batch, as a numpy array) when every value is
  finite.

  Raises:
    FloatingPointError: NaN or Inf in ``outputs``, naming how many samples and the first, and
      ``consequence``.
  """
  outputs = np.asarray(outputs)
  finite = np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1) if outputs.size else []
  if not np.all(finite):
    first = int(np.argmin(finite))
    raise FloatingPointError(f"{int(np.sum(~np.asarray(finite)))} of {len(outputs)} images hold "
                             f"NaN or Inf (first: image {first}): the model's outputs are "
                             f"broken, {consequence}")
  return outputs
