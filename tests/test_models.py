"""MLSTMStack, build_mlstm_model and MaskedPooling: shapes, learning with
``fit``, saving (also across backends). Language models and generation are
in tests/test_hub.py.

Tolerance: float32, 1e-5 of the largest output across backends.
"""

import json
import os

import keras
import numpy as np
import pytest
from utils import relative_error
from utils import run_under_backend
from utils import to_numpy

import keras_mlstm
from keras_mlstm import MaskedPooling
from keras_mlstm import MLSTMStack
from keras_mlstm import build_mlstm_model

BACKEND = keras.backend.backend()
OTHERS = [b for b in ("tensorflow", "jax", "torch") if b != BACKEND]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def perturb(model, seed=0, scale=0.1):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = to_numpy(weight) + scale * rng.normal(size=weight.shape)
        weight.assign(value.astype(weight.dtype))


def small_classifier(variant="mlstm", seed=0):
    model = build_mlstm_model(
        "classification",
        vocabulary_size=23,
        num_classes=3,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
        block_variant=variant,
        mask_zero=True,
        chunk_size=4,
        seed=seed,
    )
    perturb(model, seed)
    return model


def test_stack_in_sequential_learns_with_fit():
    """Sequence regression: output the input delayed by two steps (needs the
    memory and the causal convolution), loss falls by 5x in 40 epochs."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 4)).astype("float32")
    y = np.zeros_like(x[..., :1])
    y[:, 2:, 0] = x[:, :-2, 0]
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras.layers.Dense(32),
            MLSTMStack(2, num_heads=2, seed=0),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first / 5


@pytest.mark.slow_on("jax")
def test_stack_state_pieces_equal_one_pass():
    stack = MLSTMStack(2, num_heads=2, seed=1)
    x = np.random.default_rng(1).normal(size=(2, 11, 32)).astype("float32")
    whole = to_numpy(stack(x))
    out_a, state = stack(x[:, :6], return_state=True)
    out_b, _ = stack(x[:, 6:], initial_state=state, return_state=True)
    joined = np.concatenate([to_numpy(out_a), to_numpy(out_b)], 1)
    assert relative_error(joined, whole) < 1e-5
    with pytest.raises(ValueError, match="list of 2 block states"):
        stack(x, initial_state=state[:1])


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.slow_on("jax")
def test_classifier_with_padding_learns(pooling):
    """Classify the sign of the sum of a zero-padded token sequence."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 5, size=(128, 10))
    lengths = rng.integers(4, 11, size=128)
    tokens[np.arange(10)[None] >= lengths[:, None]] = 0
    labels = ((tokens == 1) | (tokens == 2)).sum(1) > (tokens > 2).sum(1)
    model = build_mlstm_model(
        "classification",
        vocabulary_size=5,
        num_classes=2,
        hidden_dim=32,
        num_layers=1,
        num_heads=2,
        pooling=pooling,
        mask_zero=True,
        seed=0,
    )
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(tokens, labels.astype("int32"), epochs=25, verbose=0)
    _, accuracy = model.evaluate(tokens, labels.astype("int32"), verbose=0)
    assert accuracy > 0.85
    # Padding is invisible: a padded row equals the row without padding.
    row = tokens[lengths < 10][:1]
    short = row[:, : int((row > 0).sum())]
    assert relative_error(to_numpy(model(short)), to_numpy(model(row))) < 1e-5


# JAX: eager calls at three lengths compile every op three times (16 s);
# it fits and predicts at unknown lengths throughout its default run.
@pytest.mark.slow_on("jax")
def test_regression_model_shapes_and_any_length():
    model = build_mlstm_model(
        "regression", input_dim=3, output_dim=2, hidden_dim=32, num_heads=2
    )
    for length in (1, 5, 70):
        x = np.zeros((2, length, 3), "float32")
        assert tuple(model(x).shape) == (2, length, 2)


