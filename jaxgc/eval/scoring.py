"""One verdict for a generator: every metric of ``jaxgc.eval`` on one pair of feature sets."""

from __future__ import annotations

from typing import Callable, Any

import numpy as np

from jaxgc import parallel
from jaxgc.data import inputs as inputs_lib
from jaxgc.eval import extractors as features_lib
from jaxgc.eval import lsh
from jaxgc.eval import metrics

METRIC_KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
               "lsh_precision", "lsh_recall", "lsh_knn_precision", "lsh_knn_recall")


def compare(real_features: np.ndarray, fake_features: np.ndarray, *, nearest_k: int = 5,
            kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0, mesh=None,
            lsh_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
  """FID, KID, k-NN precision/recall, density/coverage and LSH precision/recall (both variants).

  Args:
    real_features: ``[n_real, d]`` reference features.
    fake_features: ``[n_fake, d]`` generated features.
    nearest_k: k of the k-NN radius (Kynkaanniemi et al. 2019; Naeem et al. 2020).
    kid_subsets: KID subsets; ``kid_subset_size`` is clipped to the smaller set.
    seed: seeds the KID subsets and the LSH projections.
    mesh: optional mesh; the sample axis is sharded over its ``"data"`` axis.
    lsh_kwargs: extra arguments of ``lsh.lsh_precision_recall`` (tables, hashes, width, m).

  Returns:
    ``{key: float}`` for every key of ``METRIC_KEYS``.
  """
  out: dict[str, float] = {"fid": float(metrics.fid(real_features, fake_features, mesh=mesh))}
  size = min(kid_subset_size, len(real_features), len(fake_features))
  k = metrics.kid(real_features, fake_features, num_subsets=kid_subsets, subset_size=size,
                  seed=seed)
  out.update({"kid_mean": float(k["kid_mean"]), "kid_std": float(k["kid_std"])})
  out.update({key: float(v) for key, v in metrics.prdc(
      real_features, fake_features, nearest_k=nearest_k, mesh=mesh).items()})
  for method, prefix in (("lsh", "lsh"), ("lsh_knn", "lsh_knn")):
    r = lsh.lsh_precision_recall(real_features, fake_features, method=method,
                                 nearest_k=nearest_k, seed=seed, mesh=mesh,
                                 **(lsh_kwargs or {}))
    out[f"{prefix}_precision"] = float(r["precision"])
    out[f"{prefix}_recall"] = float(r["recall"])
  return out


def generate_images(module, variables, *, num_samples: int = 1000, seed: int = 0,
                    inputs: np.ndarray | None = None, batch_size: int = 50, mesh=None,
                    progress: bool = True) -> np.ndarray:
  """uint8 images ``[n, h, w, c]`` from a generator.

  Unconditional generators get ``num_samples`` N(0, 1) latents from ``seed``; image-to-image
  generators translate ``inputs`` (float32 ``[n, h, w, c]`` in [-1, 1]). Outputs are mapped
  to uint8 as pytorch-CycleGAN's ``tensor2im``.

  Raises:
    ValueError: an image-to-image generator without inputs, or a discriminator.
  """
  if module.kind == "unconditional":
    x = inputs_lib.latents(int(num_samples), int(module.z_dim), int(seed))
  elif module.kind == "image_to_image":
    if inputs is None:
      raise ValueError("an image-to-image generator needs inputs to translate")
    x = np.asarray(inputs, np.float32)
  else:
    raise ValueError(f"cannot sample images from a {module.kind} ({type(module).__name__})")
  out = parallel.generate(module, variables, x, batch_size, mesh, progress)
  return inputs_lib.to_uint8(out)


def sample_scorer(module, reference_variables, *, extractor: str, resize: str = "clean",
                  num_samples: int = 1000, seed: int = 0, reference_seed: int = 1,
                  nearest_k: int = 5, inputs: np.ndarray | None = None, batch_size: int = 50
                  ) -> Callable[..., dict[str, float]]:
  """A scorer of compressed generators against the samples of a reference (e.g. FP32) one.

  The reference's samples (latents from ``reference_seed``, or ``inputs`` translated) are
  generated and their features extracted once; ``score(variables, module=None)`` then samples the
  compressed generator (latents from ``seed``, or the same ``inputs``; ``module`` defaults to the
  reference's, pass a slimmed one otherwise) and returns :func:`compare` of the two feature sets.

  Args:
    module: the reference generator.
    reference_variables: its variables.
    extractor: ``"inception"``, ``"lenet5"`` or ``"pixels"`` (:func:`extract_features`).
    resize: Inception resize method.
    num_samples: samples per unconditional generator.
    seed, reference_seed: latent seeds of the scored and the reference samples.
    nearest_k: k of the k-NN metrics.
    inputs: float32 ``[n, h, w, c]`` in [-1, 1] for image-to-image generators.
    batch_size: generation and extraction batch.

  Returns:
    ``score(variables, module=None) -> {key: float}`` for every key of ``METRIC_KEYS``.

  Raises:
    ValueError: as :func:`generate_images` and :func:`extract_features`.
  """
  def features(m, v, s):
    imgs = generate_images(m, v, num_samples=num_samples, seed=s, inputs=inputs,
                           batch_size=batch_size, progress=False)
    return features_lib.extract_features(imgs, extractor, resize, batch_size=batch_size,
                                         progress=False)

  real = features(module, reference_variables, reference_seed)
  return lambda variables, m=None: compare(
      real, features(module if m is None else m, variables, seed), nearest_k=nearest_k,
      seed=seed)
