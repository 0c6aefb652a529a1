"""The KerasHub classes: `XLSTMBackbone`, `XLSTMCausalLM` (generation with
the recurrent state as cache, every KerasHub sampler), the preprocessor
and byte tokenizer, presets, LoRA and int8 quantization.

Generation is checked against an independent greedy loop that reruns the
whole sequence through the model for every token (no cache): the tokens
must be equal. Padded and longer prompts in one batch included.
"""

import doctest

import numpy as np
import pytest
from utils import import_keras_hub
from utils import relative_error
from utils import to_numpy

keras_hub = import_keras_hub()
import keras  # noqa: E402

from keras_mlstm.models import xlstm  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMBackbone  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMByteTokenizer  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMCausalLM  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMCausalLMPreprocessor  # noqa: E402

VOCAB, LENGTH = 40, 10
VARIANTS = ["large", "mlstm"]
COMPILED = keras.backend.backend() in ("jax", "tensorflow")


def small_lm(variant="large", preprocessor=None, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = XLSTMBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        hidden_dim=32,
        num_heads=2,
        block_variant=variant,
        chunk_size=4,
    )
    return XLSTMCausalLM(backbone, preprocessor)


def prompts():
    """Two right-padded prompts of lengths 3 and 5."""
    token_ids = np.zeros((2, LENGTH), "int32")
    token_ids[0, :3] = [5, 6, 7]
    token_ids[1, :5] = [9, 8, 7, 6, 5]
    mask = (token_ids > 0).astype("int32")
    return {"token_ids": token_ids, "padding_mask": mask}


def greedy_without_cache(lm, inputs):
    """Greedy continuation that reruns the model on the whole prefix."""
    rows = []
    for ids, mask in zip(
        inputs["token_ids"], inputs["padding_mask"], strict=True
    ):
        sequence = list(ids[: mask.sum()])
        while len(sequence) < LENGTH:
            prefix = np.array([sequence], "int32")
            logits = lm.predict(
                {"token_ids": prefix, "padding_mask": np.ones_like(prefix)},
                verbose=0,
            )
            sequence.append(int(np.argmax(logits[0, -1])))
        rows.append(sequence)
    return np.array(rows)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.slow_on("jax")
def test_greedy_generation_equals_full_forward(variant):
    lm = small_lm(variant)
    lm.compile(sampler="greedy")
    out = lm.generate(prompts(), stop_token_ids=None)
    expected = greedy_without_cache(lm, prompts())
    np.testing.assert_array_equal(to_numpy(out["token_ids"]), expected)


@pytest.mark.parametrize(
    "sampler",
    [
        "greedy",
        "top_k",
        # Through the cache like top_k (one step, then a draw from the
        # probabilities): JAX compiles each sampler's loop anew.
        pytest.param("top_p", marks=pytest.mark.slow_on("jax")),
        pytest.param("random", marks=pytest.mark.slow_on("jax")),
        keras_hub.samplers.BeamSampler(num_beams=3),
        "contrastive",
    ],
)
def test_every_sampler_runs(sampler):
    lm = small_lm()
    lm.compile(sampler=sampler)
    inputs = prompts()
    out = to_numpy(lm.generate(inputs, stop_token_ids=None)["token_ids"])
    assert out.shape == (2, LENGTH)
    assert ((out >= 0) & (out < VOCAB)).all()
    keep = inputs["padding_mask"].astype(bool)
    np.testing.assert_array_equal(out[keep], inputs["token_ids"][keep])


def test_stop_token_masks_what_follows():
    lm = small_lm()
    lm.compile(sampler="greedy")
    free = to_numpy(lm.generate(prompts(), stop_token_ids=None)["token_ids"])
    stop = int(free[0, 4])  # the second generated token of row 0
    out = lm.generate(prompts(), stop_token_ids=(stop,))
    mask = to_numpy(out["padding_mask"])
    first = 3 + list(free[0, 3:]).index(stop)
    assert mask[0, : first + 1].all() and not mask[0, first + 1 :].any()


@pytest.mark.skipif(not COMPILED, reason="PyTorch runs generation eagerly")
def test_generate_compiles_once_and_reads_weights_as_variables():
    lm = small_lm()
    lm.compile(sampler="greedy")
    traces = []
    step = lm.generate_step

    def counted(*args, **kwargs):
        traces.append(1)
        return step(*args, **kwargs)

    lm.generate_step = counted
    first = to_numpy(lm.generate(prompts(), stop_token_ids=None)["token_ids"])
    for _ in range(3):
        again = lm.generate(prompts(), stop_token_ids=None)["token_ids"]
        np.testing.assert_array_equal(to_numpy(again), first)
    assert len(traces) == 1
    # New weight values reach the compiled function: no constants baked in.
    embeddings = lm.backbone.token_embedding.embeddings
    embeddings.assign(-to_numpy(embeddings))
    changed = to_numpy(lm.generate(prompts(), stop_token_ids=None)["token_ids"])
    assert len(traces) == 1
    expected = greedy_without_cache(lm, prompts())
    np.testing.assert_array_equal(changed, expected)
    assert not np.array_equal(changed, first)


