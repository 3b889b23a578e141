"""FID Inception-v3: parity with the TorchScript network, the torch-free cache, resize modes.

The weights come from ``$JAXGC_ASSETS/fid-inception-v3/inception-2015-12-05.torchscript.pt``:
tests needing them skip when ``JAXGC_ASSETS`` is unset and fail naming the path when it is set
but the file is missing. The conversion runs once per module, into a temporary cache folder.
Inception costs ~6 GFLOPs per image, so image counts are kept small; the feature batches all
use ``batch_size=4`` so that one compiled function serves every test.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from jaxgc.eval import fid_inception as inc
from jaxgc.models.inception import FIDInceptionV3

REPO = pathlib.Path(__file__).resolve().parent.parent
ASSET = "fid-inception-v3/inception-2015-12-05.torchscript.pt"
BATCH = 4
TOL = 1e-3  # max abs difference of features (values up to ~6) between JAX and TorchScript


@pytest.fixture(scope="module")
def torchscript_path() -> pathlib.Path:
  root = os.environ.get("JAXGC_ASSETS")
  if not root:
    pytest.skip("JAXGC_ASSETS is unset: the FID Inception TorchScript asset is not available")
  path = pathlib.Path(root) / ASSET
  if not path.is_file():
    pytest.fail(f"JAXGC_ASSETS is set but the asset is missing: {path}")
  return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, torchscript_path) -> pathlib.Path:
  """A cache folder filled once by converting the TorchScript file (needs torch)."""
  pytest.importorskip("torch", reason="converting the FID Inception weights needs torch")
  path = tmp_path_factory.mktemp("inception-cache")
  inc.load_inception(cache_dir=path, torchscript_path=torchscript_path)
  assert (path / inc.CACHE_FILE).is_file()
  return path


@pytest.fixture(scope="module")
def variables(cache_dir):
  return inc.load_inception(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def torch_net(torchscript_path):
  torch = pytest.importorskip("torch")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load -> torch.export
    return torch.jit.load(str(torchscript_path), map_location="cpu").eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
  """4 random uint8 images and 2 photos (PIL bicubic to 299x299, uint8): ``[6, 299, 299, 3]``."""
  skdata = pytest.importorskip("skimage.data")
  noise = np.random.default_rng(0).integers(0, 256, (4, 299, 299, 3), dtype=np.uint8)
  photos = [inc.resize_images(im[None], "pil_bicubic_uint8")[0].astype(np.uint8)
            for im in (skdata.astronaut(), skdata.chelsea())]
  return np.concatenate([noise, np.stack(photos)])


def torch_features(net, pixels: np.ndarray) -> np.ndarray:
  """TorchScript features of float pixels ``[n, 299, 299, 3]`` in [0, 255]."""
  import torch  # pylint: disable=import-outside-toplevel
  x = torch.from_numpy((np.asarray(pixels, np.float32) - 128) / 128).permute(0, 3, 1, 2)
  with torch.no_grad():
    return net(x.contiguous()).numpy()


@pytest.fixture(scope="module")
def features(images, variables) -> np.ndarray:
  return inc.inception_features(images, batch_size=BATCH, variables=variables, progress=False)


# --------------------------------------------------------------------------------------------
# Network and weights.


def test_parity_with_torchscript(features, images, torch_net):
  """Same 299x299 inputs (last batch padded: 6 images in batches of 4): max abs <= 1e-3."""
  expected = torch_features(torch_net, images)
  assert features.shape == (6, 2048) and features.dtype == np.float32
  assert np.all(features >= 0)
  diff = np.abs(features - expected).max()
  assert diff <= TOL, f"max abs diff {diff} vs TorchScript"
  # The photos are not the noise: features differ between images.
  assert np.abs(features[4] - features[5]).max() > 0.1


def test_jitted_apply_compiles_once_per_batch_shape(features, images, variables):
  before = inc._features._cache_size()  # pylint: disable=protected-access
  again = inc.inception_features(images[:5], batch_size=BATCH, variables=variables,
                                 progress=False)
  assert inc._features._cache_size() == before  # pylint: disable=protected-access
  # Image 4 now shares its batch with 3 zero pads instead of image 5: same features.
  np.testing.assert_allclose(again, features[:5], rtol=0, atol=1e-5)


def test_variables_are_plain_dicts_with_torch_names(variables):
  assert set(variables) == {"params", "batch_stats"}
  assert type(variables["params"]) is dict  # pylint: disable=unidiomatic-typecheck
  kernel = variables["params"]["mixed_4"]["tower_conv_1"]["conv"]["kernel"]
  assert kernel.shape == (1, 7, 128, 128)  # torch net.layers.mixed_4.tower.conv_1 [128,128,1,7]
  assert variables["batch_stats"]["mixed_10"]["tower_2_conv"]["bn"]["var"].shape == (192,)
  assert "scale" not in variables["params"]["conv"]["bn"]  # TF batch norm: beta only


def test_model_rejects_wrong_input_size(variables):
  with pytest.raises(ValueError, match=r"\[batch, 299, 299, 3\]"):
    FIDInceptionV3().apply(variables, np.zeros((1, 224, 224, 3), np.float32))


# --------------------------------------------------------------------------------------------
# Cache.


def test_cache_loads_without_torch_and_mesh_matches(cache_dir, images, features, tmp_path):
  """A fresh Python with torch blocked and 2 fake CPU devices loads the cache; features are
  identical, and the batch sharded over a ('data',) mesh gives the same features."""
  np.save(tmp_path / "images.npy", images)
  script = textwrap.dedent(f"""
      import json, sys
      sys.modules["torch"] = None  # any import of torch now fails
      import numpy as np
      import jax
      from jaxgc.eval import fid_inception as inc
      v = inc.load_inception(cache_dir={str(cache_dir)!r},
                             torchscript_path={str(tmp_path / "absent.pt")!r})
      x = np.load({str(tmp_path / "images.npy")!r})
      f = inc.inception_features(x, batch_size={BATCH}, variables=v, progress=False)
      mesh = jax.make_mesh((2,), ("data",))
      g = inc.inception_features(x, batch_size={BATCH}, variables=v, mesh=mesh, progress=False)
      np.save({str(tmp_path / "plain.npy")!r}, f)
      np.save({str(tmp_path / "mesh.npy")!r}, g)
      print(json.dumps({{"devices": jax.device_count(), "torch": "torch" in sys.modules
                         and sys.modules["torch"] is not None}}))
  """)
  env = {k: v for k, v in os.environ.items() if k not in ("JAXGC_ASSETS", "XLA_FLAGS")}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads(proc.stdout.strip().splitlines()[-1])
  assert info == {"devices": 2, "torch": False}
  np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"), features)
  np.testing.assert_allclose(np.load(tmp_path / "mesh.npy"), features, rtol=0, atol=1e-5)


def test_load_errors(tmp_path, monkeypatch):
  monkeypatch.delenv("JAXGC_ASSETS", raising=False)
  with pytest.raises(FileNotFoundError, match="JAXGC_ASSETS is unset"):
    inc.load_inception(cache_dir=tmp_path / "empty")
  missing = tmp_path / "nope.pt"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    inc.load_inception(cache_dir=tmp_path / "empty", torchscript_path=missing)
  assert not (tmp_path / "empty").exists()
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / inc.CACHE_FILE).write_bytes(b"not an npz")
  with pytest.raises(ValueError, match="unreadable"):
    inc.load_inception(cache_dir=bad)


def test_convert_refuses_unknown_torchscript(tmp_path):
  other = tmp_path / "other.pt"
  other.write_bytes(b"\0" * 64)
  with pytest.raises(ValueError, match="sha256"):
    inc.convert_inception(other)


def test_default_cache_dir(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXGC_CACHE", str(tmp_path))
  assert inc.default_cache_dir() == os.path.join(str(tmp_path), "inception-2015-12-05")
  monkeypatch.delenv("JAXGC_CACHE")
  assert inc.default_cache_dir().endswith(os.path.join(".cache", "jaxgc",
                                                       "inception-2015-12-05"))


# --------------------------------------------------------------------------------------------
# Resizing.


def _pil_float_bicubic(image: np.ndarray) -> np.ndarray:
  """clean-fid ``make_resizer("PIL", False, "bicubic", (299, 299))``, written out directly."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  out = []
  for c in range(3):
    img = Image.fromarray(image[:, :, c].astype(np.float32), mode="F")
    out.append(np.asarray(img.resize((299, 299), resample=Image.BICUBIC)).clip(0, 255))
  return np.stack(out, axis=-1)


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (1, 400, 520, 3)])
def test_resize_clean_is_pil_float_bicubic(shape):
  x = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
  got = inc.resize_images(x, "clean")
  assert got.shape == (shape[0], 299, 299, 3) and got.dtype == np.float32
  np.testing.assert_array_equal(got, np.stack([_pil_float_bicubic(im) for im in x]))
  assert not np.array_equal(got, np.round(got))  # not quantized


