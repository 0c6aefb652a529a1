"""xLSTM presets, and the one `from_preset` path of the xLSTM classes.

`backbone_presets` names checkpoints as KerasHub's `<name>_presets.py`
modules do; `PresetLoading.from_preset` resolves a name to its handle,
loads a `transformers` xLSTM checkpoint through `convert_xlstm` and hands
anything else (KerasHub presets: directories, `kaggle://`, `hf://` of a
KerasHub save) to KerasHub's own `from_preset`.
"""

from keras_hub.models import Backbone
from keras_hub.models import Preprocessor
from keras_hub.models import Task
from keras_hub.tokenizers import Tokenizer

from keras_mlstm.models.xlstm.convert_xlstm import checkpoint_loader

backbone_presets = {
    "xlstm_7b": {
        "metadata": {
            "description": (
                "xLSTM 7B (NX-AI): 32 xLSTM 7B blocks, width 4096, 8 heads, "
                "GPT-NeoX tokenizer (50,304 ids), trained on 2.3 trillion "
                "tokens; converted from its transformers checkpoint on load."
            ),
            "params": 6_865_424_896,
            "path": "xlstm",
        },
        "kaggle_handle": "hf://NX-AI/xLSTM-7b",
    },
}


class PresetLoading:
    """Mixin of `XLSTMBackbone`, `XLSTMCausalLM`, the preprocessor and
    `XLSTMTokenizer`: `from_preset` also takes the names of
    `backbone_presets` and `transformers` xLSTM checkpoints."""

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Load from a KerasHub preset, a name of `backbone_presets` or a
        Hugging Face `transformers` xLSTM checkpoint (a directory or
        `"hf://..."`). Keyword arguments as KerasHub's `from_preset` of
        this kind of class (`load_weights=`, `config_file=`, `dtype=`,
        ...)."""
        preset = backbone_presets.get(preset, {}).get("kaggle_handle", preset)
        loader = checkpoint_loader(preset)
        if loader is None:
            return super().from_preset(preset, **kwargs)
        if issubclass(cls, Task):
            # The head is the backbone's: no task weights of its own.
            load_weights = kwargs.pop("load_weights", True)
            return loader.load_task(cls, load_weights, False, **kwargs)
        if issubclass(cls, Backbone):
            load_weights = kwargs.pop("load_weights", True)
            return loader.load_backbone(cls, load_weights, **kwargs)
        if issubclass(cls, Preprocessor):
            return loader.load_preprocessor(cls, **kwargs)
        if issubclass(cls, Tokenizer):
            return loader.load_tokenizer(cls, **kwargs)
        raise TypeError(f"{cls.__name__} has no presets.")
