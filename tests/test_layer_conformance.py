"""Layer conformance in the style of Keras's ``run_layer_test``."""

import keras
import numpy as np
import pytest
from layer_test_utils import run_layer_test

from keras_mlstm import MLSTM

B, T, D = 4, 5, 3

CASES = [
    # (constructor arguments, expected output shape, trainable, non-trainable)
    (dict(units=8), (B, 8), 7, 0),
    (dict(units=12, num_heads=3, return_sequences=True), (B, T, 12), 7, 0),
    (
        dict(units=8, return_state=True),
        [(B, 8), (B, 1, 8, 8), (B, 1, 8), (B, 1)],
        7,
        0,
    ),
    (
        dict(units=6, use_bias=False, head_norm=False, activation="tanh"),
        (B, 6),
        5,
        0,
    ),
    (dict(units=16, stateful=True), (B, 16), 7, 0),
    (
        dict(
            units=16,
            num_heads=2,
            go_backwards=True,
            return_sequences=True,
            dropout=0.2,
            seed=1,
            form="chunkwise",
            chunk_size=2,
            forget_gate_activation="exp",
            zero_output_for_mask=True,
            kernel_regularizer="l2",
            bias_regularizer="l1",
            activity_regularizer="l2",
            kernel_constraint="max_norm",
            bias_constraint="max_norm",
            kernel_initializer="he_normal",
            bias_initializer="ones",
        ),
        (B, T, 16),
        7,
        0,
    ),
]


@pytest.mark.parametrize(
    "kwargs,shape,trainable,non_trainable",
    CASES,
    ids=[str(i) for i in range(len(CASES))],
)
def test_run_layer_test(kwargs, shape, trainable, non_trainable):
    run_layer_test(
        MLSTM,
        kwargs,
        (B, T, D),
        shape,
        trainable,
        non_trainable,
    )


@pytest.mark.parametrize("units", [1, 2, 3, 7, 8, 16, 24, 30, 64, 100, 512])
def test_every_positive_units_has_default_heads(units):
    layer = MLSTM(units)
    assert units % layer.num_heads == 0
    # A symbolic call traces `call` with these heads (no compute: on JAX
    # each new shape compiles); numeric calls are the numerics tests'.
    out = layer(keras.Input((3, 4), batch_size=2))
    assert tuple(out.shape) == (2, units)


def test_compute_output_shape_all_combinations():
    for sequences in (False, True):
        for state in (False, True):
            layer = MLSTM(8, return_sequences=sequences, return_state=state)
            shape = layer.compute_output_shape((B, None, D))
            out = (B, None, 8) if sequences else (B, 8)
            expected = (out, (B, 1, 8, 8), (B, 1, 8), (B, 1)) if state else out
            assert shape == expected
            symbolic = layer(keras.Input((None, D), batch_size=B))
            got = shapes_of_symbolic(symbolic)
            assert got == (list(expected) if state else expected)


def shapes_of_symbolic(outputs):
    if isinstance(outputs, (list, tuple)):
        return [tuple(o.shape) for o in outputs]
    return tuple(outputs.shape)


def test_functional_subclassed_and_time_distributed():
    inputs = keras.Input((T, D))
    x = MLSTM(8, return_sequences=True)(inputs)
    functional = keras.Model(inputs, MLSTM(4)(x))
    assert tuple(functional(keras.ops.ones((B, T, D))).shape) == (B, 4)

    class Encoder(keras.Model):
        def __init__(self):
            super().__init__()
            self.rnn = MLSTM(8, return_state=True)
            self.out = keras.layers.Dense(2)

        def call(self, x):
            h, c, n, m = self.rnn(x)
            return self.out(h)

    assert tuple(Encoder()(keras.ops.ones((B, T, D))).shape) == (B, 2)
    # TimeDistributed over an extra leading axis: (B, 3, T, D) -> (B, 3, 8).
    wrapped = keras.layers.TimeDistributed(MLSTM(8))
    assert tuple(wrapped(keras.ops.ones((B, 3, T, D))).shape) == (B, 3, 8)


def test_compute_mask_follows_keras_rnn():
    mask = keras.ops.convert_to_tensor([[True, True, False]])
    x = keras.ops.ones((1, 3, D))
    assert MLSTM(4).compute_mask(x, mask) is None
    assert MLSTM(4, return_sequences=True).compute_mask(x, mask) is mask
    assert MLSTM(4, return_state=True).compute_mask(x, mask) == [
        None,
        None,
        None,
        None,
    ]
    with_state = MLSTM(4, return_sequences=True, return_state=True)
    assert with_state.compute_mask(x, mask)[0] is mask


def test_initialization_follows_the_official_code():
    layer = MLSTM(32, num_heads=4)
    layer.build((None, None, D))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.forget_gate_bias),
        np.linspace(3.0, 6.0, 4),
        rtol=1e-6,
    )
    assert np.all(keras.ops.convert_to_numpy(layer.input_gate_bias) == 0.0)
    small = keras.ops.convert_to_numpy(layer.input_gate_kernel)
    assert 0.0 < np.std(small) < 0.05
    scale = keras.ops.convert_to_numpy(layer.head_norm_scale)
    assert np.all(scale == 1.0)


def test_dropout_only_in_training():
    layer = MLSTM(8, dropout=0.5, seed=3)
    x = np.random.default_rng(0).normal(size=(B, T, D)).astype("float32")
    inference = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_array_equal(
        inference, keras.ops.convert_to_numpy(layer(x))
    )
    training = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(training, inference)


def test_seeded_gate_kernels_differ():
    layer = MLSTM(16, seed=7)
    layer.build((None, None, D))
    input_kernel = keras.ops.convert_to_numpy(layer.input_gate_kernel)
    forget_kernel = keras.ops.convert_to_numpy(layer.forget_gate_kernel)
    assert not np.array_equal(input_kernel, forget_kernel)
    again = MLSTM(16, seed=7)
    again.build((None, None, D))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again.input_gate_kernel), input_kernel
    )
