"""Make the edges -> Fashion-MNIST pix2pix data set: AB images (edges | garment) for `jaxgc gan`.

Each Fashion-MNIST garment is padded from 28x28 to 32x32 with black, its edges found with
scikit-image's Canny detector (``skimage.feature.canny``, Gaussian ``sigma`` 1 by default, the
default hysteresis thresholds) and written as one 64x32 grayscale PNG: the edge map A
(white edges on black) on the left, the garment B on the right, the aligned layout of
pytorch-CycleGAN-and-pix2pix (``datasets/combine_A_and_B.py``). The first ``--train`` images
of the training split go to ``OUT/train/`` and the first ``--test`` of the test split to
``OUT/test/`` (:func:`jaxgc.data.gan_images.write_edges2fmnist`). Deterministic: the same
arguments give the same files.

  JAXGC_ASSETS=../shared/assets python scripts/make_edges.py OUT [--train 10000] [--test 1000]

OUT must not exist or be empty (nothing is overwritten). Exit status 2 and one ``error:`` line
on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("out")
  parser.add_argument("--train", type=int, default=10000)
  parser.add_argument("--test", type=int, default=1000)
  parser.add_argument("--sigma", type=float, default=1.0)
  args = parser.parse_args(argv)
  from jaxgc.data import gan_images  # pylint: disable=import-outside-toplevel
  try:
    counts = gan_images.write_edges2fmnist(args.out, args.train, args.test, args.sigma)
  except (ValueError, OSError) as e:
    print(f"{os.path.basename(sys.argv[0])}: error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  for split, n in counts.items():
    print(f"{os.path.join(args.out, split)}: {n} AB images (32x64: Canny edges | garment)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
