"""Workarounds for two ``keras.ops`` backend bugs; the package's only
backend switches.

- ``keras.ops.scan`` follows ``jax.lax.scan``, but its TensorFlow
  implementation (Keras 3.8 to 3.15 at least) stores the per-step outputs in
  arrays shaped like the carry, so a step that carries a state ``(C, n, m)``
  and emits an output ``h`` fails there. ``scan`` routes TensorFlow to a
  ``tf.while_loop`` with one ``TensorArray`` per output.
- On PyTorch, ``keras.ops.cumsum``, ``maximum`` and ``matmul`` compute
  float64 input in float32: their dtype goes through
  ``keras.backend.result_type``, which maps 64-bit types to 32-bit on every
  backend but TensorFlow. ``cumsum`` and ``maximum`` here call ``torch``
  directly there; the math uses ``einsum`` (unaffected) for products.

Every other backend goes straight to ``keras.ops``.
"""

import keras
from keras import ops
from keras import tree


def scan(step, init, xs, outputs_like):
    """Scan ``step(carry, x) -> (carry, y)`` over axis 0 of ``xs``.

    Args:
        step: the step function.
        init: the initial carry, a nest of tensors.
        xs: a nest of tensors sharing their leading (scanned) axis.
        outputs_like: a nest of tensors with the shapes and dtypes of ``y``.

    Returns:
        ``(final_carry, ys)``, ``ys`` stacked along a new leading axis.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.scan(step, init, xs)
    return _tensorflow_scan(step, init, xs, outputs_like)


def cumsum(x, axis):
    """Cumulative sum along ``axis``, in the dtype of ``x``."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.cumsum(x, dim=axis)
    return ops.cumsum(x, axis=axis)


def maximum(x, y):
    """Elementwise maximum of two tensors of one dtype, in that dtype."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.maximum(x, y)
    return ops.maximum(x, y)


def _tensorflow_scan(step, init, xs, outputs_like):
    import tensorflow as tf

    xs_flat = [tf.convert_to_tensor(x) for x in tree.flatten(xs)]
    length = xs_flat[0].shape[0]
    if length is None:
        length = tf.shape(xs_flat[0])[0]
    xs_arrays = [
        tf.TensorArray(x.dtype, size=length, element_shape=x.shape[1:]).unstack(
            x
        )
        for x in xs_flat
    ]
    like_flat = tree.flatten(outputs_like)
    ys_arrays = [
        tf.TensorArray(y.dtype, size=length, element_shape=y.shape)
        for y in like_flat
    ]
    init_flat = [tf.convert_to_tensor(c) for c in tree.flatten(init)]

    def body(index, carry_flat, arrays):
        x = tree.pack_sequence_as(xs, [a.read(index) for a in xs_arrays])
        carry = tree.pack_sequence_as(init, carry_flat)
        carry, y = step(carry, x)
        arrays = [
            a.write(index, v)
            for a, v in zip(arrays, tree.flatten(y), strict=True)
        ]
        return index + 1, tree.flatten(carry), arrays

    _, carry_flat, ys_arrays = tf.while_loop(
        lambda index, *_: index < length,
        body,
        (0, init_flat, ys_arrays),
    )
    ys = [a.stack() for a in ys_arrays]
    return (
        tree.pack_sequence_as(init, carry_flat),
        tree.pack_sequence_as(outputs_like, ys),
    )
