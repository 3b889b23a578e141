"""FID through jaxgc's Flax Inception equals FID through the TorchScript network's features.

300 Fashion-MNIST vs 300 MNIST images from ``$JAXGC_ASSETS``, resized to 299x299 the same way
for both networks (``resize_images``), so the only difference is the network itself.
"""

import numpy as np
import pytest

from conftest import require_asset
from jaxgc.data import reference as data_lib
from jaxgc.eval import fid_inception as inc
from jaxgc.eval import metrics

torch = pytest.importorskip("torch", reason="torch is needed for the TorchScript reference")

N = 300


@pytest.fixture(scope="module")
def assets():
  return {"ts": str(require_asset("fid-inception-v3/inception-2015-12-05.torchscript.pt")),
          "fashion": str(require_asset("fashion-mnist/t10k-images-idx3-ubyte.gz")),
          "mnist": str(require_asset("mnist10k/mnist10k_uint8.npz"))}


def test_fid_flax_equals_fid_torchscript(assets, tmp_path):
  fashion = data_lib.load_images(assets["fashion"], limit=N, seed=0)
  mnist = data_lib.load_images(assets["mnist"], limit=N, seed=0)
  assert fashion.shape == mnist.shape == (N, 28, 28, 1)
  variables = inc.load_inception(cache_dir=tmp_path, torchscript_path=assets["ts"])
  net = torch.jit.load(assets["ts"], map_location="cpu").eval()

  def torch_features(images):
    pixels = inc.resize_images(images, "clean")  # float32 [n, 299, 299, 3] in [0, 255]
    out = []
    with torch.no_grad():
      for i in range(0, len(pixels), 50):
        x = torch.from_numpy(((pixels[i:i + 50] - 128.0) / 128.0).transpose(0, 3, 1, 2).copy())
        out.append(net(x).numpy())
    return np.concatenate(out).astype(np.float64)

  jf = [inc.inception_features(x, batch_size=50, resize="clean", variables=variables,
                               progress=False) for x in (fashion, mnist)]
  tf = [torch_features(x) for x in (fashion, mnist)]
  fid_jax = metrics.fid(jf[0], jf[1])
  fid_torch = metrics.fid(tf[0], tf[1])
  print(f"FID Fashion-MNIST vs MNIST (n={N}): jaxgc {fid_jax:.4f}, TorchScript {fid_torch:.4f}")
  assert fid_torch > 50  # two different data sets: a large distance, so the check means something
  assert abs(fid_jax - fid_torch) <= 0.1
