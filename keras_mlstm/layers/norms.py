"""Normalisation helpers shared by the layers (pure functions of tensors).

Computed with sums and `sqrt`, not `ops.mean` and `ops.rsqrt`: Keras's
mean computes float64 in float32 on JAX and PyTorch, and XLA's float64
`rsqrt` on CPU is accurate to only ~1e-8.
"""

from keras import ops

from keras_mlstm.ops.compat import tanh


def standardize(x, epsilon):
    """`(x - mean) / sqrt(var + epsilon)` over the last axis.

    Args:
        x: a float tensor.
        epsilon: added to the variance.

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    size = x.shape[-1]
    mean = ops.sum(x, axis=-1, keepdims=True) / size
    centered = x - mean
    variance = ops.sum(ops.square(centered), axis=-1, keepdims=True) / size
    return centered / ops.sqrt(variance + epsilon)


def rms_normalize(x, epsilon):
    """`x / sqrt(mean(x^2) + epsilon)` over the last axis."""
    size = x.shape[-1]
    mean_square = ops.sum(ops.square(x), axis=-1, keepdims=True) / size
    return x / ops.sqrt(mean_square + epsilon)


def soft_cap(x, cap):
    """`cap * tanh(x / cap)`: smoothly bounds `x` to `(-cap, cap)`;
    identity for `cap=None`."""
    if cap is None:
        return x
    return cap * tanh(x / cap)
