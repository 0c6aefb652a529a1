"""`Projection`: the blocks' linear projections, a `keras.layers.Dense`
so that Keras' `enable_lora` and `quantize` apply to them."""

import keras
from keras import ops

from keras_mlstm.ops.common import linear


class Projection(keras.layers.Dense):
    """`keras.layers.Dense` (no activation) computed with `einsum`.

    `Dense` multiplies with `ops.matmul`, which on PyTorch returns
    float32 for float64 operands (Keras 3.15); `linear` keeps the
    operands' dtype, so a float64 block stays float64. Inputs of rank up
    to 9. Quantized kernels
    (`quantize("int8")`) run Keras' own quantized call unchanged, and a
    LoRA-enabled kernel enters through `self.kernel` as in `Dense`.
    """

    def quantize(self, mode=None, type_check=True, **kwargs):
        # Keras quantizes a Dense subclass only when the subclass says it
        # may: this one changes nothing of Dense's quantized computation.
        # `**kwargs` passes on what this Keras's `Dense.quantize` takes
        # (`config` since Keras 3.12; none before).
        super().quantize(mode, type_check=False, **kwargs)

    def call(self, inputs, training=None):
        x = linear(inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        return x
