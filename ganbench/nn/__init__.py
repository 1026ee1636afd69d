"""Networks: generators and discriminators with resolution, width and normalization as parameters.

``GENERATORS[arch]`` / ``DISCRIMINATORS[arch]`` is the one table a model consults; ``arch: auto``
in a model picks the family's image architecture for images and ``mlp`` for 2-D toy data.
"""

from typing import Literal

from ganbench.nn.cnn import CNNDiscriminator, CNNGenerator, DCGANDiscriminator, DCGANGenerator
from ganbench.nn.common import Discriminator, DiscriminatorHead
from ganbench.nn.dirac import ConstantGenerator, DiracDiscriminator
from ganbench.nn.mlp import MaxoutDiscriminator, MLPDiscriminator, MLPGenerator
from ganbench.nn.norms import NORMS, Norm
from ganbench.nn.patch import PatchDiscriminator
from ganbench.nn.resnet import ResNetDiscriminator, ResNetGenerator

Arch = Literal["auto", "cnn", "resnet", "dcgan", "mlp", "dirac"]

GENERATORS = {"cnn": CNNGenerator, "resnet": ResNetGenerator, "dcgan": DCGANGenerator, "mlp": MLPGenerator,
              "dirac": ConstantGenerator}
DISCRIMINATORS = {
    "cnn": CNNDiscriminator,
    "resnet": ResNetDiscriminator,
    "dcgan": DCGANDiscriminator,
    "mlp": MLPDiscriminator,
    "maxout": MaxoutDiscriminator,
    "patch": PatchDiscriminator,
    "dirac": DiracDiscriminator,
}

__all__ = [
    "Arch", "GENERATORS", "DISCRIMINATORS", "Discriminator", "DiscriminatorHead", "NORMS", "Norm",
    "CNNGenerator", "CNNDiscriminator", "DCGANGenerator", "DCGANDiscriminator", "ResNetGenerator",
    "ResNetDiscriminator", "MLPGenerator", "MLPDiscriminator", "MaxoutDiscriminator", "PatchDiscriminator",
    "ConstantGenerator", "DiracDiscriminator",
]
