"""Converts a pytorch-CycleGAN-and-pix2pix generator (ResNet or U-Net) into a jaxgc model folder.

Reads ``CHECKPOINT`` without executing pickled code, infers the architecture from its keys
(``resnet_generator`` in any layout of ``jaxgc.convert.mapping.RESNET_LAYOUTS``: upstream's
``conv_block`` and the vintage CycleGAN's ``block`` with affine InstanceNorm; or
``unet_generator``), runs it on scikit-image photos, compares it with its PyTorch reference
(``jaxgc.convert.torch_refs``) when torch is installed, and writes ``OUTDIR``: ``spec.json``,
``variables/`` (``jaxgc.checkpoint.load_model(OUTDIR)`` reads them) and ``samples.png``
(inputs, jaxgc outputs, PyTorch outputs). Prints the parity figure; exit status 0, or 2 after
one ``error:`` line.

  python scripts/convert_pytorch_cyclegan_pix2pix.py \\
      ../shared/assets/cyclegan-vintage-resnet9/latest_net_G_A2B.pth runs/vintage
  python scripts/convert_pytorch_cyclegan_pix2pix.py facades_label2photo.pth runs/facades \\
      --size 256

Upstream: junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py`` (``ResnetGenerator``,
``UnetGenerator``); PyPI ``vintagify`` ``generator.py`` for the vintage layout.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = ("resnet_generator", "unet_generator")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("checkpoint", help="a torch.save state_dict of the generator (.pth)")
  p.add_argument("outdir", help="the model folder to write (new, empty, or one jaxgc wrote)")
  p.add_argument("--arch", choices=ARCHS, default=None, help="inferred from the keys if omitted")
  p.add_argument("--size", type=int, default=256,
                 help="side of the sample photos (multiple of 4; of 2**num_downs for a U-Net)")
  p.add_argument("--photos", type=int, default=4, help="number of sample photos (1 to 4)")
  return p


def convert(checkpoint: str, outdir: str, arch: str | None = None, size: int = 256,
            photos: int = 4) -> dict:
  """Converts, checks parity, writes the model folder and its sample grid.

  Returns:
    ``{"arch", "kwargs", "params", "parity_max_abs" (None without torch), "outdir"}``.

  Raises:
    FileNotFoundError, CheckpointError, ValueError, FileExistsError, PermissionError: bad
      input (see ``jaxgc.convert.load_torch_checkpoint`` and ``jaxgc.checkpoint.save_model``).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxgc import checkpoint as folders  # pylint: disable=import-outside-toplevel
  from jaxgc import models  # pylint: disable=import-outside-toplevel
  from jaxgc import report  # pylint: disable=import-outside-toplevel
  from jaxgc import ownership  # pylint: disable=import-outside-toplevel
  from jaxgc import stats  # pylint: disable=import-outside-toplevel
  from jaxgc import convert as jconvert  # pylint: disable=import-outside-toplevel
  from jaxgc.data import inputs  # pylint: disable=import-outside-toplevel

  if not 1 <= photos <= len(inputs.SKIMAGE_PHOTOS):
    raise ValueError(f"--photos must be in [1, {len(inputs.SKIMAGE_PHOTOS)}], got {photos}")
  folders.check_replaceable(outdir)  # before any work
  sd = jconvert.unwrap_state_dict(jconvert.read_torch_file(checkpoint), checkpoint)
  module, variables = jconvert.convert_state_dict(sd, arch, source=checkpoint)
  name = models.registry.arch_name(module)
  if name not in ARCHS:
    raise jconvert.CheckpointError(
        f"{checkpoint} is a {name}, not a pytorch-CycleGAN-and-pix2pix generator "
        f"({', '.join(ARCHS)}); use `jaxgc convert` or its own script")
  side = 2**getattr(module, "num_downs", 2)
  if size < side or size % side:
    raise ValueError(f"--size must be a positive multiple of {side} for this {name}, got {size}")
  x = inputs.photo_batch(inputs.SKIMAGE_PHOTOS[:photos], size=size)
  y = np.asarray(jax.jit(module.apply)(variables, x))
  rows = [("input", inputs.to_uint8(x)), ("jaxgc", inputs.to_uint8(y))]
  err = None
  if importlib.util.find_spec("torch") is not None:
    from jaxgc.convert import torch_refs  # pylint: disable=import-outside-toplevel
    err = torch_refs.parity(y, sd, x, name)
    rows.append(("PyTorch reference", inputs.to_uint8(torch_refs.forward_nhwc(
        torch_refs.build_reference(sd, name), x))))
  out = folders.save_model(outdir, module, variables, extra={
      "source": os.path.abspath(checkpoint), "parity_max_abs": err,
      "parity_inputs": f"{photos} scikit-image photos {size}x{size}"})
  report.sample_grid(rows, os.path.join(out, folders.SAMPLES_FILE))
  ownership.record(out, [folders.SAMPLES_FILE])
  return {"arch": name, "kwargs": models.model_spec(module)["kwargs"],
          "params": stats.count_params(variables), "parity_max_abs": err, "outdir": out}


def main(argv: list[str] | None = None) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  args = _parser().parse_args(argv)
  return _common.run(lambda: convert(args.checkpoint, args.outdir, args.arch, args.size,
                                     args.photos))


if __name__ == "__main__":
  sys.exit(main())
