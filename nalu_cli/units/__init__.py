"""Arithmetic units as Keras 3 layers, registered under the Keras package name "nalu".

Importing this package registers every unit for `.keras` deserialisation.
"""

from nalu_cli.unit_names import UNIT_CLASSES
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
from nalu_cli.units.recurrent import ArithmeticCell, GRUCell, LSTMCell, RecurrentUnit
from nalu_cli.units.relu import ReLUMLP

# The registry: nalu_cli.unit_names names each unit's class (TF-free, for config validation).
UNIT_LAYERS: dict[str, type[ArithmeticUnit]] = {name: globals()[cls] for name, cls in UNIT_CLASSES.items()}

__all__ = [
    "ArithmeticCell",
    "ArithmeticUnit",
    "GRUCell",
    "LSTMCell",
    "RecurrentUnit",
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
