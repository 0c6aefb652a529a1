"""Load Hugging Face ``transformers`` xLSTM checkpoints (``model_type``
``"xlstm"``, ``xLSTMForCausalLM``, e.g. ``NX-AI/xLSTM-7b``) into the
KerasHub classes: config, weights (safetensors, one file or sharded) and
the tokenizer. Works on a local directory or any handle KerasHub's
``get_file`` reaches (``hf://...``, ``kaggle://...``)."""

import json

from keras_hub.src.utils.preset_utils import PresetLoader
from keras_hub.src.utils.preset_utils import check_file_exists
from keras_hub.src.utils.preset_utils import get_file
from keras_hub.src.utils.preset_utils import load_json

from keras_mlstm.models.hub.safetensors_reader import SafetensorsReader
from keras_mlstm.models.hub.xlstm_converter import load_language_model_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"


def xlstm_loader(preset):
    """A loader for ``preset`` if it is a ``transformers`` xLSTM checkpoint,
    else None (a KerasHub preset, left to KerasHub)."""
    if not check_file_exists(preset, CONFIG_FILE):
        return None
    config = load_json(preset, CONFIG_FILE)
    if config.get("model_type") != "xlstm":
        return None
    return TransformersXLSTMLoader(preset, config)


def _expect(config, key, expected):
    value = config.get(key, expected)
    if value != expected:
        raise ValueError(
            f"The checkpoint's config.json has {key}={value!r}; only "
            f"{key}={expected!r} (the xLSTM 7B layout) is supported."
        )


def convert_backbone_config(config):
    """``XLSTMBackbone`` arguments from a ``transformers`` ``xLSTMConfig``
    dict; raises ValueError for settings the Keras blocks do not have."""
    _expect(config, "weight_mode", "single")
    _expect(config, "ffn_round_up_to_multiple_of", 64)
    _expect(config, "add_out_norm", True)
    _expect(config, "norm_eps", 1e-6)
    _expect(config, "eps", 1e-6)
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config.get("num_blocks", config["num_hidden_layers"]),
        "hidden_dim": config.get("embedding_dim", config["hidden_size"]),
        "num_heads": config["num_heads"],
        "block_variant": "large",
        "qk_dim_factor": config.get("qk_dim_factor", 0.5),
        "v_dim_factor": config.get("v_dim_factor", 1.0),
        "ffn_proj_factor": config.get("ffn_proj_factor", 2.667),
        "gate_soft_cap": config.get("gate_soft_cap", 15.0),
        "use_bias": config.get("use_bias", False),
        "tie_word_embeddings": config.get("tie_word_embeddings", False),
        "logit_soft_cap": config.get("output_logit_soft_cap"),
        "chunk_size": config.get("chunk_size", 64),
    }


def weight_files(preset):
    """Local paths of the checkpoint's safetensors files (fetched through
    KerasHub's ``get_file`` where ``preset`` is remote)."""
    if check_file_exists(preset, WEIGHTS_INDEX_FILE):
        with open(get_file(preset, WEIGHTS_INDEX_FILE)) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [get_file(preset, shard) for shard in shards]
    return [get_file(preset, WEIGHTS_FILE)]


def load_transformers_weights(backbone, state_dict):
    """Assign a ``transformers`` ``xLSTMForCausalLM`` state dict (a mapping
    of arrays) to a built ``XLSTMBackbone``; every entry must be used."""
    load_language_model_weights(
        backbone, state_dict, "backbone.embeddings.weight", "backbone."
    )


class TransformersXLSTMLoader(PresetLoader):
    """KerasHub's ``PresetLoader`` for ``transformers`` xLSTM checkpoints."""

    def check_backbone_class(self):
        from keras_mlstm.models.hub.xlstm_backbone import XLSTMBackbone

        return XLSTMBackbone

    def load_backbone(self, cls, load_weights, **kwargs):
        backbone = cls(**{**convert_backbone_config(self.config), **kwargs})
        if load_weights:
            reader = SafetensorsReader(weight_files(self.preset))
            load_transformers_weights(backbone, reader)
        return backbone

    def load_tokenizer(self, cls, config_file=TOKENIZER_FILE, **kwargs):
        path = get_file(self.preset, config_file)
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        vocabulary = dict(spec["model"]["vocab"])
        for token in spec.get("added_tokens", []):
            vocabulary[token["content"]] = token["id"]
        names = {index: token for token, index in vocabulary.items()}
        special = {}
        for name, key in (
            ("start_token", "bos_token_id"),
            ("end_token", "eos_token_id"),
            ("pad_token", "pad_token_id"),
        ):
            if self.config.get(key) in names:
                special[name] = names[self.config[key]]
        return cls.from_tokenizer_json(path, **{**special, **kwargs})
