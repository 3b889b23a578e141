"""State_dict conversion: infer the architecture, check every key and shape, build variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxgc import models
from jaxgc.convert import mapping
from jaxgc.convert import spectral
from jaxgc.convert.torch_io import CheckpointError
from jaxgc.convert.torch_io import read_torch_file
from jaxgc.convert.torch_io import unwrap_state_dict


def _preview(keys: list[str], n: int = 6) -> str:
  more = f", ... (+{len(keys) - n})" if len(keys) > n else ""
  return ", ".join(keys[:n]) + more


def _tensors_to_numpy(tree: Any) -> Any:
  """torch.Tensor leaves (found without importing torch) -> numpy; mappings walked."""
  if isinstance(tree, Mapping):
    return {k: _tensors_to_numpy(v) for k, v in tree.items()}
  if hasattr(tree, "detach"):
    return tree.detach().cpu().numpy()
  return tree


def _set(tree: dict, path: str, value: np.ndarray) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def convert_state_dict(state_dict: Mapping[str, Any], arch: str | None = None,
                       source: str = "state_dict", w_avg: Any = None, **arch_kwargs: Any
                       ) -> tuple[nn.Module, dict[str, Any]]:
  """Converts a PyTorch state_dict into a zoo module and its Flax variables.

  Channel widths and depth are read from the tensors' shapes; ``arch_kwargs`` override them.
  Every key and shape is checked both ways against the architecture's key map
  (``jaxgc.convert.mapping``), and the weights must be finite.

  Args:
    state_dict: ``{torch key: tensor or array}``; may be wrapped (``netG_state_dict``,
      ``state_dict``) and ``module.``-prefixed. ``num_batches_tracked`` is ignored.
    arch: one of ``jaxgc.models.ARCHS`` (``resnet_generator`` in the layouts of
      ``mapping.RESNET_LAYOUTS``, ``mobile_resnet_generator``, ``sub_mobile_resnet_generator``,
      ``unet_generator``, ``dcgan_generator``, ``dcgan_discriminator``,
      ``mlp_generator``, ``mlp_discriminator``, ``sagan_generator`` and
      ``sagan_discriminator`` in the layouts of ``mapping.SPECTRAL_LAYOUTS``,
      ``stylegan2_generator`` and ``stylegan2_discriminator`` in the layouts of
      ``mapping.STYLEGAN2_LAYOUTS``), or None to infer it from key names and shapes. A
      rosinality generator gets ``w_avg`` computed here (``jaxgc.models.stylegan2.mean_w``: 4096
      latents of numpy seed 0).
    source: how to name the state_dict in errors (a file path).
    w_avg: a rosinality generator's average ``w`` ``[w_dim]`` to store instead of computing it
      (the ``latent_avg`` that rosinality's ``convert_weight.py`` saves beside ``g_ema``);
      ignored for other architectures and layouts (NVlabs stores ``mapping.w_avg``).
    **arch_kwargs: module attributes to override.

  Returns:
    ``(module, variables)``: ``module.apply(variables, x)`` runs the network in inference mode;
    ``variables`` is ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only with
    BatchNorm) of float32 numpy arrays in Flax layout (kernels ``[kh, kw, in, out]``).
    SAGAN: spectral normalisation is folded into the kernels as upstream's first forward call
    after loading computes it (``jaxgc.convert.spectral``); the vectors after that call and
    ``sigma`` go to the ``"spectral"`` collection (``jaxgc.models.sagan``).

  Raises:
    CheckpointError: the keys or shapes do not match ``arch`` (one message listing the missing,
      unexpected and mis-shaped keys), the architecture cannot be inferred, a weight is NaN
      or Inf, a SAGAN state_dict lacks its spectral-norm vectors, or ``w_avg`` is not
      ``[w_dim]``.
    ValueError: unknown ``arch`` or keyword.
  """
  sd = unwrap_state_dict(_tensors_to_numpy(state_dict), source)
  if arch is None:
    try:
      arch = mapping.infer_arch(sd)
    except ValueError as e:
      raise CheckpointError(f"{source}: {e}") from None
  elif arch not in models.ARCHS:
    raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(models.ARCHS)}")
  kw = {**mapping.infer_kwargs(arch, sd), **arch_kwargs}
  if kw.get("padding_type", "reflect") == "zero":
    raise ValueError("converting padding_type='zero' generators is not supported (upstream's "
                     "define_G never builds them; their block key indices differ)")
  module = models.build(arch, **kw)
  shapes = jax.eval_shape(module.init, jax.random.key(0), models.example_input(module))
  flat_shapes = {"/".join(str(getattr(p, "key", p)) for p in path): leaf.shape
                 for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  table = mapping.entries(arch, kw, sd)
  expected = {t: (f, kind) for f, t, kind in table}
  derived = mapping.derived_paths(arch, kw)
  unmapped = sorted(set(flat_shapes) - {f for f, _, _ in table} - set(derived))
  assert not unmapped, f"internal: key map of {arch} misses Flax paths {unmapped}"
  if arch in mapping.SAGAN_ARCHS:
    _check_spectral_vectors(sd, arch, source)

  # Fixed buffers (blur filters) may be absent; when present they must hold their value.
  missing = sorted(k for k, (_, kind) in expected.items() if k not in sd and kind != mapping.FIXED)
  unexpected = sorted(k for k in sd if k not in expected)
  misshaped = []
  for tkey, (fpath, kind) in expected.items():
    if tkey not in sd:
      continue
    if kind == mapping.FIXED:
      want_value = mapping.FIXED_VALUES[fpath]
      if sd[tkey].shape != want_value.shape or not np.allclose(sd[tkey], want_value, atol=1e-6):
        misshaped.append(f"{tkey} is not the [1,3,3,1] filter jaxgc implements")
      continue
    want = mapping.torch_shape(kind, flat_shapes[fpath])
    if tuple(sd[tkey].shape) != want:
      misshaped.append(f"{tkey} {tuple(sd[tkey].shape)} != expected {want}")
  if missing or unexpected or misshaped:
    raise CheckpointError(
        f"{source} does not match arch {arch!r}: missing {len(missing)} keys "
        f"[{_preview(missing)}]; unexpected {len(unexpected)} keys [{_preview(unexpected)}]; "
        f"mis-shaped {len(misshaped)} [{_preview(misshaped, 3)}]")

  bad = [f"{k} ({int(np.sum(~np.isfinite(v)))} non-finite)" for k, v in sd.items()
         if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v))]
  if bad:
    raise CheckpointError(f"{source} has NaN or Inf weights: {_preview(bad, 3)}")

  if arch in mapping.SAGAN_ARCHS:  # fold spectral normalisation into the weights
    sd, sigmas = spectral.fold(sd, mapping.sagan_spectral_layers(arch),
                               mapping.SPECTRAL_LAYOUTS[mapping.spectral_layout(sd)], source)
  variables: dict[str, Any] = {}
  for tkey, (fpath, kind) in expected.items():
    if kind != mapping.FIXED:
      _set(variables, fpath, mapping.to_flax(kind, sd[tkey]).astype(np.float32))
  if arch in mapping.SAGAN_ARCHS:
    for fpath in derived:
      _set(variables, fpath, np.float32(sigmas[fpath.split("/")[1]]))
  if "buffers/mapping/w_avg" in derived:
    if w_avg is None:  # rosinality stores none: its mean_latent(4096), fixed seed (mean_w)
      w_avg = models.stylegan2.mean_w(module, variables)
    w_avg = np.asarray(_tensors_to_numpy(w_avg), np.float32).reshape(-1)
    if w_avg.shape != (module.w_dim,) or not np.all(np.isfinite(w_avg)):
      raise CheckpointError(f"{source}: w_avg (latent_avg) must be {module.w_dim} finite "
                            f"values, got shape {w_avg.shape}")
    _set(variables, "buffers/mapping/w_avg", w_avg)
  return module, variables


def _check_spectral_vectors(sd: dict[str, np.ndarray], arch: str, source: str) -> None:
  """One line for a SAGAN state_dict without its spectral-norm parameters (weights saved plain,
  or the vectors of a layer whose weight is there dropped): upstream's first forward needs
  them. Layers missing as a whole are left to the key check."""
  layout = mapping.spectral_layout(sd)
  if layout is None:
    plain = sorted(k for k in sd if re.fullmatch(r"l\d\.0\.weight", k))
    if not plain and "attn1.query_conv.weight" not in sd:
      return  # not a SAGAN at all: the key check lists the differences
    raise CheckpointError(
        f"{source}: {arch} without its spectral-norm parameters: no l1.0.module.weight_bar "
        f"(heykeetae SpectralNorm) nor l1.0.weight_orig (torch.nn.utils.spectral_norm) key"
        + (f", plain weights [{_preview(plain)}] instead" if plain else ""))
  row = mapping.SPECTRAL_LAYOUTS[layout]
  missing = [f"{m}.{s}" for _, m, _ in mapping.sagan_spectral_layers(arch)
             for s in (row.u, row.v) if f"{m}.{row.weight}" in sd and f"{m}.{s}" not in sd]
  if missing:
    raise CheckpointError(
        f"{source}: {arch} ({layout} spectral-norm layout) without its spectral-norm vectors "
        f"{_preview(missing)}: the forward upstream computes from them cannot be reproduced")


def load_torch_checkpoint(path: str | os.PathLike, arch: str | None = None,
                          key: str | None = None, **arch_kwargs: Any
                          ) -> tuple[nn.Module, dict[str, Any]]:
  """Loads a PyTorch GAN checkpoint as a Flax module and variables, without running pickled code.

  Args:
    path: a ``torch.save`` file (``.pth``, ``.pt``, ``.ckpt``, ``.tar``) of a state_dict,
      possibly wrapped (``{"netG_state_dict": ...}``, ``{"state_dict": ...}``, ``module.``), or
      a rosinality/stylegan2-pytorch training checkpoint ``{"g", "d", "g_ema", "g_optim",
      "d_optim", "args"}`` (``g_ema`` unless ``key`` says otherwise), or a ``convert_weight.py``
      file ``{"g_ema", "latent_avg"}`` (``latent_avg`` becomes the stored ``w_avg``). NVlabs ``.pkl`` files
      are refused (they pickle code); convert their ``G_ema.state_dict()`` instead.
    arch: a ``jaxgc.models.ARCHS`` name, or None to infer it from key names and shapes.
    key: the checkpoint's top-level entry holding the state_dict (``"g"``, ``"d"``); None
      picks the first of ``torch_io.WRAPPER_KEYS`` present.
    **arch_kwargs: module attributes to override (widths are otherwise read from shapes).

  Returns:
    ``(module, variables)`` such that ``module.apply(variables, x)`` runs the network: ``x``
    ``[batch, height, width, channels]`` float32 in [-1, 1] for images (``[batch, 784]`` also
    for the MLP discriminator), ``[batch, z_dim]`` for latents; the output is an NHWC image in
    [-1, 1], or ``[batch, 1]`` probabilities for discriminators.

  Raises:
    FileNotFoundError: no such file.
    CheckpointError: truncated or corrupt file; pickled code or non-tensor objects; keys or
      shapes that do not match ``arch``; NaN or Inf weights.
    ImportError: torch is not installed (``pip install torch==2.13.0``).
  """
  obj = read_torch_file(path)
  return convert_state_dict(unwrap_state_dict(obj, os.fspath(path), key), arch,
                            source=os.fspath(path), w_avg=latent_avg(obj, key),
                            **arch_kwargs)


def latent_avg(obj: Any, key: str | None = None) -> np.ndarray | None:
  """The ``latent_avg`` ``[w_dim]`` that rosinality's ``convert_weight.py`` saves beside
  ``g_ema`` (the official model's ``dlatent_avg``), when ``key`` selects ``g_ema`` (or
  nothing); else None."""
  if (isinstance(obj, Mapping) and key in (None, "g_ema") and "g_ema" in obj
      and isinstance(obj.get("latent_avg"), np.ndarray)):
    return obj["latent_avg"]
  return None
