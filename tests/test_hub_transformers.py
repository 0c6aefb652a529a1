"""The `transformers` xLSTM checkpoint loader: a small randomly initialised
`xLSTMForCausalLM` (the 7B layout: `qk_dim_factor=0.5`, soft caps, no
biases; `hidden_size=128, num_heads=4`, the smallest the CPU kernels of
`mlstm_kernels` take), saved with `save_pretrained` (no download), loads
into `XLSTMCausalLM` on every backend with the same logits and the same
greedy generation; its `tokenizer.json` gives the same ids.

Tolerance: logits within 1e-4 (absolute; logits of magnitude ~3) of
`transformers`' in float32 (measured 3.2e-6 on TensorFlow, 9.4e-6 on JAX,
3.5e-6 on PyTorch; a sharded bfloat16 checkpoint 4.2e-6 to 7.4e-6).
The reference runs its kernels in float32 (`autocast_kernel_dtype`), so
that the comparison measures the conversion, not bfloat16 rounding.
"""

import json
import os

import numpy as np
import pytest
from utils import import_keras_hub
from utils import to_numpy

import_keras_hub()
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from keras_mlstm.models.xlstm import SafetensorsReader  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMBackbone  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMCausalLM  # noqa: E402
from keras_mlstm.models.xlstm import XLSTMTokenizer  # noqa: E402

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "import numpy as np\nx = np.zeros(3)\n",
]
PROMPT = "def add(a, b): return"
NEW_TOKENS = 8


def train_tokenizer():
    """A byte-level BPE tokenizer as GPT-NeoX's (the xLSTM 7B's), with
    `<|endoftext|>` (id 0) and `<|padding|>` (id 1)."""
    from tokenizers import decoders
    from tokenizers import models
    from tokenizers import pre_tokenizers
    from tokenizers import trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    return tokenizer


def save_checkpoint(
    directory, tokenizer, dtype=None, shard_size="5GB", **settings
):
    """Save a random `xLSTMForCausalLM` (`settings` override its config);
    return the expected prompt ids, logits and greedy continuation
    (computed in float32 by `transformers` from the saved weights)."""
    torch.manual_seed(0)
    config = transformers.xLSTMConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=128,
        embedding_dim=128,
        num_heads=4,
        num_blocks=2,
        num_hidden_layers=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        autocast_kernel_dtype="float32",
        **settings,
    )
    model = transformers.xLSTMForCausalLM(config).eval()
    with torch.no_grad():  # move gates and norms off their init values
        for name, parameter in model.named_parameters():
            if "gate_preact" in name or "norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(directory, max_shard_size=shard_size)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    model = model.float()
    ids = torch.tensor([tokenizer.encode(PROMPT).ids])
    with torch.no_grad():
        logits = model(ids).logits.numpy()
        generated = model.generate(
            ids,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=1,
        ).numpy()
    return ids.numpy(), logits, generated


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    directory = str(tmp_path_factory.mktemp("xlstm_hf"))
    return directory, save_checkpoint(directory, tokenizer)


def logits_of(lm, ids):
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    return to_numpy(lm(inputs))


def greedy(lm, ids, total):
    lm = XLSTMCausalLM(lm.backbone)  # token ids in and out
    lm.compile(sampler="greedy")
    token_ids = np.zeros((1, total), "int32")
    token_ids[:, : ids.shape[1]] = ids
    mask = (np.arange(total) < ids.shape[1])[None].astype("int32")
    inputs = {"token_ids": token_ids, "padding_mask": mask}
    return to_numpy(lm.generate(inputs, stop_token_ids=None)["token_ids"])


@pytest.mark.slow_on("jax")
def test_logits_and_greedy_generation_match_transformers(checkpoint):
    directory, (ids, logits, generated) = checkpoint
    lm = XLSTMCausalLM.from_preset(directory)
    assert isinstance(lm.backbone, XLSTMBackbone)
    assert lm.backbone.block_variant == "large"
    assert lm.backbone.qk_dim_factor == 0.5
    assert np.abs(logits_of(lm, ids) - logits).max() < 1e-4
    np.testing.assert_array_equal(
        greedy(lm, ids, generated.shape[1]), generated
    )


def test_tied_config_and_other_norm_epsilon_load_as_transformers_runs_them(
    tmp_path, tokenizer
):
    """`transformers` declares no tied weights for xLSTM: a checkpoint
    whose config says `tie_word_embeddings=True` keeps and uses its own
    `lm_head.weight`. Its norms' epsilon (`norm_eps`) reaches the blocks."""
    directory = str(tmp_path)
    ids, logits, _ = save_checkpoint(
        directory, tokenizer, tie_word_embeddings=True, norm_eps=1e-3
    )
    lm = XLSTMCausalLM.from_preset(directory)
    assert lm.backbone.tie_word_embeddings is False
    assert lm.backbone.norm_epsilon == 1e-3
    assert np.abs(logits_of(lm, ids) - logits).max() < 1e-4


