"""MLSTMBlock against the float64 NumPy reference of the official block's
equations (``tests/reference.py``), its recurrent state, masks, init and
argument checks.

Tolerances: float64 blocks 1e-9 of the largest output (the reference and the
block differ only in summation order); float32 blocks 1e-5 of the largest
output (D = 32 residual stream of O(1) values; float32 rounding of the ~200
terms per output, measured <= 2e-6).
"""

import keras
import numpy as np
import pytest
from reference import mlstm_block_reference
from utils import FORMS
from utils import named_weights
from utils import relative_error
from utils import to_numpy

from keras_mlstm import MLSTMBlock

D, NH, T, B = 32, 2, 19, 2


def randomized_block(dtype="float32", seed=0, **kwargs):
    """A built block whose every weight is moved off its initial value."""
    block = MLSTMBlock(num_heads=NH, dtype=dtype, seed=seed, **kwargs)
    block.build((None, None, D))
    rng = np.random.default_rng(seed)
    for weight in block.weights:
        value = to_numpy(weight) + 0.3 * rng.normal(size=weight.shape)
        weight.assign(value.astype(weight.dtype))
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
    out, c, n, m, window = block(x, return_state=True)
    expected, (c_ref, n_ref, m_ref), window_ref = mlstm_block_reference(
        x, weights_of(block), NH
    )
    assert relative_error(to_numpy(out), expected) < tolerance
    assert relative_error(to_numpy(c), c_ref) < tolerance * 10
    assert relative_error(to_numpy(n), n_ref) < tolerance * 10
    assert relative_error(to_numpy(m), m_ref) < tolerance
    np.testing.assert_allclose(to_numpy(window), window_ref, rtol=0, atol=1e-5)


def test_forms_agree():
    x = inputs()
    outputs = []
    for form in FORMS:
        block = randomized_block(form=form, chunk_size=4)
        outputs.append(to_numpy(block(x)))
    for other in outputs[1:]:
        assert relative_error(other, outputs[0]) < 1e-5


@pytest.mark.parametrize("cuts", [(7, 12), tuple(range(1, T))])
@pytest.mark.slow_on("jax")
def test_pieces_equal_one_pass(cuts):
    """Carrying [C, n, m, conv] across calls, down to one step per call
    (generation), gives the outputs and final state of one pass."""
    block = randomized_block()
    x = inputs()
    whole, *whole_state = block(x, return_state=True)
    pieces, state = [], None
    for start, stop in zip((0, *cuts), (*cuts, T), strict=True):
        out, *state = block(
            x[:, start:stop], initial_state=state, return_state=True
        )
        pieces.append(to_numpy(out))
    assert relative_error(np.concatenate(pieces, 1), to_numpy(whole)) < 1e-5
    for a, b in zip(state, whole_state, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-4)


@pytest.mark.parametrize("side", ["left", "right", "middle"])
def test_padding_is_invisible(side):
    """Padding anywhere, holding garbage and NaN: the unmasked steps give
    the unpadded outputs, the final state (memory and convolution window)
    is the unpadded one, masked steps output zeros."""
    block = randomized_block()
    x = inputs(length=12)
    pad = 5
    mask = np.ones((B, 12 + pad), bool)
    if side == "left":
        mask[:, :pad] = False
    elif side == "right":
        mask[:, 12:] = False
    else:
        mask[:, 3 : 3 + pad] = False
    padded = np.full((B, 12 + pad, D), np.nan, "float32")
    padded[:, 0] = 9.0  # garbage of both kinds
    padded[mask] = x.reshape(-1, D)
    expected, *expected_state = block(x, return_state=True)
    got, *state = block(padded, mask=mask, return_state=True)
    got = to_numpy(got)
    assert relative_error(got[mask].reshape(x.shape), to_numpy(expected)) < 1e-5
    assert np.all(got[~mask] == 0.0)
    for a, b in zip(state, expected_state, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5)
    reference, _, window = mlstm_block_reference(
        np.nan_to_num(padded), weights_of(block), NH, mask=mask
    )
    assert relative_error(got, reference) < 1e-5
    assert relative_error(state[-1], window) < 1e-5


