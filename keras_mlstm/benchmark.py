"""Benchmark keras_mlstm on the current Keras backend, CPU or GPU.

Run ``python -m keras_mlstm.benchmark --help``. Suites:

- ``ops``: each form of ``keras_mlstm.ops.mlstm``, forward and
  forward+backward, over sequence lengths (parallel only up to
  ``--parallel-max``).
- ``peer``: the same shapes through the official ``mlstm_kernels`` package's
  pure-PyTorch kernels (``chunkwise--native_autograd``,
  ``parallel--native_autograd``), timed in the same run, interleaved with
  ours, reported as ours / theirs. It needs ``mlstm_kernels`` (``pip
  install mlstm_kernels==2.0.6``); without it the command line is refused.
- ``layer``: a training step (forward, backward, optimizer update) of
  ``MLSTM(units)``, ``keras.layers.LSTM(units)`` and a causal
  ``keras.layers.MultiHeadAttention`` of the same width, on the same data,
  as tokens per second.
- ``decode``: per-token latency of step-by-step generation through a stack
  of MLSTM layers after prefilling contexts of growing length (it must stay
  flat: the state is O(1)).
- ``flops``: achieved FLOP/s of an ``MLSTM`` training step (FLOPs counted
  analytically, see ``training_step_flops``) against the machine's measured
  float32 matrix-multiply rate.
- ``step``: per-token latency of one ``keras_mlstm.ops.mlstm_step`` against
  the official native step kernel (``get_mlstm_step_kernel("native")``),
  interleaved; without ``mlstm_kernels`` it times ours only and says so
  (on stderr and in the row's ``official_unavailable``).
- ``memory``: peak memory of an ``MLSTM`` training step against the sequence
  length, each length in a fresh process (see ``measure_step_memory``).

``--plot FILE.png`` draws time and memory against T (needs matplotlib) from
this run's rows, or, with ``--from-reports``, from earlier JSON reports of
any backends (no suite is run then).

Timing: compiled functions where the backend compiles (``jax.jit``,
``tf.function(jit_compile=True)``; PyTorch runs eagerly); the first call
(compilation and warm-up) is reported separately; then the median of
``--repeats`` calls. Contestants of one row are interleaved call by call, so
drift on a shared machine affects them alike. Prints a table and writes
JSON.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np

from keras_mlstm.layers.mlstm import MLSTM
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.compat import compile_function
from keras_mlstm.ops.recurrent import mlstm_step
from keras_mlstm.ops.resolver import mlstm

BACKEND = keras.backend.backend()
# The version the `test` extra of pyproject.toml pins.
OFFICIAL_PACKAGE = "mlstm_kernels==2.0.6"


def _block(value):
    """Wait for the device to finish computing ``value``."""
    if BACKEND == "jax":
        import jax

        jax.block_until_ready(value)
    elif BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    else:
        keras.tree.map_structure(
            lambda x: x.numpy() if hasattr(x, "numpy") else x, value
        )
    return value


def compile_gradient(loss):
    """A function returning the gradients of scalar ``loss`` w.r.t. all its
    arguments, compiled where the backend compiles."""
    if BACKEND == "jax":
        import jax

        return jax.jit(jax.grad(loss, argnums=tuple(range(5))))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def gradient(*args):
            with tf.GradientTape() as tape:
                tape.watch(args)
                value = loss(*args)
            return tape.gradient(value, args)

        return gradient
    import torch

    def gradient(*args):
        args = [a.detach().requires_grad_() for a in args]
        return torch.autograd.grad(loss(*args), args)

    return gradient


def time_interleaved(contestants, repeats):
    """Median seconds per call of each ``name -> thunk``, interleaved."""
    first = {}
    for name, thunk in contestants.items():
        start = time.perf_counter()
        _block(thunk())
        first[name] = time.perf_counter() - start
    samples = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, thunk in contestants.items():
            start = time.perf_counter()
            _block(thunk())
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(s), "first_call_s": first[name]}
        for name, s in samples.items()
    }


def random_arrays(batch, heads, length, dim, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(batch, heads, length, dim)) for _ in range(3)]
    arrays += [
        rng.normal(size=(batch, heads, length)),
        rng.normal(size=(batch, heads, length)) + 3.0,
    ]
    return [a.astype("float32") for a in arrays]


def ours(form, chunk_size):
    def forward(q, k, v, i, f):
        return mlstm(q, k, v, i, f, form=form, chunk_size=chunk_size)

    def loss(q, k, v, i, f):
        return keras.ops.sum(forward(q, k, v, i, f))

    return compile_function(forward), compile_gradient(loss)


def official_unavailable():
    """Why the official PyTorch kernels (``mlstm_kernels.torch``) cannot be
    imported, with the command that installs them; None when they can."""
    try:
        import mlstm_kernels.torch.recurrent  # noqa: F401
    except ImportError as error:
        return (
            f"the official mlstm_kernels package cannot be imported ({error});"
            f" install it with `pip install {OFFICIAL_PACKAGE}`"
        )
    return None


def official(name, chunk_size):
    """The official PyTorch kernel ``name`` as ``(forward, gradient)``
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


