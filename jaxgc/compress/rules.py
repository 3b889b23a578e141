"""Per-layer precision rules and the W8A8 / W4A8 / W4A4 recipes.

A rule ``PrecisionRule(pattern, weight_bits, act_bits)`` sets the weight and activation bit widths
of every layer whose path it matches (:func:`re.search`); the *first* matching rule wins and
layers no rule matches get the defaults. A layer path is the path of its kernel without the
``params/`` prefix and the ``/kernel`` suffix (``params/block_0/sep_0/depthwise/kernel`` ->
``block_0/sep_0/depthwise``), which is also the module path that
:mod:`jaxgc.compress.activations` intercepts. ``None`` bits keep that tensor in full precision.

Two marker patterns stand for positions rather than names: :data:`FIRST` (``"@first"``) and
:data:`LAST` (``"@last"``) match the first and the last quantizable layer in *execution order*,
found by :func:`first_last_layers` (an abstract run of the model that records the order of its
conv / transposed-conv / dense calls). Keeping those two layers at 8 bits is the recipe of
Andreev, Fritzler and Vetrov 2021, "Quantization of Generative Adversarial Networks for
Efficient Inference: a Methodological Study" (arXiv 2108.13996): W4A8 and W8A8 keep quality where
lower activation precision breaks it.

Recipes are modules of :mod:`jaxgc.compress.recipes` (``w8a8``, ``w4a8``, ``w4a4``) or any
``.py`` file whose ``get_config()`` returns an ``ml_collections.ConfigDict``; :func:`load_recipe`
reads them into a :class:`Recipe`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import importlib.util
import os
import pathlib
import re
import warnings
from typing import Any, Iterable, Mapping, Sequence

import flax.linen as nn
import jax

from jaxgc.compress import activations
from jaxgc.compress import quantize
from jaxgc.compress import selection
from jaxgc.compress.qconfig import FIRST  # noqa: F401  (re-exported)
from jaxgc.compress.qconfig import LAST  # noqa: F401  (re-exported)
from jaxgc.compress.qconfig import MARKERS  # noqa: F401  (re-exported)
from jaxgc.compress.qconfig import PrecisionRule
from jaxgc.compress.qconfig import as_rules
from jaxgc.compress.qconfig import expand_markers
from jaxgc.compress.qconfig import first_match
from jaxgc.compress.qconfig import has_markers
from jaxgc.models import registry

_KERNEL = re.compile(r"^(?:params/)?(.*)/kernel$")
RECIPES_PACKAGE = "jaxgc.compress.recipes"


def layer_path(param_path: str) -> str | None:
  """``params/block_0/conv_0/kernel`` -> ``block_0/conv_0``; ``None`` for a non-kernel path."""
  m = _KERNEL.match(param_path)
  return m.group(1) if m else None


def layer_paths(variables: Any) -> list[str]:
  """Layer paths of every kernel under ``params`` (tree-flatten order, i.e. sorted keys).

  Flatten order is *not* execution order; use :func:`first_last_layers` or
  :func:`jaxgc.compress.activations.execution_order` for that.

  Raises:
    ValueError: no kernel under ``params``.
  """
  return [layer_path(p) for p in selection.selected_paths(variables, selection.DEFAULT_INCLUDE)]


def first_last_layers(module: nn.Module, variables: Any, x: Any = None,
                      **apply_kwargs: Any) -> tuple[str, str]:
  """The first and last quantizable layers of ``module`` in execution order.

  The order is that of the ``nn.Conv`` / ``nn.ConvTranspose`` / ``layers.ConvTranspose`` /
  ``nn.Dense`` calls in one abstract forward pass (:func:`jax.eval_shape`, no FLOPs), not the
  order of the variables dict (JAX transforms sort dict keys). In the zoo: ``conv_in`` /
  ``conv_out`` (ResNet generators), ``convt_0`` / ``convt_{n-1}`` (DCGAN G), ``conv_0`` /
  ``conv_{n}`` (DCGAN D), ``dense_0`` / ``dense_{n}`` (MLPs), ``c1`` / ``f7`` (LeNet-5).

  Args:
    module: a Flax Linen module.
    variables: its variables.
    x: an example input; by default ``jaxgc.models.example_input(module)`` for zoo modules.
    **apply_kwargs: passed on to ``module.apply``.

  Returns:
    ``(first_layer_path, last_layer_path)``.

  Raises:
    ValueError: no example input can be made, or the model has no quantizable layer.
  """
  if x is None:
    if not hasattr(module, "kind"):
      raise ValueError(f"pass an example input x for {type(module).__name__}")
    x = registry.example_input(module)
  order = activations.execution_order(module, variables, x, **apply_kwargs)
  if not order:
    raise ValueError(f"{type(module).__name__} calls no conv, transposed conv or dense layer")
  return order[0], order[-1]


def _warn_unmatched(rules: Sequence[PrecisionRule], names: Sequence[str],
                    paths: Sequence[str]) -> None:
  unmatched = [name for r, name in zip(rules, names)
               if not any(r.matches(p) for p in paths)]
  if unmatched:
    warnings.warn(f"precision rule pattern(s) matching no layer: {unmatched}; layers are e.g. "
                  f"{', '.join(list(paths)[:5])}", UserWarning, stacklevel=3)


def _resolve_markers(rules: tuple[PrecisionRule, ...], paths: Sequence[str],
                     first_last: tuple[str, str] | None, ordered: bool
                     ) -> tuple[PrecisionRule, ...]:
  if not has_markers(rules):
    return rules
  if first_last is None:
    if not ordered:
      raise ValueError("rules use '@first'/'@last': pass first_last=first_last_layers(module, "
                       "variables), or the layer paths in execution order")
    first_last = (paths[0], paths[-1])
  return expand_markers(rules, first_last)


def resolve_rules(
    layers: Any,
    rules: Iterable[Any] | None,
    default_weight_bits: int | None = 8,
    default_act_bits: int | None = 8,
    first_last: tuple[str, str] | None = None,
) -> dict[str, tuple[int | None, int | None]]:
  """Bit widths of every layer: the first matching rule, else the defaults.

  Args:
    layers: a variables tree (its kernels name the layers) or a sequence of layer paths; a
      sequence is taken to be in execution order (e.g. from
      :func:`jaxgc.compress.activations.execution_order`) when resolving ``"@first"`` /
      ``"@last"``.
    rules: :class:`PrecisionRule` s or ``(pattern, weight_bits, act_bits)`` tuples.
    default_weight_bits: int in ``[2, 8]`` or ``None`` (full precision) for unmatched layers.
    default_act_bits: int in ``[2, 16]`` or ``None`` for unmatched layers.
    first_last: ``(first, last)`` layer paths for the markers; required when ``layers`` is a
      variables tree and the rules use markers.

  Returns:
    ``{layer_path: (weight_bits, act_bits)}`` in the order of ``layers``.

  Raises:
    ValueError: invalid rules or defaults; markers that cannot be resolved.

  Warns:
    UserWarning: once, listing every rule pattern that matches no layer.
  """
  if default_weight_bits is not None:
    quantize.check_bits(default_weight_bits)
  if default_act_bits is not None:
    activations.check_act_bits(default_act_bits)
  ordered = not isinstance(layers, Mapping)
  paths = list(layers) if ordered else layer_paths(layers)
  given = as_rules(rules)
  expanded = _resolve_markers(given, paths, first_last, ordered)
  _warn_unmatched(expanded, [r.pattern for r in given], paths)
  out = {}
  for p in paths:
    r = first_match(p, expanded)
    out[p] = (default_weight_bits, default_act_bits) if r is None else (r.weight_bits, r.act_bits)
  return out


def fake_quantize_by_rules(
    variables: Any,
    rules: Iterable[Any] | None,
    default_bits: int | None = 8,
    symmetric: bool = True,
    granularity: str = "per_channel",
    first_last: tuple[str, str] | None = None,
) -> Any:
  """Fake-quantizes every kernel with its own bit width (:func:`quantize.fake_quant`).

  Pure: returns a new tree; biases, norms, ``batch_stats`` and kernels whose weight bits resolve
  to ``None`` are returned unchanged. Jittable with everything but ``variables`` static.

  Args:
    variables: nested dicts ``{"params": ..., ...}``; kernels ``[kh, kw, in, out]`` or
      ``[in, out]``.
    rules: per-layer rules; only ``weight_bits`` is used here.
    default_bits: weight bits of unmatched layers, int in ``[2, 8]`` or ``None``.
    symmetric: symmetric (signed, zero point 0) or asymmetric weights.
    granularity: ``"per_channel"`` or ``"per_tensor"``.
    first_last: layer paths for ``"@first"`` / ``"@last"``, see :func:`resolve_rules`.

  Returns:
    A tree of the same structure, shapes and dtypes.

  Raises:
    ValueError: as :func:`resolve_rules`; no kernel; a non-float or non-finite kernel (named).

  Warns:
    UserWarning: rule patterns that match no layer.
  """
  quantize.check_granularity(granularity)
  bits = resolve_rules(variables, rules, default_bits, None, first_last)

  def apply(path, w):
    name = layer_path(path)
    if name is None or not re.search(selection.DEFAULT_INCLUDE, path):
      return w
    wbits = bits[name][0]
    if wbits is None:
      return w
    selection.check_weight(path, w)
    return quantize.fake_quant(w, wbits, symmetric, granularity)

  return selection.map_with_paths(apply, variables)


def act_rules(rules: Iterable[Any] | None, default_act_bits: int | None
              ) -> tuple[PrecisionRule, ...]:
  """Rules for :func:`jaxgc.compress.activations.apply_quantized`, defaults made explicit.

  Appends a catch-all rule ``(".*", None, default_act_bits)`` so that a ``None`` default (full
  precision) is honoured by the activation interceptor, which otherwise uses its config's bits.
  """
  return as_rules(rules) + (PrecisionRule(r".*", None, default_act_bits),)


# The families' own layers, kept at W8A8 when a recipe lowers the rest (Andreev, Fritzler and
# Vetrov 2021, arXiv 2108.13996: StyleGAN's mapping network and style affines, and SAGAN's
# attention, are the sensitive parts). Patterns are on layer paths (:func:`layer_path`).
# Scalars are never kernels, so they stay in float32 under every rule: SAGAN's attention
# ``gamma``, StyleGAN2's ``noise_strength`` and learned constant. SAGAN's spectrally normalised
# kernels (``l1`` .. ``l4``) need no rule: ``params`` holds them already divided by sigma
# (``jaxgc.models.sagan``), so they are quantized after normalisation, at the recipe's bits,
# and the ``spectral`` collection (u, v, sigma) is never quantized.
_ATTENTION = (r"(^|/)attn\d+/(query|key|value)_conv$", 8, 8)   # attention q, k, v (1x1 convs)
FAMILY_RULES: dict[str, tuple[tuple[str, int | None, int | None], ...]] = {
    "stylegan2_generator": (
        (r"^mapping/", 8, 8),          # mapping network z -> w (and the label embedding)
        (r"/affine$", 8, 8),           # modulation affines w -> styles
        (r"/torgb$", 8, 8),            # to-RGB layers (1x1 modulated, every resolution)
    ),
    "stylegan2_discriminator": ((r"^mapping/", 8, 8),),
    "sagan_generator": (_ATTENTION,),
    "sagan_discriminator": (_ATTENTION,),
}


def family_rules(module: nn.Module) -> tuple[PrecisionRule, ...]:
  """The :data:`FAMILY_RULES` of ``module``'s architecture (``()`` for the other families).

  Prepend them to a recipe's rules (first match wins) to keep the family's sensitive layers at
  W8A8: ``family_rules(module) + recipe.rules``.
  """
  try:
    name = registry.arch_name(module)
  except ValueError:
    return ()
  return as_rules(FAMILY_RULES.get(name, ()))


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A mixed-precision quantization recipe.

  Attributes:
    name: e.g. ``"w4a8"``.
    rules: the rules, first match wins (may use ``"@first"`` / ``"@last"``).
    default_weight_bits: weight bits of unmatched layers (``[2, 8]`` or ``None``).
    default_act_bits: activation bits of unmatched layers (``[2, 16]`` or ``None``).
    weight_symmetric: symmetric weight codes.
    weight_granularity: ``"per_channel"`` or ``"per_tensor"``.
    act_symmetric: symmetric activation codes.
    act_granularity: ``"per_tensor"`` or ``"per_channel"``.
    calibration_method: ``"minmax"``, ``"percentile"``, ``"mse"`` or ``"ema"``.
  """

  name: str
  rules: tuple[PrecisionRule, ...]
  default_weight_bits: int | None
  default_act_bits: int | None
  weight_symmetric: bool = True
  weight_granularity: str = "per_channel"
  act_symmetric: bool = False
  act_granularity: str = "per_tensor"
  calibration_method: str = "minmax"

  def __post_init__(self):
    if self.default_weight_bits is not None:
      quantize.check_bits(self.default_weight_bits)
    if self.default_act_bits is not None:
      activations.check_act_bits(self.default_act_bits)
    quantize.check_granularity(self.weight_granularity)
    quantize.check_granularity(self.act_granularity)
    if self.calibration_method not in activations.METHODS:
      raise ValueError(f"calibration_method must be one of {activations.METHODS}, got "
                       f"{self.calibration_method!r}")

  def act_config(self, mode: str = "static") -> activations.ActQuantConfig:
    """The :class:`~jaxgc.compress.activations.ActQuantConfig` of unmatched layers (8 bits when
    the default is full precision: the rules of :func:`act_rules` then decide)."""
    bits = self.default_act_bits if self.default_act_bits is not None else 8
    return activations.ActQuantConfig(bits, self.act_symmetric, self.act_granularity, mode)


