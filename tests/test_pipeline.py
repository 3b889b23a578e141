"""Tests of the grain input pipeline (``jaxgc.data.pipeline``) on tiny folders written here."""

import itertools

import numpy as np
from PIL import Image
import pytest

from jaxgc.data import pipeline

_RNG = np.random.default_rng(1234)


def _noise(h, w):
  return _RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, arr, mode=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  img = Image.fromarray(arr)
  if mode is not None:
    img = img.convert(mode)
  img.save(path)


@pytest.fixture(scope="module")
def unpaired_root(tmp_path_factory):
  """trainA: 5 noise images 40x48 (one grayscale, one RGBA); trainB: 3 jpgs; testA/testB: 1."""
  root = tmp_path_factory.mktemp("horse2zebra")
  for i in range(5):
    mode = {0: "L", 1: "RGBA"}.get(i)
    _save(root / "trainA" / f"a{i}.png", _noise(40, 48), mode)
  for i in range(3):
    _save(root / "trainB" / f"b{i}.jpg", _noise(40, 48))
  _save(root / "testA" / "t.png", _noise(40, 48))
  _save(root / "testB" / "t.jpeg", _noise(40, 48))
  return root


@pytest.fixture(scope="module")
def paired_roots(tmp_path_factory):
  """4 AB images 32x64: "same" has B == A, "inverted" has B == 255 - A."""
  roots = {"same": tmp_path_factory.mktemp("facades_same"),
           "inverted": tmp_path_factory.mktemp("facades_inv")}
  for i in range(4):
    a = _noise(32, 32)
    _save(roots["same"] / "train" / f"{i}.png", np.concatenate([a, a], axis=1))
    _save(roots["inverted"] / "train" / f"{i}.png", np.concatenate([a, 255 - a], axis=1))
  return roots


def _id_source(n, size=16):
  """``n`` constant images, record ``i`` of value ``10 * i + 5``: its id survives any crop/flip."""
  return [{"A": np.full((size, size, 3), 10 * i + 5, np.uint8)} for i in range(n)]