def call_with(fn, inputs):
    return lambda: fn(*inputs)


def suite_ops(args, with_peer):
    rows = []
    for length in args.lengths:
        arrays = random_arrays(args.batch, args.heads, length, args.dim)
        inputs = [keras.ops.convert_to_tensor(a) for a in arrays]
        for form in ("chunkwise", "parallel", "recurrent"):
            if form == "parallel" and length > args.parallel_max:
                continue
            if form == "recurrent" and length > args.recurrent_max:
                continue
            forward, gradient = ours(form, args.chunk_size)
            contestants = {
                "ours_fw": call_with(forward, inputs),
                "ours_fwbw": call_with(gradient, inputs),
            }
            peer = None
            # The official kernels need T to be a multiple of the chunk size.
            if (
                with_peer
                and form in ("chunkwise", "parallel")
                and length % args.chunk_size == 0
            ):
                peer = official(f"{form}--native_autograd", args.chunk_size)
            if peer is not None:
                import torch

                peer_inputs = [torch.from_numpy(a) for a in arrays]
                contestants["official_fw"] = call_with(peer[0], peer_inputs)
                contestants["official_fwbw"] = call_with(peer[1], peer_inputs)
            result = time_interleaved(contestants, args.repeats)
            row = {"suite": "peer" if peer else "ops", "form": form}
            row.update(length=length, batch=args.batch, heads=args.heads)
            row.update(dim=args.dim, chunk_size=args.chunk_size)
            row.update(result)
            if peer is not None:
                for kind in ("fw", "fwbw"):
                    row[f"ratio_{kind}"] = (
                        result[f"ours_{kind}"]["median_s"]
                        / result[f"official_{kind}"]["median_s"]
                    )
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def layer_models(kind, units, length, features):
    inputs = keras.Input((length, features))
    if kind == "MLSTM":
        x = MLSTM(units, return_sequences=True)(inputs)
    elif kind == "LSTM":
        x = keras.layers.LSTM(units, return_sequences=True)(inputs)
    else:
        heads = 4 if units % 4 == 0 else 1
        x = keras.layers.MultiHeadAttention(heads, units // heads)(
            inputs, inputs, use_causal_mask=True
        )
    model = keras.Model(inputs, keras.layers.Dense(features)(x))
    model.compile(optimizer="adam", loss="mse", jit_compile=BACKEND != "torch")
    return model


