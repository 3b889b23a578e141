"""Physical channel slimming: a channel-pruned generator rebuilt as a smaller Flax module.

Masking a channel (multiplying its weights by zero) leaves a model exactly as expensive as
before; this module removes pruned channels for real. Three steps, all pure:

1. ``channel_groups(module, variables)``: the channels that must go together. A *group* is
   every ``(path, axis)`` slot that indexes the same channels: the kernels that write them
   (output axis, last) and their biases, the following norm's ``scale``/``bias`` and running
   ``mean``/``var``, the depthwise convolution that filters them channel by channel (kernel
   and bias, last axis), and the kernels that read them (input axis, ``-2``). Residual
   connections tie channels: every convolution that writes into the residual trunk (the second
   downsampling and the last convolution of every block) belongs to the one ``"down[1]"``
   group, pruned together or not at all. Concatenations tie channels to a range of their
   reader's input axis: in the U-Net, the kernel after a skip connection reads the skip's
   ``down[i]`` channels first, then the ``up[i]`` channels of the block below, and each group
   owns its own *segment* ``(path, axis, offset)`` of that axis.
2. ``channel_masks(module, variables, sparsity)``: boolean pruning masks (``True`` = keep;
   ``None`` for leaves no group touches) that keep, in every group, the channels with the
   largest sum over its producer filters of their L1 or L2 norms (Li et al. 2017, "Pruning
   Filters for Efficient ConvNets", Sec. 3.1), or of ``|norm scale|`` (network slimming, Liu
   et al. 2017) where the norm has a scale.
3. ``slim(module, variables, masks)``: the same module class with per-layer widths equal to the
   kept counts, and only the kept slices of every leaf.

``slim_to_macs(module, variables, ratio)`` does all three at the smallest uniform sparsity that
cuts the MACs ``ratio`` times. Example, the horse->zebra generator at a quarter of its MACs::

  module, variables = convert.load_torch_checkpoint(".../latest_net_G.pth")
  small = slim_to_macs(module, variables, 4.0, multiple_of=8)
  y = jax.jit(small.module.apply)(small.variables, x)   # x [batch, 256, 256, 3] in [-1, 1]
  # == module.apply(compress.apply_masks(variables, small.masks), x) to 1e-5, about 2.5x
  # faster on 2 CPU cores (benchmarks/slimming.py)

What masking zeroes, and why the slimmed model computes what the masked one does: the masks
zero (``jaxgc.compress.prune.apply_masks``) every slot of a pruned channel. Its filters and
bias are then 0, so its pre-norm activation is exactly 0 (so is a depthwise convolution of it);
an ``InstanceNorm`` without affine maps an all-zero channel to 0 (``(0 - 0) * rsqrt(0 + eps)``),
one with affine (whose ``scale`` and ``bias`` follow their channels like a BatchNorm's) too,
a ``BatchNorm`` whose scale and bias are zeroed outputs 0, ReLU and reflection padding keep 0,
and a residual add adds 0 to a trunk channel that is 0 from the second downsampling on. A
pruned channel is therefore 0 everywhere and contributes exactly 0 to every kept channel (the
readers' input slices are zeroed too), so dropping it changes only the order of float32 sums:
``slim(...)`` and the masked model agree to about 1e-6. Masking a channel's producer kernel
alone (as ``jaxgc.compress.prune``'s ``"channel"`` granularity does) is *not* enough in general:
a bias, or a BatchNorm's bias, would make the channel a nonzero constant. ``slim`` refuses such
masks.

The image channels (the stem's input, the head's output) are never pruned. ``trunk=False``
leaves the residual trunk whole. By default it is pruned like any other group, as GAN
Compression's channel configurations do: ``channels[2]`` of the ``sub_mobile_resnet_generator``
config sets the trunk width, which every block's second separable convolution then writes
(mit-han-lab/gan-compression ``models/modules/resnet_architecture/
sub_mobile_resnet_generator.py`` and ``super_mobile_resnet_generator.py``, where the second
convolution of a ``SuperMobileResnetBlock`` outputs ``input.size(1)`` channels).

Supported: ``ResnetGenerator`` (every norm, affine InstanceNorm included),
``MobileResnetGenerator``, ``SubMobileResnetGenerator``, ``DCGANGenerator``, ``UnetGenerator``,
the MNIST MLP pair ``MLPGenerator`` / ``MLPDiscriminator`` and the ``PatchGANDiscriminator``
(registry names ``resnet_generator``, ``mobile_resnet_generator``,
``sub_mobile_resnet_generator``, ``dcgan_generator``, ``unet_generator``, ``mlp_generator``,
``mlp_discriminator``, ``patchgan_discriminator``). Group names are
the widths they set on the slimmed module: ``"stem"``, ``"down[0]"``, ``"down[1]"`` (the
trunk), ``"hidden[i]"``, ``"up[0]"``, ``"up[1]"``; ``"features[i]"`` for the DCGAN generator;
``"hidden[i]"`` (the output of ``dense_i``) for the MLP pair; ``"down[i]"`` (``i <
num_downs``) and ``"up[i]"`` (``i < num_downs - 1``) for the U-Net; ``"features[i]"`` (the
output of ``conv_i`` and its norm, read by ``conv_{i + 1}``; ``i <= n_layers``, the one-channel
logit map is never pruned) for the PatchGAN, whose input channels (an image, or pix2pix's
input and output concatenated) are not pruned either. A masked PatchGAN channel is 0 after its
convolution, its norm (BatchNorm with scale, bias and running statistics zeroed in the
inference mode the slimmed model is compared in; InstanceNorm without affine) and LeakyReLU.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgc import stats
from jaxgc.compress.selection import path_str
from jaxgc.models.dcgan import DCGANGenerator
from jaxgc.models.mlp import MLPDiscriminator
from jaxgc.models.mlp import MLPGenerator
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.models.registry import example_input
from jaxgc.models.resnet import MobileResnetGenerator
from jaxgc.models.resnet import ResnetGenerator
from jaxgc.models.resnet import SubMobileResnetGenerator
from jaxgc.models.unet import UnetGenerator

CRITERIA = ("l1", "l2", "norm_scale")

# A slot: the "/"-joined path of a variables leaf and the axis of that leaf that indexes the
# group's channels, e.g. ("params/block_0/conv_0/kernel", -1).
Slot = tuple[str, int]
# A segment: a slot whose axis holds the group's channels from an offset on, among others (a
# kernel reading a concatenation), e.g. ("params/up_out/kernel", -2, 16).
Segment = tuple[str, int, int]

_SUPPORTED = (ResnetGenerator, MobileResnetGenerator, SubMobileResnetGenerator, DCGANGenerator,
              UnetGenerator, MLPGenerator, MLPDiscriminator, PatchGANDiscriminator)


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
  """Channels that are pruned together, and every slot that indexes them.

  Attributes:
    field: the module attribute whose width the group sets (``"stem"``, ``"down"``,
      ``"hidden"``, ``"up"`` or ``"features"``).
    index: the position in that attribute when it is a tuple, else None.
    size: number of channels.
    producers: kernels that write the channels, on their output axis; their filters are
      scored by the ``"l1"`` and ``"l2"`` criteria.
    scales: norm scales of the channels (``"norm_scale"`` criterion); empty for
      ``InstanceNorm`` without affine.
    slots: every slot pruned with the group: producers and their biases, norm parameters and
      running statistics, depthwise kernels and biases, and the readers' input axes.
    segments: readers of a concatenation (the U-Net's skip connections): ``(path, axis,
      offset)``, the group's channels being entries ``offset .. offset + size - 1`` of that
      axis; other groups own the rest of it.

  Invariants: every slot's leaf has ``size`` entries along its axis (a segment's at least
  ``offset + size``), and a slot or a segment's entries belong to one group only.
  """

  field: str
  index: int | None
  size: int
  producers: tuple[Slot, ...]
  scales: tuple[Slot, ...]
  slots: tuple[Slot, ...]
  segments: tuple[Segment, ...] = ()

  def all_slots(self) -> tuple[Segment, ...]:
    """Every slot and segment as ``(path, axis, offset)`` (offset 0 for a whole axis)."""
    return tuple((p, a, 0) for p, a in self.slots) + self.segments

  @property
  def name(self) -> str:
    """``field`` or ``field[index]``, e.g. ``"hidden[3]"``."""
    return self.field if self.index is None else f"{self.field}[{self.index}]"


class Slimmed(NamedTuple):
  """A slimmed model and how it was obtained (see ``slim_to_macs``)."""

  module: nn.Module
  variables: dict[str, Any]
  masks: Any  # the masks over the original variables that ``slim`` applied
  sparsity: float
  macs: int  # per sample, torchprofile convention (``jaxgc.stats.count_macs``)


# ------------------------------------------------------------------------------------------------
# Groups.


def _leaf_shapes(variables: Any) -> dict[str, tuple[int, ...]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(variables)
  return {path_str(kp): tuple(np.shape(leaf)) for kp, leaf in flat}


class _GroupBuilder:
  """Turns layer names into checked slots of one model's variables."""

  def __init__(self, module: nn.Module, variables: Any):
    self.arch = type(module).__name__
    self.shapes = _leaf_shapes(variables)

  def _required(self, path: str) -> str:
    if path not in self.shapes:
      raise ValueError(f"variables do not match {self.arch}: no leaf {path}")
    return path

  def _optional(self, *paths: str) -> list[str]:
    return [p for p in paths if p in self.shapes]

  def __call__(self, field: str, index: int | None, writers: Sequence[str],
               norms: Sequence[str], readers: Sequence[str],
               depthwise: Sequence[str] = (),
               concat_readers: Sequence[tuple[str, int]] = ()) -> ChannelGroup:
    producers = [(self._required(f"params/{w}/kernel"), -1) for w in writers]
    scales = [(p, -1) for n in norms for p in self._optional(f"params/{n}/scale")]
    slots = list(producers)
    slots += [(p, -1) for w in writers for p in self._optional(f"params/{w}/bias")]
    slots += scales
    slots += [(p, -1) for n in norms for p in self._optional(
        f"params/{n}/bias", f"batch_stats/{n}/mean", f"batch_stats/{n}/var")]
    for d in depthwise:
      slots += [(self._required(f"params/{d}/kernel"), -1)]
      slots += [(p, -1) for p in self._optional(f"params/{d}/bias")]
    slots += [(self._required(f"params/{r}/kernel"), -2) for r in readers]
    segments = [(self._required(f"params/{r}/kernel"), -2, off) for r, off in concat_readers]
    size = self.shapes[producers[0][0]][-1]
    for path, axis in slots:
      if self.shapes[path][axis] != size:
        raise ValueError(f"variables do not match {self.arch}: {path} has "
                         f"{self.shapes[path][axis]} channels on axis {axis}, expected {size}")
    for path, axis, off in segments:
      if self.shapes[path][axis] < off + size:
        raise ValueError(f"variables do not match {self.arch}: {path} has "
                         f"{self.shapes[path][axis]} channels on axis {axis}, expected at least "
                         f"{off + size}")
    return ChannelGroup(field, index, size, tuple(producers), tuple(scales), tuple(slots),
                        tuple(segments))


