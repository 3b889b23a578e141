"""Architecture names <-> Flax modules, and JSON model specs that rebuild a module."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgc.models.dcgan import DCGANDiscriminator
from jaxgc.models.dcgan import DCGANGenerator
from jaxgc.models.lenet import LeNet5
from jaxgc.models.mlp import MLPDiscriminator
from jaxgc.models.mlp import MLPGenerator
from jaxgc.models.patchgan import PatchGANDiscriminator
from jaxgc.models.resnet import MobileResnetGenerator
from jaxgc.models.resnet import ResnetGenerator
from jaxgc.models.resnet import SubMobileResnetGenerator
from jaxgc.models.sagan import SAGANDiscriminator
from jaxgc.models.sagan import SAGANGenerator
from jaxgc.models.stylegan2 import StyleGAN2Discriminator
from jaxgc.models.stylegan2 import StyleGAN2Generator
from jaxgc.models.unet import UnetGenerator

ARCHS: dict[str, type[nn.Module]] = {
    "resnet_generator": ResnetGenerator,
    "mobile_resnet_generator": MobileResnetGenerator,
    "sub_mobile_resnet_generator": SubMobileResnetGenerator,
    "unet_generator": UnetGenerator,
    "dcgan_generator": DCGANGenerator,
    "dcgan_discriminator": DCGANDiscriminator,
    "mlp_generator": MLPGenerator,
    "mlp_discriminator": MLPDiscriminator,
    "lenet5": LeNet5,
    "patchgan_discriminator": PatchGANDiscriminator,
    "sagan_generator": SAGANGenerator,
    "sagan_discriminator": SAGANDiscriminator,
    "stylegan2_generator": StyleGAN2Generator,
    "stylegan2_discriminator": StyleGAN2Discriminator,
}


def example_input(module: nn.Module, batch: int = 1, size: int = 64) -> jax.Array:
  """A zero input of the right shape for ``module``: images ``[batch, size, size, input_nc]``
  for image-to-image generators (``size`` raised to ``2**num_downs`` for a U-Net), latents
  ``[batch, z_dim]``, or discriminator images."""
  if module.kind == "image_to_image":
    size = max(size, 2**getattr(module, "num_downs", 0))
    return jnp.zeros((batch, size, size, module.input_nc), jnp.float32)
  if module.kind == "unconditional":
    return jnp.zeros((batch, module.z_dim), jnp.float32)
  if hasattr(module, "image_shape"):
    return jnp.zeros((batch,) + tuple(module.image_shape), jnp.float32)
  return jnp.zeros((batch, module.image_size, module.image_size, module.input_nc), jnp.float32)


def arch_name(module: nn.Module) -> str:
  """The registry name of ``module``'s class; ValueError if it is not in the zoo."""
  for name, cls in ARCHS.items():
    if type(module) is cls:
      return name
  raise ValueError(f"module {type(module).__name__} is not in the jaxgc zoo")


def build(arch: str, **kwargs: Any) -> nn.Module:
  """Builds the zoo module ``arch`` with ``kwargs``; lists are turned into tuples.

  Raises:
    ValueError: unknown ``arch`` or unknown keyword.
  """
  if arch not in ARCHS:
    raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
  cls = ARCHS[arch]
  known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(kwargs) - known)
  if unknown:
    raise ValueError(f"unknown argument(s) {unknown} for arch {arch!r}; known: {sorted(known)}")
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def model_spec(module: nn.Module) -> dict[str, Any]:
  """JSON-serialisable ``{"arch": name, "kwargs": {...}, "kind": ...}`` that ``build`` inverts."""
  kwargs = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
            if f.name not in ("parent", "name")}
  kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
  return {"arch": arch_name(module), "kind": type(module).kind, "kwargs": kwargs}
