"""`XLSTMCausalLMPreprocessor`: strings to the inputs and targets of an
`XLSTMCausalLM`."""

import keras
from keras_hub.models import CausalLMPreprocessor

from keras_mlstm.models.xlstm.xlstm_backbone import XLSTMBackbone
from keras_mlstm.models.xlstm.xlstm_presets import PresetLoading
from keras_mlstm.models.xlstm.xlstm_tokenizer import XLSTMTokenizer


@keras.saving.register_keras_serializable(package="keras_mlstm")
class XLSTMCausalLMPreprocessor(PresetLoading, CausalLMPreprocessor):
    """Tokenizes text and packs it for `XLSTMCausalLM`: the start token,
    the tokens, the end token, padding to `sequence_length`; `x` is the
    sequence without its last token, `y` without its first, and
    `sample_weight` masks the padding. For `generate`, it packs prompts
    without an end token and turns the generated ids back into text.

    Args:
        tokenizer: an `XLSTMTokenizer` (BPE) or `XLSTMByteTokenizer`.
        sequence_length: int. The packed length. Defaults to `1024`.
        add_start_token: bool. Prepend the start token. Defaults to `True`.
        add_end_token: bool. Append the end token. Defaults to `True`.
        **kwargs: base layer arguments.

    Call arguments:
        x: a string or a batch of strings.
        y: unused; labels are made from `x`.
        sample_weight: unused.
        sequence_length: int or `None` (the constructor's).

    Returns:
        `(x, y, sample_weight)` with `x` the dict `{"token_ids",
        "padding_mask"}`.

    Example:

    >>> import numpy as np
    >>> preprocessor = XLSTMCausalLMPreprocessor(
    ...     XLSTMByteTokenizer(), sequence_length=6)
    >>> x, y, weight = preprocessor(["abc"])
    >>> np.asarray(x["token_ids"]).tolist(), np.asarray(y).tolist()
    ([[2, 97, 98, 99, 3, 0]], [[97, 98, 99, 3, 0, 0]])

    References:
        - KerasHub's `CausalLMPreprocessor`, which this class specialises.
    """

    backbone_cls = XLSTMBackbone
    tokenizer_cls = XLSTMTokenizer
