"""`SoftCap`: `cap * tanh(x / cap)` as a layer (the xLSTM 7B logits)."""

import keras

from keras_mlstm.layers.norms import soft_cap
from keras_mlstm.ops.common import positive_number


@keras.saving.register_keras_serializable(package="keras_mlstm")
class SoftCap(keras.layers.Layer):
    """Bound values smoothly to `(-cap, cap)`: `cap * tanh(x / cap)`.

    Args:
        cap: a positive float.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: any float tensor.

    Returns:
        A tensor of the shape and dtype of `inputs`.

    Example:

    >>> import keras, numpy as np
    >>> y = SoftCap(30.0)(np.array([0.0, 300.0], "float32"))
    >>> tuple(round(float(v), 3) for v in keras.ops.convert_to_numpy(y))
    (0.0, 30.0)

    References:
        - Beck et al., "xLSTM 7B", 2025, arXiv:2503.13427 (logit soft cap
          30); Gemma 2 team, 2024, arXiv:2408.00118.
    """

    def __init__(self, cap, **kwargs):
        super().__init__(**kwargs)
        self.cap = positive_number("cap", cap)
        self.supports_masking = True

    def call(self, inputs):
        return soft_cap(inputs, self.cap)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "cap": self.cap}
