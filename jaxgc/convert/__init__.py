"""PyTorch checkpoints -> Flax modules and variables, with key and shape checks both ways."""

from jaxgc.convert.convert import convert_state_dict
from jaxgc.convert.convert import latent_avg
from jaxgc.convert.convert import load_torch_checkpoint
from jaxgc.convert.mapping import infer_arch
from jaxgc.convert.torch_io import CheckpointError
from jaxgc.convert.torch_io import read_torch_file
from jaxgc.convert.torch_io import unwrap_state_dict
from jaxgc.convert.nnx_bridge import from_nnx
from jaxgc.convert.nnx_bridge import to_nnx
