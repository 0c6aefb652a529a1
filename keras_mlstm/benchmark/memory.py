"""The `memory` suite: peak memory of an `MLSTM` training step against
the sequence length, each length in a fresh process (`python -m
keras_mlstm.benchmark --memory-probe T`), so that earlier lengths'
allocations and compilations do not mask the peak.

On the CPU: the peak resident set size above the resident size just before
the step, for the first step (which includes compilation) and for a later
step (the kernel's peak counter reset in between); allocators may keep
freed memory, so the later step's figure is a lower bound. On a GPU: the
backend allocator's peak.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from keras_mlstm.benchmark.layer import sequence_model
from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.options import positive
from keras_mlstm.benchmark.timing import BACKEND
from keras_mlstm.benchmark.timing import block_until_ready
from keras_mlstm.benchmark.timing import random_sequences

HELP = {
    "memory": "peak memory of an MLSTM training step against T"
    " (--memory-lengths), each length in a fresh process",
}

STEPS = ("first_step", "step")


def add_arguments(parser):
    add_int(
        parser,
        "--memory-lengths",
        [256, 1024, 4096, 16384],
        "memory: sequence lengths, each in a fresh process",
        metavar="T",
    )
    # Internal: one length of the suite, in the fresh process.
    parser.add_argument("--memory-probe", type=positive, help=argparse.SUPPRESS)


def _proc_status_bytes(field):
    """`VmRSS` or `VmHWM` (peak RSS) of this process in bytes, or None
    where `/proc` is missing (not Linux)."""
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


def peak_bytes(measure):
    """The peak of one step's measurements: the device allocator's where
    there is one, else the resident-size increase."""
    if measure["device_peak_bytes"] is not None:
        return measure["device_peak_bytes"]
    return measure["peak_rss_increase_bytes"]


def measure_step_memory(args, length):
    """Peak memory of one `MLSTM` training step at sequence length
    `length`, measured in this process (run it in a fresh one)."""
    units, batch = args.units, args.layer_batch
    x, y = random_sequences(batch, length, units)
    model = sequence_model("MLSTM", units, length)
    row = {"suite": "memory", "length": length, "units": units}
    row["batch"] = batch
    for name in STEPS:
        _reset_peak_rss()
        _device_peak(reset=True)
        before = _proc_status_bytes("VmRSS")
        start = time.perf_counter()
        block_until_ready(model.train_on_batch(x, y))
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


def run(args):
    """Each length in a fresh process; from the second length on, the
    marginal memory per token since the previous one (flat or falling when
    memory grows at most linearly in T)."""
    previous = None
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
        if previous is not None:
            for name in STEPS:
                low, high = peak_bytes(previous[name]), peak_bytes(row[name])
                if low is not None and high is not None:
                    row[name]["bytes_per_extra_token"] = (high - low) / (
                        length - previous["length"]
                    )
        previous = row
        yield row


def title(row):
    where = "resident memory increase"
    if row["step"]["device_peak_bytes"] is not None:
        where = "device memory"
    return (
        f"MLSTM({row['units']}) training step, B={row['batch']}, peak {where}"
    )


COLUMNS = (
    ("T", "length", "text"),
    ("first step (MiB)", lambda row: peak_bytes(row["first_step"]), "MiB"),
    ("per extra token (KiB)", "first_step.bytes_per_extra_token", "KiB"),
    ("later step (MiB)", lambda row: peak_bytes(row["step"]), "MiB"),
    ("per extra token (KiB)", "step.bytes_per_extra_token", "KiB"),
)
