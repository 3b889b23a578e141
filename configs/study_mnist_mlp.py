"""The precision/recall trade-off of the MNIST MLP generator: weight bits x activation bits x
clipping, in LeNet-5 feature space, against the FP32 model's samples and 10,000 real digits.

  JAXGC_ASSETS=../shared/assets jaxgc study --config configs/study_mnist_mlp.py \
      --workdir runs/study_mnist_mlp
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoint = "mnist-mlpgan/G--300.ckpt"
  c.weight_bits = (8, 6, 4, 3, 2)
  c.act_bits = (32, 8, 4)
  c.clips = ("none", "percentile:99.9", "std:3")
  c.num_samples = 2000
  c.extractor = "lenet5"
  c.batch_size = 500
  c.real_reference = ml_collections.ConfigDict({"path": "mnist10k/mnist10k_uint8.npz",
                                                "limit": 10000})
  return c
