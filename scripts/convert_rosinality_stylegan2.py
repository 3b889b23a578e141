"""Converts a rosinality/stylegan2-pytorch StyleGAN2 checkpoint into a jaxgc model folder.

Reads ``CHECKPOINT`` without executing pickled code: a training checkpoint
``{"g", "d", "g_ema", "g_optim", "d_optim", "args"}`` (``g_ema`` unless ``--key g`` or
``--key d``; ``args``, an ``argparse.Namespace``, is read as plain data) or a bare state dict.
The architecture (``stylegan2_generator`` or ``stylegan2_discriminator``, layout
``rosinality``) and its widths come from the keys; the generator's ``w_avg``, which rosinality
does not store, is computed from 4096 latents of a fixed seed (a ``convert_weight.py`` file's
``latent_avg`` is used instead when present). Runs the model (generators:
``--samples`` latents of ``--seed``, ``--truncation``; discriminators: random images), compares
with the PyTorch reference of ``jaxgc.convert.torch_refs_stylegan2`` when torch is installed,
and writes ``OUTDIR``: ``spec.json``, ``variables/`` (``jaxgc.checkpoint.load_model(OUTDIR)``)
and, for generators, ``samples.png`` (jaxgc row, PyTorch row). Prints the parity figure; exit
status 0, or 2 after one ``error:`` line.

  python scripts/convert_rosinality_stylegan2.py 550000.pt runs/ffhq256
  python scripts/convert_rosinality_stylegan2.py 550000.pt runs/ffhq256_d --key d

Upstream: rosinality/stylegan2-pytorch ``model.py`` (``Generator``, ``Discriminator``),
``train.py`` (the checkpoint's entries).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = ("stylegan2_generator", "stylegan2_discriminator")
LAYOUT = "rosinality"
SOURCE = "rosinality/stylegan2-pytorch"


def parser(description: str, key_help: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  p.add_argument("checkpoint", help="the checkpoint (torch.save file)")
  p.add_argument("outdir", help="the model folder to write (new, empty, or one jaxgc wrote)")
  p.add_argument("--key", default=None, help=key_help)
  p.add_argument("--arch", choices=ARCHS, default=None, help="inferred from the keys if omitted")
  p.add_argument("--samples", type=int, default=8, help="generated samples / test images (>= 1)")
  p.add_argument("--seed", type=int, default=0, help="numpy seed of the latents / test images")
  p.add_argument("--truncation", type=float, default=1.0,
                 help="truncation psi of the samples (1 = none)")
  return p


def convert(checkpoint: str, outdir: str, key: str | None = None, arch: str | None = None,
            samples: int = 8, seed: int = 0, truncation: float = 1.0, layout: str = LAYOUT,
            source: str = SOURCE) -> dict:
  """Converts, checks parity, writes the model folder and (generators) its sample grid.

  Args:
    checkpoint: a ``torch.save`` file of ``layout``'s state dict, or a training checkpoint.
    outdir: the model folder to write.
    key: the checkpoint entry holding the state dict (None: ``g_ema`` if present).
    arch: ``stylegan2_generator`` / ``stylegan2_discriminator``, or None to infer it.
    samples: latents (generators) or random images (discriminators, a multiple of 4 when
      more than 4) to run, >= 1.
    seed: numpy seed of the latents, labels and images.
    truncation: generators' ``truncation_psi``.
    layout: the ``jaxgc.convert.mapping.STYLEGAN2_LAYOUTS`` name the checkpoint must have.
    source: the upstream named in errors.

  Returns:
    ``{"arch", "layout", "kwargs", "params", "parity_max_abs" (None without torch),
    "outdir"}``.

  Raises:
    FileNotFoundError, CheckpointError, ValueError, FileExistsError, PermissionError: bad
      input (another family or layout, a missing ``key``, an NVlabs ``.pkl``; see
      ``jaxgc.convert.load_torch_checkpoint`` and ``jaxgc.checkpoint.save_model``).
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

  if samples < 1:
    raise ValueError(f"--samples must be >= 1, got {samples}")
  folders.check_replaceable(outdir)  # before any work
  obj = jconvert.read_torch_file(checkpoint)
  sd = jconvert.unwrap_state_dict(obj, checkpoint, key)
  module, variables = jconvert.convert_state_dict(sd, arch, source=checkpoint,
                                                  w_avg=jconvert.latent_avg(obj, key))
  name = models.registry.arch_name(module)
  if name not in ARCHS or module.layout != layout:
    got = name + (f" ({module.layout} layout)" if name in ARCHS else "")
    raise jconvert.CheckpointError(f"{checkpoint} is a {got}, not a {source} StyleGAN2 state "
                                   "dict; use `jaxgc convert` or its own script")
  rng = np.random.default_rng(seed)
  generator = name == "stylegan2_generator"
  c = None
  if module.c_dim:
    c = np.eye(module.c_dim, dtype=np.float32)[np.arange(samples) % module.c_dim]
  if generator:
    x = rng.standard_normal((samples, module.z_dim)).astype(np.float32)
    y = np.asarray(jax.jit(module.apply, static_argnames=("noise_mode",))(
        variables, x, c, truncation_psi=truncation))
    described = f"{samples} latents of numpy seed {seed}, truncation {truncation}"
  else:
    s = module.image_size
    x = rng.uniform(-1, 1, (samples, s, s, module.input_nc)).astype(np.float32)
    y = np.asarray(jax.jit(module.apply)(variables, x, c))
    described = f"{samples} uniform random images of numpy seed {seed}"
  rows = [("jaxgc", y)]
  err = None
  if importlib.util.find_spec("torch") is not None:
    # pylint: disable-next=import-outside-toplevel
    from jaxgc.convert import torch_refs_stylegan2 as refs
    net = refs.build_reference(sd, name)
    w_avg = variables.get("buffers", {}).get("mapping", {}).get("w_avg")
    y_ref = refs.run_nhwc(net, x, c, truncation, w_avg)
    err = float(np.max(np.abs(y.astype(np.float64) - y_ref.astype(np.float64))))
    rows.append(("PyTorch reference", y_ref))
  out = folders.save_model(outdir, module, variables, extra={
      "source": os.path.abspath(checkpoint), "key": key, "parity_max_abs": err,
      "parity_inputs": described})
  if generator:
    grid = [(label, inputs.to_uint8(np.clip(imgs, -1, 1))) for label, imgs in rows]
    report.sample_grid(grid, os.path.join(out, folders.SAMPLES_FILE))
    ownership.record(out, [folders.SAMPLES_FILE])
  return {"arch": name, "layout": module.layout, "kwargs": models.model_spec(module)["kwargs"],
          "params": stats.count_params(variables), "parity_max_abs": err, "outdir": out}


def main(argv: list[str] | None = None, convert_fn=None, description: str | None = None,
         key_help: str | None = None) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  args = parser(description or __doc__.split("\n\n")[0],
                key_help or "checkpoint entry: g_ema (default), g or d").parse_args(argv)
  return _common.run(lambda: (convert_fn or convert)(
      args.checkpoint, args.outdir, args.key, args.arch, args.samples, args.seed,
      args.truncation), label="{arch} ({layout})")


if __name__ == "__main__":
  sys.exit(main())
