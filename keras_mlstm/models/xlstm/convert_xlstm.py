"""Checkpoints of other libraries as xLSTM KerasHub models, laid out as
KerasHub's `utils/transformers/convert_<name>.py`: the configuration
(`convert_backbone_config`), the weights (`convert_weights`) and the
tokenizer (`convert_tokenizer`) of Hugging Face `transformers` xLSTM
checkpoints (`model_type` `"xlstm"`, `xLSTMForCausalLM`, e.g.
`NX-AI/xLSTM-7b`; safetensors, one file or sharded, from a directory or
any handle KerasHub's `get_file` reaches: `hf://...`, `kaggle://...`),
and the same for the official PyTorch `xlstm` language models
(`xLSTMLMModel`, `xLSTMLarge`), whose blocks the core's
`keras_mlstm.models.convert` converts.

The model classes are handed in (`cls`, `backbone`), never imported, so
that they can import this module: KerasHub picks its `transformers`
converter from a fixed list of model types, with no way to register
another, so the classes' `from_preset` (`xlstm_presets`) asks
`checkpoint_loader` first and leaves anything else to KerasHub."""

import json
import types

import numpy as np
from keras_hub.src.utils.preset_utils import PresetLoader
from keras_hub.src.utils.preset_utils import check_file_exists
from keras_hub.src.utils.preset_utils import get_file
from keras_hub.src.utils.preset_utils import load_json

from keras_mlstm.models.convert import StateDictLoader
from keras_mlstm.models.convert import large_kwargs
from keras_mlstm.models.convert import load_stack_weights
from keras_mlstm.models.convert import stack_kwargs
from keras_mlstm.models.convert import to_float32
from keras_mlstm.models.xlstm.safetensors_reader import SafetensorsReader

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"


# === `transformers` xLSTM checkpoints ===


def convert_backbone_config(transformers_config):
    """`XLSTMBackbone` arguments from a `transformers` `xLSTMConfig` dict
    (the official `xLSTMLargeConfig`'s fields, under the same names);
    ValueError for settings the Keras blocks do not have.

    The output projection is never tied: `transformers`' `xLSTMForCausalLM`
    declares no tied weights, so whatever its config's
    `tie_word_embeddings` says, it computes the logits with its own
    `lm_head.weight`, which every checkpoint it saves carries.
    """
    kwargs = large_backbone_kwargs(types.SimpleNamespace(**transformers_config))
    return dict(kwargs, tie_word_embeddings=False)


def convert_weights(backbone, state_dict):
    """Assign a `transformers` `xLSTMForCausalLM` state dict (a mapping
    of arrays, read lazily) to a built `XLSTMBackbone`; every entry must
    be used."""
    load_language_model_weights(
        backbone, state_dict, "backbone.embeddings.weight", "backbone."
    )


def convert_tokenizer(cls, tokenizer_file, transformers_config, **kwargs):
    """An `XLSTMTokenizer` (`cls`) from a `tokenizer.json` of a byte-level
    BPE model, with the start, end and padding tokens of the config's
    `bos_token_id`, `eos_token_id` and `pad_token_id`."""
    vocabulary, merges = read_tokenizer_json(tokenizer_file)
    names = {index: token for token, index in vocabulary.items()}
    special = {}
    for name, key in (
        ("start_token", "bos_token_id"),
        ("end_token", "eos_token_id"),
        ("pad_token", "pad_token_id"),
    ):
        if transformers_config.get(key) in names:
            special[name] = names[transformers_config[key]]
    return cls(vocabulary=vocabulary, merges=merges, **{**special, **kwargs})


def read_tokenizer_json(path):
    """`(vocabulary, merges)` of a Hugging Face `tokenizer.json` of a
    byte-level BPE model, the added tokens in the vocabulary; ValueError
    naming `path` for any other tokenizer."""
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    model = spec.get("model", {})
    if model.get("type") != "BPE" or not _is_byte_level(spec):
        raise ValueError(
            f"`path` ({path}) must be the tokenizer.json of a byte-level "
            "BPE tokenizer (model type 'BPE', a 'ByteLevel' pre-tokenizer); "
            f"received model type {model.get('type')!r} and pre-tokenizer "
            f"{spec.get('pre_tokenizer')!r}."
        )
    vocabulary = dict(model["vocab"])
    for token in spec.get("added_tokens", []):
        vocabulary.setdefault(token["content"], token["id"])
    merges = [
        merge if isinstance(merge, str) else " ".join(merge)
        for merge in model["merges"]
    ]
    return vocabulary, merges


def _is_byte_level(spec):
    """Whether the pre-tokenizer of a tokenizer.json is byte-level."""
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre])
    return any(part.get("type") == "ByteLevel" for part in parts)


