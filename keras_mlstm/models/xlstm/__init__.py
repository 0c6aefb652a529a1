"""The xLSTM language models for KerasHub, laid out as KerasHub's own
`models/<name>/` folders: backbone, causal LM, preprocessor, tokenizers,
presets, and the conversion of `transformers` and official `xlstm`
checkpoints (`convert_xlstm`).

Needs the optional extra: `pip install -e ".[hub]"` (KerasHub, which
brings TensorFlow and tensorflow-text for its text preprocessing). The
rest of `keras_mlstm` never imports this package.
"""

try:
    import keras_hub  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "keras_mlstm.models.xlstm needs KerasHub: in a clone of keras_mlstm, "
        'pip install -e ".[hub]"'
    ) from error

from keras_mlstm.models.xlstm.safetensors_reader import SafetensorsReader
from keras_mlstm.models.xlstm.xlstm_backbone import XLSTMBackbone
from keras_mlstm.models.xlstm.xlstm_byte_tokenizer import XLSTMByteTokenizer
from keras_mlstm.models.xlstm.xlstm_causal_lm import XLSTMCausalLM
from keras_mlstm.models.xlstm.xlstm_causal_lm_preprocessor import (
    XLSTMCausalLMPreprocessor,
)
from keras_mlstm.models.xlstm.xlstm_tokenizer import XLSTMTokenizer

__all__ = [
    "SafetensorsReader",
    "XLSTMBackbone",
    "XLSTMByteTokenizer",
    "XLSTMCausalLM",
    "XLSTMCausalLMPreprocessor",
    "XLSTMTokenizer",
]
