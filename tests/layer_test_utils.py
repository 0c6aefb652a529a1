"""A small version of Keras's own ``testing.TestCase.run_layer_test``.

Checks, for one set of constructor arguments: the config round trip (direct
and through Keras serialization), the number of weights, symbolic and eager
output shapes, a training step that changes the weights, and masking.
"""

import keras
import numpy as np


def shapes_of(outputs):
    if isinstance(outputs, (list, tuple)):
        return [tuple(o.shape) for o in outputs]
    return tuple(outputs.shape)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    supports_masking=True,
):
    # 1. Config round trips.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        if not isinstance(config[key], dict):  # objects come back serialized
            assert config[key] == value, key
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    # 2. Symbolic call: shapes, then weight counts once built.
    symbolic = layer_cls(**init_kwargs)
    inputs = keras.Input(batch_shape=input_shape)
    outputs = symbolic(inputs)
    assert shapes_of(outputs) == expected_output_shape
    assert len(symbolic.trainable_weights) == expected_num_trainable_weights
    assert (
        len(symbolic.non_trainable_weights)
        == expected_num_non_trainable_weights
    )

    # 3. Eager call: the same shapes.
    rng = np.random.default_rng(0)
    data = rng.normal(size=input_shape).astype("float32")
    eager = layer_cls(**init_kwargs)
    assert shapes_of(eager(data)) == expected_output_shape

    # 4. A training step changes every trainable weight and keeps the loss
    # finite.
    first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    model = keras.Model(inputs, first)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    target = rng.normal(size=shapes_of(first)).astype("float32")
    history = model.fit(
        data, target, epochs=1, batch_size=input_shape[0], verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    for w, b, a in zip(model.trainable_weights, before, after, strict=True):
        assert not np.array_equal(b, a), f"{w.path} did not train"

    # 5. Masking.
    assert eager.supports_masking == supports_masking
    if supports_masking:
        mask = np.ones(input_shape[:2], bool)
        mask[:, -1] = False
        masked = eager(data, mask=mask)
        assert shapes_of(masked) == expected_output_shape
