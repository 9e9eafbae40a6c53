"""Common base of the arithmetic-unit layers: a Keras layer over a pure function."""

import keras


class ArithmeticUnit(keras.layers.Layer):
    """A layer whose forward pass is `self.forward(x, **params)`, a pure function of its weights.

    Subclasses list their weights in `weight_names`, create them in `build`, and
    implement `forward`. The trainer calls `forward` with its own parameter
    tensors, so the layer's maths exists in one place.

    Args:
        units: Positive integer, size of the output.

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names: tuple[str, ...] = ()

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"`units` must be a positive integer. Received: units={units}")
        self.units = units
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def params(self) -> dict:
        return {name: getattr(self, name) for name in self.weight_names}

    def forward(self, x, **params):
        raise NotImplementedError

    def call(self, inputs):
        return self.forward(inputs, **self.params())

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
