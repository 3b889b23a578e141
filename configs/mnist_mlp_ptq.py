"""Post-training compression of the MNIST MLP generator, with distribution metrics per setting.

Every row also gets FID, KID, k-NN precision/recall, density/coverage and LSH precision/recall
of 2000 samples against 2000 samples of the FP32 generator (other latents), in LeNet-5 space.

  JAXGC_ASSETS=../shared/assets jaxgc compress --config configs/mnist_mlp_ptq.py \
      --workdir runs/mnist_mlp_ptq
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoint = "mnist-mlpgan/G--300.ckpt"
  c.arch = "mlp_generator"
  c.inputs = ml_collections.ConfigDict({"num_samples": 16, "seed": 0})
  c.sample_cell = 56
  c.metrics = ml_collections.ConfigDict({"enabled": True, "extractor": "lenet5",
                                         "num_samples": 2000, "batch_size": 500})
  return c
