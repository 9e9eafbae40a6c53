"""The units a config can name, each with the class name of its Keras layer in `nalu_cli.units`.

The one list of units: `config.UNITS` is its keys and `nalu_cli.units.UNIT_LAYERS` maps
them to the classes, in this order. Kept out of `nalu_cli.units` so that validating a
config never imports TensorFlow.
"""

UNIT_CLASSES: dict[str, str] = {
    "nac": "NAC",
    "nalu": "NALU",
    "nau": "NAU",
    "nmu": "NMU",
    "inalu": "INALU",
    "realnpu": "RealNPU",
    "nainpu": "NaiNPU",
    "nmru": "NMRU",
    "linear": "Linear",
    "relu": "ReLUMLP",
    "gated": "Gated",
    # Recurrent cells only (task.kind recurrent): Keras's own, as baselines.
    "lstm": "LSTMCell",
    "gru": "GRUCell",
}
