"""The `compile` suite: the first training step (tracing and compiling
the training function, then one step) against the steady step, and how
the first grows with depth, for language models `Input((None,), int32)
-> Embedding(V, D) -> body -> Dense(V)` trained with `train_on_batch`
after Keras's default `compile` (Adam, next-token cross-entropy; XLA on
JAX, a `tf.function` without XLA on a TensorFlow CPU, eager on PyTorch).

At each depth n of `--compile-depths` the bodies are:

- `MLSTMStack`: n `"mlstm"` blocks of 4 heads, width `--compile-width`;
- `MLSTMStack, op stand-in`: the same model with the blocks' mLSTM op
  replaced, while it is traced and run, by a pointwise map of its inputs
  (`op_stand_in`): what the rest of a block costs, the floor that no exact
  mLSTM op can go below;
- `XLSTMBackbone`: KerasHub's `XLSTMCausalLM` of the same blocks and
  width, fed unpadded ids with a padding mask of ones, as a KerasHub
  preprocessor feeds it (needs the `hub` extra; left out with a message
  without it);
- `LSTM` and `GRU`: n layers; `Transformer`: n pre-norm causal attention
  blocks; each at the width (a multiple of 4) whose parameter count is
  nearest the `MLSTMStack` model's.

At depth 1 also the layers alone, at `--compile-width`: `MLSTM(D)`,
`MLSTMBlock` and `MLSTMLargeBlock` (4 heads each).

After a tiny warm-up model's first step (one-time costs of the process
and of the layers' code), the models of one depth are built afresh (in
a cleared Keras session), their first calls made one after the other
(each after a garbage collection), then their steady steps timed
interleaved (`--repeats` rounds). On JAX each row splits the first call
into JAX's own timers (`jax.monitoring`): tracing, lowering to StableHLO
and XLA compilation. `first call / LSTM` compares models of one depth;
`first call / 1 layer` shows the growth with depth of each body.
"""

import contextlib
import functools
import gc
import sys
import time
from unittest import mock

import keras
import numpy as np
from keras import ops

from keras_mlstm.benchmark.generate import hub_unavailable
from keras_mlstm.benchmark.lm import language_model
from keras_mlstm.benchmark.lm import mlstm_model
from keras_mlstm.benchmark.lm import transformer_model
from keras_mlstm.benchmark.lm import width_for
from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import block_until_ready
from keras_mlstm.benchmark.timing import call_with
from keras_mlstm.benchmark.timing import compile_for_training
from keras_mlstm.benchmark.timing import compile_stages
from keras_mlstm.benchmark.timing import time_interleaved
from keras_mlstm.layers import MLSTM
from keras_mlstm.layers import MLSTMBlock
from keras_mlstm.layers import MLSTMLargeBlock
from keras_mlstm.layers import block as block_module
from keras_mlstm.layers import large_block as large_block_module
from keras_mlstm.models import MLSTMStack

HELP = {
    "compile": "first train_on_batch (tracing, compiling) and steady step of"
    " language models of MLSTMStack, XLSTMBackbone, LSTM, GRU and"
    " Transformer bodies at --compile-depths layers (equal parameter"
    " counts), of the stack with its mLSTM op replaced by a pointwise"
    " stand-in, and of MLSTM and each block alone",
}

HEADS = 4
STAND_IN = "MLSTMStack, op stand-in"


def _stand_in_op(q, k, v, input_gate, forget_gate, *, initial_state, **_):
    """`h = v * (q . k + i~ + f~)` per step and head, the state passed
    through: every input of the op reaches the loss (so the projections
    feeding it are compiled forward and backward), nothing is
    recurrent."""
    score = ops.sum(q * k, axis=-1) + input_gate + forget_gate  # (B, NH, T)
    return v * ops.expand_dims(score, -1), initial_state


@contextlib.contextmanager
def op_stand_in():
    """Inside the `with`, `MLSTMBlock` and `MLSTMLargeBlock` call
    `_stand_in_op` where they call the mLSTM op: a block's first call then
    measures everything but the op."""
    with (
        mock.patch.object(block_module, "mlstm", _stand_in_op),
        mock.patch.object(large_block_module, "mlstm", _stand_in_op),
    ):
        yield


def _context(name):
    """What the model `name` is traced and run in."""
    return op_stand_in() if name == STAND_IN else contextlib.nullcontext()


def _within(name, thunk):
    """`thunk`, called in the context of the model `name` (PyTorch traces
    nothing: its steady steps call the op anew)."""

    def call():
        with _context(name):
            return thunk()

    return call


def add_arguments(parser):
    add_int(
        parser,
        "--compile-depths",
        [1, 2, 4, 8],
        "compile: numbers of layers (blocks) of the bodies",
        metavar="N",
    )
    add_int(
        parser,
        "--compile-width",
        128,
        "compile: width of the mLSTM bodies (the others match their"
        " parameter count)",
        metavar="D",
    )
    add_int(parser, "--compile-length", 256, "compile: sequence length")
    add_int(parser, "--compile-batch", 16, "compile: batch size", metavar="B")
    add_int(parser, "--compile-vocab", 256, "compile: vocabulary size")


def _layers(make, depth):
    """A body of `depth` layers `make(width)` applied in turn."""

    def body(width):
        def apply(x):
            for _ in range(depth):
                x = make(width)(x)
            return x

        return apply

    return body


