"""The `flops` suite: the achieved FLOP rate of an `MLSTM` training
step (FLOPs counted analytically, see `training_step_flops`) against the
machine's float32 matrix-multiply rate, measured in the same run.
"""

import keras
import numpy as np

from keras_mlstm.benchmark.layer import sequence_model
from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import call_with
from keras_mlstm.benchmark.timing import random_sequences
from keras_mlstm.benchmark.timing import time_interleaved
from keras_mlstm.benchmark.timing import time_training
from keras_mlstm.ops.compat import compile_function
from keras_mlstm.ops.resolver import resolve_chunk_size

HELP = {
    "flops": "achieved FLOP/s of an MLSTM training step against the"
    " measured float32 matmul rate",
}


def add_arguments(parser):
    add_int(
        parser,
        "--flops-units",
        1024,
        "flops: width of the MLSTM layer",
        metavar="UNITS",
    )
    add_int(
        parser, "--flops-length", 2048, "flops: sequence length", metavar="T"
    )
    add_int(
        parser,
        "--matmul-size",
        2048,
        "flops: side of the square matmul that measures the peak rate",
        metavar="N",
    )


def training_step_flops(batch, length, features, units, heads, chunk_size):
    """Multiply-adds x 2 of one MLSTM + Dense training step, counted
    analytically; the backward pass is counted as twice the forward.

    Forward, per step of the sequence (DH = units / heads, L = chunk size):
    projections 2 D (4 U + 2 NH); chunkwise mLSTM per head 4 L DH (the
    in-chunk scores and their product with V) + 4 DH^2 (the chunk states
    and the read-out of the carried state); output layer 2 U D.
    Elementwise work (gates, exponentials, norms) is not counted.
    """
    size = units // heads
    per_token = 2 * features * (4 * units + 2 * heads)
    per_token += heads * (4 * chunk_size * size + 4 * size * size)
    per_token += 2 * units * features
    return 3 * batch * length * per_token


def run(args):
    size = args.matmul_size
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(
        rng.normal(size=(size, size)).astype("float32")
    )
    matmul = compile_function(lambda x, y: keras.ops.matmul(x, y))
    peak = time_interleaved({"matmul": call_with(matmul, (a, a))}, 5)
    peak_rate = 2 * size**3 / peak["matmul"]["median_s"]

    batch, length, units = args.layer_batch, args.flops_length, args.flops_units
    x, y = random_sequences(batch, length, units)
    model = sequence_model("MLSTM", units, length)
    layer = model.layers[1]
    step = time_training({"MLSTM": model}, x, y, args.repeats)["MLSTM"]
    chunk_size = resolve_chunk_size(layer.chunk_size, units // layer.num_heads)
    flops = training_step_flops(
        batch, length, units, units, layer.num_heads, chunk_size
    )
    rate = flops / step["median_s"]
    row = {"suite": "flops", "units": units, "length": length}
    row.update(chunk_size=chunk_size)
    row.update(batch=batch, step_flops=flops, step=step)
    row.update(matmul_size=size, matmul_flops_per_s=peak_rate)
    row.update(achieved_flops_per_s=rate, fraction_of_matmul=rate / peak_rate)
    yield row


def title(row):
    units = row["units"]
    return (
        f"MLSTM({units}) + Dense({units}) training step, B={row['batch']},"
        f" T={row['length']}, against a {row['matmul_size']}^3 matmul"
    )


COLUMNS = (
    ("matmul rate (GFLOP/s)", "matmul_flops_per_s", "GFLOP/s"),
    ("training step (GFLOP/s)", "achieved_flops_per_s", "GFLOP/s"),
    ("fraction", "fraction_of_matmul", "percent"),
)
