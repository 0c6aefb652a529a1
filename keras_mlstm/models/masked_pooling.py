"""`MaskedPooling`: a sequence to one vector, over its unmasked steps."""

import keras
from keras import ops

from keras_mlstm.layers.base import last_step

POOLINGS = ("last", "mean")


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MaskedPooling(keras.layers.Layer):
    """Pool `(B, T, D)` over time: the last unmasked step (what `MLSTM`
    returns with `return_sequences=False`), or the mean of the unmasked
    steps.

    Args:
        pooling: `"last"` or `"mean"`. Defaults to `"last"`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, D)`.
        mask: optional bool `(B, T)`.

    Returns:
        `(B, D)`; zeros for a fully masked sequence.

    Example:

    >>> import keras, numpy as np
    >>> x = np.arange(6, dtype="float32").reshape(1, 3, 2)
    >>> keras.ops.convert_to_numpy(MaskedPooling("last")(x)).tolist()
    [[4.0, 5.0]]

    References:
        - The Keras guide "Understanding masking & padding".
    """

    def __init__(self, pooling="last", **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {POOLINGS}; received {pooling!r}."
            )
        self.pooling = pooling
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            mask = ops.cast(mask, "bool")
        if self.pooling == "last":
            return last_step(inputs, mask)
        if mask is None:
            return ops.sum(inputs, axis=1) / ops.shape(inputs)[1]
        keep = ops.cast(mask, inputs.dtype)[..., None]  # (B, T, 1)
        count = ops.maximum(ops.sum(keep, axis=1), 1.0)
        return ops.sum(inputs * keep, axis=1) / count

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling}
