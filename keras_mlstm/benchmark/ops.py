"""The `ops` and `peer` suites: each form of `keras_mlstm.ops.mlstm`,
forward and forward+backward, over sequence lengths (parallel up to
`--parallel-max`, recurrent up to `--recurrent-max`); with `peer`,
the same shapes through the official `mlstm_kernels` pure-PyTorch
kernels (`chunkwise--native_autograd`, `parallel--native_autograd`)
in the same process, interleaved call by call with ours, reported as ours
/ theirs. The official kernels run in PyTorch on the CPU beside any Keras
backend.
"""

import keras

from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.options import missing_package
from keras_mlstm.benchmark.timing import call_with
from keras_mlstm.benchmark.timing import compile_gradient
from keras_mlstm.benchmark.timing import random_arrays
from keras_mlstm.benchmark.timing import ratios
from keras_mlstm.benchmark.timing import time_interleaved
from keras_mlstm.ops.compat import compile_function
from keras_mlstm.ops.resolver import mlstm

# The version the `test` extra of pyproject.toml pins.
OFFICIAL_PACKAGE = "mlstm_kernels==2.0.6"

HELP = {
    "ops": "each form of keras_mlstm.ops.mlstm, forward and"
    " forward+backward, over --lengths",
    "peer": "the same shapes through the official mlstm_kernels PyTorch"
    " kernels, interleaved with ours; ratio ours / theirs (needs"
    f" {OFFICIAL_PACKAGE})",
}


def add_arguments(parser):
    add_int(
        parser,
        "--lengths",
        [256, 1024, 2048, 4096, 16384],
        "ops/peer: sequence lengths",
        metavar="T",
    )
    add_int(parser, "--batch", 4, "ops/peer/step: batch size")
    add_int(parser, "--heads", 4, "ops/peer/step: number of heads")
    add_int(
        parser,
        "--dim",
        64,
        "ops/peer/step: head dimension of queries, keys and values",
    )
    add_int(
        parser,
        "--chunk-size",
        64,
        "ops/peer: chunk size of the chunkwise forms",
    )
    add_int(
        parser,
        "--parallel-max",
        4096,
        "ops/peer: longest T for the parallel form; 0 skips it",
        metavar="T",
        minimum=0,
    )
    add_int(
        parser,
        "--recurrent-max",
        1024,
        "ops: longest T for the recurrent form; 0 skips it",
        metavar="T",
        minimum=0,
    )


def kernels_unavailable():
    """Why the official PyTorch kernels (`mlstm_kernels.torch`) cannot be
    imported, with the command that installs them; None when they can."""
    return missing_package("mlstm_kernels.torch.recurrent", OFFICIAL_PACKAGE)


def ours(form, chunk_size):
    def forward(q, k, v, i, f):
        return mlstm(q, k, v, i, f, form=form, chunk_size=chunk_size)

    def loss(q, k, v, i, f):
        return keras.ops.sum(forward(q, k, v, i, f))

    return compile_function(forward), compile_gradient(loss)


def official(name, chunk_size):
    """The official PyTorch kernel `name` as `(forward, gradient)`
    functions of torch tensors. It runs beside any Keras backend, on the
    CPU."""
    import torch
    from mlstm_kernels.torch import get_mlstm_kernel

    kernel = get_mlstm_kernel(name)

    def forward(q, k, v, i, f):
        with torch.no_grad():
            return kernel(q, k, v, i, f, chunk_size=chunk_size)

    def gradient(q, k, v, i, f):
        args = [a.detach().requires_grad_() for a in (q, k, v, i, f)]
        value = kernel(*args, chunk_size=chunk_size).sum()
        return torch.autograd.grad(value, args)

    return forward, gradient


def _forms(length, args):
    for form, longest in (
        ("chunkwise", length),
        ("parallel", args.parallel_max),
        ("recurrent", args.recurrent_max),
    ):
        if length <= longest:
            yield form


def run(args):
    """One row per length and form; a `peer` row where the official
    kernel ran too (chunkwise and parallel, when `peer` is chosen and T
    is a multiple of the chunk size, which the official kernels need)."""
    with_peer = "peer" in args.suite
    for length in args.lengths:
        arrays = random_arrays(args.batch, args.heads, length, args.dim)
        inputs = [keras.ops.convert_to_tensor(a) for a in arrays]
        for form in _forms(length, args):
            forward, gradient = ours(form, args.chunk_size)
            contestants = {
                "ours_fw": call_with(forward, inputs),
                "ours_fwbw": call_with(gradient, inputs),
            }
            peer = (
                with_peer
                and form != "recurrent"
                and length % args.chunk_size == 0
            )
            if peer:
                import torch

                theirs = official(f"{form}--native_autograd", args.chunk_size)
                peer_inputs = [torch.from_numpy(a) for a in arrays]
                contestants["official_fw"] = call_with(theirs[0], peer_inputs)
                contestants["official_fwbw"] = call_with(theirs[1], peer_inputs)
            result = time_interleaved(contestants, args.repeats)
            row = {"suite": "peer" if peer else "ops", "form": form}
            row.update(length=length, batch=args.batch, heads=args.heads)
            row.update(dim=args.dim, chunk_size=args.chunk_size)
            row.update(result)
            if peer:
                row.update(ratios(result, ("fw", "fwbw")))
            yield row


def title(row):
    return (
        f"mLSTM, B={row['batch']}, NH={row['heads']}, DK=DV={row['dim']},"
        f" chunk {row['chunk_size']}"
    )


COLUMNS = (
    ("form", "form", "text"),
    ("T", "length", "text"),
    ("ours fw (ms)", "ours_fw.median_s", "ms"),
    ("ours fw+bw (ms)", "ours_fwbw.median_s", "ms"),
    ("official fw (ms)", "official_fw.median_s", "ms"),
    ("official fw+bw (ms)", "official_fwbw.median_s", "ms"),
    ("ratio fw", "ratio_fw", "ratio"),
    ("ratio fw+bw", "ratio_fwbw", "ratio"),
)
