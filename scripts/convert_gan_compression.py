"""Converts a GAN Compression mobile or sub-mobile ResNet generator into a jaxgc model folder.

Reads ``CHECKPOINT`` (``latest_net_G.pth`` of mit-han-lab/gan-compression: the full-width
``mobile_resnet_generator`` student, or the channel-pruned ``sub_mobile_resnet_generator``
whose ``config['channels']`` is read from the tensor shapes) without executing pickled code,
runs it on scikit-image photos, compares it with its PyTorch reference
(``jaxgc.convert.torch_refs_zoo``) when torch is installed, and writes ``OUTDIR``:
``spec.json``, ``variables/`` (``jaxgc.checkpoint.load_model(OUTDIR)`` reads them) and
``samples.png`` (inputs, jaxgc outputs, PyTorch outputs). The sub-mobile generator clamps its
input to [-1, 1] as upstream's ``forward`` does. Prints the parity figure; exit status 0, or 2
after one ``error:`` line.

  python scripts/convert_gan_compression.py \\
      ../shared/assets/cyclegan-h2z-gancompression/latest_net_G.pth runs/h2z

Upstream: mit-han-lab/gan-compression ``models/modules/resnet_architecture/``
``mobile_resnet_generator.py``, ``sub_mobile_resnet_generator.py`` and
``models/modules/mobile_modules.py``.
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _zoo_common  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = ("mobile_resnet_generator", "sub_mobile_resnet_generator")
FAMILY = "GAN Compression mobile ResNet"

convert = functools.partial(_zoo_common.convert, archs=ARCHS, family=FAMILY)
convert.__doc__ = "``_zoo_common.convert`` for this script's architectures (see its docstring)."


def main(argv: list[str] | None = None) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  return _zoo_common.main(argv, __doc__, ARCHS, FAMILY, photos=True)


if __name__ == "__main__":
  sys.exit(main())