def _resnet_groups(g: _GroupBuilder, n_blocks: int, mobile: bool,
                   trunk: bool) -> list[ChannelGroup]:
  blocks = [f"block_{i}" for i in range(n_blocks)]
  groups = [g("stem", None, ["conv_in"], ["norm_in"], ["down_0"]),
            g("down", 0, ["down_0"], ["down_norm_0"], ["down_1"])]
  if mobile:
    if trunk:
      groups.append(g("down", 1, ["down_1"] + [f"{b}/sep_1/pointwise" for b in blocks],
                      ["down_norm_1"] + [f"{b}/norm_1" for b in blocks],
                      [f"{b}/sep_0/pointwise" for b in blocks] + ["up_0"],
                      depthwise=[f"{b}/sep_0/depthwise" for b in blocks]))
    groups += [g("hidden", i, [f"{b}/sep_0/pointwise"], [f"{b}/norm_0"],
                 [f"{b}/sep_1/pointwise"], depthwise=[f"{b}/sep_1/depthwise"])
               for i, b in enumerate(blocks)]
  else:
    if trunk:
      groups.append(g("down", 1, ["down_1"] + [f"{b}/conv_1" for b in blocks],
                      ["down_norm_1"] + [f"{b}/norm_1" for b in blocks],
                      [f"{b}/conv_0" for b in blocks] + ["up_0"]))
    groups += [g("hidden", i, [f"{b}/conv_0"], [f"{b}/norm_0"], [f"{b}/conv_1"])
               for i, b in enumerate(blocks)]
  groups += [g("up", 0, ["up_0"], ["up_norm_0"], ["up_1"]),
             g("up", 1, ["up_1"], ["up_norm_1"], ["conv_out"])]
  return groups


