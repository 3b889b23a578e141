"""``jaxgc evaluate``: generators against a reference set, with every metric of ``jaxgc.eval``.

Writes ``metrics.json`` and ``metrics.md`` into the workdir (atomically: temporary files,
then renames). The reference set is images (a folder, an ``.npz`` or an IDX file) or samples of
another generator (e.g. the FP32 original), drawn with ``reference.seed`` so that they are
independent of the evaluated samples (``seed``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxgc._fileio import atomic_write_text
from jaxgc.checkpoint import check_writable_dir
from jaxgc.checkpoint import load_any_model
from jaxgc.data import inputs as inputs_lib
from jaxgc.data import reference as data_lib
from jaxgc.eval import extractors as features_lib
from jaxgc.eval import scoring as eval_lib
from jaxgc.jobs import config as config_lib
from jaxgc.jobs import runs


# Every top-level name this job writes into its workdir (jaxgc.ownership).
OUTPUTS = ("metrics.json", "metrics.md")


def default_config() -> ml_collections.ConfigDict:
  """Every key ``jaxgc evaluate`` understands, with its default."""
  c = ml_collections.ConfigDict()
  c.generators = ("",)        # checkpoints: .pth files, `jaxgc convert` dirs, compress checkpoints
  c.arch = ""                 # for .pth generators; "" infers it
  c.reference = ml_collections.ConfigDict()
  c.reference.kind = "images"  # images | generator
  c.reference.path = ""        # folder / .npz / IDX (images) or a checkpoint (generator)
  c.reference.limit = 10000    # at most this many reference images
  c.reference.seed = 1         # latents of a reference generator; seeds the `limit` subset
  c.num_samples = 1000         # generated samples per generator
  c.seed = 0                   # latents of the evaluated generators
  c.inputs = ml_collections.ConfigDict()   # image-to-image generators translate these:
  c.inputs.path = ""           # a folder / .npz of photos, or "" for the scikit-image photos
  c.inputs.size = 256
  c.extractor = "inception"    # inception | lenet5 | pixels
  c.resize = "clean"           # inception resize method for non-299 images
  c.batch_size = 50
  c.nearest_k = 5
  c.kid_subsets = 100
  c.kid_subset_size = 1000
  c.shard = True               # shard samples over all local devices
  return c


def resolve_config(user: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by ``user``, validated.

  Raises:
    ValueError: unknown key, no generator, no reference, bad sizes or extractor.
  """
  cfg = config_lib.merge(default_config(), user)
  if not any(cfg.generators):
    raise ValueError("config.generators is empty: name at least one generator checkpoint")
  if not cfg.reference.path:
    raise ValueError("config.reference.path is empty: name a reference set or generator")
  if cfg.reference.kind not in ("images", "generator"):
    raise ValueError(f"reference.kind must be 'images' or 'generator', got {cfg.reference.kind!r}")
  if cfg.extractor not in features_lib.EXTRACTORS:
    raise ValueError(f"unknown extractor {cfg.extractor!r}; expected one of "
                     f"{features_lib.EXTRACTORS}")
  for key in ("num_samples", "batch_size", "nearest_k", "kid_subsets", "kid_subset_size"):
    if cfg[key] < 1:
      raise ValueError(f"config.{key} must be >= 1, got {cfg[key]}")
  return cfg


def _resolve(path: str) -> str:
  if os.path.exists(path):
    return path
  root = inputs_lib.assets_dir()
  if root and os.path.exists(os.path.join(root, path)):
    return os.path.join(root, path)
  raise FileNotFoundError(f"not found: {path}" + ("" if root else " (JAXGC_ASSETS is unset)"))


def _translation_inputs(cfg) -> np.ndarray:
  if not cfg.inputs.path:
    return inputs_lib.photo_batch(inputs_lib.SKIMAGE_PHOTOS, int(cfg.inputs.size))
  imgs = data_lib.load_images(_resolve(cfg.inputs.path), limit=int(cfg.num_samples))
  return imgs.astype(np.float32) / 127.5 - 1.0


def _samples(module, variables, cfg, seed: int, mesh, progress: bool) -> np.ndarray:
  inputs = _translation_inputs(cfg) if module.kind == "image_to_image" else None
  return eval_lib.generate_images(module, variables, num_samples=int(cfg.num_samples),
                                  seed=seed, inputs=inputs, batch_size=int(cfg.batch_size),
                                  mesh=mesh, progress=progress)


