"""Load Hugging Face `transformers` xLSTM checkpoints (`model_type`
`"xlstm"`, `xLSTMForCausalLM`, e.g. `NX-AI/xLSTM-7b`) into the
KerasHub classes: config, weights (safetensors, one file or sharded) and
the tokenizer. Works on a local directory or any handle KerasHub's
`get_file` reaches (`hf://...`, `kaggle://...`).

KerasHub picks its own `transformers` converter from a fixed list of
model types, with no way to register another; so the `from_preset` of
each xLSTM class asks `xlstm_loader` first and hands anything else to
KerasHub."""

import json
import types

from keras_hub.src.utils.preset_utils import PresetLoader
from keras_hub.src.utils.preset_utils import check_file_exists
from keras_hub.src.utils.preset_utils import get_file
from keras_hub.src.utils.preset_utils import load_json

from keras_mlstm.models.hub.safetensors_reader import SafetensorsReader
from keras_mlstm.models.hub.xlstm_converter import large_backbone_kwargs
from keras_mlstm.models.hub.xlstm_converter import load_language_model_weights
from keras_mlstm.models.hub.xlstm_tokenizer import read_tokenizer_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"


def xlstm_loader(preset):
    """A loader for `preset` if it is a `transformers` xLSTM checkpoint,
    else None (a KerasHub preset, left to KerasHub)."""
    if not check_file_exists(preset, CONFIG_FILE):
        return None
    config = load_json(preset, CONFIG_FILE)
    if config.get("model_type") != "xlstm":
        return None
    return TransformersXLSTMLoader(preset, config)


def convert_backbone_config(config):
    """`XLSTMBackbone` arguments from a `transformers` `xLSTMConfig`
    dict (the official `xLSTMLargeConfig`'s fields, under the same
    names); ValueError for settings the Keras blocks do not have."""
    return large_backbone_kwargs(types.SimpleNamespace(**config))


def weight_files(preset):
    """Local paths of the checkpoint's safetensors files (fetched through
    KerasHub's `get_file` where `preset` is remote)."""
    if check_file_exists(preset, WEIGHTS_INDEX_FILE):
        with open(get_file(preset, WEIGHTS_INDEX_FILE)) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [get_file(preset, shard) for shard in shards]
    return [get_file(preset, WEIGHTS_FILE)]


def load_transformers_weights(backbone, state_dict):
    """Assign a `transformers` `xLSTMForCausalLM` state dict (a mapping
    of arrays) to a built `XLSTMBackbone`; every entry must be used."""
    load_language_model_weights(
        backbone, state_dict, "backbone.embeddings.weight", "backbone."
    )


class TransformersXLSTMLoader(PresetLoader):
    """KerasHub's `PresetLoader` for `transformers` xLSTM checkpoints."""

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
        vocabulary, merges = read_tokenizer_json(
            get_file(self.preset, config_file)
        )
        names = {index: token for token, index in vocabulary.items()}
        special = {}
        for name, key in (
            ("start_token", "bos_token_id"),
            ("end_token", "eos_token_id"),
            ("pad_token", "pad_token_id"),
        ):
            if self.config.get(key) in names:
                special[name] = names[self.config[key]]
        return cls(
            vocabulary=vocabulary, merges=merges, **{**special, **kwargs}
        )
