"""Teachers trained by jaxgc itself, found in the user cache folder or trained on first use.

No pretrained SAGAN, StyleGAN2 or pix2pix weights can be had here, so jobs that need such a
teacher (the quantization study, collaborative pruning) get one that ``jaxgc gan`` trains,
deterministically, from a shipped config:

  from jaxgc.jobs import teachers
  module, variables = teachers.teacher("dcgan_fmnist")

The teacher ``NAME`` lives in ``<cache>/teachers/NAME/`` (``cache`` is
:func:`jaxgc._fileio.cache_root`: ``$JAXGC_CACHE`` or ``~/.cache/jaxgc``), a ``jaxgc gan``
workdir: ``generator/`` and ``discriminator/`` model folders, ``report.md`` with its FID,
samples and training curve. ``scripts/train_teachers.sh`` trains them all ahead of time.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import sys
from typing import Any

import flax.linen as nn

from jaxgc import _fileio
from jaxgc.checkpoint import load_model
from jaxgc.data import gan_images
from jaxgc.jobs import gan

# name -> (config in configs/, about how long it trains on a 2-core CPU)
TEACHERS = {
    "dcgan_fmnist": ("gan_dcgan_fmnist", "about 15-50 minutes, depending on the CPU's load"),
    "pix2pix_edges2fmnist": ("gan_pix2pix_edges2fmnist",
                             "about 20-40 minutes, depending on the CPU's load"),
    "stylegan2_fmnist": ("gan_stylegan2_fmnist", "about 20-60 minutes, depending on the CPU's "
                         "load"),
    "sagan_fmnist": ("gan_sagan_fmnist", "about 20-60 minutes, depending on the CPU's load"),
}
NETWORKS = ("generator", "discriminator")


def teacher_dir(name: str) -> str:
  """``<cache>/teachers/<name>``: the ``jaxgc gan`` workdir of the teacher ``name``.

  Raises:
    ValueError: an unknown teacher (listing the known ones).
  """
  if name not in TEACHERS:
    raise ValueError(f"unknown teacher {name!r}; jaxgc trains {', '.join(sorted(TEACHERS))}")
  return os.path.join(_fileio.cache_root(), "teachers", name)


def _config_path(config: str) -> str:
  """The config file ``configs/<config>.py``: of the source tree when jaxgc runs from one, else
  the copy installed as the package ``jaxgc.configs``."""
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__)))), "configs", config + ".py")
  if os.path.isfile(here):
    return here
  return str(importlib.resources.files("jaxgc.configs").joinpath(config + ".py"))


def teacher_config(name: str):
  """The ``ml_collections`` config ``jaxgc gan`` trains the teacher ``name`` with."""
  teacher_dir(name)   # the name check
  path = _config_path(TEACHERS[name][0])
  spec = importlib.util.spec_from_file_location(f"_jaxgc_teacher_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def is_trained(name: str) -> bool:
  """Whether ``<cache>/teachers/<name>`` holds a finished run (its report and both models)."""
  path = teacher_dir(name)
  return os.path.isfile(os.path.join(path, gan.REPORT_JSON)) and all(
      os.path.isfile(os.path.join(path, n, "spec.json")) for n in NETWORKS)


def teacher(name: str, *, network: str = "generator", progress: bool = True
            ) -> tuple[nn.Module, dict[str, Any]]:
  """The trained teacher ``name`` as ``(module, variables)``, trained on first use.

  Looks in ``<cache>/teachers/<name>/``; when the teacher is not there it says so on stderr
  (``jaxgc: note: ...``, naming the folder, the config and the expected time) and trains it
  with ``jaxgc gan`` into that folder (a run killed half way resumes at the next call). A run
  is bit-reproducible on one machine, so every consumer on it gets the same teacher.

  Args:
    name: one of :data:`TEACHERS`: ``"dcgan_fmnist"`` (a DCGAN generator, latents
      ``[batch, 100]`` float32 N(0, 1) -> images ``[batch, 32, 32, 1]`` in [-1, 1]) or
      ``"pix2pix_edges2fmnist"`` (a U-Net, Canny edge maps ``[batch, 32, 32, 1]`` in [-1, 1]
      -> garments ``[batch, 32, 32, 1]`` in [-1, 1]; its PatchGAN takes both concatenated) or
      ``"stylegan2_fmnist"`` (a small StyleGAN2, NVlabs layout, EMA weights: latents
      ``[batch, 64]`` -> ``[batch, 32, 32, 1]``, about [-1, 1], unclamped) or
      ``"sagan_fmnist"`` (a 32x32 SAGAN generator, spectral normalisation folded into its
      kernels: latents ``[batch, 128]`` -> ``[batch, 32, 32, 1]`` in [-1, 1]; its D gives
      ``[batch, 1]`` hinge logits).
    network: ``"generator"`` or ``"discriminator"`` (its D: ``[batch, 32, 32, 1]`` ->
      ``[batch, 4]`` probabilities, one per position of its 2x2 output map).
    progress: tqdm bars while training.

  Returns:
    ``(module, variables)``: a ``jaxgc.models`` zoo module and its variables (numpy float32;
    BatchNorm running statistics in ``batch_stats``), as ``jaxgc.checkpoint.load_model`` gives.

  Raises:
    ValueError: an unknown teacher or network; the teacher's folder is being trained by another
      process (the workdir lock).
    FileNotFoundError: training needs the data assets (``$JAXGC_ASSETS``) and they are missing.
  """
  path = teacher_dir(name)
  if network not in NETWORKS:
    raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
  if not is_trained(name):
    config, duration = TEACHERS[name]
    cfg = gan.resolve_config(teacher_config(name))
    if cfg.arch == "pix2pix" and not os.path.isdir(os.path.join(cfg.data.source, "train")):
      print(f"jaxgc: note: making the edges -> Fashion-MNIST pairs in {cfg.data.source} "
            "(scikit-image Canny)", file=sys.stderr, flush=True)
      gan_images.write_edges2fmnist(cfg.data.source)
    print(f"jaxgc: note: teacher {name!r} is not in {path}; training it now with "
          f"configs/{config}.py ({duration}); later calls load it from there", file=sys.stderr,
          flush=True)
    gan.run(cfg, path, progress=progress)
  return load_model(os.path.join(path, network))
