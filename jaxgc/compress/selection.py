"""Selection masks: which leaves of a variables tree a compression transform touches.

A *selection* mask is a pytree of Python ``bool`` with the structure of the variables tree. It is
built from regular expressions on "/"-joined parameter paths (big_vision
``utils.make_mask_trees``), so it is static: a transform that reads it can be jitted with the mask
baked into the trace. Selection masks are never traced arrays; pruning masks (traced booleans) are a
different thing and live elsewhere.

Paths join the pytree keys with "/", e.g. ``params/block_0/sep_0/depthwise/kernel``. Patterns are
matched with :func:`re.search`, so they are unanchored unless written with ``^`` / ``$``.

NNX: a ``flax.nnx.State`` (from ``nnx.split(model)``, e.g. of :func:`jaxgc.convert.to_nnx`) holds
each array inside an ``nnx.Variable`` box, and its raw key paths are
``block_0/sep_0/depthwise/kernel/value``, without the collection. Every path here is normalised
to the Linen one first (:func:`flatten_with_paths`): the variable type becomes its Linen
collection (``nnx.Param`` -> ``params``, ``nnx.BatchStat`` -> ``batch_stats``, the names of
``flax.nnx.bridge``), the trailing ``value`` is dropped, and RNG state (``nnx.RngState``:
keys and counts) is never selected. So the same regexes select the same layers of the Linen
variables and of the NNX state, and every transform built on this module returns a tree of the
structure it was given (a ``State`` for a ``State``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from flax.nnx import variablelib

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


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def collection_name(variable_type: type) -> str:
  """The Linen collection of an NNX variable type: ``nnx.Param`` -> ``"params"``,
  ``nnx.BatchStat`` -> ``"batch_stats"`` (the ``flax.nnx.bridge`` registry); an unregistered
  type gives its class name, as the bridge would register it."""
  try:
    return variablelib.variable_name_from_type(variable_type)
  except ValueError:
    return variable_type.__name__


def flatten_with_paths(tree: Any, is_leaf: Callable[[Any], bool] | None = None
                       ) -> tuple[list[tuple[str | None, Any]], Any]:
  """Flattens ``tree`` into ``(linen_path, leaf)`` pairs and its treedef.

  The leaves and treedef are those of ``jax.tree_util.tree_flatten(tree, is_leaf)``. Paths are
  :func:`path_str` of the key path, except inside an ``nnx.Variable``: there the path is the
  variable's Linen collection, then the keys down to the variable, then the keys inside its
  value without the leading ``value`` (``State({'conv': {'kernel': Param(value=a)}})`` ->
  ``params/conv/kernel``). Leaves of RNG variables (``nnx.RngState``) get ``None``.

  Args:
    tree: a pytree: Linen variables (nested dicts), an ``nnx.State``, or any pytree.
    is_leaf: as for ``jax.tree_util.tree_flatten``.

  Returns:
    ``([(path or None, leaf), ...], treedef)`` in tree-flatten order.
  """
  user_leaf = is_leaf or (lambda _: False)
  outer, _ = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: _is_variable(x) or user_leaf(x))
  _, treedef = jax.tree_util.tree_flatten(tree, is_leaf=is_leaf)
  out: list[tuple[str | None, Any]] = []
  for keypath, x in outer:
    if not _is_variable(x) or user_leaf(x):
      out.append((path_str(keypath), x))
      continue
    inner, _ = jax.tree_util.tree_flatten_with_path(x, is_leaf=is_leaf)
    rng = isinstance(x, nnx.RngState)
    prefix = "/".join(filter(None, [collection_name(type(x)), path_str(keypath)]))
    for ikp, leaf in inner:
      inside = path_str(ikp[1:])  # ikp[0] is the variable's `value`
      out.append((None if rng else "/".join(filter(None, [prefix, inside])), leaf))
  return out, treedef


def map_with_paths(fn: Callable[..., Any], tree: Any, *rest: Any,
                   is_leaf: Callable[[Any], bool] | None = None,
                   rng_leaves: str = "keep") -> Any:
  """``jax.tree_util.tree_map_with_path`` with Linen-style path strings.

  Calls ``fn(path, leaf, *rest_leaves)`` for every leaf, ``path`` as in
  :func:`flatten_with_paths`; ``rest`` must have the structure of ``tree``. Leaves of RNG
  variables are not passed to ``fn``: they are kept (``rng_leaves="keep"``) or become ``None``
  (``"none"``, for trees of masks or scores).

  Returns:
    A tree of the structure of ``tree`` (an ``nnx.State`` keeps its ``Variable`` boxes).
  """
  leaves, treedef = flatten_with_paths(tree, is_leaf)
  others = [treedef.flatten_up_to(r) for r in rest]
  out = []
  for i, (path, leaf) in enumerate(leaves):
    if path is None:
      out.append(leaf if rng_leaves == "keep" else None)
    else:
      out.append(fn(path, leaf, *(o[i] for o in others)))
  return jax.tree_util.tree_unflatten(treedef, out)


def has_variables(tree: Any) -> bool:
  """Whether ``tree`` holds an ``nnx.Variable`` (is an ``nnx.State`` or holds one)."""
  return any(_is_variable(x) for x in jax.tree_util.tree_leaves(tree, is_leaf=_is_variable))


def linen_dict(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> dict[str, Any]:
  """The Linen variables dict of an ``nnx.State`` (or any tree): nested dicts keyed by the
  components of the :func:`flatten_with_paths` path of every leaf, RNG state left out.

  Example: ``State({'conv': {'kernel': Param(value=a)}})`` -> ``{"params": {"conv": {"kernel":
  a}}}``, the ``variables`` that ``module.apply`` of the bridged Linen module takes.

  Raises:
    ValueError: two leaves with the same path, or a leaf whose path is a prefix of another's.
  """
  out: dict[str, Any] = {}
  for path, leaf in flatten_with_paths(tree, is_leaf)[0]:
    if path is None:
      continue
    *parents, name = path.split("/")
    node = out
    for key in parents:
      node = node.setdefault(key, {})
      if not isinstance(node, dict):
        raise ValueError(f"path '{path}' runs through a leaf: not a variables tree")
    if name in node:
      raise ValueError(f"two leaves have the path '{path}': not a variables tree")
    node[name] = leaf
  return out


def unbox(tree: Any) -> Any:
  """``tree`` with every ``nnx.Variable`` replaced by its value (``flax.nnx.as_pure``); other
  trees are returned as they are. ``nnx.Optimizer`` passes such pure trees to ``tx.update``."""
  return nnx.as_pure(tree) if has_variables(tree) else tree


def rebox(like: Any, tree: Any) -> Any:
  """The leaves of ``tree`` (a pure tree, e.g. from :func:`unbox`) put back into the structure
  of ``like``, ``Variable`` boxes included; ``tree`` itself when ``like`` holds no Variable.

  Raises:
    ValueError: the two trees have different numbers of leaves.
  """
  if not has_variables(like):
    return tree
  leaves, treedef = jax.tree_util.tree_leaves(tree), jax.tree_util.tree_structure(like)
  if len(leaves) != treedef.num_leaves:
    raise ValueError(f"cannot put {len(leaves)} leaves back into a tree of {treedef.num_leaves}")
  return jax.tree_util.tree_unflatten(treedef, leaves)


def all_paths(variables: Any) -> list[str]:
  """Returns the "/"-joined Linen-style path of every leaf of ``variables`` (RNG state of an
  ``nnx.State`` left out), in tree-flatten order."""
  return [p for p, _ in flatten_with_paths(variables)[0] if p is not None]


def select(
    variables: Any,
    include: str = r"(^|/)kernel$",
    exclude: str | None = None,
) -> Any:
  """Builds a static selection mask from path regexes.

  A leaf is selected when ``re.search(include, path)`` matches and ``exclude`` is ``None`` or
  does not match.

  Args:
    variables: a pytree (usually nested dicts of arrays, ``{"params": ..., "batch_stats": ...}``,
      or an ``nnx.State``, whose paths are normalised as in :func:`flatten_with_paths`).
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

  def pick(path, _):
    return bool(inc.search(path)) and not (exc is not None and exc.search(path))

  leaves, treedef = flatten_with_paths(variables)
  mask = jax.tree_util.tree_unflatten(
      treedef, [False if p is None else pick(p, x) for p, x in leaves])
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
  flags = jax.tree_util.tree_leaves(select(variables, include, exclude))
  return [p for (p, _), m in zip(flatten_with_paths(variables)[0], flags) if m]


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
    variables: nested dicts of arrays, or an ``nnx.State`` (returned as an ``nnx.State``).
    include: regex on "/"-joined paths of the leaves to transform.
    exclude: optional regex of paths to leave untouched.

  Raises:
    ValueError: nothing selected, or a selected leaf is not floating point or holds NaN/Inf
      (naming its path).
  """
  mask = select(variables, include, exclude)

  def apply(path, w, selected):
    if not selected:
      return w
    check_weight(path, w)
    return fn(w)

  return map_with_paths(apply, variables, mask)
