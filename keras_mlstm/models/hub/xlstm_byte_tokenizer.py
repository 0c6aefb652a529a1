"""`XLSTMByteTokenizer`: UTF-8 bytes as tokens, for character-level
xLSTM language models."""

import keras
from keras_hub.tokenizers import ByteTokenizer


@keras.saving.register_keras_serializable(package="keras_mlstm")
class XLSTMByteTokenizer(ByteTokenizer):
    """Each UTF-8 byte is a token (ids 0-255); byte 0 (NUL, absent from
    text) is the start, end and padding token, as `<|endoftext|>` is all
    three for GPT-2.

    Args:
        lowercase: bool. Lowercase the text first. Defaults to `False`.
        **kwargs: `keras_hub.tokenizers.ByteTokenizer` arguments.

    Example:

    >>> import numpy as np
    >>> tokenizer = XLSTMByteTokenizer()
    >>> np.asarray(tokenizer("Hi!")).tolist()
    [72, 105, 33]
    >>> tokenizer.detokenize([72, 105, 33])
    'Hi!'

    References:
        - Xue et al., "ByT5: Towards a token-free future with pre-trained
          byte-to-byte models", 2022, arXiv:2105.13626.
    """

    def __init__(self, lowercase=False, **kwargs):
        self._add_special_token("\x00", "start_token")
        self._add_special_token("\x00", "end_token")
        self._add_special_token("\x00", "pad_token")
        super().__init__(lowercase=lowercase, **kwargs)

    def save_assets(self, dir_path):
        """Nothing to save: the 256 bytes are the vocabulary (presets keep
        the config only)."""

    def load_preset_assets(self, preset):
        """Nothing to load (see `save_assets`)."""
