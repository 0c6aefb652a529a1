"""A token embedding that can also map back to vocabulary logits."""

import keras
from keras import ops

from keras_mlstm.ops.common import linear


@keras.saving.register_keras_serializable(package="keras_mlstm")
class ReversibleEmbedding(keras.layers.Embedding):
    """`keras.layers.Embedding` whose matrix also serves as the output
    projection of a language model (tied weights).

    Args:
        input_dim: vocabulary size.
        output_dim: embedding width.
        **kwargs: the arguments of `keras.layers.Embedding`.

    Call arguments:
        inputs: int token ids `(B, T)`, or with `reverse=True` hidden
            states `(B, T, output_dim)`.
        reverse: False (embed) or True (logits `inputs @ embeddings^T`).

    Returns:
        `(B, T, output_dim)` embeddings, or `(B, T, input_dim)` logits.

    Example:

    >>> import numpy as np
    >>> embedding = ReversibleEmbedding(10, 4)
    >>> x = embedding(np.array([[1, 2, 3]]))
    >>> tuple(embedding(x, reverse=True).shape)
    (1, 3, 10)

    References:
        - Press and Wolf, "Using the Output Embedding to Improve Language
          Models", 2017, arXiv:1608.05859.
    """

    def call(self, inputs, reverse=False):
        if reverse:
            kernel = ops.cast(self.embeddings, self.compute_dtype)
            return linear(inputs, ops.transpose(kernel))
        return super().call(inputs)

    def compute_mask(self, inputs, mask=None, reverse=False):
        if reverse:
            return mask
        return super().compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return (*input_shape[:-1], self.input_dim)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, reverse=False):
        shape = self.compute_output_shape(inputs.shape, reverse=reverse)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)
