"""The `decode` suite: per-token latency of step-by-step generation
through `mLSTM` (stacked `MLSTM` layers) after prefilling contexts of growing
length (chunkwise form), the state carried from step to step. The state
is O(1), so the latency must stay flat as the context grows.
"""

import statistics
import time

import keras
import numpy as np

from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import block_until_ready
from keras_mlstm.models.pyxlstm import mLSTM
from keras_mlstm.ops.compat import compile_function

HELP = {
    "decode": "per-token latency of generation through --decode-layers"
    " MLSTM layers after prefilling --contexts tokens",
}


def add_arguments(parser):
    add_int(
        parser,
        "--contexts",
        [16, 256, 4096, 16384],
        "decode: prefill lengths before the timed steps",
        metavar="T",
    )
    add_int(
        parser,
        "--decode-units",
        256,
        "decode: width of the MLSTM layers",
        metavar="UNITS",
    )
    add_int(
        parser,
        "--decode-layers",
        2,
        "decode: number of stacked MLSTM layers",
        metavar="N",
    )
    add_int(
        parser,
        "--decode-steps",
        50,
        "decode: timed generation steps per context (median)",
        metavar="N",
    )


def run(args):
    """Per context: the prefill's seconds, then the median per-token
    latency of `--decode-steps` steps (compiled where the backend
    compiles) and its ratio to the first (shortest) context's."""
    rng = np.random.default_rng(0)
    units = args.decode_units
    stack = mLSTM(units, units, num_layers=args.decode_layers, num_heads=4)

    def forward(x, states):
        return stack(x, hidden_state=states)

    step = compile_function(forward)
    first = None
    for context in args.contexts:
        prompt = rng.normal(size=(1, context, units)).astype("float32")
        start = time.perf_counter()
        _, states = forward(keras.ops.convert_to_tensor(prompt), None)
        block_until_ready(states)
        prefill = time.perf_counter() - start
        token = keras.ops.convert_to_tensor(
            rng.normal(size=(1, 1, units)).astype("float32")
        )
        block_until_ready(step(token, states))  # compile / warm up
        samples = []
        for _ in range(args.decode_steps):
            begin = time.perf_counter()
            _, states = step(token, states)
            block_until_ready(states)
            samples.append(time.perf_counter() - begin)
        row = {"suite": "decode", "context": context, "units": units}
        row.update(layers=args.decode_layers, prefill_s=prefill)
        row["per_token_s"] = statistics.median(samples)
        if first is None:
            first = row["per_token_s"]
        row["ratio_to_shortest"] = row["per_token_s"] / first
        yield row


def title(row):
    return f"{row['layers']} stacked MLSTM({row['units']}), batch 1"


COLUMNS = (
    ("context", "context", "text"),
    ("per token (ms)", "per_token_s", "ms3"),
    ("ratio to shortest context", "ratio_to_shortest", "ratio"),
    ("prefill (s)", "prefill_s", "s"),
)