def weight_files(preset):
    """Local paths of the checkpoint's safetensors files (fetched through
    KerasHub's `get_file` where `preset` is remote)."""
    if check_file_exists(preset, WEIGHTS_INDEX_FILE):
        with open(get_file(preset, WEIGHTS_INDEX_FILE)) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [get_file(preset, shard) for shard in shards]
    return [get_file(preset, WEIGHTS_FILE)]


def checkpoint_loader(preset):
    """A KerasHub `PresetLoader` for `preset` if it is a `transformers`
    xLSTM checkpoint, else None (a KerasHub preset, left to KerasHub)."""
    if not check_file_exists(preset, CONFIG_FILE):
        return None
    config = load_json(preset, CONFIG_FILE)
    if config.get("model_type") != "xlstm":
        return None
    return TransformersXLSTMLoader(preset, config)


class TransformersXLSTMLoader(PresetLoader):
    """KerasHub's `PresetLoader` for `transformers` xLSTM checkpoints; its
    `load_*` methods build the class they are given."""

    def load_backbone(self, cls, load_weights, **kwargs):
        backbone = cls(**{**convert_backbone_config(self.config), **kwargs})
        if load_weights:
            convert_weights(
                backbone, SafetensorsReader(weight_files(self.preset))
            )
        return backbone

    def load_tokenizer(self, cls, config_file=TOKENIZER_FILE, **kwargs):
        return convert_tokenizer(
            cls, get_file(self.preset, config_file), self.config, **kwargs
        )


# === Official `xlstm` language models ===


def backbone_kwargs_from_xlstm(module):
    """`(XLSTMBackbone kwargs, embedding key, stack prefix)` for an
    official `xLSTMLMModel` or `xLSTMLarge`; ValueError naming the
    setting for configurations the Keras blocks do not have."""
    kind = type(module).__name__
    if kind not in ("xLSTMLarge", "xLSTMLMModel"):
        raise ValueError(
            "`module` must be an official xlstm xLSTMLMModel or xLSTMLarge; "
            f"received {kind}. Blocks and stacks convert with "
            "keras_mlstm.from_xlstm."
        )
    config = module.config
    if kind == "xLSTMLarge":
        return large_backbone_kwargs(config), "embedding.weight", "backbone."
    kwargs = stack_kwargs(config)
    if not kwargs.pop("post_norm"):
        raise ValueError(
            "xLSTMLMModel models without the post-blocks norm are not "
            "supported (add_post_blocks_norm=False)."
        )
    if kwargs["use_bias"]:
        raise ValueError(
            "xLSTMLMModel models with biases (bias=True) are not supported: "
            "their post-blocks norm has a bias the Keras stack lacks. "
            "Convert the xLSTMBlockStack instead."
        )
    kwargs = dict(
        kwargs,
        vocabulary_size=config.vocab_size,
        hidden_dim=config.embedding_dim,
        block_variant="mlstm",
        tie_word_embeddings=bool(config.tie_weights),
    )
    return kwargs, "token_embedding.weight", "xlstm_block_stack."


def large_backbone_kwargs(config):
    """`XLSTMBackbone` arguments for an xLSTM 7B configuration: the
    official `xLSTMLargeConfig` or anything with its fields (the
    `transformers` `xLSTMConfig` has them under the same names)."""
    if not config.add_out_norm:
        raise ValueError(
            "xLSTM 7B models without the output norm are not supported "
            "(add_out_norm=False)."
        )
    return dict(
        large_kwargs(config),
        vocabulary_size=config.vocab_size,
        num_layers=config.num_blocks,
        hidden_dim=config.embedding_dim,
        block_variant="large",
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        logit_soft_cap=config.output_logit_soft_cap,
    )


def load_language_model_weights(backbone, state_dict, embedding_key, prefix):
    """Assign a language model's state dict to a built `XLSTMBackbone`:
    the embedding at `embedding_key`, the blocks and final norm under
    `prefix`, and `lm_head.weight` (which must equal the embedding
    when the backbone ties them). Every entry must be used."""
    loader = StateDictLoader(state_dict)
    embedding = backbone.token_embedding
    loader.assign(embedding.embeddings, embedding_key)
    load_stack_weights(loader, backbone.mlstm_stack, prefix)
    if not backbone.tie_word_embeddings:
        loader.assign(
            embedding.reverse_embeddings, "lm_head.weight", "transpose"
        )
    elif "lm_head.weight" in loader.entries:
        head = to_float32(loader.entries["lm_head.weight"])
        if not np.array_equal(head, to_float32(loader.entries[embedding_key])):
            raise ValueError(
                "The backbone ties its output projection to the embedding, "
                "but the state dict's 'lm_head.weight' differs from "
                f"{embedding_key!r}: build it with tie_word_embeddings=False."
            )
        loader.used.add("lm_head.weight")
    loader.finish()
