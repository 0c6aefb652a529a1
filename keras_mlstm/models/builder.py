"""`build_mlstm_model`: complete Keras models around an `MLSTMStack`, for
classification and sequence regression. Language models are KerasHub's
`XLSTMCausalLM` (`keras_mlstm.models.xlstm`)."""

import keras

from keras_mlstm.layers.base import RENAMED
from keras_mlstm.layers.base import reject_renamed
from keras_mlstm.layers.base import small_init_std
from keras_mlstm.models.masked_pooling import POOLINGS
from keras_mlstm.models.masked_pooling import MaskedPooling
from keras_mlstm.models.stack import STACK_ARGUMENTS
from keras_mlstm.models.stack import MLSTMStack
from keras_mlstm.models.stack import split_stack_arguments
from keras_mlstm.ops.common import positive_int

TASKS = ("classification", "regression")
# Renamed by issue #20 to KerasHub's names (old -> new).
BUILDER_RENAMED = {
    **RENAMED,
    "vocab_size": "vocabulary_size",
    "embedding_dim": "hidden_dim",
}


def build_mlstm_model(
    task,
    *,
    vocabulary_size=None,
    input_dim=None,
    output_dim=None,
    num_classes=None,
    hidden_dim=128,
    num_layers=2,
    pooling="last",
    mask_zero=False,
    context_length=None,
    name=None,
    **kwargs,
):
    """A functional `keras.Model` of mLSTM blocks for a common task,
    ready for `compile` and `fit`: inputs, an embedding (token ids) or a
    projection (features) to `hidden_dim`, an `MLSTMStack`, and a head.
    Language models are KerasHub's `XLSTMCausalLM`
    (`keras_mlstm.models.xlstm`, the `hub` extra).

    Args:
        task: `"classification"` (token ids or features to class logits
            `(B, num_classes)`, pooled over time) or `"regression"`
            (features `(B, T, input_dim)` to `(B, T, output_dim)`,
            sequence to sequence, e.g. time series).
        vocabulary_size: int. The number of token ids, for token inputs.
            Defaults to `None`.
        input_dim: int. Features per step, for feature inputs
            (`"regression"`, or `"classification"` without
            `vocabulary_size`). Defaults to `None`.
        output_dim: int. Outputs per step, for `"regression"`. Defaults to
            `None`.
        num_classes: int. For `"classification"`. Defaults to `None`.
        hidden_dim: int. The model width D, kept through the stack.
            Defaults to `128`.
        num_layers: int. The blocks of the `MLSTMStack`. Defaults to `2`.
        pooling: classification: `"last"` (last unmasked step) or
            `"mean"`. Defaults to `"last"`.
        mask_zero: bool. Token inputs: id 0 is padding and is masked.
            Defaults to `False`.
        context_length: None (any length) or a fixed T. Defaults to
            `None`.
        name: the model's name. Defaults to `None` (`"mlstm_<task>"`).
        **kwargs: any other argument of `MLSTMStack` (`num_heads`,
            `block_variant`, `dropout`, ..., `seed`, which also seeds the
            embedding).

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: for an unknown task or a missing or inapplicable size.
        TypeError: for an argument neither this function nor `MLSTMStack`
            takes, naming the new name of a renamed one.

    Example:

    >>> model = build_mlstm_model(
    ...     "classification", vocabulary_size=50, num_classes=3,
    ...     hidden_dim=32, num_layers=1, mask_zero=True,
    ... )
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> model.output_shape
    (None, 3)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517.
    """
    reject_renamed("build_mlstm_model", kwargs, BUILDER_RENAMED)
    stack_kwargs, unknown = split_stack_arguments(kwargs)
    if unknown:
        raise TypeError(
            f"build_mlstm_model() got unexpected arguments {sorted(unknown)}; "
            "besides its own it takes those of MLSTMStack: "
            f"{', '.join(STACK_ARGUMENTS)}."
        )
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}; received {task!r}.")
    if pooling not in POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {POOLINGS}; received {pooling!r}."
        )
    hidden_dim = positive_int("hidden_dim", hidden_dim)
    if context_length is not None:
        context_length = positive_int("context_length", context_length)
    tokens = vocabulary_size is not None
    if tokens:
        vocabulary_size = positive_int("vocabulary_size", vocabulary_size)
        if input_dim is not None:
            raise ValueError(
                "Give `vocabulary_size` (token inputs) or `input_dim` "
                f"(feature inputs), not both; received input_dim={input_dim}."
            )
        if task == "regression":
            raise ValueError(
                "`task='regression'` takes feature inputs: give `input_dim`, "
                "not `vocabulary_size`."
            )
    else:
        input_dim = positive_int("input_dim", input_dim)
    if task == "classification":
        num_classes = positive_int("num_classes", num_classes)
    if task == "regression":
        output_dim = positive_int("output_dim", output_dim)

    if tokens:
        inputs = keras.Input((context_length,), dtype="int32", name="tokens")
        x = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            mask_zero=mask_zero,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=small_init_std(hidden_dim),
                seed=stack_kwargs.get("seed"),
            ),
            name="token_embedding",
        )(inputs)
    else:
        inputs = keras.Input((context_length, input_dim), name="features")
        x = keras.layers.Dense(hidden_dim, name="input_projection")(inputs)
    x = MLSTMStack(num_layers, name="mlstm_stack", **stack_kwargs)(x)
    if task == "classification":
        x = MaskedPooling(pooling, name="pooling")(x)
        outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    else:
        outputs = keras.layers.Dense(output_dim, name="regression_head")(x)
    return keras.Model(inputs, outputs, name=name or f"mlstm_{task}")