def suite_layer(args):
    rows = []
    rng = np.random.default_rng(0)
    length, units = args.layer_length, args.units
    x = rng.normal(size=(args.layer_batch, length, units)).astype("float32")
    y = rng.normal(size=x.shape).astype("float32")
    contestants = {}
    for kind in ("MLSTM", "LSTM", "MultiHeadAttention"):
        model = layer_models(kind, units, length, units)
        contestants[kind] = call_with(model.train_on_batch, (x, y))
    result = time_interleaved(contestants, args.repeats)
    tokens = args.layer_batch * length
    row = {"suite": "layer", "units": units, "length": length}
    row["batch"] = args.layer_batch
    for kind, timing in result.items():
        row[kind] = dict(timing, tokens_per_s=tokens / timing["median_s"])
    for kind in ("LSTM", "MultiHeadAttention"):
        row[f"speedup_vs_{kind}"] = (
            result[kind]["median_s"] / result["MLSTM"]["median_s"]
        )
    rows.append(row)
    print(format_row(row), flush=True)
    return rows


def suite_decode(args):
    """Per-token latency of step-by-step generation after a prefill of
    ``context`` tokens: the state is O(1), so it must not grow with it."""
    rng = np.random.default_rng(0)
    units = args.decode_units
    stack = [
        MLSTM(units, return_sequences=True, return_state=True)
        for _ in range(args.decode_layers)
    ]

    def run(x, states):
        new_states = []
        for layer, state in zip(stack, states, strict=True):
            x, *state = layer(x, initial_state=state)
            new_states.append(state)
        return x, new_states

    step = compile_function(run)
    rows = []
    for context in args.contexts:
        prompt = rng.normal(size=(1, context, units)).astype("float32")
        start = time.perf_counter()
        x, states = prompt, [None] * len(stack)
        _, states = run(keras.ops.convert_to_tensor(x), states)
        _block(states)
        prefill = time.perf_counter() - start
        token = keras.ops.convert_to_tensor(
            rng.normal(size=(1, 1, units)).astype("float32")
        )
        _block(step(token, states))  # compile / warm up
        samples = []
        for _ in range(args.decode_steps):
            begin = time.perf_counter()
            _, states = step(token, states)
            _block(states)
            samples.append(time.perf_counter() - begin)
        row = {"suite": "decode", "context": context, "units": units}
        row.update(layers=args.decode_layers, prefill_s=prefill)
        row["per_token_s"] = statistics.median(samples)
        rows.append(row)
        print(format_row(row), flush=True)
    base = rows[0]["per_token_s"]
    for row in rows:
        row["ratio_to_shortest"] = row["per_token_s"] / base
    return rows


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


def suite_flops(args):
    """Achieved FLOP/s of the layer training step against the machine's
    measured float32 matrix-multiply rate."""
    size = args.matmul_size
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(
        rng.normal(size=(size, size)).astype("float32")
    )
    matmul = compile_function(lambda x, y: keras.ops.matmul(x, y))
    peak = time_interleaved({"matmul": call_with(matmul, (a, a))}, 5)
    peak_rate = 2 * size**3 / peak["matmul"]["median_s"]

    batch, length, units = args.layer_batch, args.flops_length, args.flops_units
    x = rng.normal(size=(batch, length, units)).astype("float32")
    model = layer_models("MLSTM", units, length, units)
    layer = model.layers[1]
    step = time_interleaved(
        {"MLSTM": call_with(model.train_on_batch, (x, x))}, args.repeats
    )
    flops = training_step_flops(
        batch, length, units, units, layer.num_heads, layer.chunk_size
    )
    rate = flops / step["MLSTM"]["median_s"]
    row = {"suite": "flops", "units": units, "length": length}
    row.update(batch=batch, step_flops=flops, step=step["MLSTM"])
    row.update(matmul_size=size, matmul_flops_per_s=peak_rate)
    row.update(achieved_flops_per_s=rate, fraction_of_matmul=rate / peak_rate)
    print(format_row(row), flush=True)
    return [row]


