"""Training: train states, jitted sharded steps, losses and checkpoints (QAT, self-supervised
compression of pruned generators, content relationship distillation with an online
discriminator), and the grain input pipeline (:mod:`jaxgc.data.pipeline`)."""

from jaxgc import _aliases
from jaxgc.train.state_checkpoints import checkpoint_manager
from jaxgc.train.state_checkpoints import restore_latest
from jaxgc.train.state_checkpoints import save_state
from jaxgc.train.crd_step import DistillConfig
from jaxgc.train.crd_step import create_distill_state
from jaxgc.train.crd_step import make_distill_step
from jaxgc.train.feature_nets import FeatureNet
from jaxgc.train.qat_step import QATConfig
from jaxgc.train.qat_step import make_train_step
from jaxgc.train.qat_step import qat_loss
from jaxgc.train.qat_step import quantized_variables
from jaxgc.train.qat_step import sample_latents
from jaxgc.parallel import data_mesh
from jaxgc.parallel import host_metrics
from jaxgc.parallel import replicate
from jaxgc.parallel import shard_batch
from jaxgc.train.selfsup_step import SelfSupConfig
from jaxgc.train.gan_losses import discriminator_loss
from jaxgc.train.gan_losses import generator_loss
from jaxgc.train.gan_losses import reconstruction_loss
from jaxgc.train.selfsup_step import make_train_step as make_selfsup_step
from jaxgc.train.selfsup_step import selfsup_loss
from jaxgc.train.state import TrainState
from jaxgc.train.state import create_train_state


__getattr__ = _aliases.module_getattr(__name__)   # old names, with a DeprecationWarning
