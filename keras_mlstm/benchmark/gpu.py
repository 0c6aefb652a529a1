"""The `gpu` suite: the fused mLSTM kernels where models are trained.

Three kinds of rows, on the current backend and device:

- `accuracy` (one small shape, float32): the fused op, with the kernel's
  own backward and with the exact one, against the `keras.ops` op in
  float64 (whose forms the tests hold to an independent float64
  reference): the outputs' and each argument's gradient's largest error
  relative to its largest entry;
- `speed`, per sequence length: forward+backward of the op fused (the
  kernel's backward; the exact backward), of the `keras.ops` op, of the
  configured `mlstm_kernels` kernel called directly (the Keras wrapper's
  overhead is the ratio to it) and, on PyTorch, of
  `torch.nn.functional.scaled_dot_product_attention` (causal) at the same
  shapes; time, tokens/s and (PyTorch) peak memory of each;
- `lm`: a training step of an `XLSTMCausalLM` of about 125M parameters
  (`--gpu-lm-*`) under `mixed_bfloat16`, fused and not (needs KerasHub).

A contestant that cannot run here (no GPU for a Triton kernel, no
`mlstm_kernels`, TensorFlow) gives a row saying why instead of a time.
`python -m keras_mlstm.benchmark.gpu_check` runs this suite on the three
backends one after another; docs/gpu.md has the figures.
"""

import math
import time

import keras
import numpy as np
from keras import ops

from keras_mlstm import config
from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import BACKEND
from keras_mlstm.benchmark.timing import block_until_ready
from keras_mlstm.benchmark.timing import compile_gradient
from keras_mlstm.benchmark.timing import time_interleaved
from keras_mlstm.ops import mlstm
from keras_mlstm.ops.fused import find_fused_kernel

HELP = {
    "gpu": "the fused kernels: accuracy against float64, forward+backward"
    " against keras.ops, mlstm_kernels and SDPA over --gpu-lengths, and a"
    " mixed_bfloat16 training step of a ~125M XLSTMCausalLM",
}
ARGUMENTS = ("q", "k", "v", "input_gate", "forget_gate")


def add_arguments(parser):
    add_int(
        parser,
        "--gpu-lengths",
        [2048, 8192, 32768, 65536],
        "gpu: sequence lengths of the speed rows",
        metavar="T",
    )
    add_int(parser, "--gpu-batch", 1, "gpu: batch of the speed rows")
    add_int(parser, "--gpu-heads", 16, "gpu: heads of the speed rows")
    add_int(parser, "--gpu-qk", 128, "gpu: query/key head size")
    add_int(parser, "--gpu-v", 256, "gpu: value head size")
    parser.add_argument(
        "--gpu-dtype",
        default="bfloat16",
        choices=("bfloat16", "float16", "float32"),
        help="gpu: dtype of q, k, v in the speed rows",
    )
    parser.add_argument(
        "--gpu-kernels",
        nargs=2,
        metavar=("SEQUENCE", "STEP"),
        help="gpu: mlstm_kernels kernel names (default: keras_mlstm.config's)",
    )
    add_int(parser, "--gpu-lm-width", 768, "gpu: XLSTMCausalLM width")
    add_int(parser, "--gpu-lm-layers", 12, "gpu: XLSTMCausalLM blocks")
    add_int(parser, "--gpu-lm-heads", 4, "gpu: XLSTMCausalLM heads")
    add_int(parser, "--gpu-lm-vocab", 50304, "gpu: XLSTMCausalLM vocabulary")
    add_int(parser, "--gpu-lm-length", 2048, "gpu: training sequence length")
    add_int(parser, "--gpu-lm-batch", 8, "gpu: training batch")