def suite_step(args):
    """Per-token cost of the recurrent step, ours against the official
    native step kernel (PyTorch, eager), interleaved, two ways:

    - ``call``: one step per call, as a generation loop calls it; includes
      the framework's per-call dispatch (for a compiled TensorFlow function
      about 0.3 ms on this CPU whatever it computes).
    - ``loop``: ``--step-tokens`` steps in one call (our recurrent form,
      compiled where the backend compiles; the official
      ``native_sequence__native``, which loops its native step), divided
      by the number of tokens.
    """
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

    as_tensors = [keras.ops.convert_to_tensor(a) for a in arrays]
    contestants = {
        "ours_call": call_with(compile_function(step), as_tensors),
        "ours_loop": call_with(
            compile_function(loop),
            [keras.ops.convert_to_tensor(a) for a in sequence],
        ),
    }
    missing = official_unavailable()
    if missing is not None:
        print(f"step suite: {missing}; timing ours only", file=sys.stderr)
    else:
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

        contestants["official_call"] = official_call
        contestants["official_loop"] = official_loop
    result = time_interleaved(contestants, args.step_repeats)
    for name in ("ours_loop", "official_loop"):
        if name in result:
            result[name]["per_token_s"] = result[name]["median_s"] / tokens
    for name in ("ours_call", "official_call"):
        if name in result:
            result[name]["per_token_s"] = result[name]["median_s"]
    row = {"suite": "step", "batch": batch, "heads": heads, "dim": dim}
    row.update(tokens=tokens, **result)
    if missing is not None:
        row["official_unavailable"] = missing
    if "official_call" in result:
        for kind in ("call", "loop"):
            row[f"ratio_{kind}"] = (
                result[f"ours_{kind}"]["per_token_s"]
                / result[f"official_{kind}"]["per_token_s"]
            )
    print(format_row(row), flush=True)
    return [row]


def _proc_status_bytes(field):
    """``VmRSS`` or ``VmHWM`` (peak RSS) of this process in bytes, or None
    where ``/proc`` is missing (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss():
    """Reset the kernel's peak-RSS counter (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _device_peak(reset=False):
    """Peak accelerator memory in bytes (None on CPU)."""
    if BACKEND == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return torch.cuda.max_memory_allocated()
    if BACKEND == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        return (device.memory_stats() or {}).get("peak_bytes_in_use")
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    if reset:
        tf.config.experimental.reset_memory_stats("GPU:0")
    return tf.config.experimental.get_memory_info("GPU:0")["peak"]


def measure_step_memory(args, length):
    """Peak memory of one ``MLSTM`` training step at sequence length
    ``length``, measured in this process (run it in a fresh one).

    On the CPU: the peak resident set size above the resident size just
    before the step, for the first step (which includes compilation) and for
    a later step (the kernel's peak counter reset in between); allocators
    may keep freed memory, so the later step's figure is a lower bound. On a
    GPU: the backend allocator's peak.
    """
    rng = np.random.default_rng(0)
    units, batch = args.units, args.layer_batch
    x = rng.normal(size=(batch, length, units)).astype("float32")
    model = layer_models("MLSTM", units, length, units)
    row = {"suite": "memory", "length": length, "units": units}
    row["batch"] = batch
    for name in ("first_step", "step"):
        _reset_peak_rss()
        _device_peak(reset=True)
        before = _proc_status_bytes("VmRSS")
        start = time.perf_counter()
        _block(model.train_on_batch(x, x))
        seconds = time.perf_counter() - start
        peak = _proc_status_bytes("VmHWM")
        row[name] = {
            "seconds": seconds,
            "rss_before_bytes": before,
            "peak_rss_bytes": peak,
            "peak_rss_increase_bytes": None if peak is None else peak - before,
            "device_peak_bytes": _device_peak(),
        }
    return row


def suite_memory(args):
    """Each length in a fresh process, so earlier lengths' allocations and
    compilations do not mask the peak."""
    rows = []
    for length in args.memory_lengths:
        command = [sys.executable, "-m", "keras_mlstm.benchmark"]
        command += ["--memory-probe", str(length)]
        command += ["--units", str(args.units)]
        command += ["--layer-batch", str(args.layer_batch)]
        env = dict(os.environ, KERAS_BACKEND=BACKEND)
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"memory probe at T={length} failed:\n{done.stderr[-3000:]}"
            )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(format_row(row), flush=True)
    _memory_per_token(rows)
    return rows


