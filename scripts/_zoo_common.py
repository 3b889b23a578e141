"""The shared work of the conversion scripts whose PyTorch references live in
``jaxgc.convert.torch_refs_zoo``: ``convert_gan_compression.py``, ``convert_dcgan_tutorial.py``
and ``convert_csinva_mnist.py``.

Each script names its architectures and calls ``main``: read the checkpoint without executing
pickled code, convert it (``jaxgc.convert.convert_state_dict``, the architecture inferred from
the keys), run it on inputs of its kind, compare with the PyTorch reference when torch is
installed, write the model folder (``spec.json``, ``variables/``, ``samples.png`` recorded in
the folder's manifest) and print the result; exit status 0, or 2 after one ``error:`` line.

Inputs by the module's kind: image-to-image generators get scikit-image photos;
unconditional generators N(0, 1) latents of ``--seed``; discriminators and classifiers MNIST
digits: evenly spaced through ``$JAXGC_ASSETS/mnist10k/mnist10k_uint8.npz`` (sorted by
class) when it is there, else
uniform noise images of ``--seed`` (said in ``spec.json``'s ``parity_inputs``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  pylint: disable=wrong-import-position

MNIST10K = "mnist10k/mnist10k_uint8.npz"


def _parser(doc: str, archs: tuple[str, ...], photos: bool) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  p.add_argument("checkpoint", help="a torch.save state_dict (or a dict holding one)")
  p.add_argument("outdir", help="the model folder to write (new, empty, or one jaxgc wrote)")
  p.add_argument("--arch", choices=archs, default=None, help="inferred from the keys if omitted")
  p.add_argument("--samples", type=int, default=4 if photos else 8,
                 help="inputs in the sample grid (photos: 1 to 4; latents, digits: 1 to 16)")
  p.add_argument("--seed", type=int, default=0, help="seed of the latents (or noise images)")
  if photos:
    p.add_argument("--size", type=int, default=256, help="side of the photos (multiple of 4)")
  return p


def _digits(n: int, seed: int) -> tuple:
  """``n`` uint8 digits ``[n, 28, 28]`` and their description."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxgc.data import inputs  # pylint: disable=import-outside-toplevel
  root = inputs.assets_dir()
  path = os.path.join(root, MNIST10K) if root else None
  if path and os.path.isfile(path):
    images = np.load(path)["images"]  # sorted by class: take them evenly spaced
    pick = np.linspace(0, len(images) - 1, n).round().astype(int)
    return images[pick], f"{n} digits evenly spaced through $JAXGC_ASSETS/{MNIST10K}"
  u8 = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
  return u8, f"{n} uniform noise images 28x28, seed {seed} (no $JAXGC_ASSETS/{MNIST10K})"


