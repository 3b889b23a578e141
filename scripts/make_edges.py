"""Make the edges -> Fashion-MNIST pix2pix data set: AB images (edges | garment) for `jaxgc gan`.

Each Fashion-MNIST garment is padded from 28x28 to 32x32 with black, its edges found with
scikit-image's Canny detector (``skimage.feature.canny``, Gaussian ``sigma`` 1 by default, the
default hysteresis thresholds) and written as one 64x32 grayscale PNG: the edge map A
(white edges on black) on the left, the garment B on the right, the aligned layout of
pytorch-CycleGAN-and-pix2pix (``datasets/combine_A_and_B.py``). The first ``--train`` images
of the training split go to ``OUT/train/`` and the first ``--test`` of the test split to
``OUT/test/``. Deterministic: the same arguments give the same files.

  JAXGC_ASSETS=../shared/assets python scripts/make_edges.py OUT [--train 10000] [--test 1000]

OUT must not exist or be empty (nothing is overwritten). Exit status 2 and one ``error:`` line
on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image


def edges_ab(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
  """uint8 ``[n, 28, 28]`` garments -> uint8 ``[n, 32, 64]`` AB images (Canny edges | garment).

  Args:
    images: Fashion-MNIST images, uint8 ``[n, 28, 28]``.
    sigma: standard deviation of Canny's Gaussian smoothing.
  """
  from skimage.feature import canny  # pylint: disable=import-outside-toplevel
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
  edges = np.stack([canny(im.astype(np.float64) / 255.0, sigma=sigma) for im in padded])
  return np.concatenate([edges.astype(np.uint8) * 255, padded], axis=2)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("out")
  parser.add_argument("--train", type=int, default=10000)
  parser.add_argument("--test", type=int, default=1000)
  parser.add_argument("--sigma", type=float, default=1.0)
  args = parser.parse_args(argv)
  try:
    from jaxgc.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
    from jaxgc.data import reference  # pylint: disable=import-outside-toplevel
    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
      raise ValueError(f"{args.out} exists and is not an empty folder; name a new one")
    if args.train < 1 or args.test < 1 or not args.sigma > 0:
      raise ValueError(f"--train and --test must be >= 1 and --sigma > 0, got {args.train}, "
                       f"{args.test}, {args.sigma}")
    for split, file, n in (("train", "train-images-idx3-ubyte.gz", args.train),
                           ("test", "t10k-images-idx3-ubyte.gz", args.test)):
      images = reference.read_idx(inputs_lib.resolve_asset(f"fashion-mnist/{file}"))[:n]
      folder = os.path.join(args.out, split)
      os.makedirs(folder, exist_ok=True)
      for i, ab in enumerate(edges_ab(images, args.sigma)):
        Image.fromarray(ab).save(os.path.join(folder, f"{i:05d}.png"))
      print(f"{folder}: {len(images)} AB images (32x64: Canny edges | garment)")
  except (ValueError, OSError) as e:
    print(f"{os.path.basename(sys.argv[0])}: error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