def _ids(batch):
  """Record ids of a batch of ``_id_source`` images."""
  vals = np.rint((batch["A"][:, 0, 0, 0] + 1.0) * 127.5).astype(int)
  assert np.all(batch["A"] == batch["A"][:, :1, :1, :1]), "id images must stay constant"
  return [int(v - 5) // 10 for v in vals]


def _equal(b1, b2):
  return b1.keys() == b2.keys() and all(np.array_equal(b1[k], b2[k]) for k in b1)


def _one_process(**kw):
  return dict(shard_index=0, shard_count=1, **kw)


# ------------------------------------------------------------------------------------- sources


def test_unpaired_source_records_are_rgb_uint8(unpaired_root):
  src = pipeline.UnpairedFolders(unpaired_root)
  assert len(src) == 5  # max(|A|, |B|), upstream unaligned_dataset
  for i in range(len(src)):
    rec = src[i]
    assert rec["A"].dtype == np.uint8 and rec["A"].shape == (40, 48, 3)
    assert rec["B"].dtype == np.uint8 and rec["B"].shape == (40, 48, 3)
    assert rec["B_path"] == src.B_paths[i % 3]  # serial pairing in __getitem__
  gray = src[0]["A"]  # a0.png was saved as mode L: the three channels are equal
  assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
  test = pipeline.UnpairedFolders(unpaired_root, phase="test")
  assert len(test) == 1 and test.A_paths[0].endswith("t.png")
  with pytest.raises(IndexError):
    src[5]


def test_unpaired_random_b_is_drawn_from_rng(unpaired_root):
  src = pipeline.UnpairedFolders(unpaired_root)
  picks = {src.read(0, np.random.default_rng(s))["B_path"] for s in range(20)}
  assert picks == set(src.B_paths)
  assert (src.read(0, np.random.default_rng(7))["B_path"]
          == src.read(0, np.random.default_rng(7))["B_path"])
  serial = pipeline.UnpairedFolders(unpaired_root, serial_batches=True)
  assert {serial.read(4, np.random.default_rng(s))["B_path"] for s in range(5)} == {
      serial.B_paths[1]}


def test_paired_source_splits_and_swaps(paired_roots):
  ab = pipeline.PairedFolder(paired_roots["inverted"])
  ba = pipeline.PairedFolder(paired_roots["inverted"], direction="BtoA")
  assert len(ab) == 4
  rec, rev = ab[2], ba[2]
  assert rec["A"].shape == rec["B"].shape == (32, 32, 3)
  np.testing.assert_array_equal(rec["B"], 255 - rec["A"])
  np.testing.assert_array_equal(rev["A"], rec["B"])
  np.testing.assert_array_equal(rev["B"], rec["A"])


# ------------------------------------------------------------------------------------ batches


def test_batches_shapes_dtypes_range(unpaired_root):
  ds = pipeline.make_dataset(pipeline.UnpairedFolders(unpaired_root), batch_size=2, seed=0,
                             load_size=36, crop_size=32, **_one_process())
  batch = ds[0]
  assert set(batch) == {"A", "B"}
  for x in batch.values():
    assert x.dtype == np.float32 and x.shape == (2, 32, 32, 3)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.2
    grid = (x + 1.0) * 127.5  # uint8 / 127.5 - 1
    np.testing.assert_allclose(grid, np.rint(grid), atol=1e-4)


def test_to_float_endpoints():
  np.testing.assert_array_equal(pipeline.to_float(np.array([0, 255], np.uint8)), [-1.0, 1.0])
  assert pipeline.to_float(np.zeros(1, np.uint8)).dtype == np.float32


def test_same_seed_same_batches_other_seed_differs(unpaired_root):
  def make(seed):
    return pipeline.make_dataset(pipeline.UnpairedFolders(unpaired_root), batch_size=2,
                                 seed=seed, load_size=36, crop_size=32, **_one_process())
  d0, d0_again, d1 = make(0), make(0), make(1)
  for step in (0, 1, 5, 1000):
    assert _equal(d0[step], d0_again[step])
  assert not any(_equal(d0[s], d1[s]) for s in range(3))
  assert not _equal(d0[0], d0[1])


def test_random_access_equals_iteration_any_thread_count(unpaired_root):
  ds = pipeline.make_dataset(pipeline.UnpairedFolders(unpaired_root), batch_size=2, seed=3,
                             load_size=36, crop_size=32, **_one_process())
  expected = [ds[s] for s in range(8)]
  for threads in (0, 2):
    got = list(itertools.islice(pipeline.iterate(ds, 0, num_threads=threads), 8))
    assert all(_equal(g, e) for g, e in zip(got, expected))
  resumed = list(itertools.islice(pipeline.iterate(ds, start_step=5, num_threads=2), 3))
  assert all(_equal(g, e) for g, e in zip(resumed, expected[5:]))
  get = pipeline.batch_fn(ds)
  assert _equal(get(6), expected[6])
  with pytest.raises(ValueError, match="-1"):
    get(-1)


def test_epochs_visit_every_record_and_reshuffle():
  src = _id_source(7)
  ds = pipeline.make_dataset(src, batch_size=2, seed=5, preprocess="crop", crop_size=8,
                             **_one_process())
  steps = pipeline.steps_per_epoch(7, batch_size=2)
  assert steps == 3  # the 7th record is dropped, a different one each epoch
  epochs = [[i for s in range(e * steps, (e + 1) * steps) for i in _ids(ds[s])]
            for e in range(4)]
  for order in epochs:
    assert len(set(order)) == 6 and set(order) <= set(range(7))
  assert len({tuple(order) for order in epochs}) == 4  # every epoch in its own order
  assert len({frozenset(order) for order in epochs}) > 1  # the dropped record changes


def test_keep_remainder_gives_a_short_last_batch():
  ds = pipeline.make_dataset(_id_source(5), batch_size=2, seed=1, preprocess="crop",
                             crop_size=8, drop_remainder=False, **_one_process())
  assert pipeline.steps_per_epoch(5, batch_size=2, drop_remainder=False) == 3
  sizes = [ds[s]["A"].shape[0] for s in range(6)]
  assert sizes == [2, 2, 1, 2, 2, 1]
  assert sorted(i for s in range(3) for i in _ids(ds[s])) == [0, 1, 2, 3, 4]


def test_paired_crop_and_flip_shared(paired_roots):
  same = pipeline.make_dataset(pipeline.PairedFolder(paired_roots["same"]), batch_size=2,
                               seed=0, load_size=40, crop_size=32, **_one_process())
  for step in range(4):
    batch = same[step]
    np.testing.assert_array_equal(batch["A"], batch["B"])
  inv = pipeline.make_dataset(pipeline.PairedFolder(paired_roots["inverted"]), batch_size=2,
                              seed=0, preprocess="crop", crop_size=24, **_one_process())
  rev = pipeline.make_dataset(pipeline.PairedFolder(paired_roots["inverted"], direction="BtoA"),
                              batch_size=2, seed=0, preprocess="crop", crop_size=24,
                              **_one_process())
  for step in range(4):
    batch, swapped = inv[step], rev[step]
    np.testing.assert_allclose(batch["B"], -batch["A"], atol=1e-6)  # (255 - x) -> -x
    np.testing.assert_array_equal(swapped["A"], batch["B"])


def test_unpaired_crops_are_independent(tmp_path):
  img = _noise(40, 48)
  for i in range(4):
    _save(tmp_path / "trainA" / f"{i}.png", img)
    _save(tmp_path / "trainB" / f"{i}.png", img)
  src = pipeline.UnpairedFolders(tmp_path, serial_batches=True)
  ds = pipeline.make_dataset(src, batch_size=4, seed=0, preprocess="crop", crop_size=16,
                             **_one_process())
  batch = ds[0]
  assert not np.array_equal(batch["A"], batch["B"])
  paired = pipeline.make_dataset(src, batch_size=4, seed=0, preprocess="crop", crop_size=16,
                                 paired=True, **_one_process())
  np.testing.assert_array_equal(paired[0]["A"], paired[0]["B"])


def test_sharding_disjoint_and_equal_to_global_batch(unpaired_root):
  src = _id_source(11)
  shards = [pipeline.make_dataset(src, batch_size=2, seed=9, preprocess="crop", crop_size=8,
                                  shard_index=k, shard_count=2) for k in range(2)]
  steps = pipeline.steps_per_epoch(11, batch_size=2, shard_count=2)
  assert steps == 2
  seen = [[i for s in range(steps) for i in _ids(ds[s])] for ds in shards]
  assert len(set(seen[0])) == len(set(seen[1])) == 4
  assert not set(seen[0]) & set(seen[1])
  # With augmentation: the shards of step s concatenated are the single-process global batch.
  folders = pipeline.UnpairedFolders(unpaired_root)
  kw = dict(seed=4, load_size=36, crop_size=32)
  parts = [pipeline.make_dataset(folders, batch_size=1, shard_index=k, shard_count=2, **kw)
           for k in range(2)]
  whole = pipeline.make_dataset(folders, batch_size=2, **_one_process(**kw))
  for step in range(5):
    for key in ("A", "B"):
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), whole[step][key])


