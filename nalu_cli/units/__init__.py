"""Arithmetic units as Keras 3 layers, registered under the Keras package name "nalu".

Importing this package registers every unit for `.keras` deserialisation.
"""

from nalu_cli.units.base import ArithmeticUnit
from nalu_cli.units.nac import NAC
from nalu_cli.units.nalu import NALU

UNIT_LAYERS: dict[str, type[ArithmeticUnit]] = {"nac": NAC, "nalu": NALU}

__all__ = ["ArithmeticUnit", "NAC", "NALU", "UNIT_LAYERS"]