def markdown(result: dict[str, Any]) -> str:
  """``metrics.md``: the protocol, then one row per generator."""
  ref = result["reference"]
  lines = [
      "# jaxgc evaluate", "",
      f"- reference: {ref['kind']} `{ref['path']}`, n = {ref['n']}"
      + (f", seed {ref['seed']}" if ref["kind"] == "generator" else ""),
      f"- extractor: {result['extractor']}"
      + (f", resize {result['resize']}" if result["extractor"] == "inception" else "")
      + f"; k = {result['nearest_k']}; KID: {result['kid_subsets']} subsets",
      "- precision/recall/density/coverage: exact k-NN (Kynkaanniemi et al. 2019, Naeem et "
      "al. 2020); LSH: locality-sensitive hashing (Mordido et al. 2021), bucket occupancy only "
      "(lsh) and buckets + k-NN radius (lsh+knn).", "",
      "| generator | n | FID | KID x 1e3 | precision | recall | density | coverage | "
      "LSH P | LSH R | LSH+kNN P | LSH+kNN R |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in result["results"]:
    lines.append(
        f"| `{os.path.basename(os.path.normpath(r['generator']))}` | {r['n']} | {r['fid']:.3f} "
        f"| {1e3 * r['kid_mean']:.3f} ± {1e3 * r['kid_std']:.3f} | {r['precision']:.4f} | "
        f"{r['recall']:.4f} | {r['density']:.4f} | {r['coverage']:.4f} | "
        f"{r['lsh_precision']:.4f} | {r['lsh_recall']:.4f} | {r['lsh_knn_precision']:.4f} | "
        f"{r['lsh_knn_recall']:.4f} |")
  return "\n".join(lines) + "\n"


@runs.locked_workdir("evaluate", OUTPUTS, signature=("metrics.json", "metrics.md"))
def run(config: Any, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
  """Evaluates ``config.generators`` against ``config.reference``; writes metrics.json/md.

  Returns:
    The ``metrics.json`` content: ``{"reference", "extractor", "resize", "nearest_k",
    "kid_subsets", "seed", "results": [{"generator", "n", "fid", "kid_mean", ...}]}``.

  Raises:
    ValueError, FileNotFoundError, CheckpointError, PermissionError: bad config, inputs or
      workdir; nothing is written then.
  """
  cfg = resolve_config(config)
  workdir = check_writable_dir(workdir)
  gens = [_resolve(g) for g in cfg.generators if g]
  ref_path = _resolve(cfg.reference.path)
  mesh = (jax.make_mesh((jax.device_count(),), ("data",))
          if cfg.shard and jax.device_count() > 1 else None)
  feats = lambda imgs: features_lib.extract_features(  # noqa: E731
      imgs, cfg.extractor, cfg.resize, batch_size=int(cfg.batch_size), mesh=mesh,
      progress=progress)

  if cfg.reference.kind == "images":   # streamed: a folder of any size, a bounded memory
    ref_feats = features_lib.reference_features(
        ref_path, cfg.extractor, cfg.resize, limit=int(cfg.reference.limit),
        seed=int(cfg.reference.seed), batch_size=int(cfg.batch_size), mesh=mesh,
        progress=progress)
  else:
    module, variables = load_any_model(ref_path, cfg.arch or None)
    ref_images = _samples(module, variables, cfg, int(cfg.reference.seed), mesh, progress)
    ref_feats = feats(ref_images)

  results = []
  for g in gens:
    module, variables = load_any_model(g, cfg.arch or None)
    try:
      samples = _samples(module, variables, cfg, int(cfg.seed), mesh, progress)
    except FloatingPointError as e:
      raise FloatingPointError(f"generator {g}: {e}") from None
    fake_feats = feats(samples)
    scores = eval_lib.compare(ref_feats, fake_feats, nearest_k=int(cfg.nearest_k),
                              kid_subsets=int(cfg.kid_subsets),
                              kid_subset_size=int(cfg.kid_subset_size), seed=int(cfg.seed),
                              mesh=mesh)
    results.append({"generator": g, "n": int(len(fake_feats)), **scores})

  out = {"reference": {"kind": cfg.reference.kind, "path": ref_path, "n": int(len(ref_feats)),
                       "seed": int(cfg.reference.seed)},
         "extractor": cfg.extractor, "resize": cfg.resize, "nearest_k": int(cfg.nearest_k),
         "kid_subsets": int(cfg.kid_subsets), "seed": int(cfg.seed),
         "devices": jax.device_count(), "results": results}
  os.makedirs(workdir, exist_ok=True)
  atomic_write_text(os.path.join(workdir, "metrics.json"), json.dumps(out, indent=2))
  atomic_write_text(os.path.join(workdir, "metrics.md"), markdown(out))
  return out
