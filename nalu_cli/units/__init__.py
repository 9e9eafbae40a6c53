"""Arithmetic units as Keras 3 layers, registered under the Keras package name "nalu".

Importing this package registers every unit for `.keras` deserialisation.
"""

from nalu_cli.units.base import ArithmeticUnit
from nalu_cli.units.gated import Gated
from nalu_cli.units.inalu import INALU
from nalu_cli.units.linear import Linear
from nalu_cli.units.nac import NAC
from nalu_cli.units.nainpu import NaiNPU
from nalu_cli.units.nalu import NALU
from nalu_cli.units.nau import NAU
from nalu_cli.units.nmru import NMRU
from nalu_cli.units.nmu import NMU
from nalu_cli.units.realnpu import RealNPU
from nalu_cli.units.relu import ReLUMLP

# Keys match `nalu_cli.config.UNITS`, in the same order.
UNIT_LAYERS: dict[str, type[ArithmeticUnit]] = {
    "nac": NAC,
    "nalu": NALU,
    "nau": NAU,
    "nmu": NMU,
    "inalu": INALU,
    "realnpu": RealNPU,
    "nainpu": NaiNPU,
    "nmru": NMRU,
    "linear": Linear,
    "relu": ReLUMLP,
    "gated": Gated,
}

__all__ = [
    "ArithmeticUnit",
    "Gated",
    "INALU",
    "Linear",
    "NAC",
    "NaiNPU",
    "NALU",
    "NAU",
    "NMRU",
    "NMU",
    "RealNPU",
    "ReLUMLP",
    "UNIT_LAYERS",
]
