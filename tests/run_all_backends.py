"""Lint, run the test suite once per Keras backend, then again under the
lowest Keras versions the package allows.

Keras fixes its backend at import, so each backend gets its own pytest
process. Two floor runs follow, on PyTorch (the backend that runs them
fastest), each with that Keras installed without its dependencies into
`.keras-floor/<version>/`, which leads `PYTHONPATH`:

- the core's floor (`keras>=X` in `pyproject.toml`): the suite but
  `FLOOR_IGNORED`;
- the `hub` extra's floor (the `keras>=Y` that the installed `keras-hub`
  requires, as pip would pair them): `HUB_FLOOR_TESTS`, the KerasHub
  models' quickstart, quantization and LoRA; skipped if that is the Keras
  the three backend runs used.

Exits non-zero if ruff or any run fails, or if a run ran no test. The
last line sums the runs.

Usage: python tests/run_all_backends.py [extra pytest arguments]
(extra arguments go to the three backend runs, not the floor runs).
"""

import importlib.metadata
import os
import re
import subprocess
import sys
import time
import tomllib

BACKENDS = ("tensorflow", "jax", "torch")
WORKERS = os.environ.get("KERAS_MLSTM_TEST_WORKERS", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?)")
# The core's floor run leaves out what needs KerasHub (`keras-hub` itself
# requires a newer Keras, so pip never pairs it with the core's floor; its
# page of doc blocks is skipped there and run by the hub floor run), the
# examples (they end in KerasHub, or start their own processes), and the
# benchmark and long-sequence op tests (timing and arithmetic, no Keras
# API beyond `keras.ops`; 20 s of the run).
FLOOR_IGNORED = (
    "tests/test_hub.py",
    "tests/test_hub_transformers.py",
    "tests/test_hub_xlstm.py",
    "tests/test_examples.py",
    "tests/test_benchmark.py",
    "tests/test_ops_robustness.py",
)

# The `hub` floor run: the tests of the KerasHub models (the quickstart of
# docs/hub.md among the doc blocks).
HUB_FLOOR_TESTS = (
    "tests/test_hub.py",
    "tests/test_docs.py::test_python_blocks_print_what_the_docs_show"
    "[docs/hub.md]",
)


def lowest_version(requirement):
    """`"keras>=3.10"` -> "3.10.0"; None for any other requirement."""
    match = re.fullmatch(r"keras>=([\d.]+)", requirement.replace(" ", ""))
    if match is None:
        return None
    parts = match.group(1).split(".")
    return ".".join((parts + ["0", "0"])[:3])


def keras_floor():
    """The lowest Keras version the package allows, from `pyproject.toml`
    (`keras>=3.10` -> "3.10.0")."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    for requirement in dependencies:
        version = lowest_version(requirement)
        if version:
            return version
    raise SystemExit(f"no keras>=X requirement in {dependencies}")


def hub_keras_floor():
    """The lowest Keras the installed `keras-hub` allows ("3.15.0" for
    keras-hub 0.32), read from its metadata."""
    for requirement in importlib.metadata.requires("keras-hub") or ():
        version = lowest_version(requirement.split(";")[0])
        if version:
            return version
    raise SystemExit("the installed keras-hub names no keras>=X requirement")


def install_keras(version):
    """Keras `version` alone (its dependencies are the newest Keras's,
    already installed) in a folder of its own; returns the folder."""
    target = os.path.join(ROOT, ".keras-floor", version)
    if not os.path.isdir(os.path.join(target, "keras")):
        subprocess.check_call(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                target,
                f"keras=={version}",
            ]
        )
    return target


def check_keras_version(path, version, backend):
    """Fails unless Python, with `path` leading its path, imports Keras
    `version` (under `backend`)."""
    found = subprocess.check_output(
        [sys.executable, "-c", "import keras; print(keras.__version__)"],
        env=dict(os.environ, PYTHONPATH=path, KERAS_BACKEND=backend),
        text=True,
    ).strip()
    if found != version:
        raise SystemExit(f"{path} gives keras {found}, not {version}")


def run_pytest(backend, extra, pythonpath=None, label=None):
    env = dict(os.environ, KERAS_BACKEND=backend)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
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
        *extra,
    ]
    label = label or backend
    where = f"PYTHONPATH={pythonpath} " if pythonpath else ""
    print(
        f"\n=== {label}: {where}KERAS_BACKEND={backend} {' '.join(command)}",
        flush=True,
    )
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
    print(f"=== {label}: exit {process.returncode}, {seconds:.0f}s")
    return process.returncode, counts


def main():
    lint = subprocess.call([sys.executable, "-m", "ruff", "check", ROOT])
    fmt = subprocess.call(
        [sys.executable, "-m", "ruff", "format", "--check", ROOT]
    )
    runs = [
        (backend, backend, ["tests", *sys.argv[1:]], None)
        for backend in BACKENDS
    ]
    floor = keras_floor()
    floor_arguments = ["tests", *(f"--ignore={p}" for p in FLOOR_IGNORED)]
    runs.append((f"keras {floor}", "torch", floor_arguments, floor))
    hub_floor = hub_keras_floor()
    if hub_floor == importlib.metadata.version("keras"):
        print(f"the hub floor, keras {hub_floor}, is the Keras tested above")
    else:
        label = f"keras {hub_floor} (hub)"
        runs.append((label, "torch", list(HUB_FLOOR_TESTS), hub_floor))
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failed_runs = []
    for label, backend, arguments, keras_version in runs:
        path = None
        if keras_version is not None:
            path = install_keras(keras_version)
            check_keras_version(path, keras_version, backend)
        code, counts = run_pytest(backend, arguments, path, label)
        for kind, number in counts.items():
            totals[kind] += number
        if code != 0 or counts["passed"] == 0:
            failed_runs.append(label)
    if lint or fmt:
        print("ruff found problems (see above)")
    if failed_runs:
        print(f"failing runs: {', '.join(failed_runs)}")
    failed = totals["failed"] + totals["errors"]
    print(
        f"total: {totals['passed']} passed, {failed} failed, "
        f"{totals['skipped']} skipped"
    )
    return 1 if (lint or fmt or failed_runs) else 0


if __name__ == "__main__":
    sys.exit(main())
