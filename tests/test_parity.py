"""Numerical parity of jaxgc's Flax conversions with upstream-structured PyTorch references.

Every test runs the same weights through ``jaxgc.convert.torch_refs_zoo`` (PyTorch, NCHW) and
through ``jaxgc.convert`` (Flax, NHWC) and compares the outputs. Real checkpoints come from
``$JAXGC_ASSETS`` (see the assets README); without it those tests skip, while a set variable
with a missing file fails. Random-weight tests need no assets.
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from conftest import asset_path
from jaxgc import convert  # noqa: E402
from jaxgc.convert import torch_refs_zoo as ref  # noqa: E402

ATOL = 1e-4
PSNR_MIN_DB = 45.0

H2Z = "cyclegan-h2z-gancompression/latest_net_G.pth"
REAL_CHECKPOINTS = {
    # asset path: arch
    H2Z: "sub_mobile_resnet_generator",
    "dcgan-digiface64/weights.tar": "dcgan_generator",
    "mnist-mlpgan/G--300.ckpt": "mlp_generator",
    "mnist-mlpgan/D--300.ckpt": "mlp_discriminator",
    "mnist-dcgan-d/netD_epoch_99.pth": "dcgan_discriminator",
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------




def torch_forward(net: torch.nn.Module, x_nchw: np.ndarray) -> np.ndarray:
  with torch.no_grad(), warnings.catch_warnings():
    # SubMobileResnetGenerator declares some InstanceNorms with a num_features that differs
    # from the channels they see (as upstream); PyTorch warns, the result is unaffected.
    warnings.filterwarnings("ignore", message=".*does not match num_features.*")
    return net(torch.from_numpy(np.ascontiguousarray(x_nchw))).numpy()


def flax_forward(module, variables, x: np.ndarray) -> np.ndarray:
  return np.asarray(jax.device_get(module.apply(variables, x)))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def uniform_images(seed: int, shape, low: float = -1.0, high: float = 1.0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def assert_close(flax_out: np.ndarray, torch_out: np.ndarray, what: str) -> None:
  assert flax_out.shape == torch_out.shape, (
      f"{what}: Flax shape {flax_out.shape} != torch shape {torch_out.shape}")
  assert np.all(np.isfinite(flax_out)), f"{what}: non-finite Flax output"
  err = float(np.max(np.abs(flax_out.astype(np.float64) - torch_out.astype(np.float64))))
  assert err <= ATOL, f"{what}: max |flax - torch| = {err:.3g} > {ATOL}"


def mnist_digits(assets: pathlib.Path) -> np.ndarray:
  """Two real MNIST digits as NHWC float32 in [-1, 1] (discriminators saturate on noise)."""
  data = np.load(asset_path(assets, "mnist10k/mnist10k_uint8.npz"))
  u8 = data["images"][[0, 9999]]
  return ((u8.astype(np.float32) / 255.0 - 0.5) / 0.5)[..., None]


def tensor2im(y_hwc: np.ndarray) -> np.ndarray:
  """``util.tensor2im`` of pytorch-CycleGAN-and-pix2pix (and GAN Compression's
  ``utils/util.py``, which clips to [0, 255] first): ``(y + 1) / 2 * 255`` then
  ``astype(uint8)``, i.e. truncation, not rounding."""
  return np.clip((y_hwc.astype(np.float32) + 1.0) / 2.0 * 255.0, 0, 255).astype(np.uint8)


def psnr(a_u8: np.ndarray, b_u8: np.ndarray) -> float:
  mse = np.mean((a_u8.astype(np.float64) - b_u8.astype(np.float64))**2)
  return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


# --------------------------------------------------------------------------------------------
# real checkpoints
# --------------------------------------------------------------------------------------------


def test_h2z_sub_mobile_generator_parity(assets):
  path = asset_path(assets, H2Z)
  net = ref.build_reference(ref.load_state_dict_file(path), "sub_mobile_resnet_generator")
  module, variables = convert.load_torch_checkpoint(path, arch="sub_mobile_resnet_generator")
  x = uniform_images(0, (2, 64, 64, 3))
  y_torch = nchw_to_nhwc(torch_forward(net, nhwc_to_nchw(x)))
  assert_close(flax_forward(module, variables, x), y_torch, "h2z sub-mobile generator, 64x64")


def test_h2z_sub_mobile_generator_clamps_input(assets):
  """Upstream ``SubMobileResnetGenerator.forward`` clamps its input to [-1, 1]."""
  path = asset_path(assets, H2Z)
  net = ref.build_reference(ref.load_state_dict_file(path), "sub_mobile_resnet_generator")
  module, variables = convert.load_torch_checkpoint(path, arch="sub_mobile_resnet_generator")
  x = uniform_images(1, (2, 32, 32, 3), low=-2.0, high=2.0)
  y_torch = nchw_to_nhwc(torch_forward(net, nhwc_to_nchw(x)))
  assert_close(flax_forward(module, variables, x), y_torch,
               "h2z sub-mobile generator, input outside [-1, 1]")


def test_h2z_reproduces_reference_png(assets):
  """The Flax generator reproduces the output PNG the original PyTorch code wrote."""
  from PIL import Image

  path = asset_path(assets, H2Z)
  u8_in = np.asarray(Image.open(asset_path(
      assets, "cyclegan-h2z-gancompression/refpair1_input.png")).convert("RGB"))
  u8_ref = np.asarray(Image.open(asset_path(
      assets, "cyclegan-h2z-gancompression/refpair1_output_compressed.png")).convert("RGB"))
  # torchvision ToTensor + Normalize((0.5,) * 3, (0.5,) * 3)
  x = ((u8_in.astype(np.float32) / 255.0 - 0.5) / 0.5)[None]

  module, variables = convert.load_torch_checkpoint(path)
  y_flax = flax_forward(module, variables, x)
  net = ref.build_reference(ref.load_state_dict_file(path), "sub_mobile_resnet_generator")
  y_torch = nchw_to_nhwc(torch_forward(net, nhwc_to_nchw(x)))

  psnr_flax = psnr(tensor2im(y_flax[0]), u8_ref)
  psnr_torch = psnr(tensor2im(y_torch[0]), u8_ref)
  print(f"\nhorse2zebra refpair1: PSNR flax {psnr_flax:.2f} dB, torch reference "
        f"{psnr_torch:.2f} dB (threshold {PSNR_MIN_DB} dB)")
  # The torch reference itself matching documents that the PNG fits this weights file and the
  # truncating tensor2im (rounding instead costs about 25 dB).
  assert psnr_torch >= PSNR_MIN_DB, f"torch reference PSNR {psnr_torch:.2f} dB"
  assert psnr_flax >= PSNR_MIN_DB, f"Flax PSNR {psnr_flax:.2f} dB (torch {psnr_torch:.2f} dB)"
  assert_close(y_flax, y_torch, "h2z sub-mobile generator, 256x256 photo")


def test_dcgan_digiface_generator_parity(assets):
  path = asset_path(assets, "dcgan-digiface64/weights.tar")
  net = ref.build_reference(ref.load_state_dict_file(path), "dcgan_generator")
  module, variables = convert.load_torch_checkpoint(path, arch="dcgan_generator")
  z = np.random.default_rng(2).standard_normal((2, 100)).astype(np.float32)
  y_torch = nchw_to_nhwc(torch_forward(net, z[:, :, None, None]))
  y_flax = flax_forward(module, variables, z)
  assert y_flax.shape == (2, 64, 64, 3)
  assert_close(y_flax, y_torch, "DigiFace DCGAN generator")


def test_mlp_generator_parity(assets):
  path = asset_path(assets, "mnist-mlpgan/G--300.ckpt")
  net = ref.build_reference(ref.load_state_dict_file(path), "mlp_generator")
  module, variables = convert.load_torch_checkpoint(path, arch="mlp_generator")
  z = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
  y_torch = torch_forward(net, z).reshape(2, 28, 28, 1)  # [N, 784] row-major -> NHWC
  y_flax = flax_forward(module, variables, z)
  assert y_flax.shape == (2, 28, 28, 1)
  assert_close(y_flax, y_torch, "MNIST MLP generator")


def test_mlp_discriminator_parity(assets):
  path = asset_path(assets, "mnist-mlpgan/D--300.ckpt")
  net = ref.build_reference(ref.load_state_dict_file(path), "mlp_discriminator")
  module, variables = convert.load_torch_checkpoint(path, arch="mlp_discriminator")
  x = mnist_digits(assets)
  p_torch = torch_forward(net, x.reshape(2, 784))
  assert p_torch.shape == (2, 1)
  assert_close(flax_forward(module, variables, x), p_torch, "MNIST MLP discriminator, NHWC")
  assert_close(flax_forward(module, variables, x.reshape(2, 784)), p_torch,
               "MNIST MLP discriminator, [N, 784]")


def test_dcgan_mnist_discriminator_parity(assets):
  path = asset_path(assets, "mnist-dcgan-d/netD_epoch_99.pth")
  net = ref.build_reference(ref.load_state_dict_file(path), "dcgan_discriminator")
  module, variables = convert.load_torch_checkpoint(path, arch="dcgan_discriminator")
  x = mnist_digits(assets)  # 28x28, the size upstream trained at
  p_torch = torch_forward(net, nhwc_to_nchw(x))  # upstream returns [N]
  assert p_torch.shape == (2,)
  assert_close(flax_forward(module, variables, x), p_torch[:, None], "MNIST DCGAN discriminator")


@pytest.mark.parametrize("rel", sorted(REAL_CHECKPOINTS))
def test_real_checkpoint_arch_inference(assets, rel):
  path = asset_path(assets, rel)
  module_auto, vars_auto = convert.load_torch_checkpoint(path)
  module_named, vars_named = convert.load_torch_checkpoint(path, arch=REAL_CHECKPOINTS[rel])
  assert type(module_auto) is type(module_named), (
      f"{rel}: inferred {type(module_auto).__name__}, explicit "
      f"{type(module_named).__name__}")
  assert (jax.tree_util.tree_structure(vars_auto)
          == jax.tree_util.tree_structure(vars_named))


# --------------------------------------------------------------------------------------------
# random weights (no assets needed)
# --------------------------------------------------------------------------------------------


RANDOM_CASES = [
    # (arch, norm, n_blocks, use_dropout, state dict as numpy)
    ("resnet_generator", "instance", 6, False, False),
    ("resnet_generator", "instance", 9, False, True),
    ("resnet_generator", "batch", 6, False, True),
    ("resnet_generator", "batch", 9, False, False),
    ("resnet_generator", "instance", 6, True, False),  # dropout layer shifts key indices
    ("mobile_resnet_generator", "instance", 9, False, True),
    ("mobile_resnet_generator", "batch", 9, False, False),
]


@pytest.mark.parametrize("arch,norm,n_blocks,use_dropout,as_numpy", RANDOM_CASES,
                         ids=[f"{a}-{n}-{b}{'-dropout' if d else ''}"
                              for a, n, b, d, _ in RANDOM_CASES])
def test_random_weight_parity(arch, norm, n_blocks, use_dropout, as_numpy):
  sd = ref.random_state_dict(arch, seed=n_blocks, ngf=8, n_blocks=n_blocks, norm=norm,
                             use_dropout=use_dropout)
  net = ref.build_reference(sd, arch)
  given = {k: v.numpy() for k, v in sd.items()} if as_numpy else sd
  module, variables = convert.convert_state_dict(given, arch=arch)
  x = uniform_images(10 + n_blocks, (2, 64, 64, 3))
  y_torch = nchw_to_nhwc(torch_forward(net, nhwc_to_nchw(x)))
  assert float(np.std(y_torch)) > 1e-2  # not a degenerate, constant output
  assert_close(flax_forward(module, variables, x), y_torch,
               f"random {arch} ({norm}, {n_blocks} blocks)")


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_random_resnet_generator_arch_inference(norm):
  sd = ref.random_state_dict("resnet_generator", ngf=8, n_blocks=6, norm=norm)
  module_auto, _ = convert.convert_state_dict(sd)
  module_named, _ = convert.convert_state_dict(sd, arch="resnet_generator")
  assert type(module_auto) is type(module_named)


def test_random_mobile_generator_does_not_clamp_input():
  """Upstream ``MobileResnetGenerator.forward`` has its clamp commented out (unlike
  ``SubMobileResnetGenerator``): inputs outside [-1, 1] go through unchanged."""
  sd = ref.random_state_dict("mobile_resnet_generator", seed=5, ngf=8, n_blocks=3)
  net = ref.build_reference(sd, "mobile_resnet_generator")
  module, variables = convert.convert_state_dict(sd, arch="mobile_resnet_generator")
  x = uniform_images(5, (2, 32, 32, 3), low=-2.0, high=2.0)
  y_torch = nchw_to_nhwc(torch_forward(net, nhwc_to_nchw(x)))
  assert_close(flax_forward(module, variables, x), y_torch,
               "random mobile generator, input outside [-1, 1]")
