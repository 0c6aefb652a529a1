"""The `lm` suite: three language models of about equal parameter count
trained step by step (Adam, cross-entropy of the next token), interleaved
on the same token batches:

- `mLSTM`: KerasHub's `XLSTMCausalLM` of `--lm-blocks` `"mlstm"` blocks
  (4 heads; its own embedding and output projection), fed unpadded token
  ids as the other two are (needs KerasHub, the `hub` extra);
- `LSTM`: `Embedding -> 2 x LSTM -> Dense(vocabulary)`;
- `Transformer`: `Embedding` + learned position embedding, then
  `--lm-blocks` pre-norm blocks of causal `MultiHeadAttention` (4
  heads) and a GELU feed-forward network 4x wide, a final
  `LayerNormalization` and `Dense(vocabulary)`.

Each model's width is searched (multiples of 4) for the parameter count
nearest `--lm-params`; the Transformer's position table covers the
longest of `--lm-lengths`, so each model has one size at every length.
At each length the models are built afresh and trained with
`train_on_batch` after Keras's default `compile` (XLA on JAX, a
`tf.function` on TensorFlow, XLA on accelerators only, eager on
PyTorch), so the first call is their compilation and first step at that
length.

The first call's time (compilation) and the steady step time and tokens
per second of equal-size models come from one measurement, so they are
one suite, not two that would build and time the same models twice. Each
row reports both, and each as a ratio to the LSTM's.
"""

import functools
import math

import keras
import numpy as np

from keras_mlstm.benchmark.layer import causal_attention
from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import compile_for_training
from keras_mlstm.benchmark.timing import time_training

HELP = {
    "lm": "language models (KerasHub's XLSTMCausalLM, a 2-layer LSTM, a"
    " causal Transformer) of about --lm-params parameters: first"
    " train_on_batch (compilation) and tokens per second over --lm-lengths"
    ' (needs KerasHub: pip install -e ".[hub]")',
}

LSTM_LAYERS = 2
# Widths are multiples of the attention heads.
WIDTH_STEP = 4