def test_masked_pooling():
    x = np.arange(24, dtype="float32").reshape(2, 4, 3)
    mask = np.array([[True, True, False, False], [False] * 4])
    last = to_numpy(MaskedPooling("last")(x, mask=mask))
    np.testing.assert_array_equal(last, [x[0, 1], np.zeros(3)])
    mean = to_numpy(MaskedPooling("mean")(x, mask=mask))
    np.testing.assert_allclose(mean, [x[0, :2].mean(0), np.zeros(3)])
    np.testing.assert_array_equal(to_numpy(MaskedPooling("last")(x)), x[:, -1])
    with pytest.raises(ValueError, match="pooling"):
        MaskedPooling("max")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"task": "translation"}, "task"),
        ({"task": "classification", "num_classes": 2}, "input_dim"),
        ({"task": "classification", "input_dim": 3}, "num_classes"),
        ({"task": "regression", "input_dim": 3}, "output_dim"),
        (
            {"task": "regression", "vocabulary_size": 3, "output_dim": 1},
            "input_dim",
        ),
        (
            {"task": "classification", "vocabulary_size": 9, "input_dim": 3},
            "both",
        ),
        ({"task": "language_model", "vocabulary_size": 9}, "task"),
        ({"task": "classification", "pooling": "max"}, "pooling"),
        (
            {"task": "regression", "input_dim": 3, "hidden_dim": 0},
            "hidden_dim",
        ),
    ],
)
def test_builder_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mlstm_model(**kwargs)


LOAD_AND_PREDICT = """
import sys
import numpy as np
import keras
import keras_mlstm
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]))))
"""


@pytest.mark.parametrize("variant", ["mlstm", "large"])
def test_classifier_round_trip(variant, tmp_path):
    model = small_classifier(variant)
    tokens = np.random.default_rng(3).integers(0, 23, size=(2, 13))
    expected = to_numpy(model(tokens))
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(tokens)), expected)
    # Through JSON: Keras reloads some tuples as lists.
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True
    )


@pytest.mark.parametrize("other", OTHERS)
# JAX: the layer's own cross-backend loading (tests/test_layer_saving.py)
# stays in its default run; this model's loading runs from TensorFlow and
# PyTorch by default.
@pytest.mark.slow_on("jax")
def test_classifier_loads_under_other_backend(other, tmp_path):
    model = small_classifier("large")
    tokens = np.random.default_rng(4).integers(0, 23, size=(2, 13))
    expected = to_numpy(model(tokens))
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    np.save(tmp_path / "tokens.npy", tokens)
    out = str(tmp_path / "out.npy")
    run_under_backend(
        other, LOAD_AND_PREDICT, path, tmp_path / "tokens.npy", out
    )
    assert relative_error(np.load(out), expected) < 1e-5


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLSTMStack(1, num_heads=2),
        lambda: MLSTMStack(1, num_heads=2, block_variant="large"),
        lambda: keras_mlstm.MLSTM(32, return_sequences=True),
        lambda: keras_mlstm.mLSTM(32, 32, num_layers=2),
    ],
    ids=["block", "large_block", "MLSTM", "mLSTM"],
)
# A TensorFlow graph question; JAX fits and predicts at unknown lengths
# throughout its default run.
@pytest.mark.slow_on("jax")
def test_layers_trace_with_unknown_batch_and_length(make):
    """``fit`` and ``predict`` trace with the batch and time axes unknown
    (TensorFlow builds a graph then: static head sizes must survive)."""
    inputs = keras.Input((None, 32))
    x = make()(inputs)
    x = x[0] if isinstance(x, (list, tuple)) else x
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    data = np.random.default_rng(0).normal(size=(6, 9, 32)).astype("f4")
    model.fit(data, data[..., :1], batch_size=4, epochs=1, verbose=0)
    assert model.predict(data[:, :5], verbose=0).shape == (6, 5, 1)


