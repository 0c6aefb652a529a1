"""`build_mlstm_model`: complete Keras models around an `MLSTMStack`."""

import keras
from keras import ops

from keras_mlstm.models.stack import MLSTMStack
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.compat import reduce_max

TASKS = ("classification", "regression")
POOLINGS = ("last", "mean")


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MaskedPooling(keras.layers.Layer):
    """Pool `(B, T, D)` over time: the last unmasked step, or the mean of
    the unmasked steps.

    Args:
        pooling: `"last"` or `"mean"`. Defaults to `"last"`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, D)`.
        mask: optional bool `(B, T)`.

    Returns:
        `(B, D)`; zeros for a fully masked sequence.

    Example:

    >>> import keras, numpy as np
    >>> x = np.arange(6, dtype="float32").reshape(1, 3, 2)
    >>> keras.ops.convert_to_numpy(MaskedPooling("last")(x)).tolist()
    [[4.0, 5.0]]

    References:
        - The Keras guide "Understanding masking & padding".
    """

    def __init__(self, pooling="last", **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {POOLINGS}; received {pooling!r}."
            )
        self.pooling = pooling
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            if self.pooling == "last":
                return inputs[:, -1]
            return ops.sum(inputs, axis=1) / ops.shape(inputs)[1]
        keep = ops.cast(mask, inputs.dtype)[..., None]  # (B, T, 1)
        if self.pooling == "mean":
            count = ops.maximum(ops.sum(keep, axis=1), 1.0)
            return ops.sum(inputs * keep, axis=1) / count
        length = ops.shape(mask)[1]
        steps = ops.arange(length, dtype="int32")[None]
        last = reduce_max(ops.where(mask, steps, -1), axis=1)  # (B,)
        index = ops.maximum(last, 0)[:, None, None]
        pooled = ops.take_along_axis(inputs, index, axis=1)[:, 0]
        return ops.where((last >= 0)[:, None], pooled, 0.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling}


