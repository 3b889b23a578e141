"""Content relationship distillation (CRD) losses, pure functions on NHWC generator outputs.

CRD (You et al., "Exploring Content Relationships for Distilling Efficient GANs", arXiv
2212.11091, section 3) slices one output image into row strips, column strips and ``k x k``
patches, and asks the student to reproduce the *relations among the slices of the same image*
that the teacher's output has: relational knowledge distillation (RKD; Park et al.,
"Relational Knowledge Distillation", CVPR 2019, section 3.2) with the slices as embeddings.

For one image with slices ``e_1 .. e_n`` (``[n, dim]``):

* distance term (RKD-D, section 3.2.1): ``psi_D(i, j) = ||e_i - e_j|| / mu``, ``mu`` the mean
  of the ``n (n - 1)`` off-diagonal distances; ``mean_{i, j} smooth_l1(psi_D^s - psi_D^t)``
  over all ``n * n`` ordered pairs (the zero diagonal included);
* angle term (RKD-A, section 3.2.2): ``psi_A(i, j, k) = <u_ji, u_jk>``, the cosine of the angle
  at ``e_j``, with unit vectors ``u_ji = (e_i - e_j) / ||e_i - e_j||``, the zero vector when
  the slices coincide (so ``psi_A = 0`` whenever ``i == j``, ``k == j`` or two slices are
  equal; the authors' ``F.normalize`` with its 1e-12 floor gives the same values, differences
  shorter than 1e-12 aside);
  ``mean_{j, i, k} smooth_l1(psi_A^s - psi_A^t)`` over all ``n**3`` ordered triplets;
* ``smooth_l1`` is the Huber loss with threshold 1 (``0.5 x**2`` if ``|x| < 1`` else
  ``|x| - 0.5``), i.e. ``torch.nn.functional.smooth_l1_loss`` with its default ``beta=1``.

These normalisation details (mean over off-diagonal distances, 'mean' reduction over the full
``n x n`` and ``n x n x n`` tensors, zero unit vectors for coincident slices) follow the
authors' ``relation_kd.py`` (``RKDLoss``, weights ``w_d=1, w_a=2``) and its parent, lenscloth/RKD
``metric/loss.py`` (``RkdDistance``, ``RKdAngle``). The slicing and the weight 25 of each slicing
follow the authors' ``distillers/cycleganbest_distiller.py`` (TheKernelZ/CRD): rows and columns
of each image, and 32x32 patches taken on a stride-32 grid (``F.unfold``). The order of the
coordinates inside a slice does not change any distance or cosine, so NHWC slices here give the
same values as the authors' NCHW ones.

Batches: every relation is among the slices of ONE sample and the losses are averaged over the
batch. With batch 1 (the authors' CycleGAN setting) this is the authors' loss exactly; for
larger batches the authors' CycleGAN code pools the patches of all images into one set, and
their pix2pix distiller sums (not averages) the per-image losses.

The teacher is a target: no gradient flows into it (the authors compute it under
``torch.no_grad``). Everything is computed in the inputs' floating dtype (float32 by default;
float64 under ``jax.enable_x64``). Student and teacher relations come out of the same batched
ops, so identical inputs give exactly 0.

Gradients: reverse mode (``jax.grad``, ``jax.vjp``) through a custom VJP that keeps the
``[n, n, n]`` smooth-L1 slopes of the angle term and writes the gradient with ``[n, n, n]``
elementwise work and ``[n, n] x [n, dim]`` matrix products (no ``[n, n, dim]`` tensor and no
teacher work in the backward pass); forward mode (``jax.jvp``) is not supported. Where two
student slices coincide the unit difference vector has no direction and gets a zero gradient
(PyTorch's ``F.normalize`` divides by its 1e-12 floor there, a 1e12-scale gradient); elsewhere
the gradients are the exact ones (float32 gradients within about 1e-6 of float64 ones, 1e-4
with nearly coincident slices).

Cost: the angle term of ``n`` slices of dimension ``dim`` builds ``[n, n, dim]`` unit
difference vectors and their batched Gram ``[n, n, n]``: ``n**3 * dim`` multiply-adds per
image for the student and again for the teacher (12.9 G each for the 256 rows of a 256x256x3
image, as many for its columns); the backward pass adds ``O(n**3 + n**2 dim)``. Samples are
processed one after the other (``lax.map``), so memory holds one sample's ``[2, n, n, dim]``
tensors (about 0.8 GB in float32 for 256x256x3 rows), plus, when differentiating, the
``[n, n, n]`` slopes of every sample and slicing (67 MB each for 256 rows).
``num_anchors`` with a PRNG key evaluates the angle at a random subset of vertices ``j`` only
(an unbiased estimate of the exact mean at ``num_anchors / n`` of the Gram cost); the default
is exact.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

SLICINGS = ("row", "column", "patch")
DEFAULT_PATCH_SIZE = 32
DEFAULT_DISTANCE_WEIGHT = 1.0
DEFAULT_ANGLE_WEIGHT = 2.0
DEFAULT_SLICING_WEIGHTS = (25.0, 25.0, 25.0)
# Floor of the mean distance that normalises the distance term (the clamp of RKD's pdist).
EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# Slicing
# ----------------------------------------------------------------------------------------------


def _as_images(x: Any, name: str = "images") -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"{name} must be [batch, height, width, channels], got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def slice_rows(x: jax.Array) -> jax.Array:
  """Row strips of each image: row ``r`` of sample ``b`` flattened.

  Args:
    x: ``[batch, height, width, channels]`` float images (any range; generator outputs are in
      [-1, 1]).

  Returns:
    ``[batch, height, width * channels]``, same dtype; slice ``r`` is ``x[b, r]`` flattened.

  Raises:
    ValueError: ``x`` is not 4-D.
  """
  x = _as_images(x)
  b, h, w, c = x.shape
  return x.reshape(b, h, w * c)


def slice_columns(x: jax.Array) -> jax.Array:
  """Column strips of each image: column ``c`` of sample ``b`` flattened.

  Args:
    x: ``[batch, height, width, channels]`` float images.

  Returns:
    ``[batch, width, height * channels]``, same dtype; slice ``j`` is ``x[b, :, j]`` flattened.

  Raises:
    ValueError: ``x`` is not 4-D.
  """
  x = _as_images(x)
  b, h, w, c = x.shape
  return jnp.swapaxes(x, 1, 2).reshape(b, w, h * c)


def _check_patch_size(patch_size: Any, height: int, width: int) -> int:
  if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
    raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
  if height % patch_size or width % patch_size:
    raise ValueError(f"patch_size {patch_size} does not divide the image height {height} and "
                     f"width {width}")
  return patch_size


def slice_patches(x: jax.Array, patch_size: int = DEFAULT_PATCH_SIZE) -> jax.Array:
  """Non-overlapping ``patch_size x patch_size`` patches of each image, flattened.

  The grid is ``F.unfold(kernel_size=patch_size, stride=patch_size)``'s: patches in raster
  order (patch ``q`` covers rows ``(q // (width / k)) k ...`` and columns
  ``(q % (width / k)) k ...``).

  Args:
    x: ``[batch, height, width, channels]`` float images; height and width multiples of
      ``patch_size``.
    patch_size: side ``k`` of the square patches, a positive int (32 in CRD).

  Returns:
    ``[batch, (height / k) * (width / k), k * k * channels]``, same dtype.

  Raises:
    ValueError: ``x`` is not 4-D, or ``patch_size`` is not a positive int dividing both height
      and width (``F.unfold`` would silently drop the remainder).
  """
  x = _as_images(x)
  b, h, w, c = x.shape
  k = _check_patch_size(patch_size, h, w)
  x = x.reshape(b, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // k) * (w // k), k * k * c)


# ----------------------------------------------------------------------------------------------
# Relational terms
# ----------------------------------------------------------------------------------------------


def _smooth_l1(x: jax.Array) -> jax.Array:
  a = jnp.abs(x)
  return jnp.where(a < 1.0, 0.5 * x * x, a - 0.5)


def _smooth_l1_grad(x: jax.Array) -> jax.Array:
  return jnp.clip(x, -1.0, 1.0)


def _safe_sqrt(sq: jax.Array, scale: jax.Array | float = 1.0) -> jax.Array:
  """``sqrt(sq * scale)`` where ``sq > 0``, else 0."""
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0) * scale), 0.0)


def _geometry(e: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Difference vectors ``diff[..., j, i, :] = e_i - e_j``, squared norms and norms of
  ``e`` ``[..., n, dim]``."""
  diff = e[..., None, :, :] - e[..., :, None, :]
  sq = jnp.sum(diff * diff, axis=-1)
  return diff, sq, _safe_sqrt(sq)


def _unit(diff: jax.Array, d: jax.Array) -> jax.Array:
  """``diff / |diff|``, the zero vector where ``|diff| = 0``."""
  pos = (d > 0)[..., None]
  return jnp.where(pos, diff / jnp.where(pos, d[..., None], 1.0), 0.0)


def _take_anchors(x: jax.Array, anchors: jax.Array | None, axis: int) -> jax.Array:
  return x if anchors is None else jnp.take(x, anchors, axis=axis)


def _gram(u: jax.Array) -> jax.Array:
  return jnp.einsum("...jid,...jkd->...jik", u, u, precision=jax.lax.Precision.HIGHEST)


def _pair_terms(s: jax.Array, t: jax.Array, anchors: jax.Array | None, distance: bool,
                angle: bool, residuals: bool = False
                ) -> tuple[tuple[jax.Array, jax.Array], tuple[Any, ...]]:
  """Distance and angle terms of one sample, and (``residuals``) what the backward pass needs.

  Student and teacher go through the same batched ops (stacked on a leading axis of 2), so
  identical inputs give bitwise identical relations and an exactly zero loss.
  """
  n = s.shape[0]
  diff, sq, d = _geometry(jnp.stack([s, t]))                # [2, n, n, dim], [2, n, n]
  zero = jnp.zeros((), s.dtype)
  d_loss, a_loss, d_res, a_res = zero, zero, None, None
  if distance:
    mean = jnp.sum(d, axis=(1, 2)) / (n * (n - 1))         # off-diagonal means [2]
    # d / mean written as sqrt(sq / mean**2): a product feeding the student - teacher
    # subtraction could be contracted into an FMA on one side only, and identical inputs would
    # then differ by a rounding error; a square root is never contracted.
    scale = 1.0 / jnp.square(jnp.maximum(mean, EPS))
    dist = _safe_sqrt(sq, scale[:, None, None])
    delta = dist[0] - dist[1]
    d_loss = jnp.mean(_smooth_l1(delta))
    if residuals:
      d_res = (_smooth_l1_grad(delta), mean[0])
  if angle:
    diff_a, d_a = _take_anchors(diff, anchors, -3), _take_anchors(d, anchors, -2)
    cos = _gram(_unit(diff_a, d_a))                          # [2, m, n, n]
    delta = cos[0] - cos[1]
    a_loss = jnp.mean(_smooth_l1(delta))
    if residuals:
      slope = _smooth_l1_grad(delta)
      # <u_ji, dL/du_ji> up to the cotangent's scale: sum_k (S_jik + S_jki) cos_jik.
      radial = jnp.sum((slope + jnp.swapaxes(slope, 1, 2)) * cos[0], axis=-1)
      a_res = (slope, radial)
  return (d_loss, a_loss), (d[0], d_res, a_res)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _sample_terms(s: jax.Array, t: jax.Array, anchors: jax.Array | None, distance: bool,
                  angle: bool) -> tuple[jax.Array, jax.Array]:
  """``(distance term, angle term)`` of one sample: student ``s`` and teacher ``t`` ``[n, dim]``,
  angle vertices ``anchors`` ``[m]`` (None: all). Differentiable in ``s`` only.

  The custom VJP keeps ``[m, n, n]`` smooth-L1 slopes and ``[n, n]`` quantities between the
  passes and writes the gradient with ``[m, n, n]`` elementwise work and ``[n, n] x [n, dim]``
  matrix products: no ``[n, n, dim]`` tensor and no teacher work in the backward pass. A zero
  difference vector (coincident slices) has no direction and gets a zero gradient.
  """
  return _pair_terms(s, t, anchors, distance, angle)[0]


def _sample_terms_fwd(s, t, anchors, distance, angle):
  out, (d, d_res, a_res) = _pair_terms(s, t, anchors, distance, angle, residuals=True)
  return out, (s, anchors, d, d_res, a_res)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _sample_terms_bwd(distance, angle, res, cotangents):
  """Gradient in ``s``. With ``diff[j, i] = e_i - e_j`` and a cotangent ``w[j, i]`` on the
  difference vectors of the form ``sum_k B[j, i, k] (e_k - e_j) - c[j, i] (e_i - e_j)``, the
  gradient is ``sum_j w[j, i]`` at ``e_i`` minus ``sum_i w[j, i]`` at ``e_j``: sums of ``B``
  and ``c`` times the embeddings. The embeddings are centred first (every term is
  translation-invariant), which limits the cancellation in these differences."""
  s, anchors, d, d_res, a_res = res
  g_dist, g_angle = cotangents
  n = s.shape[0]
  e = s - jnp.mean(s, axis=0)
  inv = jnp.where(d > 0, 1.0 / jnp.where(d > 0, d, 1.0), 0.0)   # [n, n], 0 where d = 0
  grad = jnp.zeros_like(e)
  if distance:
    slope, mean = d_res
    p = g_dist * slope / (n * n)                           # dL / d(dist)
    mu = jnp.maximum(mean, EPS)
    through_mean = jnp.where(mean > EPS, jnp.sum(p * d) / (mu * mu * n * (n - 1)), 0.0)
    q = (p / mu - through_mean) * inv                      # dL / d(d) / d
    q = q + q.T
    grad = grad + jnp.sum(q, axis=1)[:, None] * e - _matmul(q, e)   # sum_j q_kj (e_k - e_j)
  if angle:
    slope, radial = a_res
    scale = g_angle / slope.size
    inv_a = _take_anchors(inv, anchors, -2)                # [m, n]
    e_a = _take_anchors(e, anchors, -2)                    # [m, dim]
    # dL/du_ji = sum_k G_jik u_jk with G = scale (S + S^T); through u = diff / |diff|:
    # B_jik = G_jik / (d_ji d_jk), c_ji = scale radial_ji / d_ji**2.
    b = scale * (slope + jnp.swapaxes(slope, 1, 2)) * inv_a[:, :, None] * inv_a[:, None, :]
    c = scale * radial * inv_a * inv_a
    b_k = jnp.sum(b, axis=2)                               # [m, n]
    other = (_matmul(jnp.sum(b, axis=0), e) - _matmul(b_k.T, e_a)
             - jnp.sum(c, axis=0)[:, None] * e + _matmul(c.T, e_a))
    anchor = (_matmul(jnp.sum(b, axis=1), e) - jnp.sum(b_k, axis=1)[:, None] * e_a
              - _matmul(c, e) + jnp.sum(c, axis=1)[:, None] * e_a)
    grad = grad + other
    grad = grad - anchor if anchors is None else grad.at[anchors].add(-anchor)
  return grad.astype(s.dtype), jnp.zeros_like(s), None  # t has s's shape and dtype


_sample_terms.defvjp(_sample_terms_fwd, _sample_terms_bwd)


def _as_slices(student: Any, teacher: Any, min_slices: int, term: str
               ) -> tuple[jax.Array, jax.Array]:
  student, teacher = jnp.asarray(student), jnp.asarray(teacher)
  if student.shape != teacher.shape:
    raise ValueError(f"student and teacher must have the same shape, got {tuple(student.shape)} "
                     f"and {tuple(teacher.shape)}")
  if student.ndim != 3 or student.shape[0] < 1:
    raise ValueError(f"slices must be [batch, n_slices, slice_dim] with batch >= 1, got shape "
                     f"{tuple(student.shape)}")
  if student.shape[1] < min_slices:
    raise ValueError(f"the {term} term needs at least {min_slices} slices per sample, got "
                     f"n_slices={student.shape[1]}")
  dtype = jnp.result_type(student.dtype, teacher.dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  return student.astype(dtype), jax.lax.stop_gradient(teacher.astype(dtype))


def _check_anchors(num_anchors: int | None, key: jax.Array | None, n: int) -> None:
  if num_anchors is None:
    return
  if isinstance(num_anchors, bool) or not isinstance(num_anchors, int) or not (
      1 <= num_anchors <= n):
    raise ValueError(f"num_anchors must be an int in [1, {n}] (the number of slices), got "
                     f"{num_anchors!r}")
  if key is None:
    raise ValueError(f"num_anchors={num_anchors} needs a PRNG key (key=jax.random.key(...))")


@functools.partial(jax.jit, static_argnames=("distance", "angle", "num_anchors"))
def _batched_terms(student: jax.Array, teacher: jax.Array, *, distance: bool, angle: bool,
                   num_anchors: int | None, key: jax.Array | None
                   ) -> tuple[jax.Array, jax.Array]:
  """Batch means of the distance and angle terms; samples run one after the other (lax.map),
  so memory holds one sample's ``[2, n, n, dim]`` difference vectors at a time."""
  b, n = student.shape[:2]
  if angle and num_anchors is not None:
    keys = jax.random.split(key, b)
    # A uniformly random subset without replacement: the top num_anchors of n uniform draws.
    anchors = jax.lax.top_k(jax.vmap(lambda k: jax.random.uniform(k, (n,)))(keys),
                            num_anchors)[1]
  else:
    anchors = jnp.zeros((b, 0), jnp.int32)

  def one(args):
    s, t, a = args
    return _sample_terms(s, t, a if a.shape[0] else None, distance, angle)

  d, a = jax.lax.map(one, (student, teacher, anchors))
  return jnp.mean(d), jnp.mean(a)


def rkd_distance_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """RKD distance term among the slices of each sample, averaged over the batch.

  Park et al. 2019, section 3.2.1 (RKD-D), as in TheKernelZ/CRD ``relation_kd.py``: pairwise
  Euclidean distances, each sample's set divided by the mean of its ``n (n - 1)`` off-diagonal
  distances (floored at 1e-12), then the smooth-L1 (Huber, threshold 1) difference between
  student and teacher averaged over all ``n * n`` ordered pairs.

  Args:
    student: ``[batch, n_slices, slice_dim]`` float embeddings (e.g. ``slice_rows(images)``).
    teacher: same shape; a target only (no gradient flows into it).

  Returns:
    Scalar >= 0 in the inputs' float dtype; 0 when the slices have the same relative
    distances (in particular for ``student == teacher``); invariant to scaling either input.

  Raises:
    ValueError: shapes differ, are not 3-D, or ``n_slices < 2``.
  """
  student, teacher = _as_slices(student, teacher, 2, "distance")
  d, _ = _batched_terms(student, teacher, distance=True, angle=False, num_anchors=None,
                        key=None)
  return d


def rkd_angle_loss(student: jax.Array, teacher: jax.Array, *, num_anchors: int | None = None,
                   key: jax.Array | None = None) -> jax.Array:
  """RKD angle term among the slices of each sample, averaged over the batch.

  Park et al. 2019, section 3.2.2 (RKD-A), as in TheKernelZ/CRD ``relation_kd.py``: for every
  ordered triplet ``(i, j, k)`` the cosine of the angle at ``e_j``, ``<u_ji, u_jk>`` with unit
  difference vectors ``u_ji = (e_i - e_j) / ||e_i - e_j||`` (zero for coincident slices);
  smooth-L1 (Huber, threshold 1) between student and teacher cosines averaged over all
  ``n**3`` triplets, degenerate ones included. Reverse-mode differentiable in ``student``.

  Args:
    student: ``[batch, n_slices, slice_dim]`` float embeddings.
    teacher: same shape; a target only (no gradient flows into it).
    num_anchors: None (exact, every vertex ``j``) or an int in ``[1, n_slices]``: the cosines
      are computed at that many vertices drawn without replacement per sample, an unbiased
      estimate at ``num_anchors / n_slices`` of the cost.
    key: PRNG key, required with ``num_anchors``.

  Returns:
    Scalar >= 0 in the inputs' float dtype; 0 for ``student == teacher``; invariant to scaling
    and translating either input.

  Raises:
    ValueError: shapes differ, are not 3-D, ``n_slices < 3``, or a bad ``num_anchors``/``key``.
  """
  student, teacher = _as_slices(student, teacher, 3, "angle")
  _check_anchors(num_anchors, key, student.shape[1])
  _, a = _batched_terms(student, teacher, distance=False, angle=True, num_anchors=num_anchors,
                        key=key)
  return a


# ----------------------------------------------------------------------------------------------
# CRD
# ----------------------------------------------------------------------------------------------


def _slicing_weights(weights: Sequence[float] | Mapping[str, float]) -> dict[str, float]:
  if isinstance(weights, Mapping):
    unknown = sorted(set(weights) - set(SLICINGS))
    if unknown:
      raise ValueError(f"slicing_weights keys must be among {SLICINGS}, got unknown {unknown}")
    out = {s: float(weights.get(s, 0.0)) for s in SLICINGS}
  else:
    weights = tuple(weights)
    if len(weights) != len(SLICINGS):
      raise ValueError(f"slicing_weights must have {len(SLICINGS)} entries (row, column, "
                       f"patch), got {weights!r}")
    out = {s: float(w) for s, w in zip(SLICINGS, weights)}
  bad = {s: w for s, w in out.items() if not w >= 0}
  if bad:
    raise ValueError(f"slicing_weights must be >= 0, got {bad}")
  return out


def crd_loss(student_images: jax.Array, teacher_images: jax.Array, *,
             patch_size: int = DEFAULT_PATCH_SIZE,
             distance_weight: float = DEFAULT_DISTANCE_WEIGHT,
             angle_weight: float = DEFAULT_ANGLE_WEIGHT,
             slicing_weights: Sequence[float] | Mapping[str, float] = DEFAULT_SLICING_WEIGHTS,
             num_anchors: int | None = None, key: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The CRD content-relationship loss between student and teacher generator outputs.

  ``total = sum_s slicing_weight[s] * (distance_weight * D_s + angle_weight * A_s)`` over the
  slicings ``s`` in (row, column, patch), where ``D_s`` and ``A_s`` are
  :func:`rkd_distance_loss` and :func:`rkd_angle_loss` of the slices (You et al. 2022, arXiv
  2212.11091, section 3; defaults: the authors' CycleGAN weights, 1 and 2 within a slicing,
  25 per slicing, 32x32 patches). Slicings or terms whose weight is 0 are not computed.

  Jit it with the keyword arguments bound (``jax.jit(functools.partial(crd_loss, ...))``); all
  checks are on static shapes, so they raise at trace time.

  Args:
    student_images: ``[batch, height, width, channels]`` float student outputs (in [-1, 1] for
      the zoo's tanh generators; the loss is invariant to a common scale).
    teacher_images: same shape; a target only (no gradient flows into it).
    patch_size: side of the square patches, a positive int dividing height and width.
    distance_weight: float >= 0, weight of the distance term within each slicing.
    angle_weight: float >= 0, weight of the angle term within each slicing.
    slicing_weights: weights >= 0 of the row, column and patch slicings, as a 3-tuple or a dict
      with keys among ``"row"``, ``"column"``, ``"patch"`` (missing keys weigh 0).
    num_anchors: None (exact) or the number of angle vertices drawn per sample and slicing
      (capped at each slicing's number of slices), see :func:`rkd_angle_loss`.
    key: PRNG key, required with ``num_anchors``.

  Returns:
    ``(total, terms)``: ``total`` a scalar >= 0 in the inputs' float dtype (exactly 0 for
    identical inputs); ``terms`` maps ``"{s}_distance"`` and ``"{s}_angle"`` (unweighted) and
    ``"{s}"`` (``distance_weight * D_s + angle_weight * A_s``, before the slicing weight) to
    scalars, for every computed slicing ``s``.

  Raises:
    ValueError: the images are not 4-D or differ in shape; ``patch_size`` does not divide the
      image (with a nonzero patch weight); a slicing with a nonzero angle weight has fewer than
      3 slices (fewer than 2 for the distance term); a negative or malformed weight; a bad
      ``num_anchors`` or a missing ``key``.
  """
  student_images = _as_images(student_images, "student_images")
  teacher_images = _as_images(teacher_images, "teacher_images")
  if student_images.shape != teacher_images.shape:
    raise ValueError(f"student and teacher outputs must have the same shape, got "
                     f"{tuple(student_images.shape)} and {tuple(teacher_images.shape)}")
  weights = _slicing_weights(slicing_weights)
  for name, w in (("distance_weight", distance_weight), ("angle_weight", angle_weight)):
    if not float(w) >= 0:
      raise ValueError(f"{name} must be >= 0, got {w!r}")
  distance, angle = float(distance_weight) > 0, float(angle_weight) > 0
  slicers = {"row": slice_rows, "column": slice_columns,
             "patch": lambda x: slice_patches(x, patch_size)}
  _, h, w, _ = student_images.shape
  counts = {"row": h, "column": w}
  if weights["patch"] > 0:
    k = _check_patch_size(patch_size, h, w)
    counts["patch"] = (h // k) * (w // k)

  total = jnp.zeros((), jnp.result_type(student_images.dtype, teacher_images.dtype))
  terms: dict[str, jax.Array] = {}
  if not (distance or angle):
    return total, terms
  for i, s in enumerate(SLICINGS):
    if weights[s] == 0:
      continue
    n = counts[s]
    minimum = 3 if angle else 2
    if n < minimum:
      raise ValueError(f"the {'angle' if angle else 'distance'} term needs at least {minimum} "
                       f"slices, got {n} {s} slices of a {h}x{w} image"
                       + (f" with patch_size {patch_size}" if s == "patch" else ""))
    m = None if num_anchors is None else num_anchors
    if m is not None:
      if isinstance(m, int) and not isinstance(m, bool) and m > n:
        m = n
      _check_anchors(m, key, n)
    st, te = slicers[s](student_images), slicers[s](teacher_images)
    st, te = _as_slices(st, te, minimum, "angle" if angle else "distance")
    d, a = _batched_terms(st, te, distance=distance, angle=angle, num_anchors=m,
                          key=None if key is None else jax.random.fold_in(key, i))
    combined = jnp.zeros((), total.dtype)
    if distance:
      terms[f"{s}_distance"] = d
      combined = combined + float(distance_weight) * d
    if angle:
      terms[f"{s}_angle"] = a
      combined = combined + float(angle_weight) * a
    terms[s] = combined
    total = total + weights[s] * combined
  return total, terms
