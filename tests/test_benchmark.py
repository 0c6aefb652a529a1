"""The shipped benchmark runs end to end on tiny shapes, so it never rots.
No timing is asserted: timings are measured as ratios in the benchmark."""

import argparse
import json
import pathlib
import re
import sys

import keras
import numpy as np
import pytest
from utils import import_keras_hub

from keras_mlstm import benchmark
from keras_mlstm import resolve_chunk_size
from keras_mlstm.benchmark import compile_time
from keras_mlstm.benchmark import generate
from keras_mlstm.benchmark import official
from keras_mlstm.benchmark import report
from keras_mlstm.layers import MLSTMBlock
from keras_mlstm.layers import MLSTMLargeBlock

pytestmark = pytest.mark.slow_on("jax")


# Every suite through the command line, compiled per shape: 52 s on
# TensorFlow, 13 s on PyTorch; the suites' own tests below run on both.
@pytest.mark.slow_on("tensorflow")
def test_benchmark_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = benchmark.main(
        [
            "--lengths",
            "40",
            "48",
            "--batch",
            "2",
            "--heads",
            "2",
            "--dim",
            "8",
            "--chunk-size",
            "16",
            "--units",
            "16",
            "--layer-length",
            "12",
            "--layer-batch",
            "2",
            "--repeats",
            "1",
            "--suite",
            "ops",
            "peer",
            "layer",
            "decode",
            "flops",
            "step",
            "memory",
            "--memory-lengths",
            "8",
            "32",
            "--step-repeats",
            "2",
            "--step-tokens",
            "3",
            "--plot",
            str(tmp_path / "bench.png"),
            "--flops-units",
            "16",
            "--flops-length",
            "24",
            "--matmul-size",
            "32",
            "--contexts",
            "4",
            "9",
            "--decode-units",
            "16",
            "--decode-steps",
            "2",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["backend"] == result["backend"]
    # The tables' and the plot's titles name this run's shapes, read from
    # the rows (none of them the defaults).
    printed = capsys.readouterr().out
    ops_shapes = "B=2, NH=2, DK=DV=8, chunk 16"
    memory_shapes = "MLSTM(16) training step, B=2"
    for shapes in (ops_shapes, memory_shapes, "MLSTM(16), LSTM(16)"):
        assert shapes in printed
    assert "2 stacked MLSTM(16)" in printed
    time_title, memory_title = report.plot_titles([saved])
    assert ops_shapes in time_title and memory_shapes in memory_title
    forms = {row["form"] for row in saved["rows"] if "form" in row}
    assert forms == {"chunkwise", "parallel", "recurrent"}
    for row in saved["rows"]:
        if "form" in row:
            assert row["ours_fw"]["median_s"] > 0
            assert row["ours_fwbw"]["median_s"] > 0
            if row["suite"] == "peer":
                assert row["ratio_fwbw"] > 0
    decode = [row for row in saved["rows"] if row["suite"] == "decode"]
    assert [row["context"] for row in decode] == [4, 9]
    assert all(row["per_token_s"] > 0 for row in decode)
    flops = [row for row in saved["rows"] if row["suite"] == "flops"][0]
    # By hand from the documented count: D = U = 16, NH = 2, DH = 8, L the
    # chunk size "auto" resolves to (16 on JAX and TensorFlow, 32 on
    # PyTorch): 2*16*(64 + 4) + 2*(4*L*8 + 4*8*8) + 2*16*16 per token,
    # times 3 (forward + backward) * B 2 * T 24.
    chunk = flops["chunk_size"]
    assert chunk == resolve_chunk_size("auto", head_size=8)
    per_token = 2 * 16 * (64 + 4) + 2 * (4 * chunk * 8 + 4 * 8 * 8)
    per_token += 2 * 16 * 16
    assert flops["step_flops"] == 3 * 2 * 24 * per_token
    assert 0 < flops["fraction_of_matmul"]
    layer = [row for row in saved["rows"] if row["suite"] == "layer"][0]
    for kind in ("MLSTM", "LSTM", "MultiHeadAttention"):
        assert layer[kind]["tokens_per_s"] > 0
    step = [row for row in saved["rows"] if row["suite"] == "step"][0]
    # The official step kernels are installed with the test requirements.
    assert step["ratio_call"] > 0 and step["ratio_loop"] > 0
    memory = [row for row in saved["rows"] if row["suite"] == "memory"]
    assert [row["length"] for row in memory] == [8, 32]
    for row in memory:
        peak = row["first_step"]["peak_rss_increase_bytes"]
        assert peak is not None and peak > 0
    assert "bytes_per_extra_token" in memory[1]["first_step"]
    # The plot is a PNG, and it can be redrawn from the saved report.
    png = (tmp_path / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    again = tmp_path / "again.png"
    benchmark.main(["--plot", str(again), "--from-reports", str(out), str(out)])
    assert again.read_bytes().startswith(b"\x89PNG")


# The `gpu` suite at tiny shapes, one timed call.
TINY_GPU_SUITE = (
    ["--gpu-lengths", "32", "--gpu-heads", "1", "--gpu-qk", "16"]
    + ["--gpu-v", "16", "--gpu-dtype", "float32", "--gpu-lm-width", "16"]
    + ["--gpu-lm-layers", "1", "--gpu-lm-heads", "1", "--gpu-lm-vocab", "8"]
    + ["--gpu-lm-length", "8", "--gpu-lm-batch", "1", "--repeats", "1"]
)


def run_suites(tmp_path, argv):
    """Run ``argv`` (tiny shapes, one timed call); the rows written to
    JSON."""
    out = tmp_path / "bench.json"
    benchmark.main(argv + ["--repeats", "1", "--out", str(out)])
    return json.loads(out.read_text())["rows"]


def test_everyday_suite_times_every_contestant_against_lstm(tmp_path, capsys):
    rows = run_suites(
        tmp_path,
        ["--suite", "everyday", "--everyday-units", "12"]
        + ["--everyday-lengths", "8", "--everyday-batch", "2"],
    )
    contestants = ["MLSTM", "MLSTMBlock", "LSTM", "GRU", "MultiHeadAttention"]
    assert [row["contestant"] for row in rows] == contestants
    for row in rows:
        assert (row["units"], row["length"], row["batch"]) == (12, 8, 2)
        assert row["params"] > 0 and row["tokens_per_s"] > 0
        assert row["first_call_s"] > 0
    assert rows[2]["ratio_to_LSTM"] == 1.0
    printed = capsys.readouterr().out
    assert "| backend | contestant | D | T | B | params |" in printed
    assert "B=2, Adam, MSE" in printed


def test_lm_suite_matches_parameter_counts(tmp_path, capsys):
    import_keras_hub()
    rows = run_suites(
        tmp_path,
        ["--suite", "lm", "--lm-vocab", "16", "--lm-params", "20000"]
        + ["--lm-blocks", "1", "--lm-lengths", "8", "--lm-batch", "2"],
    )
    assert [row["model"] for row in rows] == ["mLSTM", "LSTM", "Transformer"]
    for row in rows:
        # Widths step by 4, so tiny models land within 15 % of the target.
        assert abs(row["params"] - 20000) < 3000, row
        assert row["first_call_s"] > 0 and row["tokens_per_s"] > 0
        assert (row["length"], row["batch"], row["vocab"]) == (8, 2, 16)
    assert rows[1]["ratio_to_LSTM"] == rows[1]["first_call_ratio_to_LSTM"] == 1
    assert "about 20,000 parameters, vocabulary 16, B=2" in (
        capsys.readouterr().out
    )


def test_official_suite_runs_the_same_block_on_both_sides(tmp_path):
    pytest.importorskip("xlstm")
    (row,) = run_suites(
        tmp_path,
        ["--suite", "official", "--official-dim", "16"]
        + ["--official-length", "16", "--official-batch", "2"],
    )
    shapes = [row[key] for key in ("dim", "length", "batch", "heads")]
    assert shapes == [16, 16, 2, 4]
    assert row["ours"]["median_s"] > 0 and row["official"]["median_s"] > 0
    assert row["ratio"] > 0
    # The same weights: the two blocks' outputs agree.
    assert row["output_difference"] < 1e-4


def _int_options():
    """Every option the parser reads as an int or a list of ints."""
    for action in benchmark.build_parser()._actions:
        default = action.default
        values = default if isinstance(default, list) else [default]
        if action.option_strings and all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            yield action.option_strings[0]


def test_every_size_and_count_option_is_found_for_the_checks_below():
    assert set(_int_options()) == {
        "--lengths",
        "--batch",
        "--heads",
        "--dim",
        "--chunk-size",
        "--parallel-max",
        "--recurrent-max",
        "--units",
        "--layer-length",
        "--layer-batch",
        "--contexts",
        "--decode-units",
        "--flops-units",
        "--flops-length",
        "--matmul-size",
        "--decode-layers",
        "--decode-steps",
        "--step-repeats",
        "--step-tokens",
        "--memory-lengths",
        "--repeats",
        "--everyday-units",
        "--everyday-lengths",
        "--everyday-batch",
        "--lm-vocab",
        "--lm-params",
        "--lm-blocks",
        "--lm-lengths",
        "--lm-batch",
        "--compile-depths",
        "--compile-width",
        "--compile-length",
        "--compile-batch",
        "--compile-vocab",
        "--generate-contexts",
        "--generate-width",
        "--generate-layers",
        "--generate-heads",
        "--generate-vocabulary",
        "--generate-batch",
        "--official-dim",
        "--official-length",
        "--official-batch",
        "--official-heads",
        "--gpu-lengths",
        "--gpu-batch",
        "--gpu-heads",
        "--gpu-qk",
        "--gpu-v",
        "--gpu-lm-width",
        "--gpu-lm-layers",
        "--gpu-lm-heads",
        "--gpu-lm-vocab",
        "--gpu-lm-length",
        "--gpu-lm-batch",
    }


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--repeats", "0"], "argument --repeats: expected an int >= 1"),
        (["--batch", "-1"], "argument --batch: expected an int >= 1"),
        (["--lengths", "256", "0"], "argument --lengths: expected an int >= 1"),
        (["--chunk-size", "0"], "argument --chunk-size: expected an int >= 1"),
        (["--contexts", "x"], "argument --contexts: expected an int >= 1"),
        (["--dim", "2.5"], "argument --dim: expected an int >= 1"),
        (["--memory-probe", "0"], "argument --memory-probe: expected an int"),
        # 0 skips the form; below that means nothing.
        (
            ["--parallel-max", "-1"],
            "argument --parallel-max: expected an int >= 0",
        ),
        (
            ["--recurrent-max", "-3"],
            "argument --recurrent-max: expected an int >= 0",
        ),
    ],
)
def test_cli_rejects_bad_sizes_naming_the_option(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv + ["--suite", "ops"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert expected in error
    assert repr(argv[-1]) in error


@pytest.mark.parametrize("option", sorted(_int_options()))
def test_cli_rejects_a_negative_value_of_every_int_option(option, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args([option, "-1", "--suite", "ops"])
    assert f"argument {option}: expected an int >=" in capsys.readouterr().err


def test_cli_accepts_zero_to_skip_a_form():
    args = benchmark.parse_args(
        ["--parallel-max", "0", "--recurrent-max", "0", "--suite", "ops"]
    )
    assert (args.parallel_max, args.recurrent_max) == (0, 0)
    assert benchmark.parse_args(["--suite", "ops"]).repeats == 5


def test_help_describes_every_option_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "docs/benchmarks.md" in text
    for suite in benchmark.SUITES:
        assert f"\n  {suite} " in text
    flat = " ".join(text.split())
    assert (
        "--repeats N ops/peer/layer/flops/everyday/lm/official: timed" in flat
    )
    assert "(default: 5)" in flat
    assert "(default: [256, 1024, 2048, 4096, 16384])" in flat
    for action in benchmark.build_parser()._actions:
        if action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        assert action.help and "\n" not in action.help, action.dest
        assert f"{action.help} (default: {action.default})" in flat


def hide_package(monkeypatch, package):
    """Make every import of ``package`` fail, as if not installed."""
    names = [n for n in sys.modules if n.split(".")[0] == package]
    for name in names + [package]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def without_official(monkeypatch):
    hide_package(monkeypatch, "mlstm_kernels")


@pytest.mark.parametrize(
    "suite, package", [("peer", "mlstm_kernels"), ("official", "xlstm")]
)
def test_suites_refuse_to_run_without_their_official_package(
    suite, package, monkeypatch, capsys
):
    hide_package(monkeypatch, package)
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--suite", "ops", suite, "--lengths", "16"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"--suite {suite}" in error
    assert f"the official {package} package cannot be imported" in error
    assert f"pip install {package}==" in error


def test_generate_suite_times_both_models_through_public_apis(tmp_path):
    """xLSTM's state does not grow with the context; GPT-2's cache does."""
    import_keras_hub()
    rows = run_suites(
        tmp_path,
        ["--suite", "generate", "--generate-contexts", "8", "32"]
        + ["--generate-width", "32", "--generate-layers", "1"]
        + ["--generate-heads", "2", "--generate-vocabulary", "20"],
    )
    by_model = {}
    for row in rows:
        assert row["step_s"] > 0 and row["tokens_per_s"] > 0
        by_model.setdefault(row["model"], []).append(row["cache_bytes"])
    assert by_model["xlstm"][0] == by_model["xlstm"][1]
    assert by_model["gpt2"][1] > 3 * by_model["gpt2"][0]


def test_default_suites_leave_out_what_needs_a_missing_package(
    without_official, capsys
):
    """Without `--suite`, the package's own dependencies suffice: `peer`
    is left out with a message, `ops` and `layer` run."""
    args = benchmark.parse_args([])
    assert args.suite == ["ops", "layer"]
    assert "suite peer left out" in capsys.readouterr().err


def test_default_report_goes_to_an_ignored_folder_per_backend():
    """Run output is never written over files of the repository."""
    out = benchmark.parse_args(["--suite", "ops"]).out
    backend = keras.backend.backend()
    assert out == f"benchmark_output/benchmark-{backend}.json"
    ignored = (pathlib.Path(__file__).parents[1] / ".gitignore").read_text()
    assert "benchmark_output/" in ignored.split()


@pytest.mark.parametrize("suite", ["lm", "generate"])
def test_suites_of_the_kerashub_models_refuse_to_run_without_it(
    suite, monkeypatch, capsys
):
    hide_package(monkeypatch, "keras_hub")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--suite", suite])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"--suite {suite}: KerasHub cannot be imported" in error
    assert 'pip install -e ".[hub]"' in error


def test_install_hints_name_the_versions_the_test_extra_pins():
    text = (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
    pins = re.findall(r'"((?:mlstm_kernels|xlstm)==[^"]+)"', text)
    assert sorted(pins) == sorted(
        [benchmark.OFFICIAL_PACKAGE, official.XLSTM_PACKAGE]
    )


def test_step_suite_times_ours_only_and_says_so(
    without_official, tmp_path, capsys
):
    out = tmp_path / "step.json"
    benchmark.main(
        ["--suite", "step", "--batch", "1", "--heads", "1", "--dim", "4"]
        + ["--step-repeats", "1", "--step-tokens", "2", "--out", str(out)]
    )
    assert "step suite: the official mlstm_kernels" in capsys.readouterr().err
    (row,) = json.loads(out.read_text())["rows"]
    assert "pip install mlstm_kernels==" in row["official_unavailable"]
    assert row["ours_call"]["per_token_s"] > 0
    assert "official_call" not in row and "ratio_call" not in row


def test_plotting_earlier_reports_needs_no_official_package(
    without_official, tmp_path
):
    # The default --suite names peer, but --from-reports runs no suite.
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"backend": "jax", "rows": []}))
    png = tmp_path / "plot.png"
    benchmark.main(["--plot", str(png), "--from-reports", str(report)])
    assert png.read_bytes().startswith(b"\x89PNG")


def test_from_reports_without_plot_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--from-reports", "report.json"])
    assert exit_info.value.code == 2
    assert "--from-reports needs --plot" in capsys.readouterr().err


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="the native kernels standing in for Triton's are PyTorch's",
)
def test_gpu_suite_runs_on_the_native_kernels(tmp_path):
    """The `gpu` suite's rows, on a CPU with the native kernels in the
    Triton kernels' place and tiny shapes (its figures are a GPU's)."""
    from keras_mlstm import config

    names = config.fused_kernel_names()
    try:
        rows = run_suites(
            tmp_path,
            ["--suite", "gpu", "--gpu-lengths", "40", "--gpu-heads", "2"]
            + ["--gpu-qk", "16", "--gpu-v", "32", "--gpu-dtype", "float32"]
            + ["--gpu-kernels", "chunkwise--native_custbw", "native"]
            + ["--gpu-lm-width", "32", "--gpu-lm-layers", "1"]
            + ["--gpu-lm-heads", "2", "--gpu-lm-vocab", "20"]
            + ["--gpu-lm-length", "16", "--gpu-lm-batch", "2"],
        )
    finally:
        config.enable_fused_kernels(*names)
    (accuracy,) = [row for row in rows if row["kind"] == "accuracy"]
    assert accuracy["output_error"] < 1e-4
    assert accuracy["exact_backward_q_error"] < 1e-4
    # The kernel's own backward leaves the denominator out (docs/gpu.md).
    assert accuracy["kernel_backward_q_error"] > 0.1
    speed = {row["contestant"]: row for row in rows if row["kind"] == "speed"}
    assert set(speed) == {
        "keras.ops",
        "fused",
        "fused, exact backward",
        "mlstm_kernels",
        "SDPA (v head = qk head)",
    }
    assert all(row["tokens_per_s"] > 0 for row in speed.values())
    assert speed["fused"]["over_mlstm_kernels"] > 0
    lm = [row for row in rows if row["kind"] == "lm"]
    assert [row["contestant"] for row in lm] == ["fused", "keras.ops"]


def test_gpu_suite_says_why_the_fused_kernel_cannot_run(tmp_path):
    """With the default (Triton) kernels and no GPU, the rows say why."""
    rows = run_suites(
        tmp_path,
        ["--suite", "gpu", *TINY_GPU_SUITE],
    )
    (accuracy,) = [row for row in rows if row["kind"] == "accuracy"]
    assert accuracy["unavailable"]
    speed = [row["contestant"] for row in rows if row["kind"] == "speed"]
    assert "fused" not in speed and "keras.ops" in speed


def run_gpu_check(tmp_path, arguments):
    """`python -m keras_mlstm.benchmark.gpu_check ...` from `tmp_path`."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "keras_mlstm.benchmark.gpu_check", *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


# It starts one process per backend itself: run from one backend's suite.
@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="starts its own processes"
)
def test_gpu_check_runs_the_gpu_suite_on_every_backend(tmp_path):
    """The prepared GPU check (docs/gpu.md), on this CPU: each backend
    writes its rows, and the fused rows say why they cannot run."""
    result = run_gpu_check(tmp_path, ["--budget", "500", *TINY_GPU_SUITE])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    for backend in ("torch", "jax", "tensorflow"):
        assert f"{backend}: exit 0" in result.stdout
        out = tmp_path / "benchmark_output" / f"gpu-{backend}.json"
        rows = [
            row
            for row in json.loads(out.read_text())["rows"]
            if row["suite"] == "gpu"
        ]
        (accuracy,) = [row for row in rows if row["kind"] == "accuracy"]
        assert accuracy["unavailable"]
        speed = {row["contestant"] for row in rows if row["kind"] == "speed"}
        assert "keras.ops" in speed and "fused" not in speed


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="starts its own processes"
)
def test_gpu_check_stops_at_its_budget(tmp_path):
    result = run_gpu_check(tmp_path, ["--budget", "5", *TINY_GPU_SUITE])
    assert result.returncode == 1
    for backend in ("torch", "jax", "tensorflow"):
        assert f"{backend}: not started: the budget is spent" in result.stdout
    assert not (tmp_path / "benchmark_output").exists()


def test_compile_suite_times_first_and_steady_steps_by_depth(tmp_path, capsys):
    hub = generate.hub_unavailable() is None
    backend = keras.backend.backend()
    rows = run_suites(
        tmp_path,
        ["--suite", "compile", "--compile-depths", "1", "2"]
        + ["--compile-width", "16", "--compile-length", "8"]
        + ["--compile-batch", "2", "--compile-vocab", "16"],
    )
    stacks = ["MLSTMStack", compile_time.STAND_IN]
    stacks += ["XLSTMBackbone"] if hub else []
    matched = stacks + ["LSTM", "GRU", "Transformer"]
    alone = ["MLSTM", "MLSTMBlock", "MLSTMLargeBlock"]
    assert [(row["body"], row["layers"]) for row in rows] == [
        (name, 1) for name in matched + alone
    ] + [(name, 2) for name in matched]
    by_name = {(row["body"], row["layers"]): row for row in rows}
    for row in rows:
        assert row["first_call_s"] > row["median_s"] > 0, row
        assert (row["length"], row["batch"], row["vocab"]) == (8, 2, 16)
        assert row["first_call_ratio_to_LSTM"] == pytest.approx(
            row["first_call_s"] / by_name["LSTM", row["layers"]]["first_call_s"]
        )
        assert row["first_call_vs_1_layer"] == pytest.approx(
            row["first_call_s"] / by_name[row["body"], 1]["first_call_s"]
        )
        if backend == "jax":
            # JAX's own timers: the stages fit inside the first call.
            stages = row["trace_s"] + row["lower_s"] + row["xla_compile_s"]
            assert 0 < row["xla_compile_s"] and stages < row["first_call_s"]
        else:
            assert "xla_compile_s" not in row
    for depth in (1, 2):
        # Equal sizes: the others' widths match the stack's parameters.
        stack = by_name["MLSTMStack", depth]["params"]
        for name in ("LSTM", "GRU", "Transformer"):
            assert abs(by_name[name, depth]["params"] - stack) < 0.2 * stack
        assert by_name["MLSTMStack", depth]["width"] == 16
        stand_in = by_name[compile_time.STAND_IN, depth]
        assert (stand_in["width"], stand_in["params"]) == (16, stack)
    assert (
        by_name["MLSTMStack", 2]["params"] > by_name["MLSTMStack", 1]["params"]
    )
    printed = capsys.readouterr()
    assert "| backend | body | layers | width | params |" in printed.out
    assert ("XLSTMBackbone left out" in printed.err) is not hub


@pytest.mark.parametrize("block_class", [MLSTMBlock, MLSTMLargeBlock])
def test_op_stand_in_replaces_the_recurrence_inside_the_with_only(block_class):
    # The compile suite's floor: a block whose op is the pointwise stand-in
    # has no memory beyond its causal convolution (4 steps), so a change at
    # step 0 cannot reach step 11; through the real op it does, before and
    # after the `with`. Small inputs (the block's layer norm rescales them)
    # keep the residual from hiding the branch; step 0 is flipped and
    # shifted, as a flip alone leaves k v^T unchanged.
    block = block_class(num_heads=2)
    x = np.random.default_rng(0).normal(size=(2, 12, 8)).astype("float32")
    x *= 1e-3
    moved = x.copy()
    moved[:, 0] = 3e-3 - x[:, 0]

    def reach():
        return np.abs(
            keras.ops.convert_to_numpy(block(moved) - block(x))[:, -1]
        ).max()

    before = reach()
    with compile_time.op_stand_in():
        inside = reach()
    after = reach()
    assert before > 0.01 and after == before
    assert inside == 0.0