def known_recipes() -> list[str]:
  """Names of the recipes shipped in :mod:`jaxgc.compress.recipes` (found through
  ``importlib.resources``, so any install works, editable or not)."""
  files = importlib.resources.files(RECIPES_PACKAGE)
  return sorted(f.name[:-3] for f in files.iterdir()
                if f.name.endswith(".py") and not f.name.startswith("_"))


def _recipe_module(path_or_name: str | os.PathLike):
  """The module of a shipped recipe name, or of a ``.py`` file."""
  p = pathlib.Path(os.fspath(path_or_name))
  if p.suffix == ".py" or p.is_file():
    if not p.is_file():
      raise ValueError(f"recipe file not found: {p}")
    spec = importlib.util.spec_from_file_location(f"_jaxgc_recipe_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, str(p), p.stem[len("recipe_"):] if p.stem.startswith("recipe_") else p.stem
  name = str(path_or_name).lower()
  if name not in known_recipes():
    raise ValueError(f"unknown recipe {str(path_or_name)!r}; known: {known_recipes()} (or pass "
                     "a .py path)")
  return importlib.import_module(f"{RECIPES_PACKAGE}.{name}"), name, name


def load_recipe(path_or_name: str | os.PathLike) -> Recipe:
  """Loads a shipped recipe by name (``"w8a8"``, ``"w4a8"``, ``"w4a4"``; :func:`known_recipes`)
  or a ``.py`` config file.

  The file's ``get_config()`` must return a ``ConfigDict`` (or mapping) with ``name``,
  ``default_weight_bits``, ``default_act_bits``, ``rules`` (a tuple of ``(pattern, weight_bits,
  act_bits)``) and optionally ``weight_symmetric``, ``weight_granularity``, ``act_symmetric``,
  ``act_granularity``, ``calibration_method``.

  Raises:
    ValueError: unknown recipe name, missing file, or invalid contents.
  """
  mod, path, default_name = _recipe_module(path_or_name)
  if not hasattr(mod, "get_config"):
    raise ValueError(f"recipe file {path} defines no get_config()")
  c = mod.get_config()
  c = c.to_dict() if hasattr(c, "to_dict") else dict(c)
  fields = {f.name for f in dataclasses.fields(Recipe)}
  unknown = sorted(set(c) - fields)
  if unknown:
    raise ValueError(f"recipe {path}: unknown key(s) {unknown}; known: {sorted(fields)}")
  c["rules"] = as_rules(c.get("rules", ()))
  c.setdefault("name", default_name)
  return Recipe(**c)
