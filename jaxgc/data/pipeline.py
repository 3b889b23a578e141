"""Input pipeline for image-to-image GAN distillation, built on grain's ``MapDataset``.

Three random-access sources (objects with ``__len__`` and ``__getitem__``, as grain's
``RandomAccessDataSource``) give records of uint8 ``[h, w, 3]`` images under the keys ``"A"`` and
``"B"``; ``make_dataset`` shuffles, augments and batches them into an endless
``grain.MapDataset`` whose element ``ds[step]`` is the batch of training step ``step``:

  source = UnpairedFolders("datasets/horse2zebra")          # CycleGAN layout
  ds = make_dataset(source, batch_size=4, seed=0)           # resize 286, crop 256, flip
  batch = ds[step]        # {"A": float32 [4, 256, 256, 3] in [-1, 1], "B": ...}
  for batch in iterate(ds, start_step=step, num_threads=4): ...   # the same, prefetched

Determinism: every random choice (shuffle order, the B image of an unpaired record, crop
position, scale, flip) is a function of ``seed`` and the record's position in the stream (grain's
``index_shuffle`` and ``random_map``, whose ``np.random.Generator`` is Philox keyed by the seed
and the index), never of the order in which records are read. So ``ds[step]`` is the same in a
resumed run, with any number of reading threads, and the union of the per-process batches of
step ``step`` is the batch of a single process reading ``batch_size * shard_count`` records.

Conventions follow junyanz/pytorch-CycleGAN-and-pix2pix: ``data/unaligned_dataset.py``
(``trainA``/``trainB``, a random B per A, ``len = max(|A|, |B|)``), ``data/aligned_dataset.py``
(side-by-side AB images, one crop and flip for both halves), ``data/base_dataset.py``
(``get_params`` / ``get_transform``: bicubic resize to ``load_size``, random ``crop_size`` crop,
horizontal flip, ``Normalize(0.5, 0.5)``) and ``data/image_folder.py`` (recursive, sorted file
list and its image extensions).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
import numpy as np
from PIL import Image

from jaxgc.data import inputs

# Upstream ``data/image_folder.py: IMG_EXTENSIONS``, matched case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff")
# ``resize_and_crop``, ``crop``: upstream ``--preprocess``; ``scale_crop``: random-scale square
# crops, the convention of ``jaxgc.data.inputs.photo_crops``.
PREPROCESS = ("resize_and_crop", "crop", "scale_crop")
IMAGE_KEYS = ("A", "B")
# grain's ``index_shuffle`` cycle-walks a domain of about 2**15: a record of a source of ``n``
# records costs about ``35 ms / n`` of shuffling (GIL held); above this size it is negligible.
_SMALL_SOURCE = 4096


# ---------------------------------------------------------------------------------------------
# Sources.


def list_images(folder: str) -> list[str]:
  """The image files under ``folder`` (recursively), sorted by path.

  Upstream ``data/image_folder.py: make_dataset`` (``os.walk``, ``IMG_EXTENSIONS``); the
  extension test here ignores case.

  Raises:
    FileNotFoundError: ``folder`` is not a directory.
    ValueError: ``folder`` holds no image file.
  """
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"image folder not found: {folder}")
  paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                 for name in names if name.lower().endswith(IMG_EXTENSIONS))
  if not paths:
    raise ValueError(f"no images ({', '.join(IMG_EXTENSIONS)}) in folder {folder}")
  return paths


def load_rgb(path: str) -> np.ndarray:
  """The image file ``path`` as uint8 ``[h, w, 3]`` RGB (grayscale, palette, RGBA converted by
  Pillow's ``convert("RGB")``, as upstream ``Image.open(path).convert('RGB')``).

  Raises:
    ValueError: Pillow cannot open or decode the file (naming it).
  """
  try:
    with Image.open(path) as img:
      return np.asarray(img.convert("RGB"))
  except Exception as e:  # pylint: disable=broad-except  # Pillow raises many kinds.
    raise ValueError(f"cannot decode image file {path}: {type(e).__name__}: {e}") from e


def _check_index(index: int, length: int, name: str) -> int:
  index = int(index)
  if not -length <= index < length:
    raise IndexError(f"{name} index {index} out of range for {length} records")
  return index % length


class UnpairedFolders:
  """CycleGAN's unaligned dataset: ``root/{phase}A`` and ``root/{phase}B`` image folders.

  Upstream ``data/unaligned_dataset.py``. Invariants: ``len(self) == max(len(A_paths),
  len(B_paths))``; record ``i`` holds ``A = A_paths[i % len(A_paths)]``. ``self[i]`` pairs it with
  ``B_paths[i % len(B_paths)]`` (upstream ``--serial_batches``); ``read(i, rng)``, which
  ``make_dataset`` calls with grain's per-record generator, picks a uniformly random B instead
  (upstream's default, "to avoid fixed pairs"), deterministic per seed and stream position.

  Records: ``{"A": uint8 [h, w, 3], "B": uint8 [h', w', 3], "A_path": str, "B_path": str}``
  (read-only arrays, decoded on each access; the two images may differ in size). ``paired`` is
  False: ``make_dataset`` draws independent crops and flips for A and B.

  Args:
    root: the dataset folder (e.g. ``horse2zebra``).
    phase: ``"train"`` or ``"test"`` (any prefix of the ``A``/``B`` folder names).
    serial_batches: pair by index modulo ``len(B_paths)`` in ``read`` too.

  Raises:
    FileNotFoundError: a folder is missing (naming it).
    ValueError: a folder holds no image (naming it).
  """

  paired = False
  preprocess = "resize_and_crop"

  def __init__(self, root: str, phase: str = "train", *, serial_batches: bool = False):
    self.root = os.fspath(root)
    self.phase = phase
    self.serial_batches = bool(serial_batches)
    self.A_paths = list_images(os.path.join(self.root, phase + "A"))  # pylint: disable=invalid-name
    self.B_paths = list_images(os.path.join(self.root, phase + "B"))  # pylint: disable=invalid-name

  def __len__(self) -> int:
    return max(len(self.A_paths), len(self.B_paths))

  def __repr__(self) -> str:
    return f"UnpairedFolders(root={self.root!r}, phase={self.phase!r})"

  def read(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Record ``index``, with B drawn from ``rng`` (or ``index % len(B_paths)`` when ``rng`` is
    None or ``serial_batches``).

    Raises:
      IndexError: ``index`` outside ``[-len, len)``.
      ValueError: an image file Pillow cannot decode (naming it).
    """
    index = _check_index(index, len(self), "UnpairedFolders")
    a_path = self.A_paths[index % len(self.A_paths)]
    if rng is None or self.serial_batches:
      b_index = index % len(self.B_paths)
    else:
      b_index = int(rng.integers(len(self.B_paths)))
    b_path = self.B_paths[b_index]
    return {"A": load_rgb(a_path), "B": load_rgb(b_path), "A_path": a_path, "B_path": b_path}

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.read(index)


class PairedFolder:
  """pix2pix's aligned dataset: ``root/{phase}/*`` side-by-side AB images.

  Upstream ``data/aligned_dataset.py``: an image of width ``w`` splits into ``A = [:, :w // 2]``
  and ``B = [:, w // 2:]`` (B is one column wider when ``w`` is odd); ``direction="BtoA"`` swaps
  them (upstream swaps in the model, ``real_A = input['A' if AtoB else 'B']``).

  Records: ``{"A": uint8 [h, w // 2, 3], "B": uint8 [h, w - w // 2, 3], "A_path": str,
  "B_path": str}`` (both paths the AB file). ``paired`` is True: ``make_dataset`` applies one crop
  and flip, drawn for A, to both halves.

  Raises:
    FileNotFoundError: the folder is missing.
    ValueError: the folder holds no image, or ``direction`` is not ``"AtoB"``/``"BtoA"``.
  """

  paired = True
  preprocess = "resize_and_crop"

  def __init__(self, root: str, phase: str = "train", *, direction: str = "AtoB"):
    if direction not in ("AtoB", "BtoA"):
      raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
    self.root = os.fspath(root)
    self.phase = phase
    self.direction = direction
    self.AB_paths = list_images(os.path.join(self.root, phase))  # pylint: disable=invalid-name

  def __len__(self) -> int:
    return len(self.AB_paths)

  def __repr__(self) -> str:
    return f"PairedFolder(root={self.root!r}, phase={self.phase!r}, direction={self.direction!r})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    path = self.AB_paths[_check_index(index, len(self), "PairedFolder")]
    ab = load_rgb(path)
    half = ab.shape[1] // 2
    if half == 0:
      raise ValueError(f"AB image {path} of width {ab.shape[1]} is too narrow to split in two")
    a, b = ab[:, :half], ab[:, half:]
    if self.direction == "BtoA":
      a, b = b, a
    return {"A": a, "B": b, "A_path": path, "B_path": path}


class PhotoCrops:
  """In-memory natural photos shipped with scikit-image (no B domain).

  Photos from ``jaxgc.data.inputs._photo_uint8`` (default ``jaxgc.data.inputs.TRAIN_PHOTOS``,
  disjoint from the held-out ``SKIMAGE_PHOTOS``), loaded once at construction. Record ``i`` is
  photo ``names[i % len(names)]``: ``{"A": uint8 [h, w, 3] (read-only, shared), "A_path":
  "skimage.data.<name>"}``. ``copies`` repeats the list so that one epoch holds ``copies``
  crops of each photo; the default, ``ceil(4096 / len(names))``, keeps grain's shuffle cheap
  (``index_shuffle`` costs about ``35 ms / len(source)`` per record, 7 ms at 5 records, 13 us at
  4096). ``preprocess`` is ``"scale_crop"``, the convention of
  ``jaxgc.data.inputs.photo_crops`` (random square of side in ``[crop_size, min(h, w)]``,
  Lanczos-resized to ``crop_size``, random horizontal flip).

  Raises:
    ValueError: a name that scikit-image does not ship as an RGB photo, no names, or
      ``copies < 1``.
  """

  paired = True
  preprocess = "scale_crop"

  def __init__(self, names: Sequence[str] | None = None, *, copies: int | None = None):
    self.names = tuple(inputs.TRAIN_PHOTOS if names is None else names)
    if not self.names:
      raise ValueError("PhotoCrops needs at least one photo name, got none")
    if copies is None:
      copies = -(-_SMALL_SOURCE // len(self.names))
    if int(copies) < 1:
      raise ValueError(f"copies must be >= 1, got {copies}")
    self.copies = int(copies)
    load = inputs._photo_uint8  # pylint: disable=protected-access
    self.photos = tuple(load(name) for name in self.names)

  def __len__(self) -> int:
    return len(self.names) * self.copies

  def __repr__(self) -> str:
    return f"PhotoCrops(names={self.names!r}, copies={self.copies})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    k = _check_index(index, len(self), "PhotoCrops") % len(self.names)
    return {"A": self.photos[k], "A_path": f"skimage.data.{self.names[k]}"}


# ---------------------------------------------------------------------------------------------
# Transforms.


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 images -> float32 in [-1, 1], ``x / 127.5 - 1`` (upstream ``ToTensor`` then
  ``Normalize((0.5,) * 3, (0.5,) * 3)``; 0 -> -1.0 and 255 -> 1.0 exactly)."""
  return np.asarray(images, np.float32) / np.float32(127.5) - np.float32(1.0)


def _draw_params(rng: np.random.Generator, shape: tuple[int, ...], name: str, *,
                 preprocess: str, load_size: int, crop_size: int, flip: bool):
  """(side, y, x, flip) of one crop: the square ``[y:y + side, x:x + side]`` of the image after
  the resize of ``preprocess``. Draws side (scale_crop only), y, x, then a coin that is drawn
  even when ``flip`` is False (so turning flips off changes no other choice)."""
  h, w = int(shape[0]), int(shape[1])
  if preprocess == "resize_and_crop":
    h = w = load_size
  elif h < crop_size or w < crop_size:
    raise ValueError(f"image {name} of size {h}x{w} is smaller than the crop size {crop_size}")
  side = int(rng.integers(crop_size, min(h, w) + 1)) if preprocess == "scale_crop" else crop_size
  y = int(rng.integers(h - side + 1))
  x = int(rng.integers(w - side + 1))
  coin = bool(rng.random() < 0.5)
  return side, y, x, flip and coin


def _apply(img: np.ndarray, params, *, preprocess: str, load_size: int,
           crop_size: int) -> np.ndarray:
  side, y, x, do_flip = params
  if preprocess == "resize_and_crop":
    img = np.asarray(Image.fromarray(img).resize((load_size, load_size),
                                                 Image.Resampling.BICUBIC))
  img = img[y:y + side, x:x + side]
  if side != crop_size:  # scale_crop
    img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
        (crop_size, crop_size), Image.Resampling.LANCZOS))
  if do_flip:
    img = img[:, ::-1]
  return to_float(img)


def _check_options(preprocess: str, load_size: int, crop_size: int) -> None:
  if preprocess not in PREPROCESS:
    raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
  if int(crop_size) < 1:
    raise ValueError(f"crop_size must be >= 1, got {crop_size}")
  if preprocess == "resize_and_crop" and int(load_size) < int(crop_size):
    raise ValueError(f"load_size {load_size} is smaller than crop_size {crop_size}")


def transform_record(record: Mapping[str, Any], rng: np.random.Generator, *,
                     preprocess: str = "resize_and_crop", load_size: int = 286,
                     crop_size: int = 256, flip: bool = True,
                     paired: bool = True) -> dict[str, np.ndarray]:
  """Augment the images of one record and scale them to [-1, 1].

  Upstream ``data/base_dataset.py: get_params, get_transform``. ``preprocess``:

  - ``"resize_and_crop"`` (upstream default): bicubic resize to ``load_size x load_size``, then a
    random ``crop_size`` square;
  - ``"crop"``: a random ``crop_size`` square of the image as it is;
  - ``"scale_crop"``: a random square of side in ``[crop_size, min(h, w)]``, Lanczos-resized to
    ``crop_size`` (``jaxgc.data.inputs.photo_crops``);

  then, when ``flip``, a horizontal flip with probability 1/2. With ``paired`` one set of
  parameters, drawn for A's size, applies to every image (upstream aligned dataset); otherwise A
  and B draw their own (upstream ``RandomCrop`` / ``RandomHorizontalFlip``).

  Args:
    record: ``{"A": uint8 [h, w, 3], "B" (optional): uint8 [h', w', 3], ...}``; keys other than
      ``"A"``/``"B"`` are ignored, except ``"A_path"``/``"B_path"`` which name the images in
      errors.
    rng: the record's generator (grain's ``random_map`` argument); consumed in the order
      (size, y, x, coin) per parameter set, A before B.
    preprocess, load_size, crop_size, flip: as above; ``load_size`` is used by
      ``resize_and_crop`` only.
    paired: share one crop and flip between A and B.

  Returns:
    ``{"A": float32 [crop_size, crop_size, 3], "B": ...}`` in [-1, 1], ``uint8 / 127.5 - 1``.

  Raises:
    ValueError: an unknown ``preprocess``, ``load_size < crop_size`` for resize_and_crop, a
      record without ``"A"``, an image that is not uint8 ``[h, w, 3]``, an image smaller than
      ``crop_size`` (crop, scale_crop), or, when paired, a B smaller than A.
  """
  _check_options(preprocess, load_size, crop_size)
  if "A" not in record:
    raise ValueError(f"record has no image 'A' (keys {sorted(record)})")
  keys = [k for k in IMAGE_KEYS if k in record]
  names = {k: record.get(f"{k}_path", k) for k in keys}
  for k in keys:
    img = record[k]
    if (not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3
        or img.shape[-1] != 3):
      desc = (f"{img.dtype} {list(img.shape)}" if isinstance(img, np.ndarray)
              else type(img).__name__)
      raise ValueError(f"image {names[k]} must be uint8 [h, w, 3], got {desc}")
  opts = dict(preprocess=preprocess, load_size=int(load_size), crop_size=int(crop_size))
  out = {}
  shared = None
  if paired:
    shared = _draw_params(rng, record["A"].shape, names["A"], flip=flip, **opts)
    a_h, a_w = record["A"].shape[:2]
    for k in keys:
      h, w = record[k].shape[:2]
      if preprocess != "resize_and_crop" and (h < a_h or w < a_w):
        raise ValueError(f"paired image {names[k]} of size {h}x{w} is smaller than its A "
                         f"({a_h}x{a_w})")
  for k in keys:
    params = shared or _draw_params(rng, record[k].shape, names[k], flip=flip, **opts)
    out[k] = _apply(record[k], params, **opts)
  return out


# ---------------------------------------------------------------------------------------------
# Datasets.


class _ReadAndTransform:
  """``random_map`` function: stream element (a source index) -> transformed record.
  A class rather than a closure so that the pipeline pickles (grain's multiprocess prefetch)."""

  def __init__(self, source, options: dict[str, Any]):
    self.source = source
    self.options = options

  def __call__(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    read = getattr(self.source, "read", None)
    record = read(index, rng) if read is not None else self.source[index]
    return transform_record(record, rng, **self.options)


def steps_per_epoch(num_records: int, *, batch_size: int, shard_count: int = 1,
                    drop_remainder: bool = True) -> int:
  """Steps in one pass over ``num_records`` shuffled records, as ``make_dataset`` counts them:
  ``num_records // (batch_size * shard_count)`` (``ceil(num_records / batch_size)`` without
  ``drop_remainder``, single process only)."""
  if drop_remainder:
    return num_records // (batch_size * shard_count)
  return -(-num_records // batch_size)


def make_dataset(source, *, batch_size: int, seed: int, preprocess: str | None = None,
                 load_size: int = 286, crop_size: int = 256, flip: bool = True,
                 shard_index: int | None = None, shard_count: int | None = None,
                 drop_remainder: bool = True, paired: bool | None = None) -> grain.MapDataset:
  """The endless, shuffled, augmented, batched training stream of one process.

  Pipeline (grain ``MapDataset``): ``range(len(source)).seed(seed).shuffle()`` ->
  ``random_map(read + transform_record)`` -> ``batch(batch_size)`` -> this process's batches ->
  ``repeat()``. Epoch ``e`` (``steps_per_epoch`` steps) visits the records in grain's
  ``index_shuffle`` order for epoch ``e`` (each epoch reshuffled; the remainder dropped differs
  per epoch); each record's augmentation (and random B) comes from grain's generator keyed by
  ``seed`` and the record's position in the stream, so it too differs per epoch.

  Sharding: ``batch_size`` is the PER-PROCESS batch. The global batch of step ``s`` is the
  concatenation, in process order, of ``make_dataset(..., shard_index=k)[s]`` for ``k`` in
  ``range(shard_count)``, and equals ``make_dataset(..., batch_size=batch_size * shard_count,
  shard_index=0, shard_count=1)[s]`` exactly: processes read disjoint records, and the stream
  does not depend on the number of processes except through the global batch size.

  Random access: ``ds[step]`` (0-based) is the batch of training step ``step``, so a run
  resumed at step ``s`` reads ``ds[s], ds[s + 1], ...``, the batches of an uninterrupted run.
  It costs ``batch_size`` reads, decodes and transforms whatever ``step`` is (no replay),
  plus grain's ``index_shuffle`` per record: about ``35 ms / len(source)`` with the GIL held
  (0.09 ms at 400 records, 7 ms at 5; repeat a tiny source, as ``PhotoCrops`` does, to avoid
  it). ``iterate`` prefetches the same batches with threads. ``len(ds) == sys.maxsize``.

  Args:
    source: random-access records (``__len__``, ``__getitem__``: ``UnpairedFolders``,
      ``PairedFolder``, ``PhotoCrops``, a grain data source or a list of record dicts, see
      ``transform_record``). A ``read(index, rng)`` method, if present, is used instead of
      ``__getitem__``.
    batch_size: records per batch of THIS process, >= 1.
    seed: int in ``[0, 2**32)``; the same seed gives the same batches.
    preprocess: ``"resize_and_crop"``, ``"crop"`` or ``"scale_crop"`` (``transform_record``);
      default ``source.preprocess``, else ``"resize_and_crop"``.
    load_size: resize target of ``resize_and_crop`` in pixels (upstream ``--load_size``).
    crop_size: output height and width in pixels (upstream ``--crop_size``).
    flip: random horizontal flips (upstream ``not --no_flip``).
    shard_index, shard_count: this process and the number of processes; default
      ``jax.process_index()``, ``jax.process_count()``. Give both or neither.
    drop_remainder: drop the last, partial batch of each epoch (``False`` gives it a smaller
      batch dimension, which recompiles a jitted step; single process only).
    paired: one crop and flip for A and B; default ``source.paired``, else True.

  Returns:
    ``grain.MapDataset`` whose elements are ``{"A": float32 [batch_size, crop_size, crop_size,
    3], "B": ...}`` in [-1, 1] (``"B"`` only when the records have it).

  Raises:
    ValueError: ``batch_size < 1``, a seed outside ``[0, 2**32)``, bad preprocess/sizes (see
      ``transform_record``), only one of ``shard_index``/``shard_count``, ``shard_index`` outside
      ``[0, shard_count)``, ``drop_remainder=False`` with ``shard_count > 1``, an empty source,
      or fewer records than one global batch. Errors in a record (undecodable file, image
      smaller than ``crop_size``) are raised by ``ds[step]``, naming the file.
  """
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not 0 <= int(seed) < 2**32:
    raise ValueError(f"seed must be an int in [0, 2**32), got {seed}")
  if preprocess is None:
    preprocess = getattr(source, "preprocess", "resize_and_crop")
  _check_options(preprocess, load_size, crop_size)
  paired = bool(getattr(source, "paired", True)) if paired is None else bool(paired)
  if (shard_index is None) != (shard_count is None):
    raise ValueError(f"give both shard_index and shard_count or neither, got "
                     f"shard_index={shard_index}, shard_count={shard_count}")
  if shard_index is None:
    import jax  # pylint: disable=import-outside-toplevel
    shard_index, shard_count = jax.process_index(), jax.process_count()
  shard_index, shard_count = int(shard_index), int(shard_count)
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} is outside [0, shard_count={shard_count})")
  if not drop_remainder and shard_count > 1:
    raise ValueError(f"drop_remainder=False needs a single process, got shard_count={shard_count}")
  n = len(source)
  if n == 0:
    raise ValueError(f"source {source!r} is empty")
  if drop_remainder and n < batch_size * shard_count:
    raise ValueError(f"source {source!r} has {n} records, fewer than one global batch of "
                     f"{batch_size} x {shard_count} processes")
  options = dict(preprocess=preprocess, load_size=int(load_size), crop_size=int(crop_size),
                 flip=bool(flip), paired=paired)
  ds = grain.MapDataset.range(n).seed(int(seed)).shuffle()
  ds = ds.random_map(_ReadAndTransform(source, options))
  ds = ds.batch(int(batch_size), drop_remainder=bool(drop_remainder))
  if shard_count > 1:
    # Per-process batches k, k + count, ... of each epoch: the k-th slice of every global batch.
    # SliceMapDataset maps epoch e of the slice to epoch e of its parent.
    m = len(ds) - len(ds) % shard_count
    ds = ds[shard_index:m:shard_count]
  return ds.repeat()


def batch_fn(ds: grain.MapDataset) -> Callable[[int], dict[str, np.ndarray]]:
  """``step -> ds[step]``, the batch of training step ``step`` (0-based).

  Raises (when called):
    ValueError: a negative step.
  """
  def get(step: int) -> dict[str, np.ndarray]:
    if int(step) < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    return ds[int(step)]
  return get


def iterate(ds: grain.MapDataset, start_step: int = 0, *, num_threads: int = 2,
            prefetch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Prefetching iterator over ``ds[start_step], ds[start_step + 1], ...``.

  ``ds[start_step:].to_iter_dataset(grain.ReadOptions(...))``: ``num_threads`` threads each
  build whole batches (Pillow and numpy release the GIL in decode and resize), keeping up to
  ``prefetch`` batches ready (default ``2 * max(num_threads, 1)``; grain's own default of 500
  would hold hundreds of MB). The outputs equal ``ds[start_step + i]`` for any thread count.

  Args:
    ds: a dataset from ``make_dataset``.
    start_step: the first step to yield, >= 0 (the step to resume from).
    num_threads: reading threads, >= 0 (0 reads in the calling thread).
    prefetch: batches read ahead, >= 0.

  Raises:
    ValueError: a negative ``start_step``, ``num_threads`` or ``prefetch``.
  """
  if int(start_step) < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  if int(num_threads) < 0:
    raise ValueError(f"num_threads must be >= 0, got {num_threads}")
  prefetch = 2 * max(int(num_threads), 1) if prefetch is None else int(prefetch)
  if prefetch < 0:
    raise ValueError(f"prefetch must be >= 0, got {prefetch}")
  options = grain.ReadOptions(num_threads=int(num_threads), prefetch_buffer_size=prefetch)
  return iter(ds[int(start_step):].to_iter_dataset(options))