def test_initialisation_follows_official_code():
    block = MLSTMBlock(num_heads=4, num_layers=3, seed=7)
    block.build((None, None, 256))
    inner = 512
    assert block.inner_dim == inner
    small = np.sqrt(2 / (5 * 256))
    weights = named_weights(block)
    for name in ("up_kernel", "q_kernel", "k_kernel", "v_kernel"):
        std = weights[name].std()
        assert abs(std / small - 1) < 0.05, name
    down = weights["down_kernel"].std()
    assert abs(down / (2 / 3 / np.sqrt(256)) - 1) < 0.05
    np.testing.assert_array_equal(to_numpy(block.input_gate_kernel), 0.0)
    np.testing.assert_array_equal(to_numpy(block.forget_gate_kernel), 0.0)
    np.testing.assert_allclose(
        to_numpy(block.forget_gate_bias), np.linspace(3, 6, 4), rtol=1e-6
    )
    assert 0.03 < to_numpy(block.input_gate_bias).std() < 0.3
    np.testing.assert_array_equal(to_numpy(block.skip), 1.0)
    np.testing.assert_array_equal(to_numpy(block.norm_weight), 0.0)
    np.testing.assert_array_equal(to_numpy(block.head_norm_weight), 0.0)
    conv = to_numpy(block.conv_kernel)
    assert np.abs(conv).max() <= 0.5 and conv.std() > 0.2
    assert len(block.weights) == 14  # no biases by default
    inner_of = MLSTMBlock(proj_factor=1.3)
    inner_of.build((None, None, 100))
    assert inner_of.inner_dim == 192  # 130 rounded up to a multiple of 64


def test_seeded_weights_are_distinct_and_reproducible():
    a = MLSTMBlock(num_heads=2, seed=3)
    b = MLSTMBlock(num_heads=2, seed=3)
    for block in (a, b):
        block.build((None, None, D))
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(wa), to_numpy(wb))
    q, k, v = (to_numpy(w) for w in (a.q_kernel, a.k_kernel, a.v_kernel))
    assert not np.array_equal(q, k) and not np.array_equal(k, v)


def test_mixed_precision_keeps_states_float32():
    block = MLSTMBlock(num_heads=NH, dtype="mixed_bfloat16")
    x = inputs()
    out, c, n, m, window = block(x, return_state=True)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    for state in (c, n, m):
        assert keras.backend.standardize_dtype(state.dtype) == "float32"
    assert keras.backend.standardize_dtype(window.dtype) == "bfloat16"
    assert np.isfinite(to_numpy(keras.ops.cast(out, "float32"))).all()
    assert block.input_gate_kernel.dtype == "float32"


def test_functional_model_and_config_round_trip(tmp_path):
    block = randomized_block(dropout=0.1, conv_kernel_size=3)
    inputs_ = keras.Input((None, D))
    model = keras.Model(inputs_, block(inputs_))
    x = inputs()
    expected = to_numpy(model(x))
    path = str(tmp_path / "block.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), expected)
    clone = MLSTMBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()


def test_symbolic_state_outputs():
    inputs_ = keras.Input((None, D), batch_size=3)
    out, c, n, m, window = MLSTMBlock(num_heads=NH, return_state=True)(inputs_)
    assert out.shape == (3, None, D)
    assert c.shape == (3, NH, 32, 32) and n.shape == (3, NH, 32)
    assert m.shape == (3, NH) and window.shape == (3, 3, 64)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_heads": 3}, "must divide the inner width"),
        ({"proj_factor": -1}, "proj_factor"),
        ({"conv_kernel_size": 0}, "conv_kernel_size"),
        ({"qkv_proj_blocksize": 5}, "qkv_proj_blocksize"),
        ({"dropout": 1.0}, "dropout"),
        ({"form": "fast"}, "form"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        block = MLSTMBlock(**kwargs)
        block.build((None, None, D))


def test_bad_call_inputs():
    block = randomized_block()
    x = inputs()
    with pytest.raises(ValueError, match="ndim=3|rank 3"):
        block(x[0])
    with pytest.raises(ValueError, match="32"):
        block(np.zeros((B, T, 8), "float32"))
    with pytest.raises(ValueError, match="mask"):
        block(x, mask=np.ones((B, T + 1), bool))
    _, *state = block(x, return_state=True)
    with pytest.raises(ValueError, match=r"initial_state\[conv\]"):
        block(x, initial_state=[*state[:3], np.zeros((B, 2, 64), "float32")])
    with pytest.raises(ValueError, match=r"initial_state\[m\]"):
        block(
            x,
            initial_state=[
                *state[:2],
                keras.ops.zeros((B, NH), "int32"),
                state[3],
            ],
        )
    with pytest.raises(ValueError, match="initial_state"):
        block(x, initial_state=state[:3])