def _unet_groups(g: _GroupBuilder, num_downs: int, down: Sequence[int]) -> list[ChannelGroup]:
  """``down[i]``: ``down_{i}`` and its norm, read by ``down_{i + 1}`` and, through the skip
  connection, by the first ``down[i]`` input channels of the level's concatenation reader
  (``up_{i - 1}``, ``up_out`` for level 0); the innermost ``down[-1]`` is read by
  ``up_{num_downs - 2}`` alone. ``up[i]``: ``up_{i}`` and its norm, read by the same
  concatenation reader from offset ``down[i]`` on."""
  n = num_downs
  cat_reader = ["up_out"] + [f"up_{i - 1}" for i in range(1, n - 1)]
  groups = []
  for i in range(n):
    if i < n - 1:
      groups.append(g("down", i, [f"down_{i}"], [f"down_norm_{i}"], [f"down_{i + 1}"],
                      concat_readers=[(cat_reader[i], 0)]))
    else:
      groups.append(g("down", i, [f"down_{i}"], [], [f"up_{n - 2}"]))
  groups += [g("up", i, [f"up_{i}"], [f"up_norm_{i}"], [],
               concat_readers=[(cat_reader[i], down[i])]) for i in range(n - 1)]
  return groups


def _n_blocks(module: nn.Module) -> int:
  if isinstance(module, SubMobileResnetGenerator):
    return len(module.hidden)
  return module.n_blocks