def test_sharded_bfloat16_checkpoint(tmp_path, tokenizer):
    """bfloat16 weights in several shards (`model.safetensors.index.json`),
    read without torch, give `transformers`' float32 logits of the same
    (bfloat16-rounded) weights."""
    ids, logits, _ = save_checkpoint(
        str(tmp_path), tokenizer, dtype=torch.bfloat16, shard_size="300KB"
    )
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    reader = SafetensorsReader([str(tmp_path / shard) for shard in shards])
    assert reader.dtypes() == {"BF16"}
    lm = XLSTMCausalLM.from_preset(str(tmp_path))
    assert np.abs(logits_of(lm, ids) - logits).max() < 1e-4


def test_safetensors_reader_matches_torch(tmp_path):
    from safetensors.torch import save_file

    tensors = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "f16": torch.randn(4).to(torch.float16),
        "f32": torch.randn(2, 2, 2),
        "i64": torch.arange(6).reshape(2, 3),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"))
    reader = SafetensorsReader([str(tmp_path / "t.safetensors")])
    assert sorted(reader) == sorted(tensors)
    for name, tensor in tensors.items():
        expected = tensor.float().numpy() if name == "bf16" else tensor.numpy()
        np.testing.assert_array_equal(reader[name], expected)


def test_tokenizer_matches_tokenizers(checkpoint, tokenizer):
    directory, _ = checkpoint
    ours = XLSTMTokenizer.from_preset(directory)
    assert (ours.start_token_id, ours.end_token_id, ours.pad_token_id) == (
        0,
        0,
        1,
    )
    for text in [
        PROMPT,
        "  spaces\n\ttabs",
        "x = 12345 +  7\n\n\n  y's",
        "é ü — 😀 <|endoftext|> a<|padding|>",
    ]:
        ids = to_numpy(ours(text)).tolist()
        assert ids == tokenizer.encode(text).ids, text
        assert ours.detokenize(ids) == text


def test_hf_handle_loads_through_keras_hub(checkpoint, monkeypatch):
    """`from_preset("hf://...")` goes through KerasHub's `get_file` (here
    its Hugging Face download, answered from the local checkpoint)."""
    import huggingface_hub
    from keras_hub.src.utils import preset_utils

    directory, (ids, logits, _) = checkpoint
    requested = []

    def download(repo_id, filename, **kwargs):
        requested.append((repo_id, filename))
        path = os.path.join(directory, filename)
        if not os.path.exists(path):
            raise huggingface_hub.errors.EntryNotFoundError(filename)
        return path

    monkeypatch.setattr(
        preset_utils.huggingface_hub, "hf_hub_download", download
    )
    lm = XLSTMCausalLM.from_preset("hf://NX-AI/xLSTM-7b")
    assert ("NX-AI/xLSTM-7b", "model.safetensors") in requested
    assert np.abs(logits_of(lm, ids) - logits).max() < 1e-4
    text = lm.preprocessor.generate_preprocess([PROMPT], sequence_length=16)
    assert to_numpy(text["token_ids"])[0, 0] == 0  # the start token


def test_unsupported_checkpoints_raise(tmp_path, checkpoint):
    directory, _ = checkpoint
    config = json.load(open(os.path.join(directory, "config.json")))
    for key, value in (("weight_mode", "fused"), ("eps", 1e-5)):
        bad = tmp_path / key
        bad.mkdir()
        (bad / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=key):
            XLSTMBackbone.from_preset(str(bad), load_weights=False)
    with pytest.raises(ValueError, match="byte-level BPE"):
        path = tmp_path / "tokenizer.json"
        path.write_text(json.dumps({"model": {"type": "WordPiece"}}))
        XLSTMTokenizer.from_tokenizer_json(str(path))


def test_missing_or_extra_weights_raise(checkpoint):
    from keras_mlstm.models.xlstm.convert_xlstm import convert_weights

    directory, _ = checkpoint
    reader = SafetensorsReader([os.path.join(directory, "model.safetensors")])
    backbone = XLSTMBackbone.from_preset(directory, load_weights=False)
    entries = dict(reader)
    entries["backbone.blocks.9.extra.weight"] = np.zeros(3, "float32")
    with pytest.raises(ValueError, match="no counterpart"):
        convert_weights(backbone, entries)
    del entries["backbone.blocks.9.extra.weight"]
    del entries["lm_head.weight"]
    with pytest.raises(ValueError, match="lm_head.weight"):
        convert_weights(backbone, entries)