def random_inputs(batch, heads, length, qk, v, dtype, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [
        rng.normal(size=(batch, heads, length, qk)),
        rng.normal(size=(batch, heads, length, qk)),
        rng.normal(size=(batch, heads, length, v)),
        rng.normal(size=(batch, heads, length)),
        rng.normal(size=(batch, heads, length)) + 3.0,
    ]
    return [
        ops.convert_to_tensor(a, dtype if index < 3 else "float32")
        for index, a in enumerate(arrays)
    ]


def op_loss(**kwargs):
    def loss(q, k, v, i, f):
        return ops.sum(ops.cast(mlstm(q, k, v, i, f, **kwargs), "float32"))

    return loss


def relative(actual, expected):
    actual, expected = (
        np.asarray(ops.convert_to_numpy(x), np.float64)
        for x in (actual, expected)
    )
    scale = np.max(np.abs(expected))
    return float(np.max(np.abs(actual - expected)) / (scale or 1.0))


def accuracy_row(fused_ok):
    """The fused op against the float64 `keras.ops` op."""
    row = {"suite": "gpu", "kind": "accuracy", "backend": BACKEND}
    if not fused_ok[0]:
        return {**row, "unavailable": fused_ok[1]}
    inputs = random_inputs(2, 2, 300, 64, 64, "float32")
    wide = [ops.cast(x, "float64") for x in inputs]
    reference = mlstm(*wide, fused=False)
    weights = ops.convert_to_tensor(
        np.random.default_rng(1).normal(size=reference.shape)
    )

    def weighted(**kwargs):
        def loss(q, k, v, i, f):
            h = ops.cast(mlstm(q, k, v, i, f, **kwargs), "float64")
            return ops.sum(h * weights)

        return loss

    expected = compile_gradient(weighted(fused=False))(*wide)
    row["output_error"] = relative(mlstm(*inputs, fused=True), reference)
    for backward in ("kernel", "exact"):
        grads = compile_gradient(weighted(fused=True, fused_backward=backward))(
            *inputs
        )
        for name, got, want in zip(ARGUMENTS, grads, expected, strict=True):
            row[f"{backward}_backward_{name}_error"] = relative(got, want)
    return row


def direct_kernel(name, dtype):
    """The configured kernel called on its own (the wrapper's floor)."""
    from keras_mlstm.ops.compat import fused_kernel
    from keras_mlstm.ops.compat import run_sequence_kernel

    kernel = fused_kernel("sequence", name)

    def loss(q, k, v, i, f):
        batch, heads, _, qk = q.shape
        state = (
            ops.zeros((batch, heads, qk, v.shape[-1])),
            ops.zeros((batch, heads, qk)),
            ops.zeros((batch, heads)),
        )
        # TFLA's chunk of 128, or the largest power of two dividing T.
        chunk = math.gcd(q.shape[2], 128)
        h, _ = run_sequence_kernel(
            kernel, q, k, v, i, f, state, 1e-6, chunk, dtype
        )
        return ops.sum(ops.cast(h, "float32"))

    return loss


def sdpa_loss(q, k, v):
    import torch

    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True
    )
    return ops.sum(ops.cast(out, "float32"))


def peak_memory(thunk):
    """Peak device bytes of one call of `thunk` (PyTorch on CUDA), else
    None."""
    if BACKEND != "torch":
        block_until_ready(thunk())
        return None
    import torch

    if not torch.cuda.is_available():
        block_until_ready(thunk())
        return None
    torch.cuda.reset_peak_memory_stats()
    block_until_ready(thunk())
    return torch.cuda.max_memory_allocated()


def speed_rows(args, fused_name, fused_ok):
    contestants = {"keras.ops": op_loss(fused=False)}
    if fused_ok[0]:
        contestants["fused"] = op_loss(fused=True, fused_backward="kernel")
        contestants["fused, exact backward"] = op_loss(fused=True)
        contestants["mlstm_kernels"] = direct_kernel(fused_name, args.gpu_dtype)
    if BACKEND == "torch" and args.gpu_qk == args.gpu_v:
        contestants["SDPA"] = sdpa_loss
    elif BACKEND == "torch":
        contestants["SDPA (v head = qk head)"] = sdpa_loss
    for length in args.gpu_lengths:
        v = args.gpu_v
        inputs = random_inputs(
            args.gpu_batch,
            args.gpu_heads,
            length,
            args.gpu_qk,
            v,
            args.gpu_dtype,
        )
        # Attention reads no gates; its v head matches q's if asked to.
        sdpa_inputs = list(inputs[:3])
        if BACKEND == "torch" and args.gpu_qk != args.gpu_v:
            sdpa_inputs[2] = inputs[0]
        thunks, memory = {}, {}
        for name, loss in contestants.items():
            gradient = compile_gradient(loss)
            given = sdpa_inputs if name.startswith("SDPA") else inputs

            def thunk(gradient=gradient, given=given):
                return gradient(*given)

            thunks[name] = thunk
            memory[name] = peak_memory(thunk)
        timed = time_interleaved(thunks, args.repeats)
        tokens = args.gpu_batch * length
        base = timed["keras.ops"]["median_s"]
        for name, timing in timed.items():
            row = {"suite": "gpu", "kind": "speed", "backend": BACKEND}
            row.update(contestant=name, length=length, tokens=tokens)
            row.update(heads=args.gpu_heads, qk=args.gpu_qk, v=v)
            row.update(dtype=args.gpu_dtype, peak_bytes=memory[name])
            row.update(timing, tokens_per_s=tokens / timing["median_s"])
            row["speedup_over_keras_ops"] = base / timing["median_s"]
            if "mlstm_kernels" in timed and name == "fused":
                row["over_mlstm_kernels"] = (
                    timing["median_s"] / timed["mlstm_kernels"]["median_s"]
                )
            yield row