@keras.saving.register_keras_serializable(package="keras_mlstm")
def build_mlstm_model(
    task,
    *,
    vocab_size=None,
    input_dim=None,
    output_dim=None,
    num_classes=None,
    embedding_dim=128,
    num_blocks=2,
    num_heads=4,
    proj_factor=2.0,
    conv_kernel_size=4,
    qkv_proj_blocksize=4,
    dropout=0.0,
    pooling="last",
    mask_zero=False,
    form="auto",
    chunk_size="auto",
    context_length=None,
    block_variant="mlstm",
    use_bias=False,
    post_norm=True,
    qk_dim_factor=0.5,
    v_dim_factor=1.0,
    ffn_proj_factor=2.6667,
    gate_soft_cap=15.0,
    seed=None,
    name=None,
):
    """A functional `keras.Model` of mLSTM blocks for a common task,
    ready for `compile` and `fit`. Language models are KerasHub's
    `keras_mlstm.models.hub.XLSTMCausalLM` (the `hub` extra).

    Args:
        task: `"classification"` (token ids or features to class logits
            `(B, num_classes)`, pooled over time) or `"regression"`
            (features `(B, T, input_dim)` to `(B, T, output_dim)`,
            sequence to sequence, e.g. time series).
        vocab_size: vocabulary size, for token inputs. Defaults to `None`.
        input_dim: feature count, for feature inputs (`"regression"`, or
            `"classification"` without `vocab_size`). Defaults to `None`.
        output_dim: outputs per step, for `"regression"`. Defaults to
            `None`.
        num_classes: for `"classification"`. Defaults to `None`.
        embedding_dim: the model width D. Defaults to `128`.
        num_blocks: blocks of the `MLSTMStack`. Defaults to `2`.
        num_heads: heads per block. Defaults to `4`.
        proj_factor: `"mlstm"` blocks: the up-projection factor. Defaults
            to `2.0`.
        conv_kernel_size: `"mlstm"` blocks: the causal convolution width.
            Defaults to `4`.
        qkv_proj_blocksize: `"mlstm"` blocks: block size of the q, k, v
            projections. Defaults to `4`.
        dropout: `"mlstm"` blocks: dropout rate at the end of every
            block. Defaults to `0.0`.
        pooling: classification: `"last"` (last unmasked step) or
            `"mean"`. Defaults to `"last"`.
        mask_zero: token inputs: id 0 is padding and is masked. Defaults
            to `False`.
        form: how the mLSTM is computed, as `keras_mlstm.ops.mlstm`.
            Defaults to `"auto"`.
        chunk_size: chunk length of the chunkwise form, an int or
            `"auto"`. Defaults to `"auto"`.
        context_length: None (any length) or a fixed T. Defaults to
            `None`.
        block_variant: `"mlstm"` (the xLSTM paper's block) or `"large"`
            (the xLSTM 7B block). Defaults to `"mlstm"`.
        use_bias: biases on the blocks' projections. Defaults to `False`.
        post_norm: end the stack with a norm. Defaults to `True`.
        qk_dim_factor: `"large"` blocks: QK / D. Defaults to `0.5`.
        v_dim_factor: `"large"` blocks: V / D. Defaults to `1.0`.
        ffn_proj_factor: `"large"` blocks: feed-forward width / D before
            rounding. Defaults to `2.6667`.
        gate_soft_cap: `"large"` blocks: soft cap of the gate
            pre-activations. Defaults to `15.0`.
        seed: int seed for the initialisers. Defaults to `None`.
        name: the model's name. Defaults to `None`.

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: for an unknown task or a missing or inapplicable size.

    Example:

    >>> model = build_mlstm_model(
    ...     "classification", vocab_size=50, num_classes=3,
    ...     embedding_dim=32, num_blocks=1, mask_zero=True,
    ... )
    >>> model.compile("adam", "sparse_categorical_crossentropy")

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517.
    """
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}; received {task!r}.")
    if pooling not in POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {POOLINGS}; received {pooling!r}."
        )
    embedding_dim = positive_int("embedding_dim", embedding_dim)
    if context_length is not None:
        context_length = positive_int("context_length", context_length)
    tokens = vocab_size is not None
    if tokens:
        vocab_size = positive_int("vocab_size", vocab_size)
        if input_dim is not None:
            raise ValueError(
                "Give `vocab_size` (token inputs) or `input_dim` (feature "
                f"inputs), not both; received input_dim={input_dim}."
            )
        if task == "regression":
            raise ValueError(
                "`task='regression'` takes feature inputs: give `input_dim`, "
                "not `vocab_size`."
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
            vocab_size,
            embedding_dim,
            mask_zero=mask_zero,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=0.02, seed=seed
            ),
            name="token_embedding",
        )(inputs)
    else:
        inputs = keras.Input((context_length, input_dim), name="features")
        x = keras.layers.Dense(embedding_dim, name="input_projection")(inputs)
    x = MLSTMStack(
        num_blocks,
        num_heads=num_heads,
        proj_factor=proj_factor,
        conv_kernel_size=conv_kernel_size,
        qkv_proj_blocksize=qkv_proj_blocksize,
        dropout=dropout,
        form=form,
        chunk_size=chunk_size,
        block_variant=block_variant,
        use_bias=use_bias,
        post_norm=post_norm,
        qk_dim_factor=qk_dim_factor,
        v_dim_factor=v_dim_factor,
        ffn_proj_factor=ffn_proj_factor,
        gate_soft_cap=gate_soft_cap,
        seed=seed,
        name="mlstm_stack",
    )(x)
    if task == "classification":
        x = MaskedPooling(pooling, name="pooling")(x)
        outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    else:
        outputs = keras.layers.Dense(output_dim, name="regression_head")(x)
    return keras.Model(inputs, outputs, name=name or f"mlstm_{task}")