def is_supported(module: nn.Module) -> bool:
  """Whether ``module``'s class can be channel-slimmed (see :func:`channel_groups`)."""
  return type(module) in _SUPPORTED


def _check_supported(module: nn.Module) -> None:
  if not is_supported(module):
    raise ValueError(f"channel slimming does not support {type(module).__name__}; supported: "
                     f"{', '.join(c.__name__ for c in _SUPPORTED)}")


def channel_groups(module: nn.Module, variables: Any, *, trunk: bool = True
                   ) -> list[ChannelGroup]:
  """The groups of tied channels of a zoo generator, in network order.

  Args:
    module: a ``ResnetGenerator``, ``MobileResnetGenerator``, ``SubMobileResnetGenerator``,
      ``DCGANGenerator``, ``UnetGenerator``, ``MLPGenerator``, ``MLPDiscriminator`` or
      ``PatchGANDiscriminator``.
    variables: its variables, ``{"params": ..., "batch_stats": ...}`` (arrays or
      ``jax.ShapeDtypeStruct``; only paths and shapes are read).
    trunk: include the residual trunk group ``"down[1]"`` (ResNet generators): every
      convolution writing into the residual adds, pruned together. False leaves the trunk whole.

  Returns:
    The groups (see ``ChannelGroup``); the image channels belong to none.

  Raises:
    ValueError: unsupported module class (naming it), or variables that do not match it
      (naming the missing or mis-shaped leaf).
  """
  _check_supported(module)
  g = _GroupBuilder(module, variables)
  if isinstance(module, DCGANGenerator):
    n = len(module.features)
    return [g("features", i, [f"convt_{i}"], [f"bn_{i}"], [f"convt_{i + 1}"])
            for i in range(n - 1)]
  if isinstance(module, (MLPGenerator, MLPDiscriminator)):
    return [g("hidden", i, [f"dense_{i}"], [], [f"dense_{i + 1}"])
            for i in range(len(module.hidden))]
  if isinstance(module, UnetGenerator):
    return _unet_groups(g, module.num_downs, _current_widths(module, variables)["down"])
  if isinstance(module, PatchGANDiscriminator):
    n = module.n_layers
    return [g("features", i, [f"conv_{i}"], [f"norm_{i}"] if i else [], [f"conv_{i + 1}"])
            for i in range(n + 1)]
  return _resnet_groups(g, _n_blocks(module), mobile=not isinstance(module, ResnetGenerator),
                        trunk=trunk)


# ------------------------------------------------------------------------------------------------
# Masks.


def _keep_count(size: int, sparsity: float, multiple_of: int = 1) -> int:
  """Channels kept of ``size`` at ``sparsity``: ``size - floor(sparsity * size + 1/2)`` (the
  rounding of ``jaxgc.compress.prune``), then rounded to the nearest multiple of
  ``multiple_of`` (halves up), at least ``multiple_of`` and at most ``size``. Non-increasing in
  ``sparsity``; 0 only when ``multiple_of`` is 1 and the sparsity rounds to every channel."""
  keep = size - math.floor(sparsity * size + 0.5)
  if multiple_of > 1:
    keep = max(multiple_of, multiple_of * math.floor(keep / multiple_of + 0.5))
  return min(size, keep)


def _check_multiple_of(multiple_of: Any) -> int:
  if isinstance(multiple_of, bool) or not isinstance(multiple_of, (int, np.integer)) \
      or multiple_of < 1:
    raise ValueError(f"multiple_of must be an int >= 1, got {multiple_of!r}")
  return int(multiple_of)


def _check_sparsity(sparsity: Any) -> float:
  if (isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real)
      or not 0 <= sparsity < 1):
    raise ValueError(f"sparsity must be a float in [0, 1), got {sparsity!r}")
  return float(sparsity)


def _current_widths(module: nn.Module, variables: Any) -> dict[str, Any]:
  """The module's width attributes as its kernels' output channels say."""
  shapes = _leaf_shapes(variables)

  def out(layer: str) -> int:
    path = f"params/{layer}/kernel"
    if path not in shapes:
      raise ValueError(f"variables do not match {type(module).__name__}: no leaf {path}")
    return shapes[path][-1]

  if isinstance(module, DCGANGenerator):
    return {"features": tuple(out(f"convt_{i}") for i in range(len(module.features)))}
  if isinstance(module, (MLPGenerator, MLPDiscriminator)):
    return {"hidden": tuple(out(f"dense_{i}") for i in range(len(module.hidden)))}
  if isinstance(module, PatchGANDiscriminator):
    return {"features": tuple(out(f"conv_{i}") for i in range(module.n_layers + 1))}
  if isinstance(module, UnetGenerator):
    return {"down": tuple(out(f"down_{i}") for i in range(module.num_downs)),
            "up": tuple(out(f"up_{i}") for i in range(module.num_downs - 1))}
  inner = "conv_0" if isinstance(module, ResnetGenerator) else "sep_0/pointwise"
  return {"stem": out("conv_in"), "down": (out("down_0"), out("down_1")),
          "hidden": tuple(out(f"block_{i}/{inner}") for i in range(_n_blocks(module))),
          "up": (out("up_0"), out("up_1"))}