@pytest.mark.parametrize(
    "make,old,new",
    [
        (lambda: MLSTMStack(num_blocks=2), "num_blocks", "num_layers"),
        (
            lambda: keras_mlstm.MLSTMBlock(num_blocks=2),
            "num_blocks",
            "num_layers",
        ),
        (
            lambda: keras_mlstm.MLSTMLargeBlock(num_blocks=2),
            "num_blocks",
            "num_layers",
        ),
        (
            lambda: build_mlstm_model(
                "classification", vocab_size=9, num_classes=2
            ),
            "vocab_size",
            "vocabulary_size",
        ),
        (
            lambda: build_mlstm_model(
                "regression", input_dim=2, output_dim=1, embedding_dim=8
            ),
            "embedding_dim",
            "hidden_dim",
        ),
        (
            lambda: build_mlstm_model(
                "regression", input_dim=2, output_dim=1, num_blocks=1
            ),
            "num_blocks",
            "num_layers",
        ),
    ],
)
def test_renamed_arguments_raise_a_type_error_naming_the_new_one(
    make, old, new
):
    with pytest.raises(TypeError, match=f"`{old}`, which is now `{new}`"):
        make()


def test_models_saved_before_the_renames_load(tmp_path):
    """A `.keras` file whose stack config says `num_blocks` (as every file
    saved before issue #20 does) loads, with the same outputs."""
    import zipfile

    model = small_classifier()
    path, old = str(tmp_path / "new.keras"), str(tmp_path / "old.keras")
    model.save(path)
    with zipfile.ZipFile(path) as new_file, zipfile.ZipFile(old, "w") as f:
        for item in new_file.infolist():
            data = new_file.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                assert '"num_layers": 2' in text
                data = text.replace('"num_layers": 2', '"num_blocks": 2')
            f.writestr(item, data)
    loaded = keras.saving.load_model(old)
    assert loaded.get_layer("mlstm_stack").num_layers == 2
    tokens = np.random.default_rng(0).integers(1, 23, size=(2, 7))
    np.testing.assert_array_equal(
        to_numpy(loaded(tokens)), to_numpy(model(tokens))
    )


@pytest.mark.parametrize("name", ["ReversibleEmbedding", "SoftCap"])
def test_removed_layers_say_what_replaces_them(name):
    config = {"class_name": f"keras_mlstm>{name}", "config": {}}
    with pytest.raises(TypeError, match=f"keras_mlstm.{name} was removed"):
        keras.saving.deserialize_keras_object(config)
    assert not hasattr(keras_mlstm, name)


def test_models_pass_every_stack_argument_on():
    """`build_mlstm_model` declares only its own arguments; every other
    one reaches the stack, which serializes it."""
    model = build_mlstm_model(
        "regression",
        input_dim=3,
        output_dim=1,
        hidden_dim=32,
        num_layers=1,
        num_heads=2,
        block_variant="large",
        norm_epsilon=1e-4,
        gate_soft_cap=7.0,
    )
    stack = model.get_layer("mlstm_stack")
    config = stack.get_config()
    assert (config["block_variant"], config["norm_epsilon"]) == ("large", 1e-4)
    assert stack.blocks[0].norm_epsilon == 1e-4
    assert stack.blocks[0].gate_soft_cap == 7.0
    with pytest.raises(TypeError, match="unexpected arguments"):
        build_mlstm_model("regression", input_dim=3, output_dim=1, units=4)


def test_padding_mask_masks_as_mask_does_and_leaves_no_keras_mask():
    """KerasHub's way (`padding_mask`) and Keras's (`mask`) compute the
    same; only `mask` follows the outputs as a Keras mask."""
    stack = MLSTMStack(2, num_heads=2, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 6, 32)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    by_mask = stack(x, mask=mask)
    by_padding = stack(x, padding_mask=mask.astype("int32"))
    np.testing.assert_array_equal(to_numpy(by_padding), to_numpy(by_mask))
    both = stack(x, mask=np.ones_like(mask), padding_mask=mask)
    np.testing.assert_array_equal(to_numpy(both), to_numpy(by_mask))
    inputs = keras.Input((None, 32))
    outputs = stack(inputs, padding_mask=keras.Input((None,), dtype="int32"))
    assert getattr(outputs, "_keras_mask", None) is None
    masked = stack(keras.layers.Masking()(inputs))
    assert getattr(masked, "_keras_mask", None) is not None
