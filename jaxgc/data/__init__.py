"""Data every layer above reads: job inputs, reference image sets, the grain input pipeline.

:mod:`jaxgc.data.inputs` (scikit-image photos, seeded latents, ``$JAXGC_ASSETS`` paths, uint8
conversion), :mod:`jaxgc.data.reference` (image folders, ``.npz`` and IDX arrays for the metrics),
:mod:`jaxgc.data.pipeline` (CycleGAN / pix2pix folders and photo crops as a deterministic, sharded
grain ``MapDataset``).
"""

from jaxgc.data.inputs import latents
from jaxgc.data.inputs import photo_batch
from jaxgc.data.inputs import resolve_asset
from jaxgc.data.inputs import to_uint8
from jaxgc.data.reference import load_images
from jaxgc.data.reference import read_idx
