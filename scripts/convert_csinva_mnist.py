"""Converts a csinva/gan-vae-pretrained-pytorch MNIST network into a jaxgc model folder.

Reads ``CHECKPOINT`` without executing pickled code and infers, from its keys, the MLP GAN's
generator (``mlp_generator``: ``G--300.ckpt``, keys ``0.*``, ``2.*``, ``4.*``) or discriminator
(``mlp_discriminator``: ``D--300.ckpt``), the DCGAN discriminator (``dcgan_discriminator``:
``netD_epoch_99.pth``, keys ``main.N``) or the LeNet-5 classifier (``lenet5``:
``lenet5_mnist.pth``, keys ``convnet.c1`` ... ``fc.f7``). Generators run on ``--samples``
latents of ``--seed``; discriminators and LeNet-5 score MNIST digits (``$JAXGC_ASSETS/mnist10k``
when set, else noise images). Compares with the PyTorch reference
(``jaxgc.convert.torch_refs_zoo``) when torch is installed and writes ``OUTDIR``:
``spec.json``, ``variables/`` and ``samples.png`` (generated digits, or the scored digits with
the jaxgc scores). Prints the parity figure; exit status 0, or 2 after one ``error:`` line.

  python scripts/convert_csinva_mnist.py ../shared/assets/mnist-mlpgan/G--300.ckpt runs/mnist_G
  python scripts/convert_csinva_mnist.py ../shared/assets/mnist-lenet5/lenet5_mnist.pth \\
      runs/lenet5

Upstream: csinva/gan-vae-pretrained-pytorch ``mnist/gan_mnist.py``, ``mnist_dcgan/dcgan.py``,
``mnist_classifier/lenet.py``.
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _zoo_common  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = ("mlp_generator", "mlp_discriminator", "dcgan_discriminator", "lenet5")
FAMILY = "csinva/gan-vae-pretrained-pytorch MNIST"

convert = functools.partial(_zoo_common.convert, archs=ARCHS, family=FAMILY)
convert.__doc__ = "``_zoo_common.convert`` for this script's architectures (see its docstring)."


def main(argv: list[str] | None = None) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  return _zoo_common.main(argv, __doc__, ARCHS, FAMILY)


if __name__ == "__main__":
  sys.exit(main())
