"""Training: train states, jitted sharded steps, losses and checkpoints (QAT, self-supervised
compression of pruned generators, content relationship distillation with an online
discriminator), and the grain input pipeline (:mod:`jaxgc.train.pipeline`)."""

from jaxgc.train.checkpointing import checkpoint_manager
from jaxgc.train.checkpointing import restore_latest
from jaxgc.train.checkpointing import save_state
from jaxgc.train.distill import DistillConfig
from jaxgc.train.distill import create_distill_state
from jaxgc.train.distill import make_distill_step
from jaxgc.train.features import FeatureNet
from jaxgc.train.qat import QATConfig
from jaxgc.train.qat import make_train_step
from jaxgc.train.qat import qat_loss
from jaxgc.train.qat import quantized_variables
from jaxgc.train.qat import sample_latents
from jaxgc.train.parallel import data_mesh
from jaxgc.train.parallel import host_metrics
from jaxgc.train.parallel import replicate
from jaxgc.train.parallel import shard_batch
from jaxgc.train.selfsup import SelfSupConfig
from jaxgc.train.selfsup import adversarial_loss
from jaxgc.train.selfsup import make_train_step as make_selfsup_step
from jaxgc.train.selfsup import selfsup_loss
from jaxgc.train.state import TrainState
from jaxgc.train.state import create_train_state
