"""Old module paths that moved in the 0.2 layout, kept importable for now with a warning.

``import jaxgc.train.selfsup`` (or ``from jaxgc.train import selfsup``) still works: it gives a
module holding the public names of its new home (:data:`MOVED`) and emits a
``DeprecationWarning`` naming that home. No file is left at the old path, so every name in the
tree says what it holds. Installed by ``jaxgc/__init__.py``; imports nothing of jaxgc itself
until an old path is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module path -> new module path
MOVED = {
    "jaxgc.eval.data": "jaxgc.data.reference",
    "jaxgc.eval.evaluate": "jaxgc.eval.scoring",
    "jaxgc.eval.features": "jaxgc.eval.extractors",
    "jaxgc.eval.inception": "jaxgc.eval.fid_inception",
    "jaxgc.jobs.inputs": "jaxgc.data.inputs",
    "jaxgc.jobs.report": "jaxgc.report",
    "jaxgc.jobs.train": "jaxgc.jobs.selfsup",
    "jaxgc.train.checkpointing": "jaxgc.train.state_checkpoints",
    "jaxgc.train.crd": "jaxgc.train.crd_losses",
    "jaxgc.train.distill": "jaxgc.train.crd_step",
    "jaxgc.train.features": "jaxgc.train.feature_nets",
    "jaxgc.train.parallel": "jaxgc.parallel",
    "jaxgc.train.pipeline": "jaxgc.data.pipeline",
    "jaxgc.train.qat": "jaxgc.train.qat_step",
    "jaxgc.train.selfsup": "jaxgc.train.selfsup_step",
}

# Public names of an old module that now live elsewhere: old module -> {name: (module, name)}.
RENAMED = {
    "jaxgc.jobs.report": {"markdown": ("jaxgc.jobs.compress", "markdown")},
    "jaxgc.train.distill": {
        "discriminator_gan_loss": ("jaxgc.train.gan_losses", "discriminator_loss"),
        "generator_gan_loss": ("jaxgc.train.gan_losses", "generator_loss"),
    },
    "jaxgc.train.qat": {"generate": ("jaxgc.parallel", "generate")},
    "jaxgc.train.selfsup": {
        "ADV_EPS": ("jaxgc.train.gan_losses", "PROB_EPS"),
        "adversarial_loss": ("jaxgc.train.gan_losses", "generator_loss"),
    },
}


# Old names of packages that did not move: package -> {old name: (module, new name)}. Served,
# with a DeprecationWarning, by the package's ``__getattr__ = _aliases.module_getattr(__name__)``.
RENAMED_IN_PLACE = {
    "jaxgc.train": {"adversarial_loss": ("jaxgc.train", "generator_loss")},
}


def module_getattr(package: str):
  """A module-level ``__getattr__`` for ``package`` that serves its old names
  (:data:`RENAMED_IN_PLACE`) with a ``DeprecationWarning`` naming the new one.

  Raises (from the returned function):
    AttributeError: a name the package never had.
  """

  def __getattr__(name):  # pylint: disable=invalid-name
    if name in RENAMED_IN_PLACE.get(package, {}):
      home, new_name = RENAMED_IN_PLACE[package][name]
      warnings.warn(f"{package}.{name} is deprecated; use {home}.{new_name}",
                    DeprecationWarning, stacklevel=2)
      return getattr(importlib.import_module(home), new_name)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")

  return __getattr__


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds the old paths of :data:`MOVED` and loads each as a thin re-export of its new home."""

  def find_spec(self, fullname, path, target=None):  # pylint: disable=unused-argument
    if fullname not in MOVED:
      return None
    return importlib.util.spec_from_loader(fullname, self)

  def create_module(self, spec):
    return types.ModuleType(spec.name)

  def exec_module(self, module):
    new = MOVED[module.__name__]
    warnings.warn(f"{module.__name__} is deprecated; import {new} instead",
                  DeprecationWarning, stacklevel=2)
    target = importlib.import_module(new)
    module.__doc__ = f"Deprecated alias of {new}."
    module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})
    for name, (home, new_name) in RENAMED.get(module.__name__, {}).items():
      setattr(module, name, getattr(importlib.import_module(home), new_name))


def install() -> None:
  """Puts the finder on ``sys.meta_path`` once (after the regular finders)."""
  if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
