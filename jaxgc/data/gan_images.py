"""Training images for ``jaxgc gan``: MNIST / Fashion-MNIST arrays or a folder, split and padded.

Sources (``source=``):

* ``"fashion_mnist"``: ``$JAXGC_ASSETS/fashion-mnist/{train,t10k}-images-idx3-ubyte.gz``
  (60,000 training and 10,000 test images); the test split is held out.
* ``"mnist"``: ``$JAXGC_ASSETS/mnist10k/mnist10k_uint8.npz`` (10,000 digits; no split ships,
  so a seeded 20% is held out).
* a folder of images (sorted by name, :func:`jaxgc.data.reference.load_images`): every image
  must have the same size (mixed sizes are refused, naming the first odd file); a folder of
  another size than ``resolution`` is resized (PIL bicubic) to it. A seeded 10% is held out.

pix2pix AB folders (:func:`load_pairs`, the aligned layout of pytorch-CycleGAN-and-pix2pix's
``datasets/combine_A_and_B.py``): ``<root>/train/`` and ``<root>/test/`` (or ``val/``) hold
images of width ``2 * height``, input A on the left, target B on the right.

28x28 digits and garments are padded with black (value 0) by 2 pixels on each side to 32x32,
as the DCGAN and SAGAN MNIST setups do, then resized only if ``resolution`` is not 32.
``channels`` 3 repeats a grayscale image; 1 converts RGB to luma (ITU-R 601).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxgc import _fileio
from jaxgc.data import inputs as inputs_lib
from jaxgc.data import reference as reference_lib

SOURCES = ("fashion_mnist", "mnist")
_FOLDER_HELD_OUT = 0.1
_MNIST_HELD_OUT = 0.2


def _asset(path: str) -> str:
  return inputs_lib.resolve_asset(path)


def _split(images: np.ndarray, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  perm = np.random.default_rng((seed, 7)).permutation(len(images))
  n_test = max(1, int(round(held_out * len(images))))
  if len(images) - n_test < 1:
    raise ValueError(f"{len(images)} images are too few to split into training and held-out "
                     "sets")
  return images[np.sort(perm[n_test:])], images[np.sort(perm[:n_test])]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  if images.shape[1:3] == (size, size):
    return images
  out = [np.asarray(Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).resize(
      (size, size), Image.Resampling.BICUBIC)) for im in images]
  out = np.stack(out)
  return out[..., None] if out.ndim == 3 else out


def _channels(images: np.ndarray, channels: int) -> np.ndarray:
  if images.shape[-1] == channels:
    return images
  if channels == 3:
    return np.repeat(images, 3, axis=-1)
  luma = images.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
  return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def load_split(source: str, resolution: int = 32, channels: int = 1, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
  """``(train, held_out, train labels, description)``: uint8 images ``[n, resolution,
  resolution, channels]`` and the training images' class labels (uint8 ``[n]`` in 0..9 for
  MNIST and Fashion-MNIST, None for a folder).

  Args:
    source: ``"fashion_mnist"``, ``"mnist"`` or a folder of images.
    resolution: the side of the square training images.
    channels: 1 or 3.
    seed: seeds the held-out subset of sources without a split.

  Raises:
    FileNotFoundError: the asset or folder is missing.
    ValueError: an unknown source, bad ``channels``, a folder of mixed image sizes or with
      fewer than 2 images, a non-square folder image.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  labels = None
  if source == "fashion_mnist":
    train = reference_lib.read_idx(_asset("fashion-mnist/train-images-idx3-ubyte.gz"))
    test = reference_lib.read_idx(_asset("fashion-mnist/t10k-images-idx3-ubyte.gz"))
    labels = reference_lib.read_idx(_asset("fashion-mnist/train-labels-idx1-ubyte.gz"))
    desc = "Fashion-MNIST (60,000 training images; the 10,000 test images held out)"
  elif source == "mnist":
    path = _asset("mnist10k/mnist10k_uint8.npz")
    with np.load(path, allow_pickle=False) as z:
      images, all_labels = z["images"], z["labels"]
    train, test = _split(images, _MNIST_HELD_OUT, seed)
    labels, _ = _split(all_labels, _MNIST_HELD_OUT, seed)
    desc = (f"MNIST (mnist10k: {len(train):,} training digits, a seeded {len(test):,} held "
            "out)")
  elif os.path.isdir(source):
    images = reference_lib.load_images(source)   # mixed sizes: ValueError naming the file
    if images.shape[1] != images.shape[2]:
      raise ValueError(f"images in {source} are {images.shape[2]}x{images.shape[1]}; jaxgc gan "
                       "trains on square images")
    train, test = _split(images, _FOLDER_HELD_OUT, seed)
    desc = (f"image folder {source} ({len(train):,} training images, a seeded {len(test):,} "
            f"held out; {images.shape[1]}x{images.shape[1]}"
            f"{'' if images.shape[1] == resolution else f', resized to {resolution}x{resolution}'})")
  else:
    raise ValueError(f"data source {source!r} is neither one of {SOURCES} nor a folder")
  out = []
  for images in (train, test):
    images = images[..., None] if images.ndim == 3 else images
    if images.shape[1:3] == (28, 28):   # MNIST-style: pad to 32x32 with black
      images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    out.append(_channels(_resize(images, resolution), channels))
  return out[0], out[1], labels, desc


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 ``[n, h, w, c]`` -> float32 in [-1, 1] (``x / 127.5 - 1``)."""
  return images.astype(np.float32) / 127.5 - 1.0


def real_batch(images: np.ndarray, batch_size: int, seed: int, step: int) -> np.ndarray:
  """The real batch of step ``step``: float32 ``[batch_size, h, w, c]`` in [-1, 1].

  Drawn from epoch-wise permutations seeded by ``(seed, epoch)``, so a batch is a function of
  ``(seed, step)`` alone and a resumed run sees the batches an uninterrupted one sees; every
  training image is seen once per epoch (the last partial batch of an epoch wraps into the next
  epoch's permutation).
  """
  n = len(images)
  start = step * batch_size
  idx = []
  while len(idx) < batch_size:
    epoch, offset = divmod(start + len(idx), n)
    perm = np.random.default_rng((seed, 11, epoch)).permutation(n)
    idx.extend(perm[offset:offset + batch_size - len(idx)].tolist())
  return to_float(images[np.asarray(idx)])


def _ab_split(folder: str, resolution: int, a_channels: int, b_channels: int
              ) -> tuple[np.ndarray, np.ndarray]:
  images = reference_lib.load_images(folder)   # mixed sizes: ValueError naming the file
  h, w = images.shape[1:3]
  if w != 2 * h:
    raise ValueError(f"pix2pix AB images in {folder} must be twice as wide as high (A | B), "
                     f"got {w}x{h}")
  a, b = images[:, :, :h], images[:, :, h:]
  return (_channels(_resize(a, resolution), a_channels),
          _channels(_resize(b, resolution), b_channels))


def load_pairs(root: str, resolution: int = 32, a_channels: int = 1, b_channels: int = 1
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
  """``(train A, train B, held-out A, held-out B, description)`` of a pix2pix AB folder, uint8
  ``[n, resolution, resolution, channels]`` (resized with PIL bicubic when the images have
  another size).

  Raises:
    FileNotFoundError: ``root`` has no ``train/`` folder, or neither ``test/`` nor ``val/``.
    ValueError: images of mixed sizes, or not twice as wide as high.
  """
  train = os.path.join(root, "train")
  held = next((os.path.join(root, d) for d in ("test", "val")
               if os.path.isdir(os.path.join(root, d))), None)
  if not os.path.isdir(train) or held is None:
    raise FileNotFoundError(f"pix2pix data {root} must hold train/ and test/ (or val/) folders "
                            "of AB images")
  for c in (a_channels, b_channels):
    if c not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {c}")
  ta, tb = _ab_split(train, resolution, a_channels, b_channels)
  ha, hb = _ab_split(held, resolution, a_channels, b_channels)
  desc = (f"pix2pix AB folder {root} ({len(ta):,} training pairs, {len(ha):,} held out in "
          f"{os.path.basename(held)}/)")
  return ta, tb, ha, hb, desc


def canny_ab(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
  """uint8 ``[n, 28, 28]`` garments -> uint8 ``[n, 32, 64]`` AB images: the Canny edges A (255
  on 0) of each garment padded to 32x32 with black, beside the padded garment B.

  Edges: ``skimage.feature.canny`` on the image scaled to [0, 1], Gaussian ``sigma``, the
  default hysteresis thresholds (Canny 1986).
  """
  from skimage.feature import canny  # pylint: disable=import-outside-toplevel
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2)))
  edges = np.stack([canny(im.astype(np.float64) / 255.0, sigma=sigma) for im in padded])
  return np.concatenate([edges.astype(np.uint8) * 255, padded], axis=2)


def write_edges2fmnist(out: str, train: int = 10000, test: int = 1000, sigma: float = 1.0
                       ) -> dict[str, int]:
  """Writes the edges -> Fashion-MNIST pix2pix set: :func:`canny_ab` of the first ``train``
  training and ``test`` test garments as PNGs ``out/{train,test}/NNNNN.png``, through a
  staging folder renamed into place when complete. Deterministic.

  Returns:
    ``{"train": count, "test": count}``.

  Raises:
    ValueError: ``out`` exists and is not an empty folder; non-positive counts or sigma.
    FileNotFoundError: the Fashion-MNIST asset is missing.
  """
  import shutil  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f"{out} exists and is not an empty folder; name a new one")
  if train < 1 or test < 1 or not sigma > 0:
    raise ValueError(f"train and test must be >= 1 and sigma > 0, got {train}, {test}, {sigma}")
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".edges2fmnist-")
  counts = {}
  try:
    for split, file, n in (("train", "train-images-idx3-ubyte.gz", train),
                           ("test", "t10k-images-idx3-ubyte.gz", test)):
      images = reference_lib.read_idx(_asset(f"fashion-mnist/{file}"))[:n]
      os.makedirs(os.path.join(tmp, split))
      for i, ab in enumerate(canny_ab(images, sigma)):
        Image.fromarray(ab).save(os.path.join(tmp, split, f"{i:05d}.png"))
      counts[split] = len(images)
    if os.path.isdir(out):
      os.rmdir(out)   # empty, checked above
    _fileio.give_default_mode(tmp)
    os.replace(tmp, out)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return counts
