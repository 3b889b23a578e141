"""Local density structure of a generator's outputs: neighbourhoods, the density loss and the
adversarial neighbourhood term of collaborative G/D pruning.

Source: Ganjdanesh, Gao, Alipanahi, Huang, "Compressing Image-to-Image Translation GANs Using
Local Density Structures on Their Learned Manifold", AAAI 2024 (arXiv 2312.14776), Sec. 3. The
paper publishes no code; the formulas below are **our reconstruction** of its objective (the
paper describes it in words: partition the teacher's learned manifold into neighbourhoods of a
"center" sample, and make the pruned generator preserve the density structure of each
neighbourhood, adversarially). Where we chose:

* Neighbourhood ``N(i)`` of centre ``i`` (a teacher output in the batch): its ``k`` nearest
  teacher outputs in the same batch (indices by squared Euclidean distance in the feature
  space, the centre itself excluded, ties to the lower index) and the ``M`` teacher outputs of
  perturbed copies of its input (:func:`perturb_latents`, :func:`perturb_images`). The student
  side uses the same indices and the same perturbed inputs.
* Features ``phi``: any frozen map to ``[batch, ...]`` (flattened here): the penultimate
  activations of a frozen copy of the discriminator (:func:`penultimate_features`) or pixels at
  reduced size (:func:`pixel_features`).
* With ``t_j = phi(teacher output j)``, ``s_j = phi(student output j)`` and the teacher's
  bandwidth ``h_i`` = Euclidean distance from ``t_i`` to its ``k``-th nearest teacher neighbour
  (used on both sides, under stop-gradient)::

    p_i(j) = softmax_{j in N(i)} ( -|t_i - t_j|^2 / (2 h_i^2) ),   q_i(j): s in place of t
    KDE_t(i) = mean_{j in N(i)} exp( -|t_i - t_j|^2 / (2 h_i^2) ), KDE_s(i) likewise
    L_density = mean_i KL(p_i || q_i) + lambda * mean_i |log KDE_t(i) - log KDE_s(i)|

  (computed with log-softmax and log-sum-exp, in float32). ``L_density`` is 0 exactly when every
  student distance equals the teacher's, in particular when the student equals the teacher.
* The adversarial neighbourhood term: a small discriminator (:class:`PairDiscriminator`) sees
  ``(centre, neighbour)`` feature pairs, the teacher's pairs as real and the student's as fake
  (:func:`pair_losses`, binary cross-entropy on logits, the generator's term non-saturating).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.train import gan_losses

# Smallest bandwidth (in feature units): a centre whose k-th neighbour coincides with it would
# otherwise divide by zero.
BANDWIDTH_EPS = 1e-6


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[n, m]`` squared Euclidean distances between the rows of ``a [n, f]`` and ``b [m, f]``,
  as a direct difference (no ``|a|^2 + |b|^2 - 2ab`` cancellation)."""
  d = a[:, None, :] - b[None, :, :]
  return jnp.sum(d * d, axis=-1)


def check_neighbourhood(batch: int, k: int, m: int) -> None:
  """Raises ``ValueError`` (one line, naming the value) unless ``1 <= k < batch``, ``0 <= m <
  batch``."""
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < batch:
    raise ValueError(f"neighbours k must be an int in [1, batch={batch}), got {k!r}")
  if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < batch:
    raise ValueError(f"perturbed copies M must be an int in [0, batch={batch}), got {m!r}")


