"""The layer against the float64 reference of its equations, and the
equivalences a recurrent layer promises: forms, streaming, masking,
direction.

Tolerances: float64 layers 1e-9 of the largest output (the op is held to
1e-10; the head norm divides by a per-head standard deviation, which can
amplify rounding ~10x); 1e-6 where a Keras activation is applied, since
Keras computes its activations in float32 for float64 input on JAX.
float32: 1e-4 of the largest output, and the cross-form gradient check
5e-3 (float32 rounding through the head norm and the ratio read-out, summed
over 70 steps and all weights; measured 2e-3).
"""

import keras
import numpy as np
import pytest
from reference import mlstm_layer_reference
from utils import FORMS
from utils import relative_error
from utils import to_numpy
from utils import value_and_grad

from keras_mlstm import MLSTM

B, T, D = 3, 23, 5


def randomize(layer, seed=0):
    """Give every weight a random, nonzero value (biases included)."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        if weight.name.startswith("state_"):
            continue
        value = rng.normal(size=weight.shape) * 0.5
        if weight.name == "forget_gate_bias":
            value = value + 3.0
        if weight.name == "head_norm_scale":
            value = value + 1.0
        weight.assign(
            value.astype(keras.backend.standardize_dtype(weight.dtype))
        )


def weights_of(layer):
    return {
        w.name: to_numpy(w)
        for w in layer.weights
        if not w.name.startswith("state_")
    }


def data(seed=1, dtype="float32", length=T):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, length, D)).astype(dtype)


def make_layer(dtype="float32", **kwargs):
    layer = MLSTM(dtype=dtype, **kwargs)
    layer.build((B, None, D))
    randomize(layer)
    return layer


CONFIGS = [
    dict(units=8),
    dict(units=12, num_heads=3, return_sequences=True),
    dict(units=8, num_heads=2, activation="tanh", head_norm=False),
    dict(units=8, num_heads=2, go_backwards=True, return_sequences=True),
    dict(units=6, num_heads=2, use_bias=False, forget_gate_activation="exp"),
    dict(
        units=8, num_heads=2, return_sequences=True, zero_output_for_mask=True
    ),
]
REFERENCE_KEYS = (
    "num_heads",
    "activation",
    "head_norm",
    "forget_gate_activation",
    "go_backwards",
    "return_sequences",
    "zero_output_for_mask",
)


def reference_kwargs(layer):
    config = layer.get_config()
    kwargs = {key: config[key] for key in REFERENCE_KEYS}
    assert config["activation"] in (None, "tanh")
    return kwargs


@pytest.mark.parametrize(
    "dtype,tolerance",
    [
        pytest.param("float64", 1e-9, marks=pytest.mark.float64),
        ("float32", 1e-4),
    ],
)
@pytest.mark.parametrize(
    "config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))]
)
@pytest.mark.parametrize("masked", [False, True])
def test_layer_matches_reference(config, dtype, tolerance, masked):
    if dtype == "float64" and config.get("activation"):
        # Keras's own activations compute float64 in float32 on JAX.
        tolerance = 1e-6
    layer = make_layer(dtype, return_state=True, **config)
    x = data(dtype=dtype)
    mask = None
    if masked:
        mask = np.random.default_rng(2).random((B, T)) < 0.7
    rng = np.random.default_rng(3)
    size = layer.head_size
    state = [
        rng.normal(size=(B, layer.num_heads, size, size)),
        rng.normal(size=(B, layer.num_heads, size)),
        rng.normal(size=(B, layer.num_heads)),
    ]
    state_dtype = "float64" if dtype == "float64" else "float32"
    output, c, n, m = layer(
        x, initial_state=[s.astype(state_dtype) for s in state], mask=mask
    )
    expected, expected_state = mlstm_layer_reference(
        x,
        weights_of(layer),
        mask=mask,
        initial_state=state,
        **reference_kwargs(layer),
    )
    assert relative_error(output, expected) < tolerance
    for got, want in zip((c, n, m), expected_state, strict=True):
        assert relative_error(got, want) < tolerance


@pytest.mark.parametrize(
    "dtype,tolerance",
    [
        pytest.param("float64", 1e-9, marks=pytest.mark.float64),
        ("float32", 5e-3),
    ],
)
@pytest.mark.slow_on("jax")
def test_forms_give_same_outputs_and_gradients(dtype, tolerance):
    x = data(length=70, dtype=dtype)
    results = {}
    for form in FORMS:
        layer = make_layer(
            dtype,
            units=8,
            num_heads=2,
            form=form,
            chunk_size=16,
            return_sequences=True,
        )
        values = [to_numpy(w) for w in layer.trainable_variables]
        fixed = [
            keras.ops.convert_to_tensor(v)
            for v in layer.non_trainable_variables
        ]

        def loss(x, *trainable, layer=layer, fixed=fixed):
            out, _ = layer.stateless_call(list(trainable), fixed, x)
            return keras.ops.sum(out * out)

        results[form] = value_and_grad(loss, [x, *values])
    value_ref, grads_ref = results["recurrent"]
    for form in ("parallel", "chunkwise"):
        value, grads = results[form]
        assert abs(value - value_ref) < tolerance * abs(value_ref)
        for grad, grad_ref in zip(grads, grads_ref, strict=True):
            assert relative_error(grad, grad_ref) < tolerance, form


@pytest.mark.parametrize("form", ["auto", "chunkwise", "recurrent"])
@pytest.mark.slow_on("jax")
def test_stateful_pieces_equal_one_pass(form):
    x = data(length=30)
    full = make_layer(units=8, num_heads=2, return_sequences=True)
    expected = to_numpy(full(x))
    inputs = keras.Input((None, D), batch_size=B)
    stream_layer = MLSTM(
        8,
        num_heads=2,
        return_sequences=True,
        stateful=True,
        form=form,
        chunk_size=4,
    )
    model = keras.Model(inputs, stream_layer(inputs))
    # The Keras recipe: the stream state is not a weight (as for LSTM).
    stream_layer.set_weights(full.get_weights())
    pieces = [to_numpy(model(x[:, a:b])) for a, b in ((0, 7), (7, 8), (8, 30))]
    assert relative_error(np.concatenate(pieces, axis=1), expected) < 1e-5
    stream_layer.reset_state()
    for state in stream_layer.states:
        assert np.all(to_numpy(state) == 0.0)
    assert relative_error(model(x[:, :7]), expected[:, :7]) < 1e-5
    stream_layer.reset_states()
    assert relative_error(model(x[:, :7]), expected[:, :7]) < 1e-5


def padded_batch(lengths, left):
    rng = np.random.default_rng(5)
    sequences = [rng.normal(size=(n, D)).astype("float32") for n in lengths]
    width = max(lengths)
    x = np.zeros((len(lengths), width, D), "float32")
    mask = np.zeros((len(lengths), width), bool)
    for b, seq in enumerate(sequences):
        n = len(seq)
        if left:
            x[b, width - n :], mask[b, width - n :] = seq, True
        else:
            x[b, :n], mask[b, :n] = seq, True
    return sequences, x, mask


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.slow_on("jax")
def test_padded_batch_equals_unpadded_runs(left, go_backwards):
    lengths = [9, 4, 13]
    sequences, x, mask = padded_batch(lengths, left)
    for return_sequences in (False, True):
        layer = make_layer(
            units=8,
            num_heads=2,
            go_backwards=go_backwards,
            return_sequences=return_sequences,
            zero_output_for_mask=True,
        )
        batch_out = to_numpy(layer(x, mask=mask))
        for b, seq in enumerate(sequences):
            alone = to_numpy(layer(seq[None]))[0]
            if return_sequences:
                got = batch_out[b][mask[b][::-1] if go_backwards else mask[b]]
                assert relative_error(got, alone) < 1e-5
            else:
                assert relative_error(batch_out[b], alone) < 1e-5


@pytest.mark.slow_on("jax")
def test_masking_after_embedding_mask_zero():
    tokens = np.array([[3, 5, 2, 0, 0], [4, 1, 0, 0, 0]])
    embed = keras.layers.Embedding(10, D, mask_zero=True)
    layer = MLSTM(8, num_heads=2)
    model = keras.Sequential([keras.Input((5,), dtype="int32"), embed, layer])
    out = to_numpy(model(tokens))
    for b, n in enumerate((3, 2)):
        alone = to_numpy(layer(embed(tokens[b : b + 1, :n])))
        assert relative_error(out[b], alone[0]) < 1e-5


def test_masked_steps_repeat_last_output_by_default():
    sequences, x, mask = padded_batch([6, 3], left=False)
    layer = make_layer(units=8, num_heads=2, return_sequences=True)
    out = to_numpy(layer(x, mask=mask))
    np.testing.assert_array_equal(out[1, 3:], np.repeat(out[1, 2:3], 3, 0))
    assert np.all(out[1, 2] != 0.0)


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.slow_on("jax")
def test_bidirectional_with_mask_and_state(return_sequences):
    sequences, x, mask = padded_batch([7, 3, 10], left=False)
    bidirectional = keras.layers.Bidirectional(
        MLSTM(
            8, num_heads=2, return_sequences=return_sequences, return_state=True
        )
    )
    outputs = bidirectional(x, mask=mask)
    assert len(outputs) == 7
    merged = to_numpy(outputs[0])
    forward, backward = (
        bidirectional.forward_layer,
        bidirectional.backward_layer,
    )
    for b, seq in enumerate(sequences):
        f_out, *f_state = forward(seq[None])
        b_out, *b_state = backward(seq[None])
        f_out, b_out = to_numpy(f_out)[0], to_numpy(b_out)[0]
        if return_sequences:
            n = len(seq)
            got = merged[b, :n]
            want = np.concatenate([f_out, b_out[::-1]], axis=-1)
        else:
            got, want = merged[b], np.concatenate([f_out, b_out], axis=-1)
        assert relative_error(got, want) < 1e-5
        for got_state, want_state in zip(
            outputs[1:], f_state + b_state, strict=True
        ):
            assert (
                relative_error(to_numpy(got_state)[b], to_numpy(want_state)[0])
                < 1e-5
            )
