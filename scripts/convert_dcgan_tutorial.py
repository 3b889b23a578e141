"""Converts a generator of the PyTorch DCGAN tutorial layout into a jaxgc model folder.

Reads ``CHECKPOINT`` without executing pickled code: a state_dict with keys ``main.0.weight``
... ``main.12.weight`` (ConvTranspose without bias, BatchNorm with running statistics, ReLU,
Tanh; 64x64 output), bare or inside a dict such as ``{'netG_state_dict': ...}`` (the DigiFace
``weights.tar``); infers ``z_dim``, ``ngf`` and the image channels from the shapes, runs it on
``--samples`` latents N(0, 1) of ``--seed`` (upstream's ``[N, nz, 1, 1]`` is jaxgc's
``[N, z_dim]``), compares it with its PyTorch reference (``jaxgc.convert.torch_refs_zoo``) when
torch is installed, and writes ``OUTDIR``: ``spec.json``, ``variables/`` and ``samples.png``
(jaxgc and PyTorch images). Prints the parity figure; exit status 0, or 2 after one ``error:``
line.

  python scripts/convert_dcgan_tutorial.py ../shared/assets/dcgan-digiface64/weights.tar \\
      runs/digiface

Generators only: the tutorial's discriminator (five convolutions) is not the MNIST
``dcgan_discriminator`` of ``convert_csinva_mnist.py`` and is refused in one line.

Upstream: pytorch/tutorials ``beginner_source/dcgan_faces_tutorial.py``; chien-liu/DCGAN-PyTorch
``gan_face_generate/models.py`` (PyPI ``gan-face-generate``).
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _zoo_common  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = ("dcgan_generator",)
FAMILY = "PyTorch DCGAN tutorial"

convert = functools.partial(_zoo_common.convert, archs=ARCHS, family=FAMILY)
convert.__doc__ = "``_zoo_common.convert`` for this script's architectures (see its docstring)."


def main(argv: list[str] | None = None) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  return _zoo_common.main(argv, __doc__, ARCHS, FAMILY)


if __name__ == "__main__":
  sys.exit(main())
