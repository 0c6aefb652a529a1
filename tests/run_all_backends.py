"""Lint, then run the test suite once per Keras backend.

Keras fixes its backend at import, so each backend gets its own pytest
process. Exits non-zero if ruff or any backend fails, or if a backend ran no
test. The last line sums the three runs.

Usage: python tests/run_all_backends.py [extra pytest arguments]
"""

import os
import re
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
WORKERS = os.environ.get("KERAS_MLSTM_TEST_WORKERS", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?)")


def run_pytest(backend, extra):
    env = dict(os.environ, KERAS_BACKEND=backend)
    # Two workers: JAX's eager mode spends most of its time compiling small
    # programs, which a second process overlaps. Whole files per worker
    # (`loadfile`): the tests of a file share shapes, so each program is
    # compiled by one worker, not both (measured on 2 cores: 24 % less
    # JAX CPU time than spreading single tests).
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-n",
        WORKERS,
        "--dist",
        "loadfile",
        "tests",
        *extra,
    ]
    print(f"\n=== KERAS_BACKEND={backend}: {' '.join(command)}", flush=True)
    start = time.time()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = ""
    for line in process.stdout:
        sys.stdout.write(line)
        if COUNT.search(line):
            last = line
    process.wait()
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, kind in COUNT.findall(last):
        counts["errors" if kind.startswith("error") else kind] += int(number)
    seconds = time.time() - start
    print(f"=== {backend}: exit {process.returncode}, {seconds:.0f}s")
    return process.returncode, counts


def main():
    lint = subprocess.call([sys.executable, "-m", "ruff", "check", ROOT])
    fmt = subprocess.call(
        [sys.executable, "-m", "ruff", "format", "--check", ROOT]
    )
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failed_backends = []
    for backend in BACKENDS:
        code, counts = run_pytest(backend, sys.argv[1:])
        for kind, number in counts.items():
            totals[kind] += number
        if code != 0 or counts["passed"] == 0:
            failed_backends.append(backend)
    if lint or fmt:
        print("ruff found problems (see above)")
    if failed_backends:
        print(f"failing backends: {', '.join(failed_backends)}")
    failed = totals["failed"] + totals["errors"]
    print(
        f"total: {totals['passed']} passed, {failed} failed, "
        f"{totals['skipped']} skipped"
    )
    return 1 if (lint or fmt or failed_backends) else 0


if __name__ == "__main__":
    sys.exit(main())
