"""LeNet-5 MNIST feature extractor: conversion, parity with PyTorch, accuracy on real digits."""

import numpy as np
import pytest

from conftest import require_asset
from jaxgc.convert import load_torch_checkpoint

torch = pytest.importorskip("torch", reason="torch is needed for the PyTorch reference")
from jaxgc.convert import torch_refs_zoo  # noqa: E402


@pytest.fixture(scope="module")
def assets():
  return {"lenet": str(require_asset("mnist-lenet5/lenet5_mnist.pth")),
          "mnist": str(require_asset("mnist10k/mnist10k_uint8.npz"))}


def test_lenet5_parity_and_accuracy(assets):
  module, variables = load_torch_checkpoint(assets["lenet"])
  assert type(module).__name__ == "LeNet5"
  data = np.load(assets["mnist"])
  images, labels = data["images"][:1000], data["labels"][:1000]
  from jaxgc.eval.extractors import lenet5_preprocess
  x = np.asarray(lenet5_preprocess(images))
  assert x.shape == (1000, 32, 32, 1) and 0.0 <= x.min() and x.max() <= 1.0
  ref = torch_refs_zoo.build_reference(torch_refs_zoo.load_state_dict_file(assets["lenet"]))
  with torch.no_grad():
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    t_logp = ref(xt).numpy()
    t_feat = ref.fc.relu6(ref.fc.f6(ref.convnet(xt).reshape(len(x), -1))).numpy()
  j_logp = np.asarray(module.apply(variables, x))
  j_feat = np.asarray(module.apply(variables, x, method=module.features))
  np.testing.assert_allclose(j_logp, t_logp, atol=1e-4)
  np.testing.assert_allclose(j_feat, t_feat, atol=1e-4)
  # The assets README states 99.6% on mnist10k; on these 1000 digits it must be >= 99%.
  assert (j_logp.argmax(-1) == labels).mean() >= 0.99
