"""Feature extraction for the metrics: batched, jitted, sharded over a mesh, cached on disk.

Extractors (``extractor=``):
  * ``"inception"``: pool3 features ``[n, 2048]`` of the FID Inception (``jaxgc.eval.fid_inception``).
  * ``"lenet5"``: the ``[n, 84]`` penultimate features of the MNIST LeNet-5 in
    ``$JAXGC_ASSETS/mnist-lenet5`` (digits resized bilinearly to 32x32, scaled to [0, 1]).
  * ``"pixels"``: raw pixels in [0, 1], flattened ``[n, h * w * c]``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
from PIL import Image

from jaxgc import checkpoint as ckpt_lib
from jaxgc._fileio import cache_root
from jaxgc._fileio import atomic_save_npy
from jaxgc.convert import load_torch_checkpoint
from jaxgc.data import reference as reference_lib
from jaxgc.eval.fid_inception import inception_features
from jaxgc.parallel import batched_apply

EXTRACTORS = ("inception", "lenet5", "pixels")


def as_uint8_images(images: np.ndarray) -> np.ndarray:
  """``[n, h, w]`` or ``[n, h, w, c]`` uint8 -> ``[n, h, w, c]``.

  Raises:
    ValueError: not uint8, or not 3-D/4-D, naming the dtype and shape.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be [n, height, width, 1 or 3], got shape {images.shape}")
  return images


def lenet5_preprocess(images: np.ndarray) -> np.ndarray:
  """uint8 digits ``[n, h, w(, 1)]`` -> float32 ``[n, 32, 32, 1]`` in [0, 1]: PIL bilinear
  resize to 32x32 (torchvision ``Resize(32)`` on PIL images), then ``/ 255``."""
  images = as_uint8_images(images)
  if images.shape[-1] == 3:
    images = np.round(images.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))[..., None]
    images = images.astype(np.uint8)
  if images.shape[1:3] != (32, 32):
    images = np.stack([np.asarray(Image.fromarray(im[..., 0]).resize(
        (32, 32), Image.Resampling.BILINEAR)) for im in images])[..., None]
  return images.astype(np.float32) / 255.0


def load_lenet5(cache_dir: str | None = None, checkpoint: str | None = None):
  """The MNIST LeNet-5 as ``(module, variables)``: from the Flax cache without torch, or
  converted once from ``$JAXGC_ASSETS/mnist-lenet5/lenet5_mnist.pth`` and cached.

  Raises:
    FileNotFoundError: no cache and no checkpoint to convert.
  """
  cache = os.path.join(cache_dir or cache_root(), "lenet5_mnist")
  if os.path.isdir(cache):
    return ckpt_lib.load_model(cache)
  if checkpoint is None:
    root = os.environ.get("JAXGC_ASSETS")
    if not root:
      raise FileNotFoundError(f"LeNet-5 is not cached in {cache} and JAXGC_ASSETS is unset")
    checkpoint = os.path.join(root, "mnist-lenet5", "lenet5_mnist.pth")
  module, variables = load_torch_checkpoint(checkpoint, "lenet5")
  ckpt_lib.save_model(cache, module, variables, extra={"source": os.path.abspath(checkpoint)})
  return module, variables


def lenet5_features(images: np.ndarray, batch_size: int = 500, mesh=None, progress: bool = True,
                    cache_dir: str | None = None) -> np.ndarray:
  """``[n, 84]`` float32 LeNet-5 features of uint8 digits ``[n, h, w(, c)]``."""
  module, variables = load_lenet5(cache_dir)
  x = lenet5_preprocess(images)
  return batched_apply(lambda v, b: module.apply(v, b, method=module.features), x,
                       batch_size, mesh, progress, "lenet5 features", variables=variables)


def pixel_features(images: np.ndarray) -> np.ndarray:
  """``[n, h * w * c]`` float32 pixels in [0, 1]."""
  images = as_uint8_images(images)
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