def add_arguments(parser):
    add_int(parser, "--lm-vocab", 256, "lm: vocabulary size", metavar="V")
    add_int(
        parser,
        "--lm-params",
        700_000,
        "lm: parameter count each model's width is chosen to approach",
        metavar="N",
    )
    add_int(
        parser,
        "--lm-blocks",
        4,
        "lm: blocks of the mLSTM and Transformer models",
        metavar="N",
    )
    add_int(
        parser, "--lm-lengths", [256, 1024], "lm: sequence lengths", metavar="T"
    )
    add_int(parser, "--lm-batch", 8, "lm: batch size", metavar="B")


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position (up to `max_length`) to
    `(B, T, D)` inputs."""

    def __init__(self, max_length, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.max_length, input_shape[-1]),
            initializer="glorot_uniform",
            name="embeddings",
        )

    def call(self, inputs):
        length = keras.ops.shape(inputs)[1]
        return inputs + self.embeddings[:length]

    def compute_output_shape(self, input_shape):
        return input_shape


def language_model(vocab, width, body):
    """`Input((None,), int32) -> Embedding(vocab, width) -> body ->
    Dense(vocab)`, a `keras.Model`."""
    tokens = keras.Input((None,), dtype="int32")
    x = body(keras.layers.Embedding(vocab, width)(tokens))
    return keras.Model(tokens, keras.layers.Dense(vocab)(x))


def mlstm_model(vocab, width, blocks, context):
    from keras_mlstm.models.xlstm import XLSTMBackbone
    from keras_mlstm.models.xlstm import XLSTMCausalLM

    causal_lm = XLSTMCausalLM(
        XLSTMBackbone(
            vocabulary_size=vocab,
            num_layers=blocks,
            hidden_dim=width,
            num_heads=4,
            block_variant="mlstm",
        )
    )
    tokens = keras.Input((None,), dtype="int32")
    inputs = {"token_ids": tokens, "padding_mask": keras.ops.ones_like(tokens)}
    return keras.Model(tokens, causal_lm(inputs))


def lstm_model(vocab, width, blocks, context):
    def body(x):
        for _ in range(LSTM_LAYERS):
            x = keras.layers.LSTM(width, return_sequences=True)(x)
        return x

    return language_model(vocab, width, body)


def transformer_model(vocab, width, blocks, context):
    def body(x):
        x = PositionEmbedding(context)(x)
        for _ in range(blocks):
            x = x + causal_attention(width)(
                keras.layers.LayerNormalization()(x)
            )
            h = keras.layers.LayerNormalization()(x)
            h = keras.layers.Dense(4 * width, activation="gelu")(h)
            x = x + keras.layers.Dense(width)(h)
        return keras.layers.LayerNormalization()(x)

    return language_model(vocab, width, body)


# Each model as a function of (vocabulary, width, blocks, context).
MODELS = {
    "mLSTM": mlstm_model,
    "LSTM": lstm_model,
    "Transformer": transformer_model,
}


def width_for(build, target):
    """The multiple of `WIDTH_STEP` at which `build(width)` has the
    parameter count nearest `target`. The count grows about as the
    square of the width, so each guess scales the last one by the square
    root of `target / count` until a guess comes back; then the nearer
    of it and its neighbour on the target's side. Each guess builds a
    model (on JAX, new shapes compile), so few guesses matter."""

    @functools.cache
    def count(width):
        return build(width).count_params()

    width, guessed = 16 * WIDTH_STEP, set()
    while width not in guessed:
        guessed.add(width)
        scaled = width * math.sqrt(target / count(width)) / WIDTH_STEP
        width = max(1, round(scaled)) * WIDTH_STEP
    side = WIDTH_STEP if count(width) < target else -WIDTH_STEP
    candidates = [w for w in (width, width + side) if w > 0]
    return min(candidates, key=lambda w: abs(count(w) - target))


def run(args):
    vocab, blocks = args.lm_vocab, args.lm_blocks
    context = max(args.lm_lengths)
    builders = {
        name: functools.partial(model, vocab, blocks=blocks, context=context)
        for name, model in MODELS.items()
    }
    widths = {
        name: width_for(build, args.lm_params)
        for name, build in builders.items()
    }
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    for length in args.lm_lengths:
        tokens = rng.integers(vocab, size=(args.lm_batch, length + 1))
        tokens = tokens.astype("int32")
        models = {
            name: compile_for_training(build(widths[name]), loss, "auto")
            for name, build in builders.items()
        }
        result = time_training(
            models, tokens[:, :-1], tokens[:, 1:], args.repeats
        )
        lstm = result["LSTM"]
        for name, timing in result.items():
            row = {"suite": "lm", "model": name, "width": widths[name]}
            row.update(layers=LSTM_LAYERS if name == "LSTM" else blocks)
            row.update(vocab=vocab, target_params=args.lm_params)
            row.update(length=length, batch=args.lm_batch, **timing)
            row["ratio_to_LSTM"] = timing["tokens_per_s"] / lstm["tokens_per_s"]
            row["first_call_ratio_to_LSTM"] = (
                timing["first_call_s"] / lstm["first_call_s"]
            )
            yield row


def title(row):
    return (
        f"language models of about {row['target_params']:,} parameters,"
        f" vocabulary {row['vocab']}, B={row['batch']}, Adam, next-token"
        " cross-entropy, train_on_batch"
    )


COLUMNS = (
    ("model", "model", "text"),
    ("width", "width", "text"),
    ("layers", "layers", "text"),
    ("params", "params", "count"),
    ("T", "length", "text"),
    ("first call (s)", "first_call_s", "s"),
    ("XLA", "jit_compile", "text"),
    ("ms/step", "median_s", "ms"),
    ("tokens/s", "tokens_per_s", "rate"),
    ("tokens/s / LSTM", "ratio_to_LSTM", "ratio"),
    ("first call / LSTM", "first_call_ratio_to_LSTM", "ratio"),
)