def test_default_shard_is_jax_process():
  ds = pipeline.make_dataset(_id_source(4), batch_size=4, seed=0, preprocess="crop",
                             crop_size=8)
  assert sorted(_ids(ds[0])) == [0, 1, 2, 3]  # process 0 of 1 sees every record


def test_photo_source_scale_crop():
  src = pipeline.PhotoCrops(copies=2)
  assert len(src) == 2 * len(src.names) and src[0]["A"].dtype == np.uint8
  ds = pipeline.make_dataset(src, batch_size=4, seed=0, crop_size=64, **_one_process())
  batch = ds[0]
  assert set(batch) == {"A"} and batch["A"].shape == (4, 64, 64, 3)
  assert batch["A"].dtype == np.float32
  assert -1.0 <= batch["A"].min() and batch["A"].max() <= 1.0
  assert not np.array_equal(batch["A"], ds[1]["A"])


def test_scale_crop_is_a_window_when_the_image_is_the_crop_size():
  img = _noise(8, 11)
  out = pipeline.transform_record({"A": img}, np.random.default_rng(0), preprocess="scale_crop",
                                  crop_size=8)["A"]
  windows = [img[:, x:x + 8] for x in range(4)]
  windows += [w[:, ::-1] for w in windows]
  assert any(np.array_equal(out, pipeline.to_float(w)) for w in windows)


