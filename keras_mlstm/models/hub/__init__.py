"""xLSTM language models for KerasHub: backbone, causal LM, preprocessor,
tokenizers, presets and the `transformers` xLSTM checkpoint loader.

Needs the optional extra: `pip install -e ".[hub]"` (KerasHub,
which brings TensorFlow and tensorflow-text for its text preprocessing).
The rest of `keras_mlstm` never imports this package.
"""

try:
    import keras_hub  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "keras_mlstm.models.hub needs KerasHub: in a clone of keras_mlstm, "
        'pip install -e ".[hub]"'
    ) from error

from keras_mlstm.models.hub.safetensors_reader import SafetensorsReader
from keras_mlstm.models.hub.xlstm_backbone import XLSTMBackbone
from keras_mlstm.models.hub.xlstm_byte_tokenizer import XLSTMByteTokenizer
from keras_mlstm.models.hub.xlstm_causal_lm import XLSTMCausalLM
from keras_mlstm.models.hub.xlstm_causal_lm_preprocessor import (
    XLSTMCausalLMPreprocessor,
)
from keras_mlstm.models.hub.xlstm_tokenizer import XLSTMTokenizer

__all__ = [
    "SafetensorsReader",
    "XLSTMBackbone",
    "XLSTMByteTokenizer",
    "XLSTMCausalLM",
    "XLSTMCausalLMPreprocessor",
    "XLSTMTokenizer",
]
