"""Training: train states, jitted sharded steps, losses and checkpoints (QAT of generators)."""

from jaxgc.train.checkpointing import checkpoint_manager
from jaxgc.train.checkpointing import restore_latest
from jaxgc.train.checkpointing import save_state
from jaxgc.train.qat import QATConfig
from jaxgc.train.qat import data_mesh
from jaxgc.train.qat import make_train_step
from jaxgc.train.qat import qat_loss
from jaxgc.train.qat import quantized_variables
from jaxgc.train.qat import replicate
from jaxgc.train.qat import sample_latents
from jaxgc.train.qat import shard_batch
from jaxgc.train.state import TrainState
from jaxgc.train.state import create_train_state