def resident_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


def test_memory_stays_flat_over_50_generate_calls():
    """Repeated generation allocates nothing that stays (the hand-written
    generate of before grew by ~15 MB a call on TensorFlow)."""
    lm = small_lm()
    lm.compile(sampler="top_k")
    for _ in range(10):
        lm.generate(prompts(), stop_token_ids=None)
    before = resident_mb()
    for _ in range(50):
        lm.generate(prompts(), stop_token_ids=None)
    assert resident_mb() - before < 20


def byte_preprocessor(length=24):
    return XLSTMCausalLMPreprocessor(
        XLSTMByteTokenizer(), sequence_length=length
    )


def test_hidden_states_carry_no_keras_mask():
    """The padding mask is an input; the output embedding is never handed
    a Keras mask (Keras would warn on every call that it drops it)."""
    import warnings

    lm = small_lm()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm(prompts())
        lm.compile(sampler="greedy")
        lm.generate(prompts(), stop_token_ids=None)
    assert not [w for w in caught if "mask" in str(w.message)]


def test_byte_preprocessor_packs_shifted_targets():
    x, y, weight = byte_preprocessor(6)(["abc"])
    np.testing.assert_array_equal(
        to_numpy(x["token_ids"]), [[2, 97, 98, 99, 3, 0]]
    )
    np.testing.assert_array_equal(to_numpy(y), [[97, 98, 99, 3, 0, 0]])
    np.testing.assert_array_equal(to_numpy(weight), [[1, 1, 1, 1, 0, 0]])


@pytest.mark.slow_on("jax")
def test_fit_on_strings_lowers_the_loss_and_generates_text():
    """Through the preprocessor and the byte tokenizer: the prompt's start
    token and 11 bytes fill `max_length=12`, 6 of them generated; a model
    that learned the periodic text continues its period."""
    keras.utils.set_random_seed(1)
    backbone = XLSTMBackbone(
        vocabulary_size=256, num_layers=1, hidden_dim=32, num_heads=2
    )
    lm = XLSTMCausalLM(backbone, byte_preprocessor(16))
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), sampler="greedy")
    text = ["abcabcabcabcabc"] * 8
    history = lm.fit(text, batch_size=8, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert lm.generate("abcab", max_length=12) == "abcabcabcab"


def test_generation_stops_at_a_generated_stop_token_not_at_the_padding():
    """The padding of the prompts holds 0; stopping at 0 ends each row at
    its first generated 0, not at the padding (KerasHub's samplers look
    for stop tokens past the prompt, where the padding is)."""
    lm = small_lm()
    lm.compile(sampler="greedy")
    inputs = prompts()
    free = to_numpy(lm.generate(inputs, stop_token_ids=None)["token_ids"])
    stop = int(free[1, 5])  # row 1's first generated token
    inputs["token_ids"][inputs["padding_mask"] == 0] = stop
    out = lm.generate(inputs, stop_token_ids=(stop,))
    ids, mask = to_numpy(out["token_ids"]), to_numpy(out["padding_mask"])
    np.testing.assert_array_equal(mask[1], [1] * 6 + [0] * 4)
    first = 3 + list(free[0, 3:]).index(stop) if stop in free[0, 3:] else 9
    np.testing.assert_array_equal(ids[0, : first + 1], free[0, : first + 1])
    assert mask[0, : first + 1].all() and not mask[0, first + 1 :].any()
    # Past a row's stop, the input's padding again.
    np.testing.assert_array_equal(ids[~mask.astype(bool)], stop)


def generate_with(lm, **changes):
    inputs = {**prompts(), **changes.pop("inputs", {})}
    return lm.generate(inputs, stop_token_ids=None, **changes)


GENERATE_CASES = [
    ("token_ids", {"inputs": {"token_ids": np.zeros((0, LENGTH), "int32")}}),
    (
        "token_ids",
        {
            "inputs": {
                "token_ids": np.zeros((0, LENGTH), "int32"),
                "padding_mask": np.zeros((0, LENGTH), "int32"),
            }
        },
    ),
    (
        "token_ids",
        {
            "inputs": {
                "token_ids": np.arange(1, 4, dtype="int32"),
                "padding_mask": np.ones(3, "int32"),
            }
        },
    ),
    ("token_ids", {"inputs": {"token_ids": prompts()["token_ids"] + 0.5}}),
    ("token_ids", {"inputs": {"token_ids": prompts()["token_ids"] + VOCAB}}),
    ("token_ids", {"inputs": {"token_ids": prompts()["token_ids"] - 6}}),
    ("padding_mask", {"inputs": {"padding_mask": np.zeros((2, LENGTH))}}),
    (
        "padding_mask",
        {"inputs": {"padding_mask": prompts()["padding_mask"][:, ::-1]}},
    ),
    ("padding_mask", {"inputs": {"padding_mask": np.zeros((2, 3), "int32")}}),
    ("padding_mask", {"inputs": {"padding_mask": np.zeros((2, LENGTH), int)}}),
    ("inputs", {"inputs": {"ids": np.ones((2, LENGTH), "int32")}}),
    ("max_length", {"max_length": 0}),
    ("max_length", {"max_length": 4.0}),
    ("max_length", {"max_length": True}),
]


@pytest.mark.parametrize(
    "argument,changes",
    GENERATE_CASES,
    ids=[f"{i}-{case[0]}" for i, case in enumerate(GENERATE_CASES)],
)
def test_bad_generate_input_is_named_before_compiling(
    argument, changes, monkeypatch
):
    """Empty, 1-D, float, out-of-vocabulary, left-padded or mis-shaped
    prompts and a bad `max_length` raise a ValueError that names them,
    before KerasHub compiles or runs the generation function."""
    lm = small_lm()
    lm.compile(sampler="greedy")

    def fail(*args, **kwargs):
        raise AssertionError("generation started before validation")

    monkeypatch.setattr(lm, "generate_step", fail)
    with pytest.raises(ValueError, match=f"`?{argument}`?"):
        generate_with(lm, **changes)


def test_causal_lm_takes_only_an_xlstm_backbone():
    gpt2 = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=LENGTH,
    )
    with pytest.raises(ValueError, match="`backbone` must be an XLSTMBackbone"):
        XLSTMCausalLM(gpt2)


