"""The `official` suite: forward+backward (gradients of the summed
outputs with respect to the weights and the inputs) of our `MLSTMBlock`
against the official `xlstm` package's `mLSTMBlock` (PyTorch), the
same model: ours is built from theirs by `keras_mlstm.from_xlstm`, with
its weights. Both are timed in one process, interleaved call by call, and
reported as ours / theirs. Ours is compiled where the backend compiles
(the gradient of the block's `stateless_call` under `jax.jit` or
`tf.function(jit_compile=True)`); theirs runs eagerly in PyTorch on the
CPU beside any Keras backend. The row also records how far apart the two
outputs are, relative to the largest official output.
"""

import keras
import numpy as np

from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.options import missing_package
from keras_mlstm.benchmark.timing import call_with
from keras_mlstm.benchmark.timing import compile_gradient
from keras_mlstm.benchmark.timing import random_sequences
from keras_mlstm.benchmark.timing import time_interleaved
from keras_mlstm.models.convert import from_xlstm

# The version the `test` extra of pyproject.toml pins.
XLSTM_PACKAGE = "xlstm==2.0.6"

HELP = {
    "official": "forward+backward of MLSTMBlock against the official xlstm"
    f" mLSTMBlock of the same weights; ratio ours / theirs (needs"
    f" {XLSTM_PACKAGE})",
}


def add_arguments(parser):
    add_int(
        parser,
        "--official-dim",
        128,
        "official: embedding width of the blocks",
        metavar="D",
    )
    add_int(
        parser,
        "--official-length",
        256,
        "official: sequence length",
        metavar="T",
    )
    add_int(parser, "--official-batch", 8, "official: batch size", metavar="B")
    add_int(
        parser,
        "--official-heads",
        4,
        "official: mLSTM heads of the blocks",
        metavar="NH",
    )


def xlstm_unavailable():
    """Why the official `xlstm` blocks cannot be imported, with the
    command that installs them; None when they can."""
    return missing_package("xlstm.blocks.mlstm.block", XLSTM_PACKAGE)


def official_block(dim, length, heads):
    """An official `mLSTMBlock` of width `dim` for sequences up to
    `length`, its other settings the official defaults."""
    import torch
    from xlstm.blocks.mlstm.block import mLSTMBlock
    from xlstm.blocks.mlstm.block import mLSTMBlockConfig
    from xlstm.blocks.mlstm.layer import mLSTMLayerConfig

    torch.manual_seed(0)
    config = mLSTMBlockConfig(
        mlstm=mLSTMLayerConfig(
            embedding_dim=dim, context_length=length, num_heads=heads
        ),
        _num_blocks=1,
    )
    config.__post_init__()
    return mLSTMBlock(config)


def run(args):
    import torch

    dim, length = args.official_dim, args.official_length
    module = official_block(dim, length, args.official_heads)
    block = from_xlstm(module)
    x, _ = random_sequences(args.official_batch, length, dim)
    fixed = [v.value for v in block.non_trainable_variables]

    def loss(trainable, inputs):
        outputs, _ = block.stateless_call(trainable, fixed, inputs)
        return keras.ops.sum(outputs)

    trainable = [
        keras.ops.convert_to_tensor(v.value) for v in block.trainable_variables
    ]
    ours = (trainable, keras.ops.convert_to_tensor(x))
    weights = list(module.parameters())
    theirs = torch.from_numpy(x)

    def official_gradient():
        inputs = theirs.detach().requires_grad_()
        return torch.autograd.grad(module(inputs).sum(), weights + [inputs])

    result = time_interleaved(
        {
            "ours": call_with(compile_gradient(loss), ours),
            "official": official_gradient,
        },
        args.repeats,
    )
    with torch.no_grad():
        expected = module(theirs).numpy()
    difference = np.abs(keras.ops.convert_to_numpy(block(x)) - expected)
    row = {"suite": "official", "dim": dim, "length": length}
    row.update(batch=args.official_batch, heads=args.official_heads, **result)
    row["ratio"] = result["ours"]["median_s"] / result["official"]["median_s"]
    row["output_difference"] = float(difference.max() / np.abs(expected).max())
    yield row


def title(row):
    return (
        f"MLSTMBlock against xlstm's mLSTMBlock, NH={row['heads']},"
        " forward+backward"
    )


COLUMNS = (
    ("D", "dim", "text"),
    ("T", "length", "text"),
    ("B", "batch", "text"),
    ("ours fw+bw (ms)", "ours.median_s", "ms"),
    ("official fw+bw (ms)", "official.median_s", "ms"),
    ("ours first call (s)", "ours.first_call_s", "s"),
    ("ours / official", "ratio", "ratio"),
    ("output difference", "output_difference", "error"),
)