def test_resize_and_crop_is_bicubic_resize_then_flip():
  img = _noise(20, 30)
  ref = np.asarray(Image.fromarray(img).resize((16, 16), Image.Resampling.BICUBIC))
  outs = [pipeline.transform_record({"A": img}, np.random.default_rng(s), load_size=16,
                                    crop_size=16)["A"] for s in range(8)]
  for out in outs:
    assert (np.array_equal(out, pipeline.to_float(ref))
            or np.array_equal(out, pipeline.to_float(ref[:, ::-1])))
  assert any(np.array_equal(o, pipeline.to_float(ref[:, ::-1])) for o in outs)
  unflipped = [pipeline.transform_record({"A": img}, np.random.default_rng(s), load_size=16,
                                         crop_size=16, flip=False)["A"] for s in range(8)]
  assert all(np.array_equal(o, pipeline.to_float(ref)) for o in unflipped)


# ------------------------------------------------------------------------------------- errors


def test_missing_and_empty_folders(tmp_path):
  with pytest.raises(FileNotFoundError, match="trainA"):
    pipeline.UnpairedFolders(tmp_path)
  (tmp_path / "trainA").mkdir()
  (tmp_path / "trainA" / "notes.txt").write_text("not an image")
  with pytest.raises(ValueError, match=f"no images .* in folder {tmp_path / 'trainA'}"):
    pipeline.UnpairedFolders(tmp_path)
  with pytest.raises(FileNotFoundError, match="train"):
    pipeline.PairedFolder(tmp_path / "nowhere")


def test_crop_larger_than_image(unpaired_root):
  ds = pipeline.make_dataset(pipeline.UnpairedFolders(unpaired_root), batch_size=1, seed=0,
                             preprocess="crop", crop_size=41, **_one_process())
  with pytest.raises(ValueError, match=r"40x48 is smaller than the crop size 41"):
    ds[0]
  with pytest.raises(ValueError, match="smaller than the crop size 64"):
    pipeline.transform_record({"A": _noise(40, 48)}, np.random.default_rng(0),
                              preprocess="scale_crop", crop_size=64)


def test_undecodable_file_is_named(tmp_path):
  _save(tmp_path / "trainB" / "b.png", _noise(8, 8))
  (tmp_path / "trainA").mkdir()
  (tmp_path / "trainA" / "x.png").write_bytes(b"\x89PNG garbage, not an image" * 4)
  src = pipeline.UnpairedFolders(tmp_path)
  with pytest.raises(ValueError, match=r"cannot decode image file .*x\.png"):
    src[0]
  ds = pipeline.make_dataset(src, batch_size=1, seed=0, crop_size=4, load_size=8,
                             **_one_process())
  with pytest.raises(ValueError, match=r"x\.png"):
    ds[0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size must be >= 1, got 0"),
    (dict(batch_size=5), "has 4 records, fewer than one global batch of 5 x 1"),
    (dict(batch_size=1, preprocess="zoom"), "'zoom'"),
    (dict(batch_size=1, load_size=8, crop_size=16), "load_size 8 is smaller than crop_size 16"),
    (dict(batch_size=1, seed=-1), "seed must be an int in"),
    (dict(batch_size=1, shard_index=0), "give both shard_index and shard_count"),
    (dict(batch_size=1, shard_index=2, shard_count=2), "shard_index 2 is outside"),
    (dict(batch_size=1, shard_index=0, shard_count=2, drop_remainder=False),
     "drop_remainder=False needs a single process"),
])
def test_make_dataset_rejects_bad_options(kwargs, match):
  kwargs = {"seed": 0, **kwargs}
  if "shard_index" not in kwargs and "shard_count" not in kwargs:
    kwargs.update(shard_index=0, shard_count=1)
  with pytest.raises(ValueError, match=match):
    pipeline.make_dataset(_id_source(4), **kwargs)


def test_photo_source_rejects_unknown_name():
  with pytest.raises(ValueError, match="no_such_photo"):
    pipeline.PhotoCrops(["no_such_photo"])