def _inputs(module, samples: int, seed: int, size: int) -> tuple:
  """(inputs of the module's kind, their [-1, 1] images for the grid or None, description)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxgc.data import inputs  # pylint: disable=import-outside-toplevel
  from jaxgc.eval import extractors  # pylint: disable=import-outside-toplevel
  if module.kind == "image_to_image":
    if not 1 <= samples <= len(inputs.SKIMAGE_PHOTOS):
      raise ValueError(f"--samples must be in [1, {len(inputs.SKIMAGE_PHOTOS)}], got {samples}")
    if size < 4 or size % 4:
      raise ValueError(f"--size must be a positive multiple of 4, got {size}")
    x = inputs.photo_batch(inputs.SKIMAGE_PHOTOS[:samples], size=size)
    return x, x, f"{samples} scikit-image photos {size}x{size}"
  if not 1 <= samples <= 16:
    raise ValueError(f"--samples must be in [1, 16], got {samples}")
  if module.kind == "unconditional":
    return inputs.latents(samples, module.z_dim, seed), None, \
        f"{samples} latents N(0, 1), seed {seed}"
  u8, what = _digits(samples, seed)
  if module.kind == "classifier":  # LeNet-5: 32x32 in [0, 1]
    x = np.asarray(extractors.lenet5_preprocess(u8))
    return x, 2.0 * x - 1.0, what + ", resized to 32x32 in [0, 1]"
  x = (u8.astype(np.float32) / 127.5 - 1.0)[..., None]
  return x, x, what + " in [-1, 1]"


def convert(checkpoint: str, outdir: str, arch: str | None = None, samples: int = 8,
            seed: int = 0, size: int = 256, *, archs: tuple[str, ...], family: str) -> dict:
  """Converts, checks parity, writes the model folder and its sample grid.

  Args:
    checkpoint: the ``torch.save`` file.
    outdir: the model folder to write.
    arch: one of ``archs`` or None (inferred).
    samples, seed, size: the inputs (see the module docstring).
    archs: the architectures the calling script converts.
    family: how the script's source is named in errors.

  Returns:
    ``{"arch", "kwargs", "params", "parity_max_abs" (None without torch), "outdir"}``, plus
    ``"outputs"`` for discriminators (their probabilities) and classifiers (predicted labels).

  Raises:
    FileNotFoundError, CheckpointError, ValueError, FileExistsError, PermissionError: bad
      input (see ``jaxgc.convert.read_torch_file`` and ``jaxgc.checkpoint.save_model``).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxgc import checkpoint as folders  # pylint: disable=import-outside-toplevel
  from jaxgc import convert as jconvert  # pylint: disable=import-outside-toplevel
  from jaxgc import models  # pylint: disable=import-outside-toplevel
  from jaxgc import ownership  # pylint: disable=import-outside-toplevel
  from jaxgc import report  # pylint: disable=import-outside-toplevel
  from jaxgc import stats  # pylint: disable=import-outside-toplevel
  from jaxgc.data import inputs  # pylint: disable=import-outside-toplevel

  folders.check_replaceable(outdir)  # before any work
  sd = jconvert.unwrap_state_dict(jconvert.read_torch_file(checkpoint), checkpoint)
  module, variables = jconvert.convert_state_dict(sd, arch, source=checkpoint)
  name = models.registry.arch_name(module)
  if name not in archs:
    raise jconvert.CheckpointError(
        f"{checkpoint} is a {name}, not a {family} network ({', '.join(archs)}); use "
        "`jaxgc convert` or its own script")
  x, shown, what = _inputs(module, samples, seed, size)
  y = np.asarray(jax.jit(module.apply)(variables, x))
  image_out = y.ndim == 4 and module.kind in ("image_to_image", "unconditional")
  rows = [] if shown is None else [("input", inputs.to_uint8(shown))]
  extra = {}
  if image_out:
    rows.append(("jaxgc", inputs.to_uint8(y)))
  elif module.kind == "classifier":
    extra["outputs"] = [int(i) for i in np.argmax(y, -1)]
    rows[0] = (f"input\njaxgc labels {extra['outputs']}", rows[0][1])
  else:
    extra["outputs"] = [round(float(p), 4) for p in y.reshape(len(y), -1).mean(-1)]
    rows[0] = ("input\njaxgc D(x) mean " + f"{np.mean(extra['outputs']):.3f}", rows[0][1])
  err = None
  if importlib.util.find_spec("torch") is not None:
    from jaxgc.convert import torch_refs_zoo  # pylint: disable=import-outside-toplevel
    y_ref = torch_refs_zoo.forward(torch_refs_zoo.build_reference(sd, name), name, x)
    if y_ref.shape != y.shape:
      raise ValueError(f"outputs of shape {y.shape}, the PyTorch reference's {y_ref.shape}")
    err = float(np.max(np.abs(y.astype(np.float64) - y_ref.astype(np.float64))))
    if image_out:
      rows.append(("PyTorch reference", inputs.to_uint8(y_ref)))
  out = folders.save_model(outdir, module, variables, extra={
      "source": os.path.abspath(checkpoint), "parity_max_abs": err, "parity_inputs": what})
  cell = 128 if max(img.shape[1] for _, img in rows) > 64 else 64
  report.sample_grid(rows, os.path.join(out, folders.SAMPLES_FILE), cell=cell)
  ownership.record(out, [folders.SAMPLES_FILE])
  return {"arch": name, "kwargs": models.model_spec(module)["kwargs"],
          "params": stats.count_params(variables), "parity_max_abs": err, "outdir": out,
          **extra}


def main(argv: list[str] | None, doc: str, archs: tuple[str, ...], family: str,
         photos: bool = False) -> int:
  """Runs a script; returns 0, or 2 after one ``error:`` line on stderr.

  Args:
    argv: the command line (None: ``sys.argv[1:]``).
    doc: the script's docstring (its first paragraph describes the command).
    archs: the architectures it converts.
    family: its source, as named in errors.
    photos: its generators take photos (adds ``--size``).
  """
  args = _parser(doc, archs, photos).parse_args(argv)
  return _common.run(lambda: convert(args.checkpoint, args.outdir, args.arch, args.samples,
                                     args.seed, getattr(args, "size", 256), archs=archs,
                                     family=family))
