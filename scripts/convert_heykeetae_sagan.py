"""Converts a heykeetae/Self-Attention-GAN SAGAN (generator or discriminator) into a jaxgc model
folder.

Reads ``CHECKPOINT`` (``{N}_G.pth`` / ``{N}_D.pth`` of upstream ``trainer.py``: a state_dict,
possibly ``module.``-prefixed) without executing pickled code, infers ``sagan_generator`` or
``sagan_discriminator`` from its keys, folds spectral normalisation into the weights as
upstream's first forward call after loading computes it (``jaxgc.convert.spectral``), compares
the result with its PyTorch reference (``jaxgc.convert.torch_refs_sagan``) when torch is
installed, and writes ``OUTDIR``: ``spec.json``, ``variables/`` (``jaxgc.checkpoint.load_model``
reads them) and ``samples.png`` (generator: jaxgc and PyTorch images of fixed latents;
discriminator: the photos it scored). Prints the parity figure; exit status 0, or 2 after one
``error:`` line.

  python scripts/convert_heykeetae_sagan.py models/sagan_celeb/100000_G.pth runs/sagan_G

Upstream: heykeetae/Self-Attention-GAN ``sagan_models.py`` and ``spectral.py`` (keys
``l1.0.module.weight_bar``, ``weight_u``, ``weight_v``; the ``"heykeetae"`` row of
``jaxgc.convert.mapping.SPECTRAL_LAYOUTS``). 64x64, its only working size.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = ("sagan_generator", "sagan_discriminator")
LAYOUT = "heykeetae"
OTHER_SCRIPT = "scripts/convert_studiogan.py"


def _parser(doc: str = __doc__) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  p.add_argument("checkpoint", help="a torch.save state_dict of the generator or discriminator")
  p.add_argument("outdir", help="the model folder to write (new, empty, or one jaxgc wrote)")
  p.add_argument("--arch", choices=ARCHS, default=None, help="inferred from the keys if omitted")
  p.add_argument("--samples", type=int, default=8, help="latents in the sample grid (1 to 16)")
  p.add_argument("--seed", type=int, default=0, help="seed of the sample latents")
  return p


def convert(checkpoint: str, outdir: str, arch: str | None = None, samples: int = 8,
            seed: int = 0, layout: str = LAYOUT, other_script: str = OTHER_SCRIPT,
            precheck=None) -> dict:
  """Converts, checks parity, writes the model folder and its sample grid.

  Args:
    checkpoint: the ``torch.save`` file.
    outdir: the model folder to write.
    arch: ``"sagan_generator"``, ``"sagan_discriminator"`` or None (inferred).
    samples: generator latents ``[samples, z_dim]`` drawn N(0, 1) with ``seed`` (1 to 16).
    seed: their seed.
    layout: the ``SPECTRAL_LAYOUTS`` row this script converts.
    other_script: the script to name for the other layout.
    precheck: None, or ``f(state_dict, checkpoint)`` that raises on keys this source refuses.

  Returns:
    ``{"arch", "layout", "kwargs", "params", "parity_max_abs" (None without torch),
    "outdir"}``.

  Raises:
    FileNotFoundError, CheckpointError, ValueError, FileExistsError, PermissionError: bad
      input (see ``jaxgc.convert.load_torch_checkpoint`` and ``jaxgc.checkpoint.save_model``).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxgc import checkpoint as folders  # pylint: disable=import-outside-toplevel
  from jaxgc import convert as jconvert  # pylint: disable=import-outside-toplevel
  from jaxgc import models  # pylint: disable=import-outside-toplevel
  from jaxgc import ownership  # pylint: disable=import-outside-toplevel
  from jaxgc import report  # pylint: disable=import-outside-toplevel
  from jaxgc import stats  # pylint: disable=import-outside-toplevel
  from jaxgc.convert import mapping  # pylint: disable=import-outside-toplevel
  from jaxgc.data import inputs  # pylint: disable=import-outside-toplevel

  if not 1 <= samples <= 16:
    raise ValueError(f"--samples must be in [1, 16], got {samples}")
  folders.check_replaceable(outdir)  # before any work
  sd = jconvert.unwrap_state_dict(jconvert.read_torch_file(checkpoint), checkpoint)
  if precheck is not None:
    precheck(sd, checkpoint)
  found = mapping.spectral_layout(sd)
  if found is not None and found != layout:
    raise jconvert.CheckpointError(
        f"{checkpoint} holds spectral norm in the {found!r} layout "
        f"({mapping.SPECTRAL_LAYOUTS[found].weight} keys), not {layout!r}: use {other_script}")
  module, variables = jconvert.convert_state_dict(sd, arch, source=checkpoint)
  name = models.registry.arch_name(module)
  if name not in ARCHS:
    raise jconvert.CheckpointError(f"{checkpoint} is a {name}, not a SAGAN ({', '.join(ARCHS)});"
                                   " use `jaxgc convert` or its own script")
  if name == "sagan_generator":
    x = inputs.latents(samples, module.z_dim, seed)
  else:
    x = inputs.photo_batch(size=64)
  y = np.asarray(jax.jit(module.apply)(variables, x))
  rows = ([("jaxgc", inputs.to_uint8(y))] if name == "sagan_generator"
          else [("scored photos", inputs.to_uint8(x))])
  err = None
  if importlib.util.find_spec("torch") is not None:
    from jaxgc.convert import torch_refs_sagan  # pylint: disable=import-outside-toplevel
    y_ref = torch_refs_sagan.forward_nhwc(torch_refs_sagan.build_reference(sd, name), x)
    err = float(np.max(np.abs(y.astype(np.float64) - y_ref)))
    if name == "sagan_generator":
      rows.append(("PyTorch reference", inputs.to_uint8(y_ref)))
  what = (f"{samples} latents N(0, 1), seed {seed}" if name == "sagan_generator"
          else f"{len(x)} scikit-image photos 64x64")
  out = folders.save_model(outdir, module, variables, extra={
      "source": os.path.abspath(checkpoint), "spectral_layout": layout,
      "parity_max_abs": err, "parity_inputs": what})
  report.sample_grid(rows, os.path.join(out, folders.SAMPLES_FILE), cell=64)
  ownership.record(out, [folders.SAMPLES_FILE])
  return {"arch": name, "layout": layout, "kwargs": models.model_spec(module)["kwargs"],
          "params": stats.count_params(variables), "parity_max_abs": err, "outdir": out}


def main(argv: list[str] | None = None, convert_fn=convert, doc: str = __doc__) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  args = _parser(doc).parse_args(argv)
  return _common.run(
      lambda: convert_fn(args.checkpoint, args.outdir, args.arch, args.samples, args.seed),
      label="{arch} ({layout} layout)", parity_what="the PyTorch reference's first call")


if __name__ == "__main__":
  sys.exit(main())
