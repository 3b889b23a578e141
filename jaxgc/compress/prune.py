"""Pruning masks: scores, granularities, sparsity distributions and schedules, and an optax transform.

This module is the public face of five smaller ones, one step each: :mod:`~jaxgc.compress.prune_config`
(settings), :mod:`~jaxgc.compress.prune_schedules` (when and how much), :mod:`~jaxgc.compress.prune_scores`
(what first), :mod:`~jaxgc.compress.prune_masks` (masks) and :mod:`~jaxgc.compress.prune_optax`
(the optax transformations).

A *pruning* mask is a pytree with the structure of the parameters: a boolean array of the leaf's
shape for every pruned leaf (``True`` = keep) and ``None`` for every other leaf (jaxpruner
``mask_calculator.py``). Which leaves are pruned is decided by regexes on "/"-joined paths
(:mod:`jaxgc.compress.selection`); what is pruned within a leaf is decided in four steps, one
function each:

1. a *score* per weight (:func:`compute_scores`): magnitude ``|w|``, random, or first-order
   Taylor saliency ``|w * dL/dw|``; low scores are pruned first;
2. a *sparsity* per leaf (:func:`target_sparsities`): the same everywhere (``"uniform"``) or
   Erdos-Renyi-Kernel (``"erk"``, Evci et al. 2020, :func:`erk_sparsities`);
3. a *granularity* (:func:`compute_masks`): single weights (``"unstructured"``), N of every M
   consecutive input channels (``"n:m"``), or whole output filters (``"channel"``);
4. a *schedule* over training steps (:func:`sparsity_at`): one shot, iterative, or the
   polynomial schedule of Zhu and Gupta 2017.

:func:`pruning` puts the four together as an optax transformation that keeps the masks in its
state and masks the parameters after every update (jaxpruner ``base_updater.py: wrap_optax``).

Ranking is exact: a leaf of ``size`` weights at sparsity ``s`` loses exactly
``floor(s * size + 1/2)`` weights (filters for ``"channel"``), ties broken by position (the
earlier weight is pruned first), so the achieved sparsity is within ``1 / (2 size)`` of ``s``
whatever the scores. With the ``"layer"`` scope at least one weight (one filter) of every leaf is
kept.

Kernel layout: conv and transposed-conv kernels ``[kh, kw, in, out]``, dense kernels
``[in, out]``: the input channel is axis -2, the output channel (filter) axis -1. Channel masks
zero a filter's kernel weights only; its bias, and the scale and bias of a norm that follows,
still add a constant to that channel: removing the channel from the network is a separate step.

Example, gradual magnitude pruning to 80% over steps 1000-5000 of fine-tuning::

  config = PruneConfig(0.8, schedule="polynomial", begin_step=1000, end_step=5000,
                       frequency=100, exclude="conv_in|conv_out")
  tx = optax.chain(optax.adam(1e-4), pruning(config))   # pruning last
  state = create_train_state(variables["params"], tx)   # masks live in the optax state
"""

from jaxgc.compress.prune_config import DEFAULT_INCLUDE
from jaxgc.compress.prune_config import DISTRIBUTIONS
from jaxgc.compress.prune_config import GRANULARITIES
from jaxgc.compress.prune_config import NORMS
from jaxgc.compress.prune_config import PruneConfig
from jaxgc.compress.prune_config import SCHEDULES
from jaxgc.compress.prune_config import SCOPES
from jaxgc.compress.prune_config import SCORES
from jaxgc.compress.prune_masks import apply_masks
from jaxgc.compress.prune_masks import compute_masks
from jaxgc.compress.prune_masks import mask_sparsity
from jaxgc.compress.prune_optax import PruneState
from jaxgc.compress.prune_optax import keep_masks
from jaxgc.compress.prune_optax import pruning
from jaxgc.compress.prune_schedules import erk_sparsities
from jaxgc.compress.prune_schedules import is_update_step
from jaxgc.compress.prune_schedules import sparsity_at
from jaxgc.compress.prune_schedules import target_sparsities
from jaxgc.compress.prune_scores import compute_scores
