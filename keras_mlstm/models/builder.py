"""``build_mlstm_model``: complete Keras models around an ``MLSTMStack``."""

import keras
from keras import ops

from keras_mlstm.layers.embedding import ReversibleEmbedding
from keras_mlstm.layers.soft_cap import SoftCap
from keras_mlstm.models.stack import MLSTMStack
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.compat import reduce_max

TASKS = ("language_model", "classification", "regression")
POOLINGS = ("last", "mean")

# Layer names that ``keras_mlstm.generate`` and the weight import look up.
EMBEDDING_NAME = "token_embedding"
STACK_NAME = "mlstm_stack"
LM_HEAD_NAME = "lm_head"
SOFT_CAP_NAME = "logit_soft_cap"


def language_model_parts(model, argument="model"):
    """``(embedding, stack, head, soft_cap)`` of a language model from
    ``build_mlstm_model``; ``head`` is None for tied embeddings and
    ``soft_cap`` None without a logit cap. ValueError naming ``argument``
    for any other model."""
    names = [layer.name for layer in model.layers]
    if EMBEDDING_NAME not in names or STACK_NAME not in names:
        raise ValueError(
            f"`{argument}` must be a language model from "
            "keras_mlstm.build_mlstm_model('language_model', ...) (layers "
            f"'{EMBEDDING_NAME}' and '{STACK_NAME}'); received a model with "
            f"layers {names}."
        )

    def optional(name):
        return model.get_layer(name) if name in names else None

    return (
        model.get_layer(EMBEDDING_NAME),
        model.get_layer(STACK_NAME),
        optional(LM_HEAD_NAME),
        optional(SOFT_CAP_NAME),
    )


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MaskedPooling(keras.layers.Layer):
    """Pool ``(B, T, D)`` over time: the last unmasked step, or the mean of
    the unmasked steps.

    Args:
        pooling: ``"last"`` or ``"mean"``.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``(B, T, D)``.
        mask: optional bool ``(B, T)``.

    Returns:
        ``(B, D)``; zeros for a fully masked sequence.

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
    task="language_model",
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
    tie_embeddings=True,
    pooling="last",
    mask_zero=False,
    form="auto",
    chunk_size=64,
    context_length=None,
    block_variant="mlstm",
    use_bias=False,
    post_norm=True,
    qk_dim_factor=0.5,
    v_dim_factor=1.0,
    ffn_proj_factor=2.6667,
    gate_soft_cap=15.0,
    logit_soft_cap=None,
    seed=None,
    name=None,
):
    """A functional ``keras.Model`` of mLSTM blocks for a common task,
    ready for ``compile`` and ``fit``.

    Args:
        task: ``"language_model"`` (token ids ``(B, T)`` to next-token
            logits ``(B, T, vocab_size)``), ``"classification"`` (token ids
            or features to class logits ``(B, num_classes)``, pooled over
            time) or ``"regression"`` (features ``(B, T, input_dim)`` to
            ``(B, T, output_dim)``, sequence to sequence, e.g. time series).
        vocab_size: vocabulary size, for token inputs.
        input_dim: feature count, for feature inputs (``"regression"``, or
            ``"classification"`` without ``vocab_size``).
        output_dim: outputs per step, for ``"regression"``.
        num_classes: for ``"classification"``.
        embedding_dim: the model width D.
        num_blocks, num_heads, proj_factor, conv_kernel_size,
            qkv_proj_blocksize, dropout, form, chunk_size, block_variant,
            use_bias, post_norm, qk_dim_factor, v_dim_factor,
            ffn_proj_factor, gate_soft_cap: for the ``MLSTMStack``
            (``block_variant="large"``: xLSTM 7B blocks).
        logit_soft_cap: language model: None, or soft-cap the logits at
            this value (``SoftCap``; the xLSTM 7B uses 30).
        tie_embeddings: language model: the logits reuse the embedding
            matrix (``ReversibleEmbedding``); else a separate ``lm_head``.
        pooling: classification: ``"last"`` (last unmasked step) or
            ``"mean"``.
        mask_zero: token inputs: id 0 is padding and is masked.
        context_length: None (default: any length) or a fixed T.
        seed: int seed for the initialisers.
        name: the model's name.

    Returns:
        An uncompiled ``keras.Model``.

    Raises:
        ValueError: for an unknown task or a missing or inapplicable size.

    Example:

    >>> model = build_mlstm_model(
    ...     "language_model", vocab_size=50, embedding_dim=32, num_blocks=1
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
    tokens = task == "language_model" or vocab_size is not None
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
        embedding = ReversibleEmbedding(
            vocab_size,
            embedding_dim,
            mask_zero=mask_zero,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=0.02, seed=seed
            ),
            name=EMBEDDING_NAME,
        )
        x = embedding(inputs)
    else:
        inputs = keras.Input((context_length, input_dim), name="features")
        embedding = None
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
        name=STACK_NAME,
    )(x)
    if task == "language_model":
        if tie_embeddings:
            outputs = embedding(x, reverse=True)
        else:
            outputs = keras.layers.Dense(
                vocab_size, use_bias=False, name=LM_HEAD_NAME
            )(x)
        if logit_soft_cap is not None:
            outputs = SoftCap(logit_soft_cap, name=SOFT_CAP_NAME)(outputs)
    elif task == "classification":
        x = MaskedPooling(pooling, name="pooling")(x)
        outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    else:
        outputs = keras.layers.Dense(output_dim, name="regression_head")(x)
    return keras.Model(inputs, outputs, name=name or f"mlstm_{task}")
