"""Saving and loading: ``.keras`` round trips on this backend, and models
saved under each backend load under the other two with the same outputs.

Cross-backend tolerance: 1e-5 of the largest output (float32; the backends
order their sums differently).
"""

import json
import os

import keras
import numpy as np
import pytest
from utils import relative_error
from utils import run_under_backend
from utils import to_numpy

from keras_mlstm import MLSTM

BACKEND = keras.backend.backend()
OTHERS = [b for b in ("tensorflow", "jax", "torch") if b != BACKEND]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOAD_AND_PREDICT = """
import sys
import numpy as np
import keras
import keras_mlstm  # registers MLSTM
model = keras.saving.load_model(sys.argv[1])
data = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(data["x"])))
"""


def build_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 5))
    x = keras.layers.Masking()(inputs)
    x = keras.layers.Bidirectional(
        MLSTM(8, num_heads=2, return_sequences=True)
    )(x)
    x = MLSTM(
        12,
        num_heads=3,
        activation="tanh",
        forget_gate_activation="exp",
        chunk_size=4,
        form="chunkwise",
    )(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    # Move every weight off its initial value so a load that drops one shows.
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(to_numpy(weight) + 0.1 * rng.normal(size=weight.shape))
    return model


def sample_input():
    x = np.random.default_rng(2).normal(size=(4, 12, 5)).astype("float32")
    x[1, 8:] = 0.0  # masked by Masking
    return x


@pytest.mark.slow_on("jax")
def test_keras_file_round_trip(tmp_path):
    model = build_model()
    x = sample_input()
    expected = to_numpy(model(x))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), expected)
    # Every layer's config, through JSON (Keras reloads some tuples as
    # lists). Layer by layer: the model's graph names the ops Keras creates
    # itself (the mask's `any`), and Keras before 3.11 renames those on
    # loading into a process that already holds the name (`any_1`).
    assert [layer.name for layer in loaded.layers] == [
        layer.name for layer in model.layers
    ]
    for layer, reloaded in zip(model.layers, loaded.layers, strict=True):
        assert json.dumps(reloaded.get_config(), sort_keys=True) == (
            json.dumps(layer.get_config(), sort_keys=True)
        ), layer.name


def test_stateful_state_is_not_saved_and_can_be_carried_over(tmp_path):
    """As for `keras.layers.LSTM`, a `.keras` file holds the weights, not the
    stream state: the loaded layer starts a new stream. Assigning the saved
    layer's `states` continues the old one (docs/layer.md)."""
    inputs = keras.Input((6, 3), batch_size=2)
    layer = MLSTM(4, stateful=True)
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(3).normal(size=(2, 6, 3)).astype("float32")
    first = to_numpy(model(x))  # from the zero state
    path = str(tmp_path / "stateful.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_layer = loaded.layers[-1]
    assert len(loaded.get_weights()) == len(model.get_weights()) == 7
    for state in loaded_layer.states:
        assert np.all(to_numpy(state) == 0.0)
    np.testing.assert_allclose(to_numpy(loaded(x)), first, rtol=0, atol=0)
    loaded_layer.reset_state()
    for target, source in zip(loaded_layer.states, layer.states, strict=True):
        target.assign(source)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


@pytest.mark.parametrize("other", OTHERS)
def test_saved_here_loads_under_other_backend(other, tmp_path):
    model = build_model()
    x = sample_input()
    expected = to_numpy(model(x))
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.savez(tmp_path / "data.npz", x=x)
    out = str(tmp_path / "out.npy")
    run_under_backend(other, LOAD_AND_PREDICT, path, tmp_path / "data.npz", out)
    assert relative_error(np.load(out), expected) < 1e-5
