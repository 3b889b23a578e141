"""Reading PyTorch checkpoints without executing pickled code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

# Keys under which training scripts commonly wrap a state_dict.
WRAPPER_KEYS = ("netG_state_dict", "state_dict", "model_state_dict", "netD_state_dict")


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
  raise CheckpointError(f"checkpoint entry {where.rstrip('.') or '<root>'} is a "
                        f"{type(tree).__name__}, not a tensor or plain container; refused")


def read_torch_file(path: str | os.PathLike) -> Any:
  """Reads a ``torch.save`` file safely and returns its content with tensors as numpy arrays.

  Uses ``torch.load(weights_only=True)``, PyTorch's allowlisting unpickler: no pickled code is
  executed, and a file that references any other global (a class, a function) is refused.

  Args:
    path: a ``.pth``/``.pt``/``.ckpt``/``.tar`` file written by ``torch.save`` (zip or legacy
      format).

  Returns:
    The saved object, tensors converted to numpy arrays (float32 stays float32).

  Raises:
    FileNotFoundError: ``path`` does not exist.
    CheckpointError: the file is truncated or not a PyTorch checkpoint, or it holds pickled
      code or objects other than tensors and plain containers.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if os.path.getsize(path) == 0:
    raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
  torch = _require_torch()
  import pickle  # pylint: disable=import-outside-toplevel
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    msg = str(e)
    if "Weights only load failed" in msg or "Unsupported global" in msg:
      first = next((ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in
                    ln), msg.splitlines()[0])
      raise CheckpointError(f"refusing checkpoint {path}: it holds pickled code or objects other "
                            f"than tensors and plain containers ({first})") from None
    raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {msg.splitlines()[0]}"
                          ) from None
  except (EOFError, RuntimeError, OSError, ValueError, KeyError) as e:
    first = (str(e).splitlines() or [type(e).__name__])[0]
    raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {first}") from None
  return _to_numpy(obj)


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, np.ndarray]:
  """Finds the flat ``{key: array}`` state_dict inside a loaded checkpoint.

  Unwraps ``{"netG_state_dict": ...}``, ``{"state_dict": ...}`` and similar wrappers, and strips
  a ``module.`` prefix (``nn.DataParallel``). ``num_batches_tracked`` counters are dropped.

  Raises:
    CheckpointError: no state_dict of arrays is found.
  """
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
