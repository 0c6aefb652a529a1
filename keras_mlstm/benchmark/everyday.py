"""The `everyday` suite: the training step (forward, backward, Adam
update) of `Input((T, D)) -> layer -> Dense(D)` at everyday widths and
lengths, for `MLSTM(D)`, `MLSTMBlock(num_heads=4)`,
`keras.layers.LSTM(D)`, `keras.layers.GRU(D)` and causal
`keras.layers.MultiHeadAttention` (4 heads of `D / 4`), interleaved
call by call on the same batch. It is `train_on_batch` after Keras's
default `compile`, so each backend runs as its users get it: XLA on
JAX, a `tf.function` on TensorFlow (XLA on accelerators only), eager on
PyTorch; each row records `jit_compile` as Keras resolved it.

One row per contestant, width and length: milliseconds per step, tokens
per second, the first call (compilation and the first step) and tokens
per second over LSTM's.
"""

from keras_mlstm.benchmark.layer import SEQUENCE_LAYERS
from keras_mlstm.benchmark.layer import time_sequence_models
from keras_mlstm.benchmark.options import add_int

HELP = {
    "everyday": "a training step of MLSTM, MLSTMBlock, LSTM, GRU and causal"
    " MultiHeadAttention at everyday widths (--everyday-units) and lengths"
    " (--everyday-lengths); ratio to LSTM",
}


def add_arguments(parser):
    add_int(
        parser,
        "--everyday-units",
        [64, 128, 256],
        "everyday: widths of the layers",
        metavar="D",
    )
    add_int(
        parser,
        "--everyday-lengths",
        [256, 1024],
        "everyday: sequence lengths",
        metavar="T",
    )
    add_int(parser, "--everyday-batch", 8, "everyday: batch size", metavar="B")


def run(args):
    for width in args.everyday_units:
        for length in args.everyday_lengths:
            result = time_sequence_models(
                SEQUENCE_LAYERS,
                width,
                length,
                args.everyday_batch,
                args.repeats,
                jit_compile="auto",
            )
            lstm = result["LSTM"]["tokens_per_s"]
            for kind, timing in result.items():
                row = {"suite": "everyday", "contestant": kind}
                row.update(units=width, length=length)
                row.update(batch=args.everyday_batch, **timing)
                row["ratio_to_LSTM"] = timing["tokens_per_s"] / lstm
                yield row


def title(row):
    return (
        f"Input((T, D)) -> layer -> Dense(D), B={row['batch']}, Adam, MSE,"
        " train_on_batch"
    )


COLUMNS = (
    ("contestant", "contestant", "text"),
    ("D", "units", "text"),
    ("T", "length", "text"),
    ("B", "batch", "text"),
    ("params", "params", "count"),
    ("ms/step", "median_s", "ms"),
    ("tokens/s", "tokens_per_s", "rate"),
    ("first call (s)", "first_call_s", "s"),
    ("XLA", "jit_compile", "text"),
    ("tokens/s / LSTM", "ratio_to_LSTM", "ratio"),
)
