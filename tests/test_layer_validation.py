"""Bad input to the layer: a ValueError naming the problem, raised before
any computation (checked by making the op fail the test if reached)."""

import keras
import numpy as np
import pytest

from keras_mlstm import MLSTM
from keras_mlstm.layers import mlstm as layer_module

B, T, D = 2, 6, 3


def built_layer(**kwargs):
    layer = MLSTM(8, num_heads=2, **kwargs)
    layer.build((B if kwargs.get("stateful") else None, None, D))
    return layer


@pytest.fixture
def no_computation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("computation started before validation")

    monkeypatch.setattr(layer_module, "mlstm", fail)


def good_state(batch=B, heads=2, size=4, dtype="float32"):
    return [
        np.zeros((batch, heads, size, size), dtype),
        np.zeros((batch, heads, size), dtype),
        np.zeros((batch, heads), dtype),
    ]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(units=0), "`units`"),
        (dict(units=2.5), "`units`"),
        (
            dict(units=12, num_heads=5),
            r"`num_heads` \(5\) must divide `units` \(12\)",
        ),
        (dict(units=8, num_heads=0), "`num_heads`"),
        (dict(units=8, dropout=1.0), "`dropout`"),
        (dict(units=8, form="fast"), "`form`"),
        (
            dict(units=8, forget_gate_activation="tanh"),
            "`forget_gate_activation`",
        ),
        (dict(units=8, chunk_size=0), "`chunk_size`"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLSTM(**kwargs)


def test_stateful_needs_a_batch_size():
    with pytest.raises(ValueError, match="fixed batch size"):
        keras.Sequential([keras.Input((T, D)), MLSTM(8, stateful=True)])


@pytest.mark.parametrize(
    "inputs,match",
    [
        (np.zeros((B, T), "float32"), "rank 3"),
        (np.zeros((B, T, D, 1), "float32"), "rank 3"),
        (np.zeros((B, T, D + 1), "float32"), "built for 3 input features"),
    ],
)
def test_call_rejects_bad_inputs(inputs, match, no_computation):
    layer = built_layer()
    with pytest.raises(ValueError, match=match):
        layer.call(inputs)


def test_symbolic_rank_is_checked():
    with pytest.raises(ValueError, match="ndim=3"):
        MLSTM(8)(keras.Input((D,)))


def test_stateful_batch_size_is_checked(no_computation):
    layer = built_layer(stateful=True)
    with pytest.raises(ValueError, match="batch size 2"):
        layer.call(np.zeros((B + 1, T, D), "float32"))


@pytest.mark.parametrize(
    "state,match",
    [
        (good_state()[:2], "3 tensors"),
        (good_state() + [np.zeros((B,), "float32")], "3 tensors"),
        ("state", "list"),
        ([good_state()[0][:, :1], *good_state()[1:]], r"`initial_state\[C\]`"),
        (
            [good_state()[0], good_state()[1][..., :3], good_state()[2]],
            r"`initial_state\[n\]`",
        ),
        (
            [*good_state()[:2], np.zeros((B + 1, 2), "float32")],
            r"`initial_state\[m\]`.*B = 3",
        ),
        (good_state(dtype="float64"), "dtype float32"),
        (good_state(dtype="float16"), "dtype float32"),
    ],
)
def test_initial_state_is_checked(state, match, no_computation):
    layer = built_layer()
    with pytest.raises(ValueError, match=match):
        layer.call(np.zeros((B, T, D), "float32"), initial_state=state)


def test_mask_shape_is_checked(no_computation):
    layer = built_layer()
    with pytest.raises(ValueError, match="`mask`"):
        layer.call(
            np.zeros((B, T, D), "float32"), mask=np.ones((B, T + 1), bool)
        )