def _width_entries(key: str, value: Any, current: Mapping[str, Any]) -> list[tuple[str, Any]]:
  """``(name, width)`` pairs of one widths item: ``"stem"``, ``"hidden[3]"`` or ``"hidden"``."""
  m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", key)
  field = m and m.group(1)
  if field not in current:
    raise ValueError(f"unknown width {key!r}; the module's widths are {sorted(current)}")
  now = current[field]
  if m.group(2) is not None:
    if not isinstance(now, tuple) or int(m.group(2)) >= len(now):
      raise ValueError(f"unknown width {key!r}: {field} is {now}")
    return [(key, value)]
  if not isinstance(now, tuple):
    return [(key, value)]
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != len(now):
    raise ValueError(f"widths[{key!r}] must be a sequence of {len(now)} ints, got {value!r}")
  return [(f"{field}[{i}]", v) for i, v in enumerate(value)]


def _counts_from_widths(module: nn.Module, variables: Any, groups: Sequence[ChannelGroup],
                        widths: Mapping[str, Any]) -> dict[str, int]:
  """Per-group keep counts from a widths target (group names or whole width attributes)."""
  by_name = {g.name: g for g in groups}
  current = _current_widths(module, variables)
  counts = {g.name: g.size for g in groups}
  for key, value in widths.items():
    for name, v in _width_entries(key, value, current):
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"width {name} must be an int, got {v!r}")
      if name not in by_name:  # e.g. the image channels, or the trunk left whole
        field, _, idx = name.partition("[")
        now = current[field][int(idx[:-1])] if idx else current[field]
        if v != now:
          raise ValueError(f"width {name}={v} cannot change: no pruned group sets it (it is "
                           f"{now})")
        continue
      size = by_name[name].size
      if v == 0:
        raise ValueError(f"width {name}=0 would prune every channel of group {name}; at least "
                         f"1 of its {size} channels must stay")
      if not 1 <= v <= size:
        raise ValueError(f"width {name}={v} is outside [1, {size}] (its channel count)")
      counts[name] = int(v)
  return counts


def _slot_norms(leaf: np.ndarray, axis: int, ord_: int) -> np.ndarray:
  """L1 or L2 norm of every slice of ``leaf`` along ``axis``."""
  x = np.moveaxis(np.asarray(leaf, np.float64), axis, -1).reshape(-1, leaf.shape[axis])
  return np.abs(x).sum(0) if ord_ == 1 else np.sqrt(np.square(x).sum(0))


def _group_scores(group: ChannelGroup, leaves: Mapping[str, Any], criterion: str) -> np.ndarray:
  if criterion == "norm_scale":
    if not group.scales:
      raise ValueError(f"criterion 'norm_scale' needs a norm scale, and group {group.name} has "
                       f"none (InstanceNorm without affine); use 'l1' or 'l2'")
    return sum(np.abs(np.asarray(leaves[p], np.float64)) for p, _ in group.scales)
  ord_ = 1 if criterion == "l1" else 2
  return sum(_slot_norms(leaves[p], axis, ord_) for p, axis in group.producers)


def _masks_from_keep(variables: Any, groups: Iterable[ChannelGroup],
                     keep: Mapping[str, np.ndarray]) -> Any:
  """Pruning masks that zero every slot of the channels ``keep`` drops; None elsewhere."""
  per_leaf: dict[str, list[tuple[int, int, np.ndarray]]] = {}
  for g in groups:
    for path, axis, offset in g.all_slots():
      per_leaf.setdefault(path, []).append((axis, offset, keep[g.name]))

  def leaf_mask(kp, leaf):
    path = path_str(kp)
    if path not in per_leaf:
      return None
    shape = np.shape(leaf)
    m = np.ones(shape, bool)
    for axis, offset, vec in per_leaf[path]:
      full = np.ones(shape[axis], bool)
      full[offset:offset + len(vec)] = vec
      bshape = [1] * len(shape)
      bshape[axis] = shape[axis]
      m &= full.reshape(bshape)
    return jnp.asarray(m)

  return jax.tree_util.tree_map_with_path(leaf_mask, variables)


