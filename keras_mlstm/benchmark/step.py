"""The `step` suite: the per-token cost of the recurrent step,
`keras_mlstm.ops.mlstm_step`, against the official native step kernel
(`mlstm_kernels`, PyTorch, eager), interleaved, two ways:

- `call`: one step per call, as a generation loop calls it; includes
  the framework's per-call dispatch (for a compiled TensorFlow function
  about 0.3 ms on a CPU whatever it computes).
- `loop`: `--step-tokens` steps in one call (our recurrent form,
  compiled where the backend compiles; the official
  `native_sequence__native`, which loops its native step), divided by
  the number of tokens.

Without `mlstm_kernels` it times ours only, and says so on stderr and in
the row (`official_unavailable`).
"""

import sys

import keras
import numpy as np

from keras_mlstm.benchmark.ops import kernels_unavailable
from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import call_with
from keras_mlstm.benchmark.timing import random_arrays
from keras_mlstm.benchmark.timing import ratios
from keras_mlstm.benchmark.timing import time_interleaved
from keras_mlstm.ops.compat import compile_function
from keras_mlstm.ops.resolver import mlstm
from keras_mlstm.ops.resolver import mlstm_step

HELP = {
    "step": "per-token latency of keras_mlstm.ops.mlstm_step against the"
    " official native step kernel (ours only without mlstm_kernels)",
}


def add_arguments(parser):
    add_int(
        parser,
        "--step-repeats",
        200,
        "step: timed calls per contestant (median)",
        metavar="N",
    )
    add_int(
        parser,
        "--step-tokens",
        64,
        "step: tokens per call of the looped variant",
        metavar="N",
    )


def _official(arrays, sequence):
    """The official step and looped step as thunks of torch tensors."""
    import torch
    from mlstm_kernels.torch import get_mlstm_step_kernel
    from mlstm_kernels.torch.recurrent import registry_sequence

    kernel = get_mlstm_step_kernel("native")
    sequence_kernel = registry_sequence["native_sequence__native"]
    q, k, v, i, f, c, n, m = (torch.from_numpy(a) for a in arrays)
    i, f, m = i[..., None], f[..., None], m[..., None]
    seq = [torch.from_numpy(a) for a in sequence]

    def official_call():
        with torch.no_grad():
            return kernel(q, k, v, i, f, c, n, m)

    def official_loop():
        with torch.no_grad():
            return sequence_kernel(*seq)

    return {"official_call": official_call, "official_loop": official_loop}


def run(args):
    rng = np.random.default_rng(0)
    batch, heads, dim = args.batch, args.heads, args.dim
    tokens = args.step_tokens
    arrays = [rng.normal(size=(batch, heads, dim)) for _ in range(3)]
    arrays += [rng.normal(size=(batch, heads)), rng.normal(size=(batch, heads))]
    arrays += [
        rng.normal(size=(batch, heads, dim, dim)),
        np.abs(rng.normal(size=(batch, heads, dim))),
        rng.normal(size=(batch, heads)),
    ]
    arrays = [a.astype("float32") for a in arrays]
    sequence = random_arrays(batch, heads, tokens, dim, seed=1)

    def step(q, k, v, i, f, c, n, m):
        return mlstm_step(q, k, v, i, f, (c, n, m))

    def loop(q, k, v, i, f):
        return mlstm(q, k, v, i, f, form="recurrent")

    def tensors(values):
        return [keras.ops.convert_to_tensor(a) for a in values]

    contestants = {
        "ours_call": call_with(compile_function(step), tensors(arrays)),
        "ours_loop": call_with(compile_function(loop), tensors(sequence)),
    }
    missing = kernels_unavailable()
    if missing is None:
        contestants.update(_official(arrays, sequence))
    else:
        print(f"step suite: {missing}; timing ours only", file=sys.stderr)
    result = time_interleaved(contestants, args.step_repeats)
    for name, timing in result.items():
        per_call = 1 if name.endswith("_call") else tokens
        timing["per_token_s"] = timing["median_s"] / per_call
    row = {"suite": "step", "batch": batch, "heads": heads, "dim": dim}
    row.update(tokens=tokens, **result)
    if missing is not None:
        row["official_unavailable"] = missing
    else:
        row.update(ratios(result, ("call", "loop"), "per_token_s"))
    yield row


def title(row):
    return (
        f"mlstm_step, B={row['batch']}, NH={row['heads']},"
        f" DK=DV={row['dim']}, loop of {row['tokens']} tokens,"
        " microseconds per token"
    )


COLUMNS = (
    ("ours, call", "ours_call.per_token_s", "us"),
    ("official, call", "official_call.per_token_s", "us"),
    ("ratio", "ratio_call", "ratio"),
    ("ours, loop", "ours_loop.per_token_s", "us"),
    ("official, loop", "official_loop.per_token_s", "us"),
    ("ratio", "ratio_loop", "ratio"),
)
