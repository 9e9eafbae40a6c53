import math

import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


@keras.saving.register_keras_serializable(package="nalu")
class NAU(ArithmeticUnit):
    """Neural addition unit (Madsen & Johansen 2020): y = x W, W clipped to [-1, 1].

    The sparsity penalty mean(min(|W|, 1 - |W|)) (the base regulariser) ramps from 0 at
    step 5e3 to 0.01 at step 5e4, as published.

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `w`. None (default) is the published
            U[-r, r], r = min(0.5, sqrt(3) * sqrt(2 / (fan_in + fan_out))).

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("w",)
    discrete_weight_names = ("w",)
    regularizer_schedule = (0.01, 5_000, 50_000)
    weight_ranges = {"w": (-1.0, 1.0)}

    def __init__(self, units, kernel_initializer=None, **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        initializer = self.kernel_initializer
        if initializer is None:
            r = min(0.5, math.sqrt(3.0) * math.sqrt(2.0 / (fan_in + self.units)))
            initializer = keras.initializers.RandomUniform(-r, r)
        self.w = self.add_weight(name="w", shape=(fan_in, self.units), initializer=initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: fan_in})

    def forward(self, x, w):
        return functional.nau(x, w)

    def discrete_weights(self, w, **_):
        return [w]

    def paths(self, w, **_):
        return [("sum", w)]

    def unit_scaled(self, w, rows=None, **params):
        largest = ops.max(ops.abs(w[..., :rows, :]), axis=-2, keepdims=True)
        scaled = w[..., :rows, :] / ops.where(largest > 0, largest, ops.ones_like(largest))
        return {**params, "w": ops.concatenate([scaled, w[..., scaled.shape[-2]:, :]], axis=-2)}

    def snap(self, w, **params):
        """W rounded to {-1, 0, 1}."""
        return {**params, "w": ops.clip(ops.round(w), -1.0, 1.0)}

    def as_sum(self, weights, **params):
        return {**params, "w": weights}

    def get_config(self):
        initializer = self.kernel_initializer
        return {
            **super().get_config(),
            "kernel_initializer": None if initializer is None else keras.initializers.serialize(initializer),
        }
