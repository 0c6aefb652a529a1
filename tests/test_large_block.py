"""MLSTMLargeBlock (the xLSTM 7B block) against the float64 NumPy reference
of the official ``xlstm_large`` equations (``tests/reference.py``), its
state, masks, init and argument checks.

Tolerances as for ``MLSTMBlock``: float64 1e-9 of the largest output,
float32 1e-5 (measured <= 2e-6).
"""

import keras
import numpy as np
import pytest
from reference import mlstm_large_block_reference
from utils import FORMS
from utils import named_weights
from utils import relative_error
from utils import to_numpy

from keras_mlstm import MLSTMLargeBlock
from keras_mlstm import MLSTMStack

D, NH, T, B = 32, 2, 19, 2


def randomized_block(dtype="float32", seed=0, **kwargs):
    block = MLSTMLargeBlock(num_heads=NH, dtype=dtype, seed=seed, **kwargs)
    block.build((None, None, D))
    rng = np.random.default_rng(seed)
    for weight in block.weights:
        value = to_numpy(weight) + 0.3 * rng.normal(size=weight.shape)
        weight.assign(value.astype(weight.dtype))
    # Input gates near the trained range, not at the -10 init.
    block.input_gate_bias.assign(
        rng.normal(size=(NH,)).astype(block.input_gate_bias.dtype)
    )
    return block


def weights_of(block):
    return named_weights(block)


def inputs(dtype="float32", seed=1, length=T):
    x = np.random.default_rng(seed).normal(size=(B, length, D))
    return x.astype(dtype)


@pytest.mark.parametrize(
    "form,dtype,tolerance",
    [pytest.param("chunkwise", "float64", 1e-9, marks=pytest.mark.float64)]
    + [(form, "float32", 1e-5) for form in FORMS],
)
def test_matches_reference(form, dtype, tolerance):
    block = randomized_block(dtype, form=form, chunk_size=8)
    x = inputs(dtype)
    out, c, n, m = block(x, return_state=True)
    expected, (c_ref, n_ref, m_ref) = mlstm_large_block_reference(
        x, weights_of(block), NH
    )
    assert relative_error(to_numpy(out), expected) < tolerance
    assert relative_error(to_numpy(c), c_ref) < tolerance * 10
    assert relative_error(to_numpy(n), n_ref) < tolerance * 10
    assert relative_error(to_numpy(m), m_ref) < tolerance


def test_step_by_step_equals_one_pass():
    block = randomized_block()
    x = inputs()
    whole = to_numpy(block(x))
    state, steps = None, []
    for t in range(T):
        y, *state = block(
            x[:, t : t + 1], initial_state=state, return_state=True
        )
        steps.append(to_numpy(y))
    assert relative_error(np.concatenate(steps, 1), whole) < 1e-5


def test_padding_is_invisible():
    """Left padding holding garbage and NaN: the unpadded outputs and final
    state; masked steps output zeros."""
    block = randomized_block()
    x = inputs(length=12)
    padded = np.full((B, 16, D), np.nan, "float32")
    padded[:, 1] = 7.0
    padded[:, 4:] = x
    mask = np.zeros((B, 16), bool)
    mask[:, 4:] = True
    got, *state = block(padded, mask=mask, return_state=True)
    expected, *expected_state = block(x, return_state=True)
    got = to_numpy(got)
    assert relative_error(got[:, 4:], to_numpy(expected)) < 1e-5
    assert np.all(got[:, :4] == 0.0)
    for a, b in zip(state, expected_state, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5)


def test_initialisation():
    block = MLSTMLargeBlock(num_heads=4, num_layers=2, seed=1)
    block.build((None, None, 256))
    assert (block.qk_dim, block.v_dim, block.ffn_dim) == (128, 256, 704)
    small = np.sqrt(2 / (5 * 256))
    weights = named_weights(block)
    for name in ("q_kernel", "v_kernel", "ffn_gate_kernel"):
        std = weights[name].std()
        assert abs(std / small - 1) < 0.05, name
    out = weights["out_kernel"].std()
    assert abs(out / (2 / 2 / np.sqrt(256)) - 1) < 0.05
    np.testing.assert_array_equal(to_numpy(block.input_gate_bias), -10.0)
    np.testing.assert_allclose(
        to_numpy(block.forget_gate_bias), np.linspace(3, 6, 4), rtol=1e-6
    )
    np.testing.assert_array_equal(to_numpy(block.input_gate_kernel), 0.0)
    for name in ("norm_mlstm_weight", "head_norm_weight", "norm_ffn_weight"):
        np.testing.assert_array_equal(to_numpy(getattr(block, name)), 1.0)


# JAX: 14 s there; test_distribution.py's "large" case trains the large
# stack with `fit` on JAX by default.
@pytest.mark.slow_on("jax")
def test_large_stack_trains_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12, 4)).astype("float32")
    y = np.cumsum(x[..., :1], axis=1) / 4
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras.layers.Dense(32),
            MLSTMStack(2, num_heads=2, block_variant="large", seed=0),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first / 4
    path = str(tmp_path / "large.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_heads": 3}, "must divide the QK"),
        ({"qk_dim_factor": 0}, "qk_dim_factor"),
        ({"gate_soft_cap": -1.0}, "gate_soft_cap"),
        ({"form": "fast"}, "form"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLSTMLargeBlock(**kwargs).build((None, None, D))
    with pytest.raises(ValueError, match="dropout"):
        MLSTMStack(2, block_variant="large", dropout=0.1)
    with pytest.raises(ValueError, match="block_variant"):
        MLSTMStack(2, block_variant="small")


def test_bad_state():
    block = randomized_block()
    with pytest.raises(ValueError, match="initial_state"):
        block(inputs(), initial_state=[np.zeros((B, NH, 8, 16), "float32")])
