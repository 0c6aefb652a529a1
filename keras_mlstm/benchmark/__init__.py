"""Benchmarks of keras_mlstm on the current Keras backend, CPU or GPU.

Run `python -m keras_mlstm.benchmark --help`; method, shapes and results
are in `docs/benchmarks.md`. The package follows the layout of Keras's
own `benchmarks/` folder:

- `timing.py`: the shared timing core (compiled gradients, interleaved
  medians with the first call apart, Keras training steps, random inputs);
- one module per family of measurements, each a suite (or two) of the
  command line: `ops.py` (`ops`, `peer`), `layer.py`,
  `everyday.py`, `lm.py`, `official.py`, `decode.py`,
  `flops.py`, `step.py`, `memory.py`, `generate.py` (the KerasHub models;
  `lm` and `generate` need the `hub` extra);
- `report.py`: console lines, Markdown tables and the plot, read from
  the rows the suites measured;
- `cli.py`: the options, the `SUITES` registry and `main`.
"""

from keras_mlstm.benchmark.cli import SUITES
from keras_mlstm.benchmark.cli import build_parser
from keras_mlstm.benchmark.cli import main
from keras_mlstm.benchmark.cli import parse_args
from keras_mlstm.benchmark.flops import training_step_flops
from keras_mlstm.benchmark.ops import OFFICIAL_PACKAGE
from keras_mlstm.benchmark.timing import compile_gradient
from keras_mlstm.benchmark.timing import time_interleaved

__all__ = [
    "OFFICIAL_PACKAGE",
    "SUITES",
    "build_parser",
    "compile_gradient",
    "main",
    "parse_args",
    "time_interleaved",
    "training_step_flops",
]
