"""Reading PyTorch checkpoints without executing pickled code."""

from __future__ import annotations

import argparse
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

# Keys under which training scripts commonly wrap a state_dict (``g_ema``: the generator of a
# rosinality/stylegan2-pytorch training checkpoint, whose ``g`` and ``d`` ``key=`` selects).
WRAPPER_KEYS = ("netG_state_dict", "state_dict", "model_state_dict", "netD_state_dict", "g_ema")

# Plain-data classes a checkpoint may hold besides tensors and containers, allowed to the
# weights-only unpickler (no code of theirs runs: an instance is built and its __dict__ set).
# rosinality/stylegan2-pytorch training checkpoints store their ``args`` as a Namespace.
SAFE_GLOBALS = (argparse.Namespace,)

# Modules of code pickled by NVlabs StyleGAN .pkl files (persistence pickles source code).
_NVLABS_MODULES = ("dnnlib", "torch_utils", "training.networks")
NVLABS_PKL_HINT = (
    "NVlabs .pkl files pickle code and are never unpickled here; export the state dict with the "
    "NVlabs repository on its path: with open(PKL, 'rb') as f: G = legacy.load_network_pkl(f)"
    "['G_ema']; torch.save(G.state_dict(), 'G_ema.pt') (likewise 'D'), then convert G_ema.pt")


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or does not match the requested architecture."""


def _require_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("reading PyTorch checkpoints needs torch: pip install torch==2.13.0 "
                      "(CPU build), or pip install 'jaxgc[torch]'") from e
  return torch


def _to_numpy(tree: Any, where: str = "") -> Any:
  """Tensors -> numpy; plain containers kept; anything else refused."""
  torch = _require_torch()
  if isinstance(tree, torch.Tensor):
    return tree.detach().cpu().numpy()
  if isinstance(tree, Mapping):
    return {str(k): _to_numpy(v, f"{where}{k}.") for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_to_numpy(v, f"{where}{i}.") for i, v in enumerate(tree)]
  if tree is None or isinstance(tree, (bool, int, float, str, bytes, np.ndarray, np.generic)):
    return tree
  if isinstance(tree, (torch.Size, torch.dtype, torch.device)):
    return str(tree)
  if isinstance(tree, argparse.Namespace):
    return _to_numpy(vars(tree), where)
  raise CheckpointError(f"checkpoint entry {where.rstrip('.') or '<root>'} is a "
                        f"{type(tree).__name__}, not a tensor or plain container; refused")


def read_torch_file(path: str | os.PathLike) -> Any:
  """Reads a ``torch.save`` file safely and returns its content with tensors as numpy arrays.

  Uses ``torch.load(weights_only=True)``, PyTorch's allowlisting unpickler: no pickled code is
  executed, and a file that references any other global (a class, a function) is refused.

  Args:
    path: a ``.pth``/``.pt``/``.ckpt``/``.tar`` file written by ``torch.save`` (zip or legacy
      format). ``argparse.Namespace`` objects (rosinality training checkpoints' ``args``) are
      allowed and returned as dicts (``SAFE_GLOBALS``).

  Returns:
    The saved object, tensors converted to numpy arrays (float32 stays float32).

  Raises:
    FileNotFoundError: ``path`` does not exist.
    CheckpointError: the file is truncated or not a PyTorch checkpoint, or it holds pickled
      code or objects other than tensors and plain containers; an NVlabs ``.pkl`` (naming
      the state-dict export to use instead, ``NVLABS_PKL_HINT``).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if os.path.getsize(path) == 0:
    raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
  torch = _require_torch()
  import pickle  # pylint: disable=import-outside-toplevel
  try:
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    msg = str(e)
    if path.endswith(".pkl") or any(m in msg for m in _NVLABS_MODULES):
      raise CheckpointError(f"refusing {path}: {NVLABS_PKL_HINT}") from None
    if "Weights only load failed" in msg or "Unsupported global" in msg:
      first = next((ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in
                    ln), msg.splitlines()[0])
      raise CheckpointError(f"refusing checkpoint {path}: it holds pickled code or objects other "
                            f"than tensors and plain containers ({first})") from None
    raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {msg.splitlines()[0]}"
                          ) from None
  except (EOFError, RuntimeError, OSError, ValueError, KeyError, struct.error) as e:
    if path.endswith(".pkl"):
      raise CheckpointError(f"refusing {path}: {NVLABS_PKL_HINT}") from None
    first = (str(e).splitlines() or [type(e).__name__])[0]
    raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {first}") from None
  return _to_numpy(obj)


def unwrap_state_dict(obj: Any, source: str = "checkpoint", key: str | None = None
                      ) -> dict[str, np.ndarray]:
  """Finds the flat ``{key: array}`` state_dict inside a loaded checkpoint.

  Unwraps ``{"netG_state_dict": ...}``, ``{"state_dict": ...}``, ``{"g_ema": ...}`` (rosinality
  training checkpoints) and similar wrappers, and strips a ``module.`` prefix
  (``nn.DataParallel``). ``num_batches_tracked`` counters are dropped.

  Args:
    obj: what ``read_torch_file`` returned.
    source: how to name it in errors.
    key: the top-level entry to take (``"g"``, ``"d"`` or ``"g_ema"`` of a rosinality training
      checkpoint); None picks the first of ``WRAPPER_KEYS`` present.

  Raises:
    CheckpointError: no state_dict of arrays is found, or ``key`` is not an entry (naming
      the entries there are).
  """
  if key is not None:
    if not isinstance(obj, Mapping) or key not in obj:
      entries = sorted(map(str, obj)) if isinstance(obj, Mapping) else []
      raise CheckpointError(f"{source} has no entry {key!r}; its entries: {entries[:12]}")
    obj = obj[key]
  while isinstance(obj, Mapping):
    wrapped = [k for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)]
    if not wrapped:
      break
    obj = obj[wrapped[0]]
  if not isinstance(obj, Mapping) or not obj:
    raise CheckpointError(f"{source} holds no state_dict (got {type(obj).__name__})")
  arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
  if not arrays:
    raise CheckpointError(f"{source} holds no tensors; top-level keys: {sorted(obj)[:8]}")
  out = {}
  for k, v in arrays.items():
    k = k[len("module."):] if k.startswith("module.") else k
    if k.endswith("num_batches_tracked"):
      continue
    out[k] = v
  return out