def _recurrent(layer_class):
    return lambda width: layer_class(width, return_sequences=True)


def _builders(vocab, depth, context, hub):
    """`name -> build(width)` of the models compared at `depth`; the
    first is the reference for the others' widths."""

    def around(body):
        return lambda width: language_model(vocab, width, body(width))

    stack = around(lambda width: MLSTMStack(num_layers=depth, num_heads=HEADS))
    builders = {"MLSTMStack": stack, STAND_IN: stack}
    if hub:
        builders["XLSTMBackbone"] = functools.partial(
            mlstm_model, vocab, blocks=depth, context=context
        )
    builders["LSTM"] = around(_layers(_recurrent(keras.layers.LSTM), depth))
    builders["GRU"] = around(_layers(_recurrent(keras.layers.GRU), depth))
    builders["Transformer"] = functools.partial(
        transformer_model, vocab, blocks=depth, context=context
    )
    if depth == 1:
        builders["MLSTM"] = around(_recurrent(MLSTM))
        builders["MLSTMBlock"] = around(lambda w: MLSTMBlock(num_heads=HEADS))
        builders["MLSTMLargeBlock"] = around(
            lambda w: MLSTMLargeBlock(num_heads=HEADS)
        )
    return builders


# Bodies built at `--compile-width` itself rather than at a matched size.
AT_WIDTH = (
    "MLSTMStack",
    STAND_IN,
    "XLSTMBackbone",
    "MLSTM",
    "MLSTMBlock",
    "MLSTMLargeBlock",
)


def run(args):
    vocab, width = args.compile_vocab, args.compile_width
    length, batch = args.compile_length, args.compile_batch
    missing = hub_unavailable()
    hub = missing is None
    if not hub:
        print(
            f"compile suite: XLSTMBackbone left out: {missing}", file=sys.stderr
        )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    tokens = np.random.default_rng(0).integers(vocab, size=(batch, length + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    inputs, targets = inputs.astype("int32"), targets.astype("int32")

    # One-time costs of the process (the first compilation of all, the
    # first use of each layer's and the optimizer's code) must not land on
    # the first contestant: a tiny model of both kinds of layer first.
    def warm_up_body(x):
        x = MLSTMStack(num_layers=1, num_heads=2)(x)
        return keras.layers.LSTM(8, return_sequences=True)(x)

    warm_up = language_model(vocab, 8, warm_up_body)
    compile_for_training(warm_up, loss, "auto")
    warm_up.train_on_batch(inputs, targets)
    one_layer = {}  # the first call of each body at depth 1
    for depth in args.compile_depths:
        models = {}  # the models of the depth before go, then Keras's state
        keras.backend.clear_session()
        builders = _builders(vocab, depth, length, hub)
        target = builders["MLSTMStack"](width).count_params()
        widths = {
            name: width if name in AT_WIDTH else width_for(build, target)
            for name, build in builders.items()
        }
        for name, build in builders.items():
            with _context(name):
                models[name] = build(widths[name])
            compile_for_training(models[name], loss, "auto")
        # The first calls one by one, each from a collected heap (Python's
        # garbage collector walks every live object, the graphs of the
        # models before included, and would charge that to whoever is
        # next), then the steady steps interleaved.
        first, stages = {}, {}
        for name, model in models.items():
            gc.collect()
            with _context(name), compile_stages() as stages[name]:
                start = time.perf_counter()
                block_until_ready(model.train_on_batch(inputs, targets))
                first[name] = time.perf_counter() - start
        result = time_interleaved(
            {
                name: _within(
                    name, call_with(model.train_on_batch, (inputs, targets))
                )
                for name, model in models.items()
            },
            args.repeats,
        )
        for name, timing in result.items():
            timing["first_call_s"] = first[name]
        lstm = result["LSTM"]["first_call_s"]
        for name, timing in result.items():
            if depth == 1:
                one_layer[name] = timing["first_call_s"]
            row = {"suite": "compile", "body": name, "width": widths[name]}
            row.update(layers=depth, vocab=vocab, length=length, batch=batch)
            row.update(params=models[name].count_params(), **timing)
            row.update(stages[name])
            row["jit_compile"] = models[name].jit_compile
            row["tokens_per_s"] = batch * length / timing["median_s"]
            row["first_call_ratio_to_LSTM"] = timing["first_call_s"] / lstm
            if name in one_layer:
                row["first_call_vs_1_layer"] = (
                    timing["first_call_s"] / one_layer[name]
                )
            yield row


def title(row):
    return (
        f"language models, vocabulary {row['vocab']}, T={row['length']},"
        f" B={row['batch']}, Adam, next-token cross-entropy, first"
        " train_on_batch and steady step"
    )


COLUMNS = (
    ("body", "body", "text"),
    ("layers", "layers", "text"),
    ("width", "width", "text"),
    ("params", "params", "count"),
    ("first call (s)", "first_call_s", "s"),
    ("trace (s)", "trace_s", "s"),
    ("lower (s)", "lower_s", "s"),
    ("XLA compile (s)", "xla_compile_s", "s"),
    ("XLA", "jit_compile", "text"),
    ("ms/step", "median_s", "ms"),
    ("first call / LSTM", "first_call_ratio_to_LSTM", "ratio"),
    ("first call / 1 layer", "first_call_vs_1_layer", "ratio"),
)