@pytest.mark.parametrize(
    "inputs,argument",
    [
        ({"token_ids": np.ones((2, 4), "float32")}, "token_ids"),
        ({"token_ids": np.ones(4, "int32")}, "token_ids"),
        ({"token_ids": np.full((2, 4), VOCAB, "int32")}, "token_ids"),
        ({"padding_mask": np.ones((2, 5), "int32")}, "padding_mask"),
        ({"padding_mask": np.ones((2, 4), "float32")}, "padding_mask"),
    ],
)
def test_bad_backbone_input_is_named(inputs, argument):
    lm = small_lm()
    inputs = {
        "token_ids": np.ones((2, 4), "int32"),
        "padding_mask": np.ones((2, 4), "int32"),
        **inputs,
    }
    for model in (lm.backbone, lm):
        with pytest.raises(ValueError, match=f"`{argument}`"):
            model(inputs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_preset_round_trip(variant, tmp_path):
    lm = small_lm(variant, byte_preprocessor())
    lm.save_to_preset(str(tmp_path))
    loaded = XLSTMCausalLM.from_preset(str(tmp_path))
    assert type(loaded.preprocessor.tokenizer) is XLSTMByteTokenizer
    inputs = prompts()
    np.testing.assert_array_equal(
        to_numpy(loaded(inputs)), to_numpy(lm(inputs))
    )
    backbone = XLSTMBackbone.from_preset(str(tmp_path))
    assert backbone.get_config() == lm.backbone.get_config()


@pytest.mark.parametrize("variant,targets", [("large", 2), ("mlstm", 1)])
@pytest.mark.slow_on("jax")
def test_lora_trains_only_the_adapters(variant, targets):
    """The default targets: q and v of "large" blocks, up of "mlstm" ones."""
    lm = small_lm(variant)
    lm.backbone.enable_lora(2)
    names = sorted({w.path.split("/")[-1] for w in lm.trainable_weights})
    assert names == ["lora_kernel_a", "lora_kernel_b"]
    assert len(lm.trainable_weights) == 2 * targets * 2  # a, b; 2 blocks
    frozen = {w.path: to_numpy(w) for w in lm.non_trainable_weights}
    lora = {w.path: to_numpy(w) for w in lm.trainable_weights}
    lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    inputs = prompts()
    lm.fit(inputs, inputs["token_ids"], epochs=2, verbose=0)
    for weight in lm.non_trainable_weights:
        np.testing.assert_array_equal(to_numpy(weight), frozen[weight.path])
    moved = [
        not np.array_equal(to_numpy(w), lora[w.path])
        for w in lm.trainable_weights
        if w.path.endswith("lora_kernel_b")
    ]
    assert all(moved)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.slow_on("jax")
def test_int8_generation_stays_close_to_float(variant):
    """int8 weights (per-channel scales) of the projections and embedding:
    logits within 10 % of float (measured 3.7 % "large", 2.2 % "mlstm" on
    PyTorch; the gates and norms stay float)."""
    lm = small_lm(variant)
    inputs = prompts()
    reference = to_numpy(lm(inputs))
    lm.quantize("int8")
    kernels = [w for w in lm.weights if w.dtype == "int8"]
    assert len(kernels) >= 2 * (8 if variant == "large" else 2)
    assert relative_error(to_numpy(lm(inputs)), reference) < 0.1
    lm.compile(sampler="greedy")
    out = lm.generate(inputs, stop_token_ids=None)
    assert to_numpy(out["token_ids"]).shape == (2, LENGTH)


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_model_saves_and_reloads(variant, tmp_path):
    """A quantized model reloads from `.keras` and from a preset with its
    int8 weights and computes what it computed; reloaded, it saves again
    (KerasHub's GPT-2 does not: Keras's `Embedding` then saves no scale)."""
    lm = small_lm(variant)
    inputs = prompts()
    lm.quantize("int8")
    expected = to_numpy(lm(inputs))
    count = sum(w.dtype == "int8" for w in lm.weights)
    path = str(tmp_path / "lm.keras")
    lm.save(path)
    loaded = keras.saving.load_model(path)
    lm.save_to_preset(str(tmp_path / "preset"))
    from_preset = XLSTMCausalLM.from_preset(str(tmp_path / "preset"))
    loaded.save(str(tmp_path / "again.keras"))
    again = keras.saving.load_model(str(tmp_path / "again.keras"))
    for model in (loaded, from_preset, again):
        assert sum(w.dtype == "int8" for w in model.weights) == count
        np.testing.assert_allclose(
            to_numpy(model(inputs)), expected, rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("name", xlstm.__all__)
def test_public_api_documented_registered_and_examples_run(name):
    obj = getattr(xlstm, name)
    if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
        registered = keras.saving.get_registered_name(obj)
        assert registered == f"keras_mlstm>{name}"
    for section in ("Args:", "Example:", "References:"):
        assert section in obj.__doc__, f"{name} lacks {section}"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    namespace = {n: getattr(xlstm, n) for n in xlstm.__all__}
    tests = finder.find(obj, name, globs=namespace)
    assert tests and tests[0].examples, f"{name} has no example"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


def test_backbone_takes_the_stack_arguments_and_serializes_them():
    backbone = XLSTMBackbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        hidden_dim=32,
        num_heads=2,
        block_variant="large",
        norm_epsilon=1e-4,
        name="small",
    )
    assert backbone.name == "small"
    assert backbone.mlstm_stack.blocks[0].norm_epsilon == 1e-4
    config = backbone.get_config()
    assert (config["norm_epsilon"], config["num_heads"]) == (1e-4, 2)
    again = XLSTMBackbone.from_config(config)
    assert again.get_config() == config
    with pytest.raises(TypeError, match="`num_blocks`, which is now"):
        XLSTMBackbone(VOCAB, 1, 32, num_blocks=1)


def test_layout_map_splits_each_projection_on_its_axis():
    mesh = keras.distribution.DeviceMesh(
        (1, 2), ["batch", "model"], [f"cpu:{i}" for i in range(2)]
    )
    layout_map = XLSTMBackbone.get_layout_map(mesh)
    for name in ("up", "q", "k", "v", "output_gate", "ffn_gate", "ffn_up"):
        path = f"mlstm_stack/block_3/{name}/kernel"
        assert tuple(layout_map[path].axes) == ("batch", "model"), path
    for name in ("down", "out", "ffn_down"):
        path = f"mlstm_stack/block_0/{name}/kernel"
        assert tuple(layout_map[path].axes) == ("model", "batch"), path
    table = layout_map["token_embedding/embeddings"]
    assert tuple(table.axes) == ("model", "batch")
    for small in ("forget_gate_bias", "q_kernel", "head_norm_weight"):
        small = f"mlstm_stack/block_0/{small}"
        assert layout_map[small] is None
    with pytest.raises(ValueError, match="model_parallel_dim_name"):
        XLSTMBackbone.get_layout_map(mesh, model_parallel_dim_name="x")
    with pytest.raises(ValueError, match="device_mesh"):
        XLSTMBackbone.get_layout_map("mesh")