def nearest_neighbours(t: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The ``k`` nearest teacher outputs of every centre within the batch, and its bandwidth.

  Args:
    t: ``[batch, ...]`` teacher features (flattened to ``[batch, f]``, float32).
    k: neighbours per centre, ``1 <= k < batch``.

  Returns:
    ``(idx, h)``: ``idx [batch, k]`` int32 indices of the nearest other rows, nearest first
    (ties to the lower index); ``h [batch]`` float32, the Euclidean distance to the ``k``-th,
    at least :data:`BANDWIDTH_EPS`. Both carry no gradient.

  Raises:
    ValueError: ``k`` outside ``[1, batch)``.
  """
  check_neighbourhood(t.shape[0], k, 0)
  tf = jax.lax.stop_gradient(_flat(t))
  d = _sq_dists(tf, tf)
  d = jnp.where(jnp.eye(d.shape[0], dtype=bool), jnp.inf, d)
  neg, idx = jax.lax.top_k(-d, k)
  h = jnp.maximum(jnp.sqrt(jnp.maximum(-neg[:, -1], 0.0)), BANDWIDTH_EPS)
  return idx.astype(jnp.int32), h


def _neighbour_sq_dists(c: jax.Array, idx: jax.Array, pert: jax.Array | None) -> jax.Array:
  """``[batch, k + M]``: squared distances from each centre ``c[i]`` to ``c[idx[i]]`` and to its
  own perturbed outputs ``pert[i]``."""
  nb = c[idx]                                            # [b, k, f]
  if pert is not None:
    nb = jnp.concatenate([nb, pert.reshape(pert.shape[0], pert.shape[1], -1)
                          .astype(jnp.float32)], axis=1)
  diff = nb - c[:, None, :]
  return jnp.sum(diff * diff, axis=-1)


def density_loss(t: jax.Array, s: jax.Array, k: int, *, t_pert: jax.Array | None = None,
                 s_pert: jax.Array | None = None, lam: float = 1.0
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The local density structure loss of the module docstring.

  Args:
    t: ``[batch, ...]`` teacher features of the batch's outputs (no gradient flows into them).
    s: student features, the same shape.
    k: in-batch neighbours per centre, ``1 <= k < batch``.
    t_pert: ``[batch, M, ...]`` teacher features of each input's ``M`` perturbed copies, or
      None (no perturbed neighbours); ``s_pert`` the student's, the same shape.
    lam: weight ``lambda >= 0`` of the log-KDE term.

  Returns:
    ``(loss, aux)``: float32 scalar ``mean_i KL(p_i || q_i) + lam * mean_i |log KDE_t(i) -
    log KDE_s(i)|`` and ``aux`` with ``"kl"``, ``"kde"`` (the two means) and ``"bandwidth"``
    (mean ``h_i``).

  Raises:
    ValueError: ``k`` outside ``[1, batch)``; ``s`` or the perturbed features mis-shaped, or
      only one of ``t_pert`` / ``s_pert`` given.
  """
  if t.shape != s.shape:
    raise ValueError(f"student features {tuple(s.shape)} do not match the teacher's "
                     f"{tuple(t.shape)}")
  if (t_pert is None) != (s_pert is None):
    raise ValueError("give both t_pert and s_pert, or neither")
  if t_pert is not None:
    if t_pert.shape != s_pert.shape or t_pert.shape[0] != t.shape[0] \
        or t_pert.shape[2:] != t.shape[1:]:
      raise ValueError(f"perturbed features must be [batch, M, ...] = [{t.shape[0]}, M, "
                       f"{', '.join(map(str, t.shape[1:]))}] for both, got {tuple(t_pert.shape)}"
                       f" and {tuple(s_pert.shape)}")
    check_neighbourhood(t.shape[0], k, t_pert.shape[1])
  idx, h = nearest_neighbours(t, k)
  tf = jax.lax.stop_gradient(_flat(t))
  tp = None if t_pert is None else jax.lax.stop_gradient(t_pert)
  logit_t = -_neighbour_sq_dists(tf, idx, tp) / (2.0 * h[:, None] ** 2)
  logit_s = -_neighbour_sq_dists(_flat(s), idx, s_pert) / (2.0 * h[:, None] ** 2)
  log_p = jax.nn.log_softmax(logit_t, axis=-1)
  log_q = jax.nn.log_softmax(logit_s, axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  n = logit_t.shape[1]
  log_kde_t = jax.nn.logsumexp(logit_t, axis=-1) - jnp.log(n)
  log_kde_s = jax.nn.logsumexp(logit_s, axis=-1) - jnp.log(n)
  kde = jnp.abs(log_kde_t - log_kde_s)
  loss = jnp.mean(kl) + lam * jnp.mean(kde)
  return loss, {"kl": jnp.mean(kl), "kde": jnp.mean(kde), "bandwidth": jnp.mean(h)}


def perturb_latents(key: jax.Array, z: jax.Array, m: int, sigma: float) -> jax.Array:
  """``[batch, m, z_dim]``: ``z + sigma * eps``, ``eps ~ N(0, 1)``, ``m`` copies per latent."""
  eps = jax.random.normal(key, (z.shape[0], m) + z.shape[1:], z.dtype)
  return z[:, None] + sigma * eps


def perturb_images(key: jax.Array, x: jax.Array, m: int, max_shift: int = 2,
                   noise: float = 0.02) -> jax.Array:
  """``[batch, m, height, width, channels]``: ``m`` copies of every image, each shifted by a
  random integer offset in ``[-max_shift, max_shift]`` per spatial axis (edge-replicated, a
  small crop-and-pad) plus Gaussian noise of standard deviation ``noise`` (images in [-1, 1])."""
  b, hgt, wid = x.shape[:3]
  ks, kn = jax.random.split(key)
  shifts = jax.random.randint(ks, (b, m, 2), -max_shift, max_shift + 1)
  rows = jnp.clip(jnp.arange(hgt)[None, None, :] - shifts[..., 0:1], 0, hgt - 1)  # [b, m, h]
  cols = jnp.clip(jnp.arange(wid)[None, None, :] - shifts[..., 1:2], 0, wid - 1)
  bi = jnp.arange(b)[:, None, None, None]
  out = x[bi, rows[..., :, None], cols[..., None, :]]                             # [b,m,h,w,c]
  return out + noise * jax.random.normal(kn, out.shape, out.dtype)


def pixel_features(x: jax.Array, size: int = 16) -> jax.Array:
  """``[batch, size * size * channels]``: images ``[batch, height, width, channels]`` resized
  (bilinear, antialiased) to ``size x size`` and flattened; ``[batch, ...]`` non-images are
  flattened unchanged."""
  if x.ndim != 4:
    return _flat(x)
  y = jax.image.resize(x.astype(jnp.float32), (x.shape[0], size, size, x.shape[3]), "linear")
  return _flat(y)


def penultimate_features(module: nn.Module, variables: Any, x: jax.Array,
                         last: str) -> jax.Array:
  """The input of ``module``'s submodule ``last`` (e.g. the final layer of a discriminator:
  ``"dense_2"`` of the MNIST ``MLPDiscriminator``, ``"conv_out"`` of a PatchGAN) for input
  ``x``, flattened to ``[batch, f]``; differentiable in ``x``.

  Raises:
    ValueError: ``module`` has no submodule called ``last``.
  """
  seen = []

  def grab(next_fun, args, kwargs, context):
    if context.module.name == last and context.method_name == "__call__":
      seen.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    module.apply(variables, x)
  if not seen:
    raise ValueError(f"{type(module).__name__} has no layer called {last!r}")
  return _flat(seen[-1])


class PairDiscriminator(nn.Module):
  """A small discriminator on ``(centre, neighbour)`` feature pairs (our reconstruction of the
  paper's adversarial neighbourhood term).

  Input: ``centre``, ``neighbour`` ``[n, f]`` float32; output ``[n]`` logits (real = a teacher
  pair). It reads ``[c, v, v - c]`` through ``len(hidden)`` LeakyReLU(0.2) dense layers.
  """

  hidden: tuple[int, ...] = (64,)

  @nn.compact
  def __call__(self, centre: jax.Array, neighbour: jax.Array) -> jax.Array:
    x = jnp.concatenate([centre, neighbour, neighbour - centre], axis=-1)
    for i, h in enumerate(self.hidden):
      x = nn.leaky_relu(nn.Dense(h, name=f"dense_{i}")(x), 0.2)
    return nn.Dense(1, name="out")(x)[:, 0]


def neighbour_pairs(c: jax.Array, idx: jax.Array, pert: jax.Array | None = None
                    ) -> tuple[jax.Array, jax.Array]:
  """``(centres, neighbours)``, each ``[batch * (k + M), f]``: every centre ``c[i]`` (``c
  [batch, ...]``) repeated beside each member of ``N(i)`` (``c[idx[i]]``, then ``pert[i]``)."""
  cf = _flat(c)
  nb = cf[idx]
  if pert is not None:
    nb = jnp.concatenate([nb, pert.reshape(pert.shape[0], pert.shape[1], -1)
                          .astype(jnp.float32)], axis=1)
  cent = jnp.broadcast_to(cf[:, None, :], nb.shape)
  return cent.reshape(-1, cf.shape[1]), nb.reshape(-1, cf.shape[1])


def pair_losses(pair_apply: Callable[..., jax.Array], pair_params: Any, t: jax.Array,
                s: jax.Array, idx: jax.Array, t_pert: jax.Array | None = None,
                s_pert: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The adversarial neighbourhood term: ``(d_loss, g_loss)``, float32 scalars.

  ``d_loss = 0.5 * (BCE(teacher pairs, real) + BCE(student pairs, fake))`` trains the pair
  discriminator (the student's pairs under stop-gradient); ``g_loss = mean softplus(-logit)``
  over the student's pairs (non-saturating) trains the student, the discriminator's params
  under stop-gradient.

  Args:
    pair_apply: ``PairDiscriminator().apply``-like, ``(params, centre, neighbour) -> [n]``.
    pair_params: its variables.
    t, s: ``[batch, ...]`` teacher and student features; ``idx [batch, k]`` from
      :func:`nearest_neighbours`; ``t_pert``, ``s_pert`` optional ``[batch, M, ...]``.
  """
  tc, tn = neighbour_pairs(jax.lax.stop_gradient(t), idx,
                           None if t_pert is None else jax.lax.stop_gradient(t_pert))
  sc, sn = neighbour_pairs(s, idx, s_pert)
  real = pair_apply(pair_params, tc, tn)
  fake_d = pair_apply(pair_params, jax.lax.stop_gradient(sc), jax.lax.stop_gradient(sn))
  d_loss, _, _ = gan_losses.discriminator_loss(real, fake_d, "vanilla")
  fake_g = pair_apply(jax.lax.stop_gradient(pair_params), sc, sn)
  return d_loss, gan_losses.generator_loss(fake_g, "vanilla")