def _memory_per_token(rows):
    """Marginal memory per token between consecutive lengths: flat or
    falling when memory grows at most linearly in T."""
    key = "device_peak_bytes"
    if rows and rows[0]["step"][key] is None:
        key = "peak_rss_increase_bytes"
    for previous, row in zip(rows, rows[1:], strict=False):
        for name in ("first_step", "step"):
            low, high = previous[name][key], row[name][key]
            if low is None or high is None:
                continue
            row[name]["bytes_per_extra_token"] = (high - low) / (
                row["length"] - previous["length"]
            )


BACKEND_NAMES = {
    "jax": "JAX (jit)",
    "tensorflow": "TensorFlow (XLA)",
    "torch": "PyTorch",
}


def plot(reports, path):
    """Draw chunkwise forward+backward time and training-step peak memory
    against T from benchmark reports (dicts as written to JSON) of any
    backends, and save the figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (time_axes, memory_axes) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    official = {}
    for report in reports:
        name = BACKEND_NAMES.get(report["backend"], report["backend"])
        rows = [
            r
            for r in report["rows"]
            if r["suite"] in ("ops", "peer") and r["form"] == "chunkwise"
        ]
        if rows:
            rows.sort(key=lambda r: r["length"])
            time_axes.plot(
                [r["length"] for r in rows],
                [1e3 * r["ours_fwbw"]["median_s"] for r in rows],
                marker="o",
                label=f"keras_mlstm, {name}",
            )
            for r in rows:
                if "official_fwbw" in r:
                    official.setdefault(r["length"], []).append(
                        1e3 * r["official_fwbw"]["median_s"]
                    )
        memory = sorted(
            (r for r in report["rows"] if r["suite"] == "memory"),
            key=lambda r: r["length"],
        )
        if memory:
            key = "device_peak_bytes"
            if memory[0]["step"][key] is None:
                key = "peak_rss_increase_bytes"
            # The first step's peak: later steps reuse memory the
            # allocators kept, so theirs is only a lower bound (see JSON).
            memory_axes.plot(
                [r["length"] for r in memory],
                [r["first_step"][key] / 2**20 for r in memory],
                marker="o",
                label=name,
            )
    if official:
        lengths = sorted(official)
        time_axes.plot(
            lengths,
            [statistics.median(official[t]) for t in lengths],
            marker="x",
            color="black",
            label="official chunkwise--native_autograd (PyTorch)",
        )
    time_axes.set(
        xscale="log",
        yscale="log",
        xlabel="sequence length T",
        ylabel="forward+backward (ms)",
        title="chunkwise mLSTM, B=4, NH=4, DK=DV=64",
    )
    memory_axes.set(
        xscale="log",
        yscale="log",
        xlabel="sequence length T",
        ylabel="peak memory increase (MiB)",
        title="MLSTM(512) training step, B=4 (first step)",
    )
    for axes in (time_axes, memory_axes):
        axes.grid(True, which="both", alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def format_row(row):
    if row["suite"] == "step":
        text = f"step B={row['batch']} NH={row['heads']} DK=DV={row['dim']}:"
        for kind in ("call", "loop"):
            text += (
                f"  {kind}: ours {1e6 * row[f'ours_{kind}']['per_token_s']:.1f}"
                " us/token"
            )
            if f"ratio_{kind}" in row:
                text += (
                    " official "
                    f"{1e6 * row[f'official_{kind}']['per_token_s']:.1f} us"
                    f" ratio {row[f'ratio_{kind}']:.2f}"
                )
        return text
    if row["suite"] == "memory":
        parts = [f"memory T={row['length']:6d}"]
        for name in ("first_step", "step"):
            value = row[name]["device_peak_bytes"]
            if value is None:
                value = row[name]["peak_rss_increase_bytes"]
            parts.append(f"{name} peak +{value / 2**20:8.1f} MiB")
        return "  ".join(parts)
    if row["suite"] == "flops":
        return (
            f"flops U={row['units']} T={row['length']} B={row['batch']}: "
            f"{row['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s = "
            f"{100 * row['fraction_of_matmul']:.0f}% of the measured "
            f"float32 matmul rate ({row['matmul_flops_per_s'] / 1e9:.1f} "
            f"GFLOP/s at {row['matmul_size']}^3)"
        )
    if row["suite"] == "decode":
        return (
            f"decode context={row['context']:6d} per token "
            f"{1e3 * row['per_token_s']:8.3f} ms  prefill "
            f"{row['prefill_s']:7.2f} s"
        )
    if row["suite"] in ("ops", "peer"):
        text = (
            f"{row['suite']:5s} {row['form']:9s} T={row['length']:6d} "
            f"fw {1e3 * row['ours_fw']['median_s']:9.2f} ms  "
            f"fw+bw {1e3 * row['ours_fwbw']['median_s']:9.2f} ms"
        )
        if "ratio_fwbw" in row:
            text += (
                f"  | official fw {1e3 * row['official_fw']['median_s']:9.2f}"
                f" ms fw+bw {1e3 * row['official_fwbw']['median_s']:9.2f} ms"
                f"  ours/official fw {row['ratio_fw']:.2f}"
                f" fw+bw {row['ratio_fwbw']:.2f}"
            )
        return text
    parts = [f"layer U={row['units']} T={row['length']} B={row['batch']}"]
    for kind in ("MLSTM", "LSTM", "MultiHeadAttention"):
        parts.append(f"{kind} {row[kind]['tokens_per_s']:,.0f} tok/s")
    parts.append(f"MLSTM/LSTM speed {row['speedup_vs_LSTM']:.1f}x")
    return "  ".join(parts)


def markdown(rows):
    """The rows as the Markdown tables of ``docs/benchmarks.md``."""
    lines = []
    ops_rows = [r for r in rows if r["suite"] in ("ops", "peer")]
    if ops_rows:
        lines.append(
            "| form | T | ours fw (ms) | ours fw+bw (ms) | official fw (ms) "
            "| official fw+bw (ms) | ratio fw | ratio fw+bw |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in ops_rows:
            cells = [
                r["form"],
                str(r["length"]),
                f"{1e3 * r['ours_fw']['median_s']:.1f}",
                f"{1e3 * r['ours_fwbw']['median_s']:.1f}",
            ]
            if "ratio_fw" in r:
                cells += [
                    f"{1e3 * r['official_fw']['median_s']:.1f}",
                    f"{1e3 * r['official_fwbw']['median_s']:.1f}",
                    f"{r['ratio_fw']:.2f}",
                    f"{r['ratio_fwbw']:.2f}",
                ]
            else:
                cells += ["-"] * 4
            lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        if r["suite"] == "step":
            cells = [BACKEND]
            for kind in ("call", "loop"):
                cells.append(f"{1e6 * r[f'ours_{kind}']['per_token_s']:.1f}")
                if f"ratio_{kind}" in r:
                    official = r[f"official_{kind}"]["per_token_s"]
                    cells.append(f"{1e6 * official:.1f}")
                    cells.append(f"{r[f'ratio_{kind}']:.2f}")
                else:
                    cells += ["-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
        if r["suite"] == "memory":
            cells = [BACKEND, str(r["length"])]
            for name in ("first_step", "step"):
                value = r[name]["device_peak_bytes"]
                if value is None:
                    value = r[name]["peak_rss_increase_bytes"]
                cells.append(f"{value / 2**20:.0f}")
                extra = r[name].get("bytes_per_extra_token")
                cells.append("-" if extra is None else f"{extra / 1024:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        if r["suite"] == "decode":
            lines.append(
                f"| {BACKEND} | {r['context']} | "
                f"{1e3 * r['per_token_s']:.3f} | "
                f"{r['ratio_to_shortest']:.2f} |"
            )
        if r["suite"] == "layer":
            lines.append(
                f"| {BACKEND} | {r['MLSTM']['tokens_per_s']:,.0f} | "
                f"{r['LSTM']['tokens_per_s']:,.0f} | "
                f"{r['MultiHeadAttention']['tokens_per_s']:,.0f} | "
                f"{r['speedup_vs_LSTM']:.1f}x |"
            )
    return "\n".join(lines)


# One line per suite, for --help; the order is the order they run in.
SUITES = {
    "ops": "each form of keras_mlstm.ops.mlstm, forward and forward+backward,"
    " over --lengths",
    "peer": "the same shapes through the official mlstm_kernels PyTorch"
    " kernels, interleaved with ours; ratio ours / theirs (needs"
    f" {OFFICIAL_PACKAGE})",
    "layer": "a training step of MLSTM, LSTM and causal MultiHeadAttention"
    " of width --units, in tokens per second",
    "decode": "per-token latency of generation through --decode-layers"
    " MLSTM layers after prefilling --contexts tokens",
    "flops": "achieved FLOP/s of an MLSTM training step against the measured"
    " float32 matmul rate",
    "step": "per-token latency of keras_mlstm.ops.mlstm_step against the"
    " official native step kernel (ours only without mlstm_kernels)",
    "memory": "peak memory of an MLSTM training step against T"
    " (--memory-lengths), each length in a fresh process",
}


def int_at_least(minimum):
    """An argparse ``type`` reading an int >= ``minimum``; argparse names
    the option in the message when it is not one."""

    def parse(text):
        try:
            return positive_int("value", int(text), minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an int >= {minimum}; received {text!r}"
            ) from None

    return parse


positive = int_at_least(1)
non_negative = int_at_least(0)


class _HelpFormatter(
    argparse.ArgumentDefaultsHelpFormatter,
    argparse.RawDescriptionHelpFormatter,
):
    """Defaults after each help text; the suite list kept as laid out."""


def build_parser():
    suites = "\n".join(
        textwrap.fill(
            line,
            width=79,
            initial_indent=f"  {name:8s}",
            subsequent_indent=" " * 10,
        )
        for name, line in SUITES.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m keras_mlstm.benchmark",
        description=(
            "Time keras_mlstm on the current Keras backend (KERAS_BACKEND),"
            " CPU or GPU;\nprint a table and write a JSON report.\n\n"
            f"suites:\n{suites}\n\n"
            "Method, shapes and results: docs/benchmarks.md."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--suite",
        nargs="+",
        default=["ops", "peer", "layer"],
        choices=list(SUITES),
        metavar="SUITE",
        help="suites to run, from the list above",
    )
    parser.add_argument(
        "--lengths",
        type=positive,
        nargs="+",
        default=[256, 1024, 2048, 4096, 16384],
        metavar="T",
        help="ops/peer: sequence lengths",
    )
    parser.add_argument(
        "--batch", type=positive, default=4, help="ops/peer/step: batch size"
    )
    parser.add_argument(
        "--heads",
        type=positive,
        default=4,
        help="ops/peer/step: number of heads",
    )
    parser.add_argument(
        "--dim",
        type=positive,
        default=64,
        help="ops/peer/step: head dimension of queries, keys and values",
    )
    parser.add_argument(
        "--chunk-size",
        type=positive,
        default=64,
        help="ops/peer: chunk size of the chunkwise forms",
    )
    parser.add_argument(
        "--parallel-max",
        type=non_negative,
        default=4096,
        metavar="T",
        help="ops/peer: longest T for the parallel form; 0 skips it",
    )
    parser.add_argument(
        "--recurrent-max",
        type=non_negative,
        default=1024,
        metavar="T",
        help="ops: longest T for the recurrent form; 0 skips it",
    )
    parser.add_argument(
        "--units",
        type=positive,
        default=512,
        help="layer/memory: width of the layers",
    )
    parser.add_argument(
        "--layer-length",
        type=positive,
        default=1024,
        metavar="T",
        help="layer: sequence length",
    )
    parser.add_argument(
        "--layer-batch",
        type=positive,
        default=4,
        metavar="B",
        help="layer/flops/memory: batch size",
    )
    parser.add_argument(
        "--contexts",
        type=positive,
        nargs="+",
        default=[16, 256, 4096, 16384],
        metavar="T",
        help="decode: prefill lengths before the timed steps",
    )
    parser.add_argument(
        "--decode-units",
        type=positive,
        default=256,
        metavar="UNITS",
        help="decode: width of the MLSTM layers",
    )
    parser.add_argument(
        "--flops-units",
        type=positive,
        default=1024,
        metavar="UNITS",
        help="flops: width of the MLSTM layer",
    )
    parser.add_argument(
        "--flops-length",
        type=positive,
        default=2048,
        metavar="T",
        help="flops: sequence length",
    )
    parser.add_argument(
        "--matmul-size",
        type=positive,
        default=2048,
        metavar="N",
        help="flops: side of the square matmul that measures the peak rate",
    )
    parser.add_argument(
        "--decode-layers",
        type=positive,
        default=2,
        metavar="N",
        help="decode: number of stacked MLSTM layers",
    )
    parser.add_argument(
        "--decode-steps",
        type=positive,
        default=50,
        metavar="N",
        help="decode: timed generation steps per context (median)",
    )
    parser.add_argument(
        "--step-repeats",
        type=positive,
        default=200,
        metavar="N",
        help="step: timed calls per contestant (median)",
    )
    parser.add_argument(
        "--step-tokens",
        type=positive,
        default=64,
        metavar="N",
        help="step: tokens per call of the looped variant",
    )
    parser.add_argument(
        "--memory-lengths",
        type=positive,
        nargs="+",
        default=[256, 1024, 4096, 16384],
        metavar="T",
        help="memory: sequence lengths, each in a fresh process",
    )
    parser.add_argument(
        "--repeats",
        type=positive,
        default=5,
        metavar="N",
        help="ops/peer/layer/flops: timed calls per contestant (median)",
    )
    parser.add_argument(
        "--out",
        default="benchmark.json",
        metavar="JSON",
        help="where to write the JSON report",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="also draw time and memory against T to this PNG",
    )
    parser.add_argument(
        "--from-reports",
        nargs="+",
        metavar="JSON",
        help="with --plot: draw these earlier reports; run no suite",
    )
    parser.add_argument("--memory-probe", type=positive, help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_reports and not args.plot:
        parser.error("--from-reports needs --plot PNG")
    runs_suites = args.memory_probe is None and not args.from_reports
    if runs_suites and "peer" in args.suite:
        missing = official_unavailable()
        if missing is not None:
            parser.error(f"--suite peer: {missing}; or leave peer out")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe is not None:
        # Internal: one length of the memory suite, in a fresh process.
        print(json.dumps(measure_step_memory(args, args.memory_probe)))
        return None
    if args.from_reports:
        reports = []
        for name in args.from_reports:
            with open(name) as f:
                reports.append(json.load(f))
        print(f"wrote {plot(reports, args.plot)}")
        return None
    print(
        f"keras_mlstm benchmark: backend {BACKEND}, keras {keras.__version__},"
        f" {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    rows = []
    if "ops" in args.suite or "peer" in args.suite:
        rows += suite_ops(args, with_peer="peer" in args.suite)
    if "layer" in args.suite:
        rows += suite_layer(args)
    if "decode" in args.suite:
        rows += suite_decode(args)
    if "flops" in args.suite:
        rows += suite_flops(args)
    if "step" in args.suite:
        rows += suite_step(args)
    if "memory" in args.suite:
        rows += suite_memory(args)
    report = {"backend": BACKEND, "keras": keras.__version__}
    report.update(machine=platform.machine(), cpus=os.cpu_count())
    report.update(args=vars(args), rows=rows)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(markdown(rows))
    print(f"wrote {args.out}")
    if args.plot:
        print(f"wrote {plot([report], args.plot)}")
    return report


if __name__ == "__main__":
    main()
