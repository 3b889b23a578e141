"""A small domain classifier trained here, whose penultimate features make a cheap FID.

The FID Inception runs at about 6 images/s on a 2-core CPU; FID every few hundred steps of a
GAN needs something cheaper. :func:`train_classifier` trains a LeNet-5
(:class:`jaxgc.models.lenet.LeNet5`, the layout of the MNIST LeNet-5 in the assets) on the
*training* split's class labels (cross-entropy, Adam), and FID is then computed on its ``[n, 84]``
``f6`` features (as "FID with a domain classifier", e.g. the MNIST LeNet FID of many GAN
papers). Numbers measured with it are comparable only with each other (same classifier, same
seed), never with Inception FIDs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgc.models.lenet import LeNet5


def preprocess(images: np.ndarray) -> np.ndarray:
  """uint8 ``[n, 32, 32, c]`` -> float32 in [0, 1] (the classifier's input)."""
  return images.astype(np.float32) / 255.0


def train_classifier(images: np.ndarray, labels: np.ndarray, *, steps: int = 600,
                     batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0
                     ) -> tuple[LeNet5, dict, float]:
  """Trains a LeNet-5 on ``images`` -> ``labels``; deterministic given the arguments.

  Args:
    images: uint8 ``[n, 32, 32, c]`` training images (c = 1 or 3).
    labels: int ``[n]`` class indices in 0..9.
    steps: Adam steps (batches drawn from permutations seeded by ``(seed, epoch)``).
    batch_size: images per step.
    learning_rate: Adam's learning rate.
    seed: seeds the initialisation and the batches.

  Returns:
    ``(module, variables, training accuracy over the last 50 steps' batches)``.

  Raises:
    ValueError: images not ``[n, 32, 32, c]`` uint8, or labels of another length or outside
      0..9.
  """
  images = np.asarray(images)
  labels = np.asarray(labels).astype(np.int32)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:3] != (32, 32):
    raise ValueError(f"the domain classifier takes uint8 [n, 32, 32, c] images, got "
                     f"{images.dtype} {images.shape}")
  if labels.shape != (len(images),) or labels.min() < 0 or labels.max() > 9:
    raise ValueError(f"labels must be [{len(images)}] in 0..9, got shape {labels.shape}")
  module = LeNet5(input_nc=images.shape[-1])
  variables = module.init(jax.random.key(seed), jnp.zeros((1, 32, 32, images.shape[-1])))
  tx = optax.adam(learning_rate)
  params, opt = variables["params"], tx.init(variables["params"])

  @jax.jit
  def step(params, opt, x, y):
    def loss_fn(p):
      logp = module.apply({"params": p}, x)
      return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)), logp
    (loss, logp), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, jnp.mean(jnp.argmax(logp, -1) == y)

  n, correct = len(images), []
  for s in range(steps):
    epoch, offset = divmod(s * batch_size, n)
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    idx = np.resize(perm[offset:offset + batch_size], batch_size)
    params, opt, acc = step(params, opt, preprocess(images[idx]), labels[idx])
    if s >= steps - 50:
      correct.append(float(acc))
  return module, {"params": jax.tree.map(np.asarray, params)}, float(np.mean(correct))
