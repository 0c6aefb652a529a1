"""The examples (`examples/`) run end to end in their `--smoke` mode on
every backend, with checks of what each one shows (the distributed one,
which starts its own JAX and TensorFlow processes, once).

On JAX, where each smoke run is mostly compilation (8 to 29 s each), the
default run keeps the main job (`demo.py`) and the JAX-specific custom
training loop; the other smoke runs are `slow_on("jax")`, in JAX's slow
tier (TensorFlow and PyTorch run them by default)."""

import importlib.util
import math
import os

import keras
import numpy as np
import pytest
from utils import import_keras_hub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example(name):
    path = os.path.join(ROOT, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_smoke_trains_saves_reloads_and_samples(
    tmp_path, capsys, restored_config
):
    demo = load_example("demo")
    cache = tmp_path / "xla"
    out = demo.main(
        ["--smoke", "--output-dir", str(tmp_path)]
        + ["--compilation-cache", str(cache)]
    )
    for result in out["results"].values():
        assert result["steps"] == 2
        assert math.isfinite(result["bits"])
        assert result["compile_seconds"] > 0 and result["tokens_per_second"] > 0
        assert [steps for _, steps, _ in result["curve"]] == [1, 2]
    steps, equal = out["at_equal_steps"]
    assert steps == 2
    assert equal == {name: r["bits"] for name, r in out["results"].items()}
    # The reloaded model is the saved one: the same validation loss.
    np.testing.assert_allclose(
        out["reloaded_bits"], out["results"]["xLSTM"]["bits"], rtol=1e-6
    )
    assert out["sample"].startswith("def ")
    with open(out["curves"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(out["model"]) > 0
    printed = capsys.readouterr().out
    assert "validation bits per byte" in printed
    assert "sample from the reloaded model" in printed
    # On JAX the compiled steps go to the cache named (a JAX-only cache).
    if keras.backend.backend() == "jax":
        assert out["compilation_cache"] == str(cache) and cache.is_dir()
        assert f"compilation cache: {cache}" in printed
    else:
        assert out["compilation_cache"] is None and not cache.exists()
        assert "compilation cache" not in printed


def test_demo_smoke_leaves_the_compilation_cache_alone_unless_named():
    demo = load_example("demo")
    assert demo.parse_args(["--smoke"]).compilation_cache is None
    args = demo.parse_args(["--no-compilation-cache"])
    assert args.no_compilation_cache and not args.smoke


def test_demo_compares_at_the_last_step_count_both_models_validated():
    """A time budget stops each model at its own step count; the
    load-independent comparison takes the last validation point the two
    share (every `--eval-every` steps), not each model's final one."""
    demo = load_example("demo")
    results = {
        "xLSTM": {"curve": [(9, 25, 4.0), (18, 50, 3.0), (22, 61, 2.9)]},
        "LSTM": {"curve": [(5, 25, 4.5), (10, 50, 3.9), (15, 75, 3.6)]},
    }
    assert demo.at_equal_steps(results) == (50, {"xLSTM": 3.0, "LSTM": 3.9})


def test_demo_holds_out_whole_modules():
    demo = load_example("demo")
    assert not set(demo.TRAIN_MODULES) & set(demo.VALIDATION_MODULES)
    train = demo.read_modules(demo.TRAIN_MODULES)
    val = demo.read_modules(demo.VALIDATION_MODULES)
    assert train.dtype == val.dtype == np.int32
    assert len(train) > 1_000_000 and len(val) > 40_000


def test_demo_unigram_baseline_is_the_cross_entropy_in_bits():
    demo = load_example("demo")
    train = np.array([0, 0, 1], "int32")
    val = np.array([0, 1], "int32")
    # Add-one counts over 256 bytes: p(0) = 3/259, p(1) = 2/259.
    expected = -(math.log2(3 / 259) + math.log2(2 / 259)) / 2
    assert math.isclose(demo.unigram_bits(train, val), expected)


def test_demo_lstm_parameter_count_matches_the_built_model():
    demo = load_example("demo")
    model = demo.lstm_model(24, 16)
    assert model.count_params() == demo.lstm_parameters(24, 16)


@pytest.mark.slow_on("jax")
def test_text_classification_smoke_padding_changes_no_prediction():
    example = load_example("text_classification")
    out = example.main(["--smoke"])
    # float32: one sequence alone and in a padded batch go through products
    # of different shapes (summation order); measured ~1e-8.
    assert out["padding_change"] < 1e-5
    assert 0.0 <= out["accuracy"] <= 1.0


@pytest.mark.slow_on("jax")
def test_stateful_streaming_smoke_equals_one_pass():
    example = load_example("stateful_streaming")
    out = example.main(["--smoke"])
    assert np.isfinite(out["loss"])
    # float32: the pieces move the chunk boundaries, so the same terms are
    # summed in another order; measured ~4e-6 on outputs of order 1.
    assert out["difference"] < 2e-5


def test_seq2seq_step_decoder_matches_teacher_forcing():
    """The one-step decoder, fed the encoder's state and the same previous
    tokens, gives the training model's logits at every position."""
    example = load_example("seq2seq")
    model, encoder, layers = example.build(8, 0)
    step = example.step_model(encoder, layers)
    source, previous, _ = example.make_data(4, np.random.default_rng(1))
    full = model.predict_on_batch([source, previous])
    state = encoder.predict_on_batch(source)
    for position in range(previous.shape[1]):
        logits, *state = step.predict_on_batch(
            [previous[:, position : position + 1], *state]
        )
        np.testing.assert_allclose(
            logits[:, 0], full[:, position], atol=1e-5, rtol=1e-5
        )


@pytest.mark.slow_on("jax")
def test_seq2seq_smoke_runs():
    out = load_example("seq2seq").main(["--smoke"])
    assert 0.0 <= out["accuracy"] <= 1.0


def test_custom_training_loop_smoke_matches_train_on_batch():
    out = load_example("custom_training_loop").main(["--smoke"])
    # One SGD step by hand and by `train_on_batch` from the same weights:
    # the same operations (float32, measured bitwise equal on every
    # backend); the bound leaves room for a reordered sum.
    assert out["change"] > 1e-4  # the step did move the weights
    assert out["difference"] <= 1e-6 * max(1.0, out["change"])
    assert all(np.isfinite(out["losses"]))


@pytest.mark.slow_on("jax")
def test_time_series_forecasting_smoke_writes_the_plot(tmp_path):
    example = load_example("time_series_forecasting")
    out = example.main(["--smoke", "--output-dir", str(tmp_path)])
    assert set(out["errors"]) == {"MLSTM", "LSTM"}
    assert all(np.isfinite(list(out["errors"].values())))
    with open(out["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_mackey_glass_follows_its_equation():
    """The generated series satisfies the delay equation it integrates:
    one Euler step of dx/dt = 0.2 x(t-17) / (1 + x(t-17)^10) - 0.1 x(t),
    recomputed here from the fine grid."""
    example = load_example("time_series_forecasting")
    fine = example.mackey_glass(400, sample_every=1, warmup=0)
    lagged, x = fine[:-171], fine[170:-1]
    step = x + 0.1 * (0.2 * lagged / (1 + lagged**10) - 0.1 * x)
    np.testing.assert_allclose(fine[171:], step, rtol=1e-12)


def test_associative_recall_data_asks_for_the_paired_values():
    example = load_example("associative_recall")
    tokens, targets, weights = example.make_data(
        20, 8, np.random.default_rng(0)
    )
    for row in range(20):
        pairs = dict(zip(tokens[row, 0:16:2], tokens[row, 1:16:2], strict=True))
        assert len(pairs) == 8  # distinct keys
        queries = tokens[row, 16:]
        assert sorted(queries) == sorted(pairs)  # each key asked once
        assert [pairs[q] for q in queries] == list(targets[row, 16:])
    assert weights[:, :16].sum() == 0 and weights[:, 16:].min() == 1


@pytest.mark.slow_on("jax")
def test_associative_recall_smoke_runs_every_model(tmp_path):
    example = load_example("associative_recall")
    out = example.main(["--smoke", "--output-dir", str(tmp_path)])
    assert set(out["accuracy"]) == set(example.MODELS)
    for values in out["accuracy"].values():
        assert len(values) == 1 and all(0.0 <= a <= 1.0 for a in values)
    with open(out["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow_on("jax")
def test_fine_tune_xlstm_smoke_converts_and_trains_only_adapters():
    import_keras_hub()
    pytest.importorskip("torch")
    pytest.importorskip("xlstm")
    out = load_example("fine_tune_xlstm").main(["--smoke"])
    # float32 conversion of the official model: 1e-4 of the largest logit,
    # as tests/test_hub_xlstm.py.
    assert out["logit_error"] < 1e-4
    assert out["frozen_change"] == 0.0  # LoRA froze every other weight
    assert all(np.isfinite(out["losses"]))
    assert out["sample"].startswith("def ")


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="starts its own JAX and TensorFlow processes whatever the backend "
    "of the test run: run once, in the PyTorch run (the shortest)",
)
def test_distributed_training_smoke_matches_one_device():
    out = load_example("distributed_training").main(["--smoke"])
    # float32: sharded programs sum gradients in another order; over four
    # epochs of Adam the losses drift by at most ~4e-7 relative (measured),
    # bounded by 1e-4 as tests/test_distribution.py.
    for run, difference in out["differences"].items():
        assert difference < 1e-4, run
    assert len(out["losses"]["processes"]) == 4
    # XLSTMBackbone.get_layout_map split the projections and the tables.
    expected = {
        f"mlstm_stack/block_{block}/{name}/kernel"
        for block in (0, 1)
        for name in ("up", "down")
    }
    expected |= {
        "token_embedding/embeddings",
        "token_embedding/reverse_embeddings",
    }
    assert set(out["split"]) == expected
