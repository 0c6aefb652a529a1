"""`XLSTMTokenizer`: the byte-level BPE tokenizer of the xLSTM 7B
checkpoints (GPT-NeoX's), built from a Hugging Face `tokenizer.json`."""

import keras
from keras_hub.tokenizers import BytePairTokenizer
from tokenizers import pre_tokenizers

from keras_mlstm.models.xlstm.convert_xlstm import read_tokenizer_json
from keras_mlstm.models.xlstm.xlstm_presets import PresetLoading


@keras.saving.register_keras_serializable(package="keras_mlstm")
class XLSTMTokenizer(PresetLoading, BytePairTokenizer):
    """A byte-level BPE tokenizer (GPT-2's algorithm and pre-tokenizer, as
    GPT-NeoX and the xLSTM 7B use) with named start, end and padding
    tokens. Runs on KerasHub's `BytePairTokenizer` (and so Hugging Face
    `tokenizers`), with GPT-2's word-splitting pattern instead of KerasHub's
    Llama 3 one.

    Args:
        vocabulary: dict from token to id, or the path of a JSON file of
            one. Defaults to `None` (set later, e.g. by `from_preset`).
        merges: list of merge rules (`"a b"`), or the path of a merges
            file. Defaults to `None`.
        start_token: the token prepended to sequences. Defaults to
            `"<|endoftext|>"`.
        end_token: the token that ends sequences and generation. Defaults
            to `"<|endoftext|>"`.
        pad_token: the padding token. Defaults to `"<|padding|>"`.
        **kwargs: `keras_hub.tokenizers.BytePairTokenizer` arguments.

    Example:

    >>> vocabulary = {"<|endoftext|>": 0, "<|padding|>": 1, "a": 2,
    ...               "b": 3, "ab": 4}
    >>> import numpy as np
    >>> tokenizer = XLSTMTokenizer(vocabulary, ["a b"])
    >>> np.asarray(tokenizer("abab")).tolist()
    [4, 4]

    References:
        - Sennrich et al., "Neural Machine Translation of Rare Words with
          Subword Units", 2016, arXiv:1508.07909.
        - Black et al., "GPT-NeoX-20B", 2022, arXiv:2204.06745 (the
          tokenizer of the xLSTM 7B).
    """

    def __init__(
        self,
        vocabulary=None,
        merges=None,
        start_token="<|endoftext|>",
        end_token="<|endoftext|>",
        pad_token="<|padding|>",
        **kwargs,
    ):
        self.start_token = start_token
        self.end_token = end_token
        self.pad_token = pad_token
        self._add_special_token(start_token, "start_token")
        self._add_special_token(end_token, "end_token")
        self._add_special_token(pad_token, "pad_token")
        kwargs.setdefault(
            "unsplittable_tokens", sorted({start_token, end_token, pad_token})
        )
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)

    def _set_vocabulary_and_merges_tokenizers(self, vocabulary, merges):
        # KerasHub's BPE splits words with Llama 3's pattern (digits in
        # threes, whitespace runs kept whole); GPT-2, GPT-NeoX and the xLSTM
        # 7B split with GPT-2's ByteLevel pattern. Measured on the test
        # tokenizer: "  spaces" and "12345" tokenize differently otherwise.
        super()._set_vocabulary_and_merges_tokenizers(vocabulary, merges)
        self._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
            add_prefix_space=self.add_prefix_space, use_regex=True
        )

    @classmethod
    def from_tokenizer_json(cls, path, **kwargs):
        """A tokenizer from a Hugging Face `tokenizer.json` of a byte-level
        BPE model (its vocabulary, merges and added tokens).

        Args:
            path: the file's path.
            **kwargs: constructor arguments (e.g. `start_token`).

        Returns:
            An `XLSTMTokenizer`.

        Raises:
            ValueError: for a tokenizer that is not byte-level BPE.
        """
        vocabulary, merges = read_tokenizer_json(path)
        return cls(vocabulary=vocabulary, merges=merges, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "start_token": self.start_token,
                "end_token": self.end_token,
                "pad_token": self.pad_token,
            }
        )
        return config