def lm_rows(args, fused_ok):
    try:
        from keras_mlstm.models.xlstm import XLSTMBackbone
        from keras_mlstm.models.xlstm import XLSTMCausalLM
    except ImportError as error:
        yield {"suite": "gpu", "kind": "lm", "unavailable": str(error)}
        return
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        for fused in (True, False) if fused_ok[0] else (False,):
            keras.utils.set_random_seed(0)
            lm = XLSTMCausalLM(
                XLSTMBackbone(
                    vocabulary_size=args.gpu_lm_vocab,
                    num_layers=args.gpu_lm_layers,
                    hidden_dim=args.gpu_lm_width,
                    num_heads=args.gpu_lm_heads,
                    block_variant="large",
                    fused=None if fused else False,
                )
            )
            lm.compile(
                optimizer=keras.optimizers.AdamW(1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(True),
            )
            rng = np.random.default_rng(0)
            shape = (args.gpu_lm_batch, args.gpu_lm_length + 1)
            ids = rng.integers(0, args.gpu_lm_vocab, size=shape)
            ids = ids.astype("int32")
            inputs = {
                "token_ids": ids[:, :-1],
                "padding_mask": np.ones_like(ids[:, :-1]),
            }

            def step(lm=lm, inputs=inputs, targets=ids[:, 1:]):
                return lm.train_on_batch(inputs, targets)

            start = time.perf_counter()
            step()
            first = time.perf_counter() - start
            timed = time_interleaved({"step": step}, args.repeats)["step"]
            tokens = ids[:, :-1].size
            yield {
                "suite": "gpu",
                "kind": "lm",
                "backend": BACKEND,
                "contestant": "fused" if fused else "keras.ops",
                "params": lm.count_params(),
                "first_step_s": first,
                "median_s": timed["median_s"],
                "tokens_per_s": tokens / timed["median_s"],
                "peak_bytes": peak_memory(step),
            }
    finally:
        keras.config.set_dtype_policy(policy)


def run(args):
    if args.gpu_kernels:
        config.enable_fused_kernels(*args.gpu_kernels)
    probe = random_inputs(1, 1, 16, args.gpu_qk, args.gpu_v, args.gpu_dtype)
    name, reason = find_fused_kernel("sequence", probe[0], probe[2], "sigmoid")
    fused_ok = (name is not None, reason)
    yield accuracy_row(fused_ok)
    yield from speed_rows(args, name, fused_ok)
    yield from lm_rows(args, fused_ok)


def title(row):
    return f"gpu suite: {row['kind']} rows"


COLUMNS = (
    ("kind", "kind", "text"),
    ("contestant", "contestant", "text"),
    ("T", "length", "text"),
    ("ms", "median_s", "ms"),
    ("tokens/s", "tokens_per_s", "rate"),
    ("x keras.ops", "speedup_over_keras_ops", "ratio"),
    ("/ mlstm_kernels", "over_mlstm_kernels", "ratio"),
    ("peak MiB", "peak_bytes", "MiB"),
    ("output error", "output_error", "error"),
    ("unavailable", "unavailable", "text"),
)
