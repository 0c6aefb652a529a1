"""Generation speed of `XLSTMCausalLM` against KerasHub's
`GPT2CausalLM` of about the same size, on the current Keras backend.

Run `python -m keras_mlstm.models.hub.generation_benchmark --help`.

For each context length N, both models decode one token after N tokens of
context, through the function KerasHub's `generate` loops over
(`call_with_cache`), compiled as `generate` compiles it (`jax.jit`,
`tf.function(jit_compile=True)`; PyTorch eager under `torch.no_grad`):

- GPT-2 attends over its key/value cache, `(batch, layers, 2, N + 1,
  heads, head_dim)` (zeros: the cost does not depend on the values, and
  its quadratic prefill is not timed);
- xLSTM steps its recurrent state, filled by a chunkwise prefill of the N
  tokens; the state's size does not depend on N.

The two step functions are interleaved call by call (median of
`--repeats` calls after one compiling call); the prefill is timed once
for xLSTM at each context. Prints a table and writes JSON.
"""

import argparse
import json
import platform
import time

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_mlstm.benchmark import time_interleaved
from keras_mlstm.models.hub.xlstm_backbone import XLSTMBackbone
from keras_mlstm.models.hub.xlstm_causal_lm import XLSTMCausalLM
from keras_mlstm.ops.compat import compile_function


def build_models(width, layers, heads, vocabulary, max_context):
    """An xLSTM 7B-style model and a GPT-2 of the same width, depth and
    vocabulary (GPT-2's feed-forward 4x wide, xLSTM's 8/3x plus its
    projections: within 10 % in parameters outside the embeddings)."""
    keras.utils.set_random_seed(0)
    xlstm = XLSTMCausalLM(
        XLSTMBackbone(
            vocabulary_size=vocabulary,
            num_layers=layers,
            hidden_dim=width,
            num_heads=heads,
        )
    )
    gpt2 = keras_hub.models.GPT2CausalLM(
        keras_hub.models.GPT2Backbone(
            vocabulary_size=vocabulary,
            num_layers=layers,
            num_heads=heads,
            hidden_dim=width,
            intermediate_dim=4 * width,
            max_sequence_length=max_context + 1,
        ),
        preprocessor=None,
    )
    return xlstm, gpt2


def count_parameters(model, embedding_names):
    """`(all, outside the embeddings)` parameter counts."""
    total = int(sum(np.prod(w.shape) for w in model.weights))
    embedding = sum(
        int(np.prod(w.shape))
        for w in model.weights
        if any(name in w.path for name in embedding_names)
    )
    return total, total - embedding


def no_grad(fn):
    """`fn` without autograd on PyTorch, as KerasHub's generate runs."""
    if keras.backend.backend() != "torch":
        return fn
    import torch

    def wrapped(*args):
        with torch.no_grad():
            return fn(*args)

    return wrapped


def gpt2_contestant(gpt2, context, batch):
    """GPT-2's step at `context`: its cache is zeros of the shape a prefill
    of `context` tokens leaves (the step's cost does not depend on the
    values; the quadratic prefill itself is not timed)."""
    backbone = gpt2.backbone
    head_dim = backbone.hidden_dim // backbone.num_heads
    shape = (batch, backbone.num_layers, 2, context + 1)
    cache = ops.zeros(shape + (backbone.num_heads, head_dim))
    step = compile_function(no_grad(gpt2.call_with_cache))
    token = ops.ones((batch, 1), "int32")
    index = ops.convert_to_tensor(context, "int32")
    cache_mb = np.prod(cache.shape) * 4 / 2**20
    return (lambda: step(token, cache, index)[0]), None, cache_mb


def xlstm_contestant(xlstm, context, batch):
    tokens = np.ones((batch, context), "int32")
    start = time.perf_counter()
    _, cache = no_grad(xlstm._build_cache)(
        ops.convert_to_tensor(tokens), context + 1
    )
    keras.ops.convert_to_numpy(cache[0][0])
    prefill = time.perf_counter() - start
    step = compile_function(no_grad(xlstm.call_with_cache))
    token = ops.ones((batch, 1), "int32")
    cache_mb = (
        sum(np.prod(t.shape) * 4 for state in cache for t in state) / 2**20
    )
    return (lambda: step(token, cache)[0]), prefill, cache_mb


def run(contexts, width, layers, heads, vocabulary, batch, repeats):
    xlstm, gpt2 = build_models(width, layers, heads, vocabulary, max(contexts))
    sizes = {
        "xlstm": count_parameters(xlstm, ["token_embedding"]),
        "gpt2": count_parameters(gpt2, ["token_embedding", "position"]),
    }
    rows = []
    for context in contexts:
        x_step, x_prefill, x_mb = xlstm_contestant(xlstm, context, batch)
        g_step, g_prefill, g_mb = gpt2_contestant(gpt2, context, batch)
        timed = time_interleaved({"xlstm": x_step, "gpt2": g_step}, repeats)
        for name, prefill, cache_mb in (
            ("xlstm", x_prefill, x_mb),
            ("gpt2", g_prefill, g_mb),
        ):
            rows.append(
                {
                    "model": name,
                    "context": context,
                    "batch": batch,
                    "step_ms": 1e3 * timed[name]["median_s"],
                    "tokens_per_s": batch / timed[name]["median_s"],
                    "first_step_s": timed[name]["first_call_s"],
                    "prefill_s": prefill,
                    "cache_mb": float(cache_mb),
                    "parameters": sizes[name][0],
                    "parameters_outside_embeddings": sizes[name][1],
                }
            )
    return rows


def prefill_text(row):
    return "-" if row["prefill_s"] is None else f"{row['prefill_s']:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--contexts", type=int, nargs="+", default=[1024, 4096, 16384]
    )
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocabulary", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    rows = run(
        args.contexts,
        args.width,
        args.layers,
        args.heads,
        args.vocabulary,
        args.batch,
        args.repeats,
    )
    backend = keras.backend.backend()
    print(f"backend {backend}, {platform.processor() or platform.machine()}")
    print(
        f"{'model':6} {'context':>7} {'step ms':>8} {'tokens/s':>9} "
        f"{'prefill s':>9} {'cache MB':>9} {'params':>9}"
    )
    for row in rows:
        print(
            f"{row['model']:6} {row['context']:7d} {row['step_ms']:8.2f} "
            f"{row['tokens_per_s']:9.1f} {prefill_text(row):>9} "
            f"{row['cache_mb']:9.2f} {row['parameters_outside_embeddings']:9d}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": backend, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
