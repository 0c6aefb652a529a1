"""The README's main job (`examples/demo.py`) runs end to end in its
`--smoke` mode on every backend."""

import importlib.util
import math
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example(name):
    path = os.path.join(ROOT, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_smoke_trains_saves_reloads_and_samples(tmp_path, capsys):
    demo = load_example("demo")
    out = demo.main(["--smoke", "--output-dir", str(tmp_path)])
    for result in out["results"].values():
        assert result["steps"] == 2
        assert math.isfinite(result["bits"])
        assert len(result["curve"]) == 2  # one validation point per step
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


def test_text_classification_smoke_padding_changes_no_prediction():
    example = load_example("text_classification")
    out = example.main(["--smoke"])
    # float32: one sequence alone and in a padded batch go through products
    # of different shapes (summation order); measured ~1e-8.
    assert out["padding_change"] < 1e-5
    assert 0.0 <= out["accuracy"] <= 1.0


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


def test_seq2seq_smoke_runs():
    out = load_example("seq2seq").main(["--smoke"])
    assert 0.0 <= out["accuracy"] <= 1.0