def masks_from_keep(variables: Any, groups: Sequence[ChannelGroup],
                    keep: Mapping[str, np.ndarray]) -> Any:
  """Channel pruning masks over ``variables`` from a boolean keep vector per group.

  Args:
    variables: the network's variables.
    groups: its groups (:func:`channel_groups`).
    keep: ``{group name: bool [size]}`` (``True`` = keep), every group present.

  Returns:
    The structure of ``variables``: a bool array zeroing every slot of the dropped channels,
    None for leaves no group touches (the format :func:`slim` takes).

  Raises:
    ValueError: a group missing from ``keep`` or a vector of the wrong length.
  """
  for g in groups:
    if g.name not in keep or np.shape(keep[g.name]) != (g.size,):
      raise ValueError(f"keep needs a bool vector of {g.size} channels for group {g.name}, got "
                       f"{None if g.name not in keep else np.shape(keep[g.name])}")
  return _masks_from_keep(variables, groups, keep)


def channel_masks(module: nn.Module, variables: Any, sparsity: float | None = None, *,
                  widths: Mapping[str, Any] | None = None, criterion: str = "l1",
                  groups: Sequence[ChannelGroup] | None = None, multiple_of: int = 1) -> Any:
  """Group-aware channel pruning masks over a variables tree.

  In every group, ``size - floor(sparsity * size + 1/2)`` channels are kept (the rounding of
  ``jaxgc.compress.prune``; then to the nearest multiple of ``multiple_of``, at most ``size``),
  or the counts ``widths`` asks for,
  choosing the channels with the largest score: the sum over the group's producer filters of
  their L1 (``"l1"``) or L2 (``"l2"``) norms (Li et al. 2017, Sec. 3.1; a residual group sums
  over every convolution writing into the trunk), or the sum of ``|scale|`` of the group's
  norms (``"norm_scale"``, Liu et al. 2017; needs a norm with a scale, e.g. the DCGAN's
  BatchNorm). Ties keep the lower channel index.

  Args:
    module: a supported generator (see ``channel_groups``).
    variables: its variables, ``{"params": ..., "batch_stats": ...}``.
    sparsity: float in [0, 1), fraction of every group's channels removed (rounded to the
      nearest count); a sparsity that would remove every channel of a group is an error.
    widths: instead of ``sparsity``, channel counts to keep: group names (``{"hidden[3]": 32}``)
      or whole width attributes (``{"hidden": (32,) * 9, "up": (16, 8)}``); groups not named
      keep all their channels; an entry no group prunes (the DCGAN's image channels) must keep
      its current value.
    criterion: ``"l1"``, ``"l2"`` or ``"norm_scale"``.
    groups: the groups to prune; default ``channel_groups(module, variables)`` (trunk
      included). Pass ``channel_groups(..., trunk=False)`` to keep the trunk whole.
    multiple_of: with ``sparsity``, round every kept count to the nearest multiple of this
      (at least one multiple; a group smaller than it is kept whole): widths that fill the
      vector registers (8 float32 lanes with AVX2) run faster than odd ones at similar MACs.

  Returns:
    A pruning mask tree with the structure of ``variables``: a bool array of the leaf's shape
    (``True`` = keep) for every leaf a group touches (all ``True`` if nothing of it is pruned),
    None for the others. Zeroing the ``False`` entries (``jnp.where(mask, leaf, 0)``) gives the
    masked model that ``slim`` reproduces.

  Raises:
    ValueError: ``sparsity`` outside [0, 1) or both/neither of ``sparsity`` and ``widths``;
      a sparsity or a width of 0 that prunes every channel of a group; a width above the
      group's size, or for an
      unknown name; unknown ``criterion``; ``"norm_scale"`` on a group without a norm scale;
      ``multiple_of`` below 1; an unsupported module or variables that do not match it.
  """
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
  multiple_of = _check_multiple_of(multiple_of)
  if (sparsity is None) == (widths is None):
    raise ValueError("give exactly one of sparsity and widths, got "
                     f"sparsity={sparsity!r}, widths={widths!r}")
  if groups is None:
    groups = channel_groups(module, variables)
  if widths is None:
    sparsity = _check_sparsity(sparsity)
    counts = {g.name: _keep_count(g.size, sparsity, multiple_of) for g in groups}
    for g in groups:
      if counts[g.name] < 1:
        raise ValueError(f"sparsity {sparsity!r} would prune every channel of group {g.name} "
                         f"({g.size} channels); at least 1 must stay")
  else:
    _check_supported(module)
    counts = _counts_from_widths(module, variables, groups, widths)
  leaves = {path_str(kp): leaf
            for kp, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}
  keep = {}
  for g in groups:
    scores = _group_scores(g, leaves, criterion)
    order = np.argsort(-scores, kind="stable")
    vec = np.zeros(g.size, bool)
    vec[order[:counts[g.name]]] = True
    keep[g.name] = vec
  return _masks_from_keep(variables, groups, keep)


# ------------------------------------------------------------------------------------------------
# Slimming.


