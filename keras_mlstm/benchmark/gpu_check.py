"""The prepared GPU check: the `gpu` suite on PyTorch, JAX and TensorFlow,
one after another, each in its own process (Keras fixes its backend at
import), within a time budget.

Run `python -m keras_mlstm.benchmark.gpu_check [--budget SECONDS]
[suite options]` on a machine with an NVIDIA GPU and the `cuda` extra;
each backend writes `benchmark_output/gpu-<backend>.json` and prints its
tables, and the last lines say which backends finished. Options after the
budget go to every run (e.g. `--gpu-lengths 2048 8192 --repeats 3`). On
JAX the fused kernels are opt-in (`fused=True`): its rows time the
`keras.ops` path and say why the fused one is left out.
"""

import argparse
import os
import subprocess
import sys
import time

BACKENDS = ("torch", "jax", "tensorflow")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--budget",
        type=float,
        default=450.0,
        help="seconds for all three backends (each run is stopped at what "
        "is left)",
    )
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    args, suite_args = parser.parse_known_args(argv)
    deadline = time.monotonic() + args.budget
    finished = {}
    for backend in args.backends:
        left = deadline - time.monotonic()
        if left <= 10:
            finished[backend] = "not started: the budget is spent"
            continue
        out = os.path.join("benchmark_output", f"gpu-{backend}.json")
        command = [
            sys.executable,
            "-m",
            "keras_mlstm.benchmark",
            "--suite",
            "gpu",
            "--out",
            out,
            *suite_args,
        ]
        print(f"=== {backend}: {' '.join(command)}", flush=True)
        start = time.monotonic()
        try:
            code = subprocess.call(
                command,
                env=dict(os.environ, KERAS_BACKEND=backend),
                timeout=left,
            )
            finished[backend] = f"exit {code}"
        except subprocess.TimeoutExpired:
            finished[backend] = "stopped at the budget"
        print(f"=== {backend}: {time.monotonic() - start:.0f} s", flush=True)
    for backend, outcome in finished.items():
        print(f"{backend}: {outcome}")
    return 0 if all(v == "exit 0" for v in finished.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
