"""The `layer` suite: a training step (forward, backward, Adam) of
`MLSTM(units)`, `keras.layers.LSTM(units)` and a causal
`keras.layers.MultiHeadAttention` of the same width, each followed by
`Dense(units)`, on the same data, in tokens per second.

`sequence_model` builds these one-layer models for the other suites that
time training steps (`everyday`, `flops`, `memory`).
"""

import keras

from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import JIT_COMPILE
from keras_mlstm.benchmark.timing import compile_for_training
from keras_mlstm.benchmark.timing import random_sequences
from keras_mlstm.benchmark.timing import time_training
from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.mlstm import MLSTM

HELP = {
    "layer": "a training step of MLSTM, LSTM and causal MultiHeadAttention"
    " of width --units, in tokens per second",
}

KINDS = ("MLSTM", "LSTM", "MultiHeadAttention")


def add_arguments(parser):
    add_int(parser, "--units", 512, "layer/memory: width of the layers")
    add_int(
        parser, "--layer-length", 1024, "layer: sequence length", metavar="T"
    )
    add_int(
        parser,
        "--layer-batch",
        4,
        "layer/flops/memory: batch size",
        metavar="B",
    )


def causal_attention(width):
    """Causal self-attention of `width` features (4 heads of
    `width / 4` where 4 divides it, else one head), as a function of a
    `(B, T, width)` tensor."""
    heads = 4 if width % 4 == 0 else 1
    layer = keras.layers.MultiHeadAttention(heads, width // heads)
    return lambda x: layer(x, x, use_causal_mask=True)


# Each contestant as a function of the width to a `(B, T, width) ->
# (B, T, width)` layer.
SEQUENCE_LAYERS = {
    "MLSTM": lambda width: MLSTM(width, return_sequences=True),
    "MLSTMBlock": lambda width: MLSTMBlock(num_heads=4),
    "LSTM": lambda width: keras.layers.LSTM(width, return_sequences=True),
    "GRU": lambda width: keras.layers.GRU(width, return_sequences=True),
    "MultiHeadAttention": causal_attention,
}


def sequence_model(kind, width, length, jit_compile=JIT_COMPILE):
    """`Input((length, width)) -> kind -> Dense(width)`, compiled for
    training (Adam, MSE, `jit_compile`: see `compile_for_training`)."""
    inputs = keras.Input((length, width))
    x = SEQUENCE_LAYERS[kind](width)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(width)(x))
    return compile_for_training(model, jit_compile=jit_compile)


def time_sequence_models(
    kinds, width, length, batch, repeats, jit_compile=JIT_COMPILE
):
    """The training step of `sequence_model(kind, width, length,
    jit_compile)` for each of `kinds`, on the same batch, interleaved
    (`time_training`)."""
    x, y = random_sequences(batch, length, width)
    models = {
        kind: sequence_model(kind, width, length, jit_compile) for kind in kinds
    }
    return time_training(models, x, y, repeats)


def run(args):
    result = time_sequence_models(
        KINDS, args.units, args.layer_length, args.layer_batch, args.repeats
    )
    row = {"suite": "layer", "units": args.units, "length": args.layer_length}
    row.update(batch=args.layer_batch, **result)
    for kind in KINDS[1:]:
        row[f"speedup_vs_{kind}"] = (
            result[kind]["median_s"] / result["MLSTM"]["median_s"]
        )
    yield row


def title(row):
    units = row["units"]
    return (
        f"MLSTM({units}), LSTM({units}), causal MultiHeadAttention, each"
        f" + Dense({units}), B={row['batch']}, T={row['length']}, Adam, MSE"
    )


COLUMNS = (
    ("MLSTM tok/s", "MLSTM.tokens_per_s", "rate"),
    ("LSTM tok/s", "LSTM.tokens_per_s", "rate"),
    ("MHA tok/s", "MultiHeadAttention.tokens_per_s", "rate"),
    ("MLSTM / LSTM", "speedup_vs_LSTM", "times"),
    ("MLSTM first call (s)", "MLSTM.first_call_s", "s"),
)