def _flat_masks(variables: Any, masks: Any) -> dict[str, np.ndarray]:
  """``{path: bool array}`` (None read as all ``True``), checked against ``variables``."""
  leaves = {path_str(kp): leaf
            for kp, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}
  got = {path_str(kp): m for kp, m in
         jax.tree_util.tree_flatten_with_path(masks, is_leaf=lambda x: x is None)[0]}
  missing, extra = sorted(set(leaves) - set(got)), sorted(set(got) - set(leaves))
  if missing or extra:
    what = (f"no mask (or None) for {missing[0]}" if missing
            else f"a mask for {extra[0]}, which is not a variable")
    raise ValueError(f"masks do not match variables: {what} "
                     f"({len(missing)} missing, {len(extra)} extra)")
  out = {}
  for path, leaf in leaves.items():
    shape = tuple(np.shape(leaf))
    m = np.ones(shape, bool) if got[path] is None else np.asarray(got[path])
    if m.dtype != np.bool_ or m.shape != shape:
      raise ValueError(f"mask of {path} must be bool of shape {shape}, got {m.dtype} "
                       f"{m.shape}")
    out[path] = m
  return out


def _channels_kept(mask: np.ndarray, axis: int) -> np.ndarray:
  """Channels along ``axis`` of which the mask keeps any entry."""
  axis %= mask.ndim
  return mask.any(axis=tuple(d for d in range(mask.ndim) if d != axis))


def _take(leaf: Any, slices: Sequence[tuple[int, np.ndarray]]) -> Any:
  """``leaf`` restricted to ``idx`` along each ``axis``; numpy in, numpy out, else a jax array."""
  if not slices:
    return leaf
  out = np.asarray(leaf)
  for axis, idx in slices:
    out = np.take(out, idx, axis=axis)
  return out if isinstance(leaf, np.ndarray) else jnp.asarray(out)


def _rebuild(module: nn.Module, variables: Any, groups: Sequence[ChannelGroup],
             counts: Mapping[str, int]) -> nn.Module:
  """``module`` with the width of every group set to ``counts[group name]``."""
  widths = {k: list(v) if isinstance(v, tuple) else v
            for k, v in _current_widths(module, variables).items()}
  for g in groups:
    if g.index is None:
      widths[g.field] = int(counts[g.name])
    else:
      widths[g.field][g.index] = int(counts[g.name])
  return module.clone(**{k: tuple(v) if isinstance(v, list) else v for k, v in widths.items()})


def slim(module: nn.Module, variables: Any, masks: Any) -> tuple[nn.Module, dict[str, Any]]:
  """Rebuilds a channel-masked generator as a smaller module holding only the kept channels.

  Args:
    module: a supported generator (see ``channel_groups``).
    variables: its variables, ``{"params": ..., "batch_stats": ...}``.
    masks: channel pruning masks over ``variables`` (``channel_masks``): the structure of
      ``variables``, a bool array (``True`` = keep) or None (keep all) per leaf, and within a
      group every slot masking the same channels.

  Returns:
    ``(small_module, small_variables)``: the same class with per-layer widths set to the kept
    counts (plain dataclass fields, so ``jaxgc.checkpoint.save_model`` / ``load_model``
    round-trip it), and every leaf reduced to its kept slices (same dtype and array type).
    ``small_module.apply(small_variables, x)`` equals ``module.apply(masked, x)``, where
    ``masked`` zeroes the masks' ``False`` entries, to float32 rounding (max abs <= 1e-5 for
    outputs in [-1, 1]): inputs and outputs keep their shapes, ``[batch, height, width,
    channels]`` images or ``[batch, z_dim]`` latents.

  Raises:
    ValueError: an unsupported module (naming it); masks that do not match ``variables``
      (missing or extra leaves, wrong shape or dtype); masks that are not channel masks of the
      module's groups (e.g. a producer kernel masked but not its bias, or a residual group
      masked differently in two blocks), naming the first leaf that disagrees; masks that
      prune every channel of a group.
  """
  groups = channel_groups(module, variables)
  flat = _flat_masks(variables, masks)
  keep = {}
  for g in groups:
    vec = np.ones(g.size, bool)
    for path, axis, offset in g.all_slots():
      vec &= _channels_kept(flat[path], axis)[offset:offset + g.size]
    if not vec.any():
      raise ValueError(f"masks prune every channel of group {g.name} ({g.size} channels)")
    keep[g.name] = vec
  for path, want in _flat_masks(variables, _masks_from_keep(variables, groups, keep)).items():
    if not np.array_equal(flat[path], want):
      raise ValueError(f"masks are not channel masks of {type(module).__name__}: the mask of "
                       f"{path} disagrees with its channel groups; build masks with "
                       f"channel_masks")
  shapes = _leaf_shapes(variables)
  axis_keep: dict[tuple[str, int], np.ndarray] = {}  # per (leaf, axis): the entries kept
  for g in groups:
    for path, axis, offset in g.all_slots():
      vec = axis_keep.setdefault((path, axis), np.ones(shapes[path][axis], bool))
      vec[offset:offset + g.size] &= keep[g.name]
  slices: dict[str, list[tuple[int, np.ndarray]]] = {}
  for (path, axis), vec in axis_keep.items():
    slices.setdefault(path, []).append((axis, np.flatnonzero(vec)))

  small_vars = jax.tree_util.tree_map_with_path(
      lambda kp, leaf: _take(leaf, slices.get(path_str(kp), ())), variables)
  counts = {name: int(vec.sum()) for name, vec in keep.items()}
  return _rebuild(module, variables, groups, counts), small_vars


