"""The command line, `python -m keras_mlstm.benchmark`: the general
options (each suite's own are in its module), the `SUITES` registry and
`main`, which runs the chosen suites through it, prints a line per
measured row and the Markdown tables, and writes the JSON report.

A suite module provides `HELP` (its suite names, one help line each),
`add_arguments(parser)`, `run(args)` (yields one row, a dict with a
`"suite"` key and the shapes it measured, per measurement), and
`title(row)` and `COLUMNS` for the report (`report.py`).
"""

import argparse
import json
import os
import platform
import sys
import textwrap

import keras

from keras_mlstm.benchmark import compile_time
from keras_mlstm.benchmark import decode
from keras_mlstm.benchmark import everyday
from keras_mlstm.benchmark import flops
from keras_mlstm.benchmark import generate
from keras_mlstm.benchmark import gpu
from keras_mlstm.benchmark import layer
from keras_mlstm.benchmark import lm
from keras_mlstm.benchmark import memory
from keras_mlstm.benchmark import official
from keras_mlstm.benchmark import ops
from keras_mlstm.benchmark import report
from keras_mlstm.benchmark import step
from keras_mlstm.benchmark.options import add_int
from keras_mlstm.benchmark.timing import BACKEND

# The order suites run in; `ops` serves two suites (`ops`, `peer`).
MODULES = (
    ops,
    layer,
    decode,
    flops,
    step,
    memory,
    everyday,
    lm,
    compile_time,
    official,
    generate,
    gpu,
)
SUITES = {name: module for module in MODULES for name in module.HELP}
# Suites that need an optional package: why it cannot be imported, or None.
REQUIRES = {
    "peer": ops.kernels_unavailable,
    "official": official.xlstm_unavailable,
    "lm": generate.hub_unavailable,
    "generate": generate.hub_unavailable,
}
# What runs without `--suite`: those of them whose package is missing are
# left out with a message; named in `--suite`, they stop the command.
DEFAULT_SUITES = ("ops", "peer", "layer")
# Run output stays out of the repository (`.gitignore`).
DEFAULT_OUT = os.path.join("benchmark_output", "benchmark-{backend}.json")


class _HelpFormatter(
    argparse.ArgumentDefaultsHelpFormatter,
    argparse.RawDescriptionHelpFormatter,
):
    """Defaults after each help text; the suite list kept as laid out."""


def build_parser():
    indent = 2 + max(map(len, SUITES)) + 2
    suites = "\n".join(
        textwrap.fill(
            module.HELP[name],
            width=79,
            initial_indent=f"  {name:{indent - 2}s}",
            subsequent_indent=" " * indent,
        )
        for name, module in SUITES.items()
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
        choices=list(SUITES),
        metavar="SUITE",
        help="suites to run, from the list above (default: "
        f"{' '.join(DEFAULT_SUITES)}, those whose optional package is "
        "installed)",
    )
    add_int(
        parser,
        "--repeats",
        5,
        "ops/peer/layer/flops/everyday/lm/official: timed calls per"
        " contestant (median)",
        metavar="N",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="JSON",
        help="where to write the JSON report ({backend}: the Keras backend)",
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
    for module in MODULES:
        names = "/".join(module.HELP)
        module.add_arguments(parser.add_argument_group(f"{names} options"))
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_reports and not args.plot:
        parser.error("--from-reports needs --plot PNG")
    if args.memory_probe is not None or args.from_reports:
        return args
    if args.suite is None:
        args.suite = []
        for name in DEFAULT_SUITES:
            missing = REQUIRES[name]() if name in REQUIRES else None
            if missing is None:
                args.suite.append(name)
            else:
                print(f"suite {name} left out: {missing}", file=sys.stderr)
    for name in args.suite:
        missing = REQUIRES[name]() if name in REQUIRES else None
        if missing is not None:
            parser.error(f"--suite {name}: {missing}; or leave {name} out")
    args.out = args.out.format(backend=BACKEND)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe is not None:
        row = memory.measure_step_memory(args, args.memory_probe)
        print(json.dumps(row))
        return None
    if args.from_reports:
        reports = []
        for name in args.from_reports:
            with open(name) as f:
                reports.append(json.load(f))
        print(f"wrote {report.plot(reports, args.plot)}")
        return None
    print(
        f"keras_mlstm benchmark: backend {BACKEND}, keras {keras.__version__},"
        f" {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    rows, title = [], None
    chosen = [SUITES[name] for name in SUITES if name in args.suite]
    for module in dict.fromkeys(chosen):
        for row in module.run(args):
            if module.title(row) != title:
                title = module.title(row)
                print(title)
            print(report.describe(row, module), flush=True)
            rows.append(row)
    result = {"backend": BACKEND, "keras": keras.__version__}
    result.update(machine=platform.machine(), cpus=os.cpu_count())
    result.update(args=vars(args), rows=rows)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(report.markdown(result, SUITES))
    print(f"wrote {args.out}")
    if args.plot:
        print(f"wrote {report.plot([result], args.plot)}")
    return result
