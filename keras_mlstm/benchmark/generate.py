"""The `generate` suite: generation speed of KerasHub's `XLSTMCausalLM`
against KerasHub's `GPT2CausalLM` of the same width, depth and
vocabulary, through the public API that KerasHub's `generate` loops over
(`call_with_cache`). Needs KerasHub (the `hub` extra).

For each context length N, both models decode one token after N tokens of
context, compiled as `generate` compiles (`jax.jit`,
`tf.function(jit_compile=True)`; PyTorch eager under `torch.no_grad`):

- GPT-2 attends over its key/value cache, `(batch, layers, 2, N + 1,
  heads, head_dim)` (zeros: the cost does not depend on the values, and
  its quadratic prefill is not timed);
- xLSTM steps its recurrent state, filled by a chunkwise prefill of the N
  tokens (timed once); the state's size does not depend on N.

The two step functions are interleaved call by call (median of
`--repeats` calls after one compiling call).
"""

import time

import keras
import numpy as np
from keras import ops

from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import time_interleaved
from keras_mlstm.ops.compat import compile_function

HELP = {
    "generate": "per-token generation of XLSTMCausalLM against KerasHub's"
    " GPT2CausalLM of the same size after --generate-contexts tokens"
    ' (needs KerasHub: pip install -e ".[hub]")',
}


def hub_unavailable():
    """Why KerasHub cannot be imported, with the command that installs it;
    None when it can."""
    try:
        import keras_hub  # noqa: F401
    except ImportError as error:
        return (
            f"KerasHub cannot be imported ({error}); install the hub extra "
            'with `pip install -e ".[hub]"`'
        )
    return None


def add_arguments(parser):
    add_int(
        parser,
        "--generate-contexts",
        [1024, 4096, 16384],
        "generate: context lengths before the timed step",
        metavar="T",
    )
    add_int(parser, "--generate-width", 128, "generate: model width")
    add_int(parser, "--generate-layers", 2, "generate: blocks / layers")
    add_int(parser, "--generate-heads", 4, "generate: heads per block")
    add_int(parser, "--generate-vocabulary", 256, "generate: vocabulary")
    add_int(parser, "--generate-batch", 1, "generate: sequences per step")


def build_models(width, layers, heads, vocabulary, max_context):
    """An xLSTM 7B-style model and a GPT-2 of the same width, depth and
    vocabulary (GPT-2's feed-forward 4x wide, xLSTM's 8/3x plus its
    projections: within 10 % in parameters outside the embeddings)."""
    import keras_hub

    from keras_mlstm.models.xlstm import XLSTMBackbone
    from keras_mlstm.models.xlstm import XLSTMCausalLM

    keras.utils.set_random_seed(0)
    xlstm = XLSTMCausalLM(
        XLSTMBackbone(
            vocabulary_size=vocabulary,
            num_layers=layers,
            hidden_dim=width,
            num_heads=heads,
            block_variant="large",
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


def gpt2_step(gpt2, context, batch):
    """GPT-2's step at `context` and its cache's bytes: the cache is zeros
    of the shape a prefill of `context` tokens leaves."""
    backbone = gpt2.backbone
    head_dim = backbone.hidden_dim // backbone.num_heads
    shape = (batch, backbone.num_layers, 2, context + 1)
    cache = ops.zeros(shape + (backbone.num_heads, head_dim))
    step = compile_function(no_grad(gpt2.call_with_cache))
    token = ops.ones((batch, 1), "int32")
    index = ops.convert_to_tensor(context, "int32")
    cache_bytes = int(np.prod(cache.shape)) * 4
    return (lambda: step(token, cache, index)[0]), None, cache_bytes


def xlstm_step(xlstm, context, batch):
    """xLSTM's step after a prefill of `context` tokens, the prefill's
    seconds and the state's bytes."""
    tokens = ops.ones((batch, context), "int32")
    initial = xlstm.backbone.mlstm_stack.get_initial_state(batch)
    start = time.perf_counter()
    _, _, cache = no_grad(xlstm.call_with_cache)(tokens, initial)
    ops.convert_to_numpy(cache[0][0])
    prefill = time.perf_counter() - start
    step = compile_function(no_grad(xlstm.call_with_cache))
    token = ops.ones((batch, 1), "int32")
    cache_bytes = sum(
        int(np.prod(t.shape)) * 4 for state in cache for t in state
    )
    return (lambda: step(token, cache)[0]), prefill, cache_bytes


def run(args):
    contexts, batch = args.generate_contexts, args.generate_batch
    xlstm, gpt2 = build_models(
        args.generate_width,
        args.generate_layers,
        args.generate_heads,
        args.generate_vocabulary,
        max(contexts),
    )
    sizes = {
        "xlstm": count_parameters(xlstm, ["token_embedding"]),
        "gpt2": count_parameters(gpt2, ["token_embedding", "position"]),
    }
    for context in contexts:
        x_step, x_prefill, x_bytes = xlstm_step(xlstm, context, batch)
        g_step, g_prefill, g_bytes = gpt2_step(gpt2, context, batch)
        steps = {"xlstm": x_step, "gpt2": g_step}
        timed = time_interleaved(steps, args.repeats)
        for name, prefill, cache_bytes in (
            ("xlstm", x_prefill, x_bytes),
            ("gpt2", g_prefill, g_bytes),
        ):
            yield {
                "suite": "generate",
                "model": name,
                "context": context,
                "batch": batch,
                "width": args.generate_width,
                "layers": args.generate_layers,
                "step_s": timed[name]["median_s"],
                "tokens_per_s": batch / timed[name]["median_s"],
                "first_step_s": timed[name]["first_call_s"],
                "prefill_s": prefill,
                "cache_bytes": cache_bytes,
                "parameters": sizes[name][0],
                "parameters_outside_embeddings": sizes[name][1],
            }


def title(row):
    return (
        f"generation, width {row['width']}, {row['layers']} layers, batch "
        f"{row['batch']}: XLSTMCausalLM against KerasHub's GPT2CausalLM"
    )


COLUMNS = (
    ("model", "model", "text"),
    ("context", "context", "text"),
    ("per token (ms)", "step_s", "ms3"),
    ("tokens/s", "tokens_per_s", "rate"),
    ("prefill (s)", "prefill_s", "s"),
    ("cache (KiB)", "cache_bytes", "KiB"),
)