def _slimmed_shapes(variables: Any, groups: Sequence[ChannelGroup],
                    counts: Mapping[str, int]) -> Any:
  """``jax.ShapeDtypeStruct`` of every leaf once each group keeps ``counts[name]`` channels."""
  removed: dict[tuple[str, int], int] = {}  # per (leaf, axis): entries dropped
  for g in groups:
    for path, axis, _ in g.all_slots():
      removed[(path, axis)] = removed.get((path, axis), 0) + g.size - counts[g.name]

  def shape(kp, leaf):
    path, dims = path_str(kp), list(np.shape(leaf))
    for axis in range(-len(dims), 0):
      dims[axis] -= removed.get((path, axis), 0)
    return jax.ShapeDtypeStruct(tuple(dims), leaf.dtype)

  return jax.tree_util.tree_map_with_path(shape, variables)


def slim_to_macs(module: nn.Module, variables: Any, ratio: float, *,
                 x: jax.Array | None = None, criterion: str = "l1",
                 groups: Sequence[ChannelGroup] | None = None, multiple_of: int = 1) -> Slimmed:
  """Slims a generator with the smallest uniform sparsity that cuts its MACs ``ratio`` times.

  Every group loses the same fraction of channels (``channel_masks``); the sparsity is the
  smallest at which the slimmed model's MACs (``jaxgc.stats.count_macs``, torchprofile
  convention) are at most ``1 / ratio`` of the original's. Only group sizes matter for MACs,
  so the search (a bisection) runs over the sparsities where a group's count changes
  (``(j - 1/2) / size``), counting MACs on shapes alone.

  Args:
    module: a supported generator (see ``channel_groups``).
    variables: its variables.
    ratio: MACs reduction wanted, >= 1 (2.0: half the MACs).
    x: an example input for the MAC count (``[batch, height, width, channels]`` images or
      ``[batch, z_dim]`` latents); default ``jaxgc.models.example_input(module)``. For the
      fully convolutional generators the ratio does not depend on its size.
    criterion: which channels to keep, see ``channel_masks``.
    groups: the groups to prune; default all of ``channel_groups(module, variables)``.
    multiple_of: round kept counts to multiples of this, see ``channel_masks``.

  Returns:
    ``Slimmed(module, variables, masks, sparsity, macs)``: the slimmed model, the masks over
    the original variables it came from, the sparsity and the slimmed MACs per sample.

  Raises:
    ValueError: ``ratio`` below 1 or not a number, a ratio that even one channel per group
      cannot reach, or any error of ``channel_masks`` / ``slim``.
  """
  if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not ratio >= 1:
    raise ValueError(f"ratio must be a number >= 1, got {ratio!r}")
  multiple_of = _check_multiple_of(multiple_of)
  if groups is None:
    groups = channel_groups(module, variables)
  x = example_input(module) if x is None else x
  base = stats.count_macs(module, variables, x)
  target = base / ratio

  def macs_at(s: float) -> int:
    counts = {g.name: _keep_count(g.size, s, multiple_of) for g in groups}
    return stats.count_macs(_rebuild(module, variables, groups, counts),
                            _slimmed_shapes(variables, groups, counts), x)

  # Where a count drops (nudged past float rounding), as long as every group keeps a channel.
  breaks = {(j - 0.5) / g.size + 1e-12 for g in groups for j in range(1, g.size + 1)}
  candidates = sorted({0.0} | {s for s in breaks if s < 1 and all(
      _keep_count(g.size, s, multiple_of) >= 1 for g in groups)})
  fewest = macs_at(candidates[-1])  # the highest sparsity that keeps a channel per group
  if fewest > target:
    raise ValueError(f"ratio {ratio!r} is out of reach: the highest sparsity gives "
                     f"{base / fewest:.3g}x fewer MACs")
  lo, hi = 0, len(candidates) - 1  # invariant: macs_at(candidates[hi]) <= target
  while lo < hi:
    mid = (lo + hi) // 2
    if macs_at(candidates[mid]) <= target:
      hi = mid
    else:
      lo = mid + 1
  sparsity = candidates[hi]
  masks = channel_masks(module, variables, sparsity, criterion=criterion, groups=groups,
                        multiple_of=multiple_of)
  small, small_vars = slim(module, variables, masks)
  return Slimmed(small, small_vars, masks, sparsity, stats.count_macs(small, small_vars, x))
