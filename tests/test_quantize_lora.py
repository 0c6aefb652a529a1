"""Keras's own `model.quantize("int8")` and `enable_lora` on models that
hold each block, then `.keras` saving and loading: on the newest Keras and,
in the floor run of `tests/run_all_backends.py`, on the lowest that
`pyproject.toml` allows (Keras 3.10's `Dense.quantize` takes no `config`,
3.12's does; a quantized projection's policy must reach the reloaded
block). The KerasHub models have their own tests in `test_hub.py`.

Tolerances: int8 kernels with per-channel scales (and int8 inputs, as
Keras quantizes them) keep a random model's outputs within 10 % of float
(relative to the largest; measured 1-4 %). A reloaded model computes what
the saved one computed, with the same weights and the same operations:
equal up to float32 rounding (1e-6 of the largest output; 1e-5 where
LoRA's adapters are merged into the kernels, a different order of
operations).
"""

import keras
import numpy as np
import pytest
from utils import relative_error
from utils import to_numpy

from keras_mlstm import MLSTMBlock
from keras_mlstm import MLSTMLargeBlock
from keras_mlstm import MLSTMStack
from keras_mlstm.layers.projection import Projection

WIDTH = 32
# (name, the layer, its projections: the Dense layers inside it)
LAYERS = {
    "mlstm_block": (lambda: MLSTMBlock(num_heads=2), 2),
    "large_block": (lambda: MLSTMLargeBlock(num_heads=2), 8),
    "mlstm_stack": (lambda: MLSTMStack(2, num_heads=2), 4),
    "large_stack": (
        lambda: MLSTMStack(2, num_heads=2, block_variant="large"),
        16,
    ),
}


def model_with(name, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((None, WIDTH)),
            LAYERS[name][0](),
            keras.layers.Dense(4),
        ]
    )


def inputs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 7, WIDTH)).astype("float32")


def reloaded(model, path):
    model.save(path)
    return keras.saving.load_model(path)


def assert_same_outputs(model, expected, x):
    actual = to_numpy(model(x))
    assert relative_error(actual, expected) < 1e-6


@pytest.mark.parametrize("name", LAYERS)
def test_int8_model_runs_saves_and_reloads(name, tmp_path):
    model = model_with(name)
    x = inputs()
    reference = to_numpy(model(x))
    model.quantize("int8")
    quantized = to_numpy(model(x))
    int8 = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, Projection) and layer.quantization_mode == "int8"
    ]
    assert len(int8) == LAYERS[name][1]
    assert 0.0 < relative_error(quantized, reference) < 0.1

    again = reloaded(model, str(tmp_path / "int8.keras"))
    assert sum(w.dtype == "int8" for w in again.weights) == len(int8) + 1
    assert_same_outputs(again, quantized, x)
    # A reloaded model holds the policies as a map; it saves them again.
    assert_same_outputs(
        reloaded(again, str(tmp_path / "again.keras")), quantized, x
    )


@pytest.mark.parametrize("name", LAYERS)
def test_lora_model_trains_saves_and_reloads(name, tmp_path):
    """KerasHub's recipe (`Backbone.enable_lora`): freeze every layer, then
    adapt the query and value projections ("large") or the up-projection
    ("mlstm")."""
    model = model_with(name)
    for layer in model._flatten_layers(include_self=False):
        layer.trainable = False
    targets = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, Projection) and layer.name in ("up", "q", "v")
    ]
    for layer in targets:
        layer.trainable = True
        layer.enable_lora(2)
    names = sorted({w.path.split("/")[-1] for w in model.trainable_weights})
    assert names == ["lora_kernel_a", "lora_kernel_b"]
    assert len(model.trainable_weights) == 2 * len(targets)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = inputs()
    frozen = [to_numpy(w) for w in model.non_trainable_weights]
    before = to_numpy(model(x))
    model.train_on_batch(x, np.ones((3, 7, 4), "float32"))
    for weight, value in zip(model.non_trainable_weights, frozen, strict=True):
        np.testing.assert_array_equal(to_numpy(weight), value)
    for weight in model.trainable_weights:
        if weight.path.endswith("lora_kernel_b"):  # initialised to zeros
            assert np.abs(to_numpy(weight)).max() > 0.0
    trained = to_numpy(model(x))
    assert relative_error(trained, before) > 1e-5  # float32 rounding: 1e-7

    # Keras saves the adapters merged into the kernels: the reloaded model
    # has no adapters and computes what the trained one computes.
    again = reloaded(model, str(tmp_path / "lora.keras"))
    assert not [w for w in again.weights if "lora" in w.path]
    assert relative_error(to_numpy(again(x)), trained) < 1e-5
