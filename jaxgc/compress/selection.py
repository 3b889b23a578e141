"""Selection masks: which leaves of a variables tree a compression transform touches.

A *selection* mask is a pytree of Python ``bool`` with the structure of the variables tree. It is
built from regular expressions on "/"-joined parameter paths (big_vision
``utils.make_mask_trees``), so it is static: a transform that reads it can be jitted with the mask
baked into the trace. Selection masks are never traced arrays; pruning masks (traced booleans) are a
different thing and live elsewhere.

Paths join the pytree keys with "/", e.g. ``params/block_0/sep_0/depthwise/kernel``. Patterns are
matched with :func:`re.search`, so they are unanchored unless written with ``^`` / ``$``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Conv, transposed-conv and dense kernels under the "params" collection. Biases, normalisation
# scales and "batch_stats" are left out: they are few and sensitive.
DEFAULT_INCLUDE = r"(^|/)params/(.*/)?kernel$"

_EXAMPLE_PATHS = 5


def path_str(keypath: Sequence[Any]) -> str:
  """Joins a JAX key path into a "/"-separated string.

  Args:
    keypath: a key path as given by :func:`jax.tree_util.tree_map_with_path` or
      :func:`jax.tree_util.tree_flatten_with_path`: a sequence of ``DictKey``, ``GetAttrKey``,
      ``SequenceKey`` or ``FlattenedIndexKey``.

  Returns:
    The keys joined by "/", e.g. ``"params/conv_in/kernel"``; ``""`` for the root.

  Examples:
    >>> import jax
    >>> leaves, _ = jax.tree_util.tree_flatten_with_path({"params": {"conv": {"kernel": 0.}}})
    >>> path_str(leaves[0][0])
    'params/conv/kernel'
  """
  parts = []
  for key in keypath:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      parts.append(str(key.name))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:
      parts.append(str(key))
  return "/".join(parts)


def compile_pattern(pattern: str | None, what: str) -> re.Pattern[str] | None:
  """``re.compile(pattern)``, None for None.

  Args:
    pattern: a regular expression on "/"-joined paths, or None.
    what: the name of the option, for the error (``"include"``, ``"exclude"``).

  Raises:
    ValueError: an invalid pattern, naming ``what`` and the pattern.
  """
  if pattern is None:
    return None
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(f"invalid {what} pattern '{pattern}': {e}") from None


def all_paths(variables: Any) -> list[str]:
  """Returns the "/"-joined path of every leaf of ``variables``, in tree-flatten order."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(variables)
  return [path_str(p) for p, _ in leaves]


def select(
    variables: Any,
    include: str = r"(^|/)kernel$",
    exclude: str | None = None,
) -> Any:
  """Builds a static selection mask from path regexes.

  A leaf is selected when ``re.search(include, path)`` matches and ``exclude`` is ``None`` or
  does not match.

  Args:
    variables: a pytree (usually nested dicts of arrays, ``{"params": ..., "batch_stats": ...}``).
    include: regex a path must match to be selected.
    exclude: optional regex; paths matching it are not selected (e.g. ``r"conv_in|conv_out"`` to
      keep the first and last layers at full precision, Andreev et al. 2021, arXiv 2108.13996).

  Returns:
    A pytree with the structure of ``variables`` whose leaves are Python ``bool``.

  Raises:
    ValueError: a pattern is not a valid regex, or no leaf is selected (the message lists a few
      paths of the tree so the pattern can be fixed).
  """
  inc = compile_pattern(include, "include")
  exc = compile_pattern(exclude, "exclude")

  def pick(keypath, _):
    path = path_str(keypath)
    return bool(inc.search(path)) and not (exc is not None and exc.search(path))

  mask = jax.tree_util.tree_map_with_path(pick, variables)
  if not any(jax.tree_util.tree_leaves(mask)):
    paths = all_paths(variables)
    examples = ", ".join(paths[:_EXAMPLE_PATHS]) or "<empty tree>"
    if exclude is None or not any(inc.search(p) for p in paths):
      raise ValueError(f"include pattern '{include}' matches no parameter; paths are e.g. {examples}")
    raise ValueError(
        f"include pattern '{include}' with exclude pattern '{exclude}' leaves no parameter; "
        f"paths are e.g. {examples}")
  return mask


def selected_paths(
    variables: Any,
    include: str = r"(^|/)kernel$",
    exclude: str | None = None,
) -> list[str]:
  """Returns the paths :func:`select` picks, in tree-flatten order.

  Args:
    variables: a pytree of arrays.
    include: regex a path must match.
    exclude: optional regex a path must not match.

  Returns:
    The selected "/"-joined paths.

  Raises:
    ValueError: as :func:`select`.
  """
  mask = select(variables, include, exclude)
  leaves, _ = jax.tree_util.tree_flatten_with_path(mask)
  return [path_str(p) for p, m in leaves if m]


def check_weight(path: str, w: Any) -> None:
  """Checks a selected leaf before it is compressed.

  Concrete arrays must be floating point and finite. Tracers (inside ``jax.jit``) are only checked
  for dtype, so the check never forces a host sync in a compiled transform.

  Args:
    path: "/"-joined path of the leaf, used in the message.
    w: the leaf.

  Raises:
    ValueError: the leaf is not floating point, or holds NaN or Inf.
  """
  dtype = jnp.result_type(w)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"cannot compress '{path}': dtype {dtype} is not floating point")
  if isinstance(w, jax.core.Tracer):
    return
  finite = np.isfinite(np.asarray(w, dtype=np.float32))
  if not finite.all():
    raise ValueError(
        f"cannot compress '{path}': {finite.size - int(finite.sum())} non-finite value(s) (NaN/Inf)")


def map_selected(fn: Callable[[jax.Array], Any], variables: Any, include: str = DEFAULT_INCLUDE,
                 exclude: str | None = None) -> Any:
  """Applies ``fn`` to every selected leaf after :func:`check_weight`; other leaves are kept.

  The one traversal behind clipping, fake quantization and low-bit storage. Pure: returns a new
  tree of the same structure.

  Args:
    fn: leaf -> new leaf (an array, or any pytree node such as a ``QuantizedTensor``).
    variables: nested dicts of arrays.
    include: regex on "/"-joined paths of the leaves to transform.
    exclude: optional regex of paths to leave untouched.

  Raises:
    ValueError: nothing selected, or a selected leaf is not floating point or holds NaN/Inf
      (naming its path).
  """
  mask = select(variables, include, exclude)

  def apply(keypath, w, selected):
    if not selected:
      return w
    check_weight(path_str(keypath), w)
    return fn(w)

  return jax.tree_util.tree_map_with_path(apply, variables, mask)
