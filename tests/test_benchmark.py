"""The shipped benchmark runs end to end on tiny shapes, so it never rots.
No timing is asserted: timings are measured as ratios in the benchmark."""

import json

from keras_mlstm import benchmark


def test_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    report = benchmark.main(
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
    assert saved["backend"] == report["backend"]
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
    # By hand from the documented count: D = U = 16, NH = 2, DH = 8, L = 64:
    # 2*16*(64 + 4) + 2*(4*64*8 + 4*8*8) + 2*16*16 = 7296 per token, times
    # 3 (forward + backward) * B 2 * T 24.
    assert flops["step_flops"] == 3 * 2 * 24 * 7296
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
