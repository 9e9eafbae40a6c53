"""nalu: train, evaluate, extrapolate and export neural arithmetic units.

Importing this package is cheap: TensorFlow is only imported by the modules
that need it (units, model, training, evaluation, export), never by the CLI's
`--help` path.
"""

__version__ = "0.18.0"