def test_resize_pil_bicubic_uint8_is_quantized():
  from PIL import Image  # pylint: disable=import-outside-toplevel
  x = np.random.default_rng(2).integers(0, 256, (1, 100, 80, 3), dtype=np.uint8)
  got = inc.resize_images(x, "pil_bicubic_uint8")
  want = np.asarray(Image.fromarray(x[0]).resize((299, 299), Image.BICUBIC))
  np.testing.assert_array_equal(got[0], want.astype(np.float32))


@pytest.mark.parametrize("shape", [(2, 32, 48, 3), (1, 512, 400, 3), (1, 28, 28, 1)])
def test_resize_torch_bilinear_is_f_interpolate(shape):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
  got = inc.resize_images(x, "torch_bilinear")
  rgb = np.repeat(x, 3, axis=-1) if shape[-1] == 1 else x
  want = torch.nn.functional.interpolate(
      torch.from_numpy(rgb.astype(np.float32)).permute(0, 3, 1, 2), size=(299, 299),
      mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", inc.RESIZE_MODES)
def test_299_input_is_untouched(mode):
  x = np.random.default_rng(4).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
  np.testing.assert_array_equal(inc.resize_images(x, mode), x.astype(np.float32))


def test_grayscale_resized_features_match_torch(variables, torch_net, features):
  """[n, 64, 64, 1] grayscale -> RGB -> torch_bilinear -> network, end to end vs torch."""
  del features  # reuse the compiled batch-4 function
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(5).integers(0, 256, (BATCH, 64, 64, 1), dtype=np.uint8)
  got = inc.inception_features(x, batch_size=BATCH, resize="torch_bilinear",
                               variables=variables, progress=False)
  rgb = torch.from_numpy(np.repeat(x, 3, axis=-1).astype(np.float32)).permute(0, 3, 1, 2)
  pixels = torch.nn.functional.interpolate(rgb, size=(299, 299), mode="bilinear",
                                           align_corners=False).permute(0, 2, 3, 1).numpy()
  assert np.abs(got - torch_features(torch_net, pixels)).max() <= TOL


def test_bad_inputs():
  x = np.zeros((1, 32, 32, 3), np.uint8)
  with pytest.raises(ValueError, match="'bicubic'"):
    inc.resize_images(x, "bicubic")
  with pytest.raises(ValueError, match="'lanczos'"):
    inc.inception_features(x, resize="lanczos", variables={}, progress=False)
  with pytest.raises(ValueError, match="uint8"):
    inc.resize_images(x.astype(np.float32))
  with pytest.raises(ValueError, match=r"\[n, height, width, 3\]"):
    inc.resize_images(np.zeros((1, 32, 32, 4), np.uint8))
