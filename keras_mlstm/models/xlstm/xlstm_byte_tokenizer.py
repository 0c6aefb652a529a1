"""`XLSTMByteTokenizer`: UTF-8 bytes as tokens, for character-level
xLSTM language models."""

import keras
from keras_hub.tokenizers import ByteTokenizer

# ASCII's own control characters for the purpose: "start of text", "end of
# text" and NUL. Three distinct ids matter: KerasHub's samplers stop a row
# at the first end token after the prompt, so an end id equal to the
# padding id would read the padding as text already generated.
START_TOKEN = "\x02"
END_TOKEN = "\x03"
PAD_TOKEN = "\x00"


@keras.saving.register_keras_serializable(package="keras_mlstm")
class XLSTMByteTokenizer(ByteTokenizer):
    """Each UTF-8 byte is a token (ids 0-255, so `vocabulary_size=256`),
    with three of ASCII's control bytes as the special tokens: `"\\x02"`
    (STX, start of text, id 2) starts a sequence, `"\\x03"` (ETX, end of
    text, id 3) ends it and ends generation, and `"\\x00"` (NUL, id 0)
    pads. Text holding these bytes reads them as the special tokens.

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
    >>> tokenizer.start_token_id, tokenizer.end_token_id
    (2, 3)
    >>> tokenizer.pad_token_id
    0

    References:
        - Xue et al., "ByT5: Towards a token-free future with pre-trained
          byte-to-byte models", 2022, arXiv:2105.13626.
        - ASCII (ANSI X3.4-1986): STX, ETX and NUL.
    """

    def __init__(self, lowercase=False, **kwargs):
        self._add_special_token(START_TOKEN, "start_token")
        self._add_special_token(END_TOKEN, "end_token")
        self._add_special_token(PAD_TOKEN, "pad_token")
        super().__init__(lowercase=lowercase, **kwargs)

    def save_assets(self, dir_path):
        """Nothing to save: the 256 bytes are the vocabulary (presets keep
        the config only)."""

    def load_preset_assets(self, preset):
        """Nothing to load (see `save_assets`)."""
