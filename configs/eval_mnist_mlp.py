"""The MNIST MLP generator against 10,000 real MNIST digits, in LeNet-5 feature space.

  JAXGC_ASSETS=../shared/assets jaxgc evaluate --config configs/eval_mnist_mlp.py \
      --workdir runs/eval_mnist_mlp
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.generators = ("mnist-mlpgan/G--300.ckpt",)
  c.reference = ml_collections.ConfigDict({"kind": "images",
                                           "path": "mnist10k/mnist10k_uint8.npz",
                                           "limit": 10000})
  c.num_samples = 10000
  c.extractor = "lenet5"
  c.batch_size = 1000
  return c
