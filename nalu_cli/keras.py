"""nalu's units for your own Keras models: layers, the training pieces `model.fit` needs, snapping.

    from nalu_cli.keras import NAU, NMU, RegularizerSchedule, SnapSelection, SplitAdam

- Layers: every unit (`NAU`, `NMU`, `NALU`, ...) and `ArithmeticCell` for `keras.layers.RNN`.
  A unit's weight ranges are Keras constraints (`Clip`) and its sparsity penalty is in
  `model.losses`, scaled by its `regularizer_strength` variable.
- `RegularizerSchedule`: a callback that ramps each penalty with the step, as nalu trains.
- `SplitAdam`: nalu's split-adam as a `keras.optimizers.Optimizer`.
- `SnapSelection`: a callback that keeps the best weights on your validation set, snapped to
  exact values (for a model of two units, also the exact forms `nalu train` derives from the
  weights) when that is better; `snap_units(model)` snaps a trained model in place.

Importing it registers everything under the Keras package "nalu", so saved models reload.
"""

from nalu_cli.inspection.snapping import snap_units
from nalu_cli.training.keras_callbacks import RegularizerSchedule, SnapSelection
from nalu_cli.training.split_adam import SplitAdam
from nalu_cli.units import (
    INALU,
    NAC,
    NALU,
    NAU,
    NMRU,
    NMU,
    ArithmeticCell,
    ArithmeticUnit,
    Gated,
    GRUCell,
    Linear,
    LSTMCell,
    NaiNPU,
    RealNPU,
    ReLUMLP,
)
from nalu_cli.units.base import Clip, SparsityPenalty

__all__ = [
    "ArithmeticCell",
    "ArithmeticUnit",
    "Clip",
    "Gated",
    "GRUCell",
    "INALU",
    "Linear",
    "LSTMCell",
    "NAC",
    "NaiNPU",
    "NALU",
    "NAU",
    "NMRU",
    "NMU",
    "RealNPU",
    "RegularizerSchedule",
    "ReLUMLP",
    "SnapSelection",
    "SparsityPenalty",
    "SplitAdam",
    "snap_units",
]
