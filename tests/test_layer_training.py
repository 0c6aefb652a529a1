"""The layer in training: learning a memory task with ``model.fit``, mixed
precision, and compiled (XLA) training steps."""

import keras
import numpy as np
import pytest
from utils import relative_error
from utils import to_numpy

from keras_mlstm import MLSTM

BACKEND = keras.backend.backend()
LENGTH, VOCAB = 16, 8


def marked_recall(n, seed):
    """One-hot symbols with a marker bit on one step; the target is the
    symbol at the marked step, which must be held until the end."""
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, VOCAB, size=(n, LENGTH))
    marked = rng.integers(0, LENGTH - 2, size=n)
    x = np.zeros((n, LENGTH, VOCAB + 1), "float32")
    x[np.arange(n)[:, None], np.arange(LENGTH), symbols] = 1.0
    x[np.arange(n), marked, VOCAB] = 1.0
    return x, symbols[np.arange(n), marked]


@pytest.mark.parametrize("stacked", [False, True])
def test_learns_marked_recall(stacked):
    keras.utils.set_random_seed(0)
    x, y = marked_recall(1024, seed=0)
    x_val, y_val = marked_recall(256, seed=1)
    layers = [keras.Input((LENGTH, VOCAB + 1))]
    if stacked:
        layers.append(MLSTM(32, return_sequences=True))
    layers += [MLSTM(32), keras.layers.Dense(VOCAB)]
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.1 * losses[0]  # chance level is ln 8 = 2.08
    loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
    assert accuracy > 0.9
    predictions = model.predict(x_val, verbose=0)
    assert predictions.shape == (256, VOCAB)
    assert np.mean(np.argmax(predictions, -1) == y_val) > 0.9


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        x, y = marked_recall(128, seed=2)
        layer = MLSTM(16, return_sequences=True, return_state=True)
        inputs = keras.Input((LENGTH, VOCAB + 1))
        outputs, c, n, m = layer(inputs)
        model = keras.Model(
            inputs, keras.layers.Dense(VOCAB, dtype="float32")(outputs[:, -1])
        )
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        for weight in layer.weights:
            assert keras.backend.standardize_dtype(weight.dtype) == "float32"
        out, *states = layer(x)
        compute = "bfloat16" if policy == "mixed_bfloat16" else "float16"
        assert keras.backend.standardize_dtype(out.dtype) == compute
        for state in states:
            assert keras.backend.standardize_dtype(state.dtype) == "float32"
            assert np.all(np.isfinite(to_numpy(state)))
        assert np.all(np.isfinite(to_numpy(keras.ops.cast(out, "float32"))))
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.skipif(
    BACKEND == "torch", reason="jit_compile=True is XLA: JAX and TensorFlow"
)
@pytest.mark.parametrize("form", ["auto", "chunkwise"])
def test_jit_compile_matches_eager(form):
    keras.utils.set_random_seed(0)
    x, y = marked_recall(64, seed=3)
    inputs = keras.Input((LENGTH, VOCAB + 1))
    hidden = MLSTM(16, return_sequences=True, form=form, chunk_size=4)(inputs)
    outputs = keras.layers.Dense(VOCAB)(MLSTM(16)(hidden))
    model = keras.Model(inputs, outputs)
    eager = to_numpy(model(x))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    assert relative_error(model.predict(x, verbose=0), eager) < 1e-5
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert (
        relative_error(model.predict(x, verbose=0), to_numpy(model(x))) < 1e-5
    )
