"""Console lines, Markdown tables and the plot, all read from the measured
rows.

Each suite module declares `title(row)`, the settings its rows share
(rows of one module with one title make one table), and `COLUMNS`: per
column a header, where the value lies in the row (a dotted key path, or a
function of the row) and how to print it (a key of `FORMATS`; a missing
value prints as `-`). Nothing here repeats a shape: titles and axes come
from the rows.
"""

import statistics

from keras_mlstm.benchmark import memory
from keras_mlstm.benchmark import ops

# How each suite compiles is in its docstring, and in an "XLA" column where
# it follows Keras's own choice; the backend's name says nothing of it.
BACKEND_NAMES = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}

FORMATS = {
    "text": str,
    "count": "{:,}".format,
    "rate": "{:,.0f}".format,
    "ratio": "{:.2f}".format,
    "times": "{:.1f}x".format,
    "s": "{:.2f}".format,
    "ms": lambda seconds: f"{1e3 * seconds:.1f}",
    "ms3": lambda seconds: f"{1e3 * seconds:.3f}",
    "us": lambda seconds: f"{1e6 * seconds:.1f}",
    "GFLOP/s": lambda rate: f"{rate / 1e9:.1f}",
    "percent": lambda fraction: f"{100 * fraction:.0f} %",
    "MiB": lambda size: f"{size / 2**20:.0f}",
    "KiB": lambda size: f"{size / 1024:.1f}",
    "error": "{:.1e}".format,
}


def cell(row, column):
    """One column of `row` as text."""
    _, where, style = column
    if callable(where):
        value = where(row)
    else:
        value = row
        for key in where.split("."):
            value = value.get(key) if isinstance(value, dict) else None
    return "-" if value is None else FORMATS[style](value)


def describe(row, module):
    """One line for the console, as the row is measured."""
    cells = ", ".join(
        f"{column[0]} {cell(row, column)}" for column in module.COLUMNS
    )
    return f"  {row['suite']}: {cells}"


def markdown(report, suites):
    """The rows of `report` as Markdown tables, one per suite module and
    title, each row led by the backend; `suites` maps a row's `suite`
    to its module."""
    backend = BACKEND_NAMES.get(report["backend"], report["backend"])
    tables = {}
    for row in report["rows"]:
        module = suites[row["suite"]]
        key = (module.__name__, module.title(row))
        tables.setdefault(key, (module, []))[1].append(row)
    lines = []
    for (_, title), (module, rows) in tables.items():
        headers = ["backend"] + [column[0] for column in module.COLUMNS]
        lines += [f"{title}:", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "---|" * len(headers))
        for row in rows:
            cells = [backend] + [cell(row, c) for c in module.COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _chunkwise_rows(report):
    rows = [
        row
        for row in report["rows"]
        if row["suite"] in ("ops", "peer") and row["form"] == "chunkwise"
    ]
    return sorted(rows, key=lambda row: row["length"])


def _memory_rows(report):
    rows = [row for row in report["rows"] if row["suite"] == "memory"]
    return sorted(rows, key=lambda row: row["length"])


def plot_titles(reports):
    """The titles of the plot's two panels, from the shapes the rows
    record (every distinct one, where reports differ)."""
    times = [
        f"chunkwise {ops.title(row)}"
        for report in reports
        for row in _chunkwise_rows(report)
    ]
    memories = [
        f"{memory.title(row)}, first step"
        for report in reports
        for row in _memory_rows(report)
    ]
    return tuple(
        "\n".join(dict.fromkeys(titles)) for titles in (times, memories)
    )


def plot(reports, path):
    """Draw chunkwise forward+backward time and training-step peak memory
    against T from benchmark reports (dicts as written to JSON) of any
    backends, and save the figure to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (time_axes, memory_axes) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    official = {}
    for report in reports:
        name = BACKEND_NAMES.get(report["backend"], report["backend"])
        rows = _chunkwise_rows(report)
        if rows:
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
        rows = _memory_rows(report)
        if rows:
            # The first step's peak: later steps reuse memory the
            # allocators kept, so theirs is only a lower bound (see JSON).
            memory_axes.plot(
                [r["length"] for r in rows],
                [memory.peak_bytes(r["first_step"]) / 2**20 for r in rows],
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
    panels = zip(
        (time_axes, memory_axes),
        ("forward+backward (ms)", "peak memory increase (MiB)"),
        plot_titles(reports),
        strict=True,
    )
    for axes, ylabel, title in panels:
        axes.set(xscale="log", yscale="log", xlabel="sequence length T")
        axes.set(ylabel=ylabel, title=title)
        axes.title.set_fontsize(9)
        axes.grid(True, which="both", alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path
