"""The Flax GAN zoo: Linen modules, NHWC, variables as plain nested dicts."""

from jaxgc.models.dcgan import DCGANDiscriminator
from jaxgc.models.dcgan import DCGANGenerator
from jaxgc.models.inception import FIDInceptionV3
from jaxgc.models.lenet import LeNet5
from jaxgc.models.mlp import MLPDiscriminator
from jaxgc.models.mlp import MLPGenerator
from jaxgc.models.registry import ARCHS
from jaxgc.models.registry import build
from jaxgc.models.registry import example_input
from jaxgc.models.registry import model_spec
from jaxgc.models.resnet import MobileResnetGenerator
from jaxgc.models.resnet import ResnetEncoder
from jaxgc.models.resnet import ResnetGenerator
from jaxgc.models.resnet import encoder_of
from jaxgc.models.resnet import SubMobileResnetGenerator
from jaxgc.models.sagan import SAGANDiscriminator
from jaxgc.models.sagan import SAGANGenerator
from jaxgc.models.stylegan2 import StyleGAN2Discriminator
from jaxgc.models.stylegan2 import StyleGAN2Generator
from jaxgc.models.unet import UnetGenerator
