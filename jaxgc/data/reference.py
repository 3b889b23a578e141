"""Reference image sets: a folder of images, an ``.npz`` array, or an IDX file (MNIST format)."""

from __future__ import annotations

import gzip
import os

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# IDX type codes (LeCun's MNIST format): 0x08 unsigned byte is the only one images use.
_IDX_UBYTE = 0x08


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (``.gz`` or raw), e.g. ``train-images-idx3-ubyte.gz``.

  Returns:
    uint8 ``[n, rows, cols]`` for image files (``[n]`` for label files).

  Raises:
    ValueError: bad magic number or a size that does not match the header.
  """
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
    raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()})")
  ndim = data[3]
  dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes), file holds "
                     f"{body.size}")
  return body.reshape(dims)


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
  """Sorted indices of a seeded random subset of ``limit`` of ``n`` items (all when no limit)."""
  if not limit or limit >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _read_image(path: str, mode: str | None = None):
  """The PIL mode of the image at ``path`` (``mode=None``), or its pixels converted to ``mode``
  as a uint8 array; the file is closed on return.

  Raises:
    ValueError: a corrupt or truncated image, naming the file.
  """
  try:
    with Image.open(path) as im:
      if mode is None:
        return im.mode
      im.load()
      return np.asarray(im.convert(mode))
  except (OSError, SyntaxError, ValueError) as e:   # what PIL raises for broken files
    raise ValueError(f"cannot decode image {path}: {str(e).splitlines()[0] if str(e) else e!r}"
                     ) from None


STREAM_CHUNK = 256   # images decoded and held at once when a folder is streamed


def folder_images(path: str, limit: int | None = None, seed: int = 0) -> tuple[list[str], str]:
  """The image files of the folder ``path`` (sorted by name; a seeded random subset of
  ``limit`` kept in name order) and the PIL mode they load in: ``"L"`` when every one is
  grayscale, else ``"RGB"``. Opens one file at a time, reading headers only.

  Raises:
    ValueError: no images in the folder, or a file that is not a readable image (named).
  """
  names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
  names = [names[i] for i in _subset(len(names), limit, seed)]
  if not names:
    raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
  files = [os.path.join(path, n) for n in names]
  gray = all(_read_image(f) in ("L", "1", "I;16") for f in files)
  return files, "L" if gray else "RGB"


def iter_images(path: str, limit: int | None = None, key: str | None = None, seed: int = 0,
                chunk: int = STREAM_CHUNK):
  """The reference set of :func:`load_images` as uint8 ``[<= chunk, height, width, channels]``
  batches, in the same order: a folder is decoded lazily, ``chunk`` images at a time and one
  file open at a time, so neither the open-file limit nor memory bounds its size (an ``.npz``
  or IDX file is read whole and sliced).

  Raises:
    FileNotFoundError, ValueError: as :func:`load_images`; a folder's images of another size
      than the first are named when reached.
  """
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  if not os.path.isdir(path):
    images = load_images(path, limit, key, seed)
    for i in range(0, len(images), chunk):
      yield images[i:i + chunk]
    return
  files, mode = folder_images(path, limit, seed)
  shape = None
  for i in range(0, len(files), chunk):
    arrays = []
    for f in files[i:i + chunk]:
      a = _read_image(f, mode)
      a = a[..., None] if a.ndim == 2 else a
      if shape is None:
        shape = a.shape
      elif a.shape != shape:
        raise ValueError(f"images in {path} have different sizes: {f} is "
                         f"{a.shape[1]}x{a.shape[0]}, the first is {shape[1]}x{shape[0]}")
      arrays.append(a)
    yield np.stack(arrays)


def set_fingerprint(path: str, limit: int | None = None, key: str | None = None,
                    seed: int = 0) -> str:
  """A cache key of a reference set that does not decode it: SHA-256 over the selected files'
  names, sizes and modification times (a folder), or the file's (``.npz``/IDX), and the
  selection arguments."""
  import hashlib  # pylint: disable=import-outside-toplevel
  h = hashlib.sha256(repr((limit, key, seed)).encode())
  files = (folder_images(path, limit, seed)[0] if os.path.isdir(path) else [path])
  for f in files:
    st = os.stat(f)
    h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


def load_images(path: str, limit: int | None = None, key: str | None = None,
                seed: int = 0) -> np.ndarray:
  """Loads a reference set as uint8 ``[n, height, width, channels]``.

  The whole set is held in memory: :func:`iter_images` streams it in bounded batches.

  Args:
    path: a folder of images (sorted by name; converted to RGB, or kept grayscale when every
      image is grayscale), an ``.npz`` file (array ``key``, else ``images``, else its only
      array; ``[n, h, w]`` or ``[n, h, w, c]`` uint8), or an IDX file (``-idx3-ubyte[.gz]``).
    limit: keep a random subset of ``limit`` images, drawn with ``seed`` and kept in file
      order. Not the first ``limit``: data sets are often sorted by class (``mnist10k`` is).
    key: the ``.npz`` array to read.
    seed: seeds the subset.

  Raises:
    FileNotFoundError: no such path.
    ValueError: an empty set, an unknown format, mixed image sizes, non-uint8 arrays, or a
      corrupt or truncated image file (named).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"reference set not found: {path}")
  if os.path.isdir(path):
    # One file open at a time (folders may hold more images than the open-file limit); use
    # iter_images to also bound the memory.
    return np.concatenate(list(iter_images(path, limit, key, seed)))
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as z:
      names = list(z.keys())
      pick = key or ("images" if "images" in names else (names[0] if len(names) == 1 else None))
      if pick not in names:
        raise ValueError(f"{path} holds arrays {names}; name the images with key=")
      out = z[pick]
  elif "idx" in os.path.basename(path) and "ubyte" in os.path.basename(path):
    out = read_idx(path)
  else:
    raise ValueError(f"unknown reference format: {path} (expected a folder, .npz or IDX file)")
  if out.dtype != np.uint8:
    raise ValueError(f"reference images must be uint8, got {out.dtype} in {path}")
  if out.ndim == 3:
    out = out[..., None]
  if out.ndim != 4 or not len(out):
    raise ValueError(f"reference set {path} has shape {out.shape}; expected [n, h, w(, c)]")
  return out[_subset(len(out), limit, seed)]
