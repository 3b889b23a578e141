"""Converts an NVlabs stylegan2-ada-pytorch StyleGAN2 state dict into a jaxgc model folder.

NVlabs ``.pkl`` network snapshots pickle Python code and are refused (one line naming the
export). Export the state dicts once, with the NVlabs repository on the path:

  with open("network-snapshot.pkl", "rb") as f:
      data = legacy.load_network_pkl(f)
  torch.save(data["G_ema"].state_dict(), "G_ema.pt")
  torch.save(data["D"].state_dict(), "D.pt")

then convert ``G_ema.pt`` (``mapping.fcN``, ``mapping.w_avg``, ``synthesis.bR.*``;
conditional models with ``mapping.embed`` too) or ``D.pt``:

  python scripts/convert_nvlabs_stylegan2_ada.py G_ema.pt runs/afhqdog
  python scripts/convert_nvlabs_stylegan2_ada.py D.pt runs/afhqdog_d

Reads the file without executing pickled code, infers ``stylegan2_generator`` /
``stylegan2_discriminator`` (layout ``nvlabs``) and its widths from the keys, runs it
(generators: ``--samples`` latents of ``--seed``, labels ``i % c_dim`` one-hot for conditional
models), compares with ``jaxgc.convert.torch_refs_stylegan2`` when torch is installed, and writes
``OUTDIR`` (``spec.json``, ``variables/``, ``samples.png`` for generators). ``conv_clamp``
(256 in NVlabs ``train.py``) is not in the state dict and is left off: it only clips
activations beyond +-256. Shares its work with ``convert_rosinality_stylegan2.py``. Exit
status 0, or 2 after one ``error:`` line.

Upstream: NVlabs/stylegan2-ada-pytorch ``training/networks.py``, ``legacy.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

LAYOUT = "nvlabs"
SOURCE = "NVlabs stylegan2-ada-pytorch"


def _shared():
  """The sibling script ``convert_rosinality_stylegan2.py`` (the shared convert and main)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "convert_rosinality_stylegan2.py")
  spec = importlib.util.spec_from_file_location("convert_rosinality_stylegan2", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


_SHARED = _shared()
ARCHS = _SHARED.ARCHS
convert = functools.partial(_SHARED.convert, layout=LAYOUT, source=SOURCE)
convert.__doc__ = ("Converts an NVlabs state dict; see convert_rosinality_stylegan2.convert "
                   "(layout 'nvlabs').")


def main(argv: list[str] | None = None) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  return _SHARED.main(argv, convert, __doc__.split("\n\n")[0],
                      "entry of a dict holding several state dicts (e.g. G_ema)")


if __name__ == "__main__":
  sys.exit(main())
