"""Converts a SAGAN saved with ``torch.nn.utils.spectral_norm`` the way PyTorch-StudioGAN saves
models into a jaxgc model folder.

Reads ``CHECKPOINT`` without executing pickled code: a StudioGAN checkpoint
(``{"state_dict": ..., "optimizer": ..., "step": ..., "best_fid": ...}``, e.g.
``model=G-best-weights-step=N.pth``) or a bare state_dict, ``module.``-prefixed or not, of the
heykeetae/Self-Attention-GAN architecture (``l1`` .. ``l4``, ``attn1``, ``attn2``, ``last``)
whose spectrally normalised layers hold ``weight_orig``, ``weight_u``, ``weight_v`` (the
``"torch"`` row of ``jaxgc.convert.mapping.SPECTRAL_LAYOUTS``: ``eps=1e-6`` as StudioGAN's
``snconv2d`` / ``sndeconv2d``, ``dim=1`` for transposed convolutions). The converted forward
equals the PyTorch module's in ``eval()`` mode, which uses the stored vectors. Writes
``OUTDIR`` as ``scripts/convert_heykeetae_sagan.py`` does; exit status 0, or 2 after one
``error:`` line.

  python scripts/convert_studiogan.py model=G-best-weights-step=100000.pth runs/sagan_sn

StudioGAN's own SAGAN and BigGAN networks (``src/models/resnet.py``, ``big_resnet.py``: keys
``linear0``, ``blocks.N.M.conv2d1``, attention ``conv1x1_theta``) are other architectures,
which jaxgc does not convert: refused in one line.

Upstream: POSTECH-CVLab/PyTorch-StudioGAN ``src/utils/ops.py`` (spectral norm) and
``src/utils/ckpt.py`` (checkpoint keys); ``torch/nn/utils/spectral_norm.py``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_heykeetae_sagan as base  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = base.ARCHS
# Keys of StudioGAN's own generators and discriminators (ResNet / BigGAN families).
STUDIOGAN_OWN = ("linear0.", "blocks.", "conv2d5.", "linear1.")


def refuse_studiogan_own(sd: dict, checkpoint: str) -> None:
  """Raises CheckpointError for StudioGAN's own architectures, naming their keys."""
  from jaxgc.convert import CheckpointError  # pylint: disable=import-outside-toplevel
  own = sorted(k for k in sd if k.startswith(STUDIOGAN_OWN))
  if own:
    raise CheckpointError(
        f"{checkpoint} is one of StudioGAN's own ResNet/BigGAN networks (keys {', '.join(own[:3])}"
        f", ...), which jaxgc does not convert; this script reads the heykeetae SAGAN "
        "architecture (l1..l4, attn1, attn2, last) saved with torch.nn.utils.spectral_norm")


def convert(checkpoint: str, outdir: str, arch: str | None = None, samples: int = 8,
            seed: int = 0) -> dict:
  """``convert_heykeetae_sagan.convert`` for the ``"torch"`` spectral-norm layout.

  Returns:
    ``{"arch", "layout", "kwargs", "params", "parity_max_abs" (None without torch),
    "outdir"}``.

  Raises:
    FileNotFoundError, CheckpointError, ValueError, FileExistsError, PermissionError: bad
      input, StudioGAN's own architectures and the heykeetae layout included.
  """
  return base.convert(checkpoint, outdir, arch, samples, seed, layout="torch",
                      other_script="scripts/convert_heykeetae_sagan.py",
                      precheck=refuse_studiogan_own)


def main(argv: list[str] | None = None) -> int:
  """Runs the script; returns 0, or 2 after one ``error:`` line on stderr."""
  return base.main(argv, convert_fn=convert, doc=__doc__)


if __name__ == "__main__":
  sys.exit(main())
