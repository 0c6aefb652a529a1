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
    layer = [row for row in saved["rows"] if row["suite"] == "layer"][0]
    for kind in ("MLSTM", "LSTM", "MultiHeadAttention"):
        assert layer[kind]["tokens_per_s"] > 0
