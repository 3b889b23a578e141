"""Converted Linen generators handed over as Flax NNX modules, and back (``flax.nnx.bridge``).

:func:`to_nnx` wraps a zoo module and its variables in ``flax.nnx.bridge.ToNNX``: a stateful NNX
module whose ``__call__`` runs the Linen module's ``apply`` on the variables it holds, so its
outputs are the Linen model's bit for bit. ``nnx.split(model)`` gives the ``nnx.State`` that every
transform of :mod:`jaxgc.compress` accepts (paths normalised to the Linen ones: see
:mod:`jaxgc.compress.selection`); :func:`from_nnx` gives the Linen module and variables back, e.g.
for activation calibration or :func:`jaxgc.export.save`.

Source: ``flax/nnx/bridge/wrappers.py`` (``ToNNX``) and ``flax/nnx/bridge/variables.py``
(``linen_vars_to_nnx_attrs`` / ``nnx_attrs_to_linen_vars``: collection name <-> variable type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.nnx as nnx
import jax
import numpy as np
from flax.nnx import bridge
from flax.nnx.bridge import variables as bridge_variables

from jaxgc import models


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {"/".join(str(getattr(k, "key", k)) for k in kp): tuple(np.shape(v))
          for kp, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_variables(module: nn.Module, variables: Any) -> None:
  """Raises ValueError unless ``variables`` have the paths and shapes ``module`` makes."""
  if not isinstance(variables, Mapping) or not all(
      isinstance(v, Mapping) for v in variables.values()):
    raise ValueError(f"variables must be Linen variables, a dict of collections such as "
                     f"{{'params': {{...}}}}, got {type(variables).__name__}")
  try:
    want = jax.eval_shape(module.init, jax.random.key(0), models.example_input(module))
  except Exception:  # pylint: disable=broad-except  # a module without abstract init: no check
    return
  want, got = _shapes(want), _shapes(variables)
  for path in sorted(set(want) | set(got)):
    if want.get(path) != got.get(path):
      raise ValueError(f"variables do not match {type(module).__name__}: {path} is "
                       f"{got.get(path, 'missing')} in the variables, {want.get(path, 'absent')} "
                       "in the module")


def to_nnx(module: nn.Module, variables: Mapping[str, Any]) -> bridge.ToNNX:
  """The Linen ``module`` with ``variables`` as an NNX module (``flax.nnx.bridge.ToNNX``).

  No initialisation is run: the variables are placed in the wrapper the way ``ToNNX`` stores the
  result of its own ``lazy_init`` (one attribute per top-level submodule, each array in an
  ``nnx.Variable`` of the type of its collection: ``params`` -> ``nnx.Param``, ``batch_stats``
  -> ``nnx.BatchStat``). ``model(x)`` then equals ``module.apply(variables, x)`` exactly, e.g.
  images ``[batch, height, width, channels]`` float32 in [-1, 1] for the image-to-image
  generators, latents ``[batch, z_dim]`` for the unconditional ones. The wrapper holds no RNG
  streams (the zoo's generators use none at inference).

  Example::

    module, variables = convert.load_torch_checkpoint("latest_net_G.pth")
    model = convert.to_nnx(module, variables)
    graphdef, state = nnx.split(model)
    state = compress.fake_quantize(state, compress.QuantConfig(8))   # Linen paths select
    y = nnx.merge(graphdef, state)(x)

  Args:
    module: a Flax Linen module, e.g. from :func:`jaxgc.convert.load_torch_checkpoint` or
      :func:`jaxgc.checkpoint.load_model`.
    variables: its variables, ``{"params": ..., "batch_stats": ...}`` (arrays or NumPy arrays).

  Returns:
    A ``flax.nnx.bridge.ToNNX`` module.

  Raises:
    TypeError: ``module`` is not a Linen module.
    ValueError: ``variables`` is not a dict of collections, or its paths or shapes differ from
      those ``module.init`` makes (for zoo modules; naming the first differing path).
  """
  if not isinstance(module, nn.Module):
    raise TypeError(f"to_nnx needs a flax.linen Module, got {type(module).__name__}")
  _check_variables(module, variables)
  model = bridge.ToNNX(module)
  variables = jax.tree.map(jax.numpy.asarray, dict(variables))
  for name, value in bridge_variables.linen_vars_to_nnx_attrs(variables).items():
    setattr(model, name, nnx.data(value))
  return model


def from_nnx(model: bridge.ToNNX) -> tuple[nn.Module, dict[str, Any]]:
  """The Linen module and variables inside a bridged model (inverse of :func:`to_nnx`).

  Use it for what needs a Linen module: activation calibration
  (:func:`jaxgc.compress.calibrate`), :func:`jaxgc.checkpoint.save_model`,
  :func:`jaxgc.export.save`. ``nnx.merge(graphdef, state)`` of a compressed state gives the
  model to pass.

  Args:
    model: a ``flax.nnx.bridge.ToNNX`` module, e.g. from :func:`to_nnx`.

  Returns:
    ``(module, variables)``, ``variables`` a dict of collections of arrays.

  Raises:
    TypeError: ``model`` is not a ``ToNNX`` module.
  """
  if not isinstance(model, bridge.ToNNX):
    raise TypeError(f"from_nnx needs a flax.nnx.bridge.ToNNX module, got {type(model).__name__}")
  attrs = {k: v for k, v in vars(model).items()
           if not k.startswith("to_nnx__") and not k.startswith("_pytree__")}
  return model.to_nnx__module, bridge_variables.nnx_attrs_to_linen_vars(attrs)