def extract_features(images: np.ndarray, extractor: str = "inception", resize: str = "clean",
                     batch_size: int = 50, mesh=None, progress: bool = True,
                     cache_dir: str | None = None) -> np.ndarray:
  """Features ``[n, d]`` float32 of uint8 images ``[n, h, w(, c)]`` with ``extractor``.

  Raises:
    ValueError: unknown extractor, or images that are not uint8 ``[n, h, w(, 1 or 3)]``.
  """
  if extractor == "inception":
    return inception_features(as_uint8_images(images), batch_size=batch_size, resize=resize,
                              mesh=mesh, progress=progress)
  if extractor == "lenet5":
    return lenet5_features(images, max(batch_size, 1), mesh, progress, cache_dir)
  if extractor == "pixels":
    return pixel_features(images)
  raise ValueError(f"unknown extractor {extractor!r}; expected one of {EXTRACTORS}")


def cached_features(images: np.ndarray, extractor: str = "inception", resize: str = "clean",
                    cache_dir: str | None = None, **kwargs: Any) -> np.ndarray:
  """``extract_features`` with an on-disk cache keyed by the images' bytes, the extractor and
  the resize method (``<cache>/features/<sha256>.npy``, written atomically).

  Use it for reference sets that many evaluations share; generated samples change every run.
  """
  images = as_uint8_images(images)
  h = hashlib.sha256()
  h.update(json.dumps({"shape": images.shape, "extractor": extractor,
                       "resize": resize if extractor == "inception" else None}).encode())
  h.update(np.ascontiguousarray(images).data)
  folder = os.path.join(cache_dir or cache_root(), "features")
  path = os.path.join(folder, h.hexdigest() + ".npy")
  if os.path.isfile(path):
    return np.load(path, allow_pickle=False)
  feats = extract_features(images, extractor, resize, cache_dir=cache_dir, **kwargs)
  os.makedirs(folder, exist_ok=True)
  atomic_save_npy(path, feats)
  return feats


def reference_features(path: str, extractor: str = "inception", resize: str = "clean", *,
                       limit: int | None = None, key: str | None = None, seed: int = 0,
                       batch_size: int = 50, mesh=None, progress: bool = True,
                       cache_dir: str | None = None,
                       chunk: int = reference_lib.STREAM_CHUNK) -> np.ndarray:
  """Features ``[n, d]`` float32 of a reference set on disk, streamed: the images are decoded
  ``chunk`` at a time (:func:`jaxgc.data.reference.iter_images`) and each chunk goes through
  the extractor before the next is read, so a folder of any size fits in memory and in the
  open-file limit. Cached on disk under a key made of the selected files' names, sizes and
  modification times (:func:`jaxgc.data.reference.set_fingerprint`), the extractor and resize.

  Args:
    path: a folder of images, an ``.npz`` or an IDX file (:func:`jaxgc.data.reference.
      load_images`); ``limit``, ``key`` and ``seed`` select from it as there.
    extractor, resize, batch_size, mesh: as :func:`extract_features`.
    progress: a tqdm bar over the images.
    cache_dir: the cache root (default ``$JAXGC_CACHE`` or ``~/.cache/jaxgc``).
    chunk: images decoded and held at once.

  Raises:
    FileNotFoundError, ValueError: as :func:`jaxgc.data.reference.iter_images` and
      :func:`extract_features`.
  """
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  if extractor not in EXTRACTORS:
    raise ValueError(f"unknown extractor {extractor!r}; expected one of {EXTRACTORS}")
  h = hashlib.sha256(json.dumps({
      "set": reference_lib.set_fingerprint(path, limit, key, seed), "extractor": extractor,
      "resize": resize if extractor == "inception" else None}).encode())
  folder = os.path.join(cache_dir or cache_root(), "features")
  cached = os.path.join(folder, "set-" + h.hexdigest() + ".npy")
  if os.path.isfile(cached):
    return np.load(cached, allow_pickle=False)
  parts = []
  with tqdm(desc=f"{extractor} features", unit="img", disable=not progress) as bar:
    for images in reference_lib.iter_images(path, limit, key, seed, chunk):
      parts.append(extract_features(images, extractor, resize, batch_size=batch_size, mesh=mesh,
                                    progress=False, cache_dir=cache_dir))
      bar.update(len(images))
  feats = np.concatenate(parts)
  os.makedirs(folder, exist_ok=True)
  atomic_save_npy(cached, feats)
  return feats
