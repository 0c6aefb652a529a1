"""`XLSTMCausalLM`: the xLSTM backbone with its output head, trained with
`fit` and sampled with KerasHub's `generate` and samplers."""

import keras
import numpy as np
from keras import ops
from keras_hub.models import CausalLM

from keras_mlstm.models.xlstm.convert_xlstm import backbone_kwargs_from_xlstm
from keras_mlstm.models.xlstm.convert_xlstm import load_language_model_weights
from keras_mlstm.models.xlstm.xlstm_backbone import XLSTMBackbone
from keras_mlstm.models.xlstm.xlstm_backbone import check_host_tokens
from keras_mlstm.models.xlstm.xlstm_backbone import check_token_inputs
from keras_mlstm.models.xlstm.xlstm_backbone import check_token_range
from keras_mlstm.models.xlstm.xlstm_causal_lm_preprocessor import (
    XLSTMCausalLMPreprocessor,
)
from keras_mlstm.models.xlstm.xlstm_presets import PresetLoading

# Fills the positions the sampler has yet to write: no token has this id,
# so KerasHub's samplers, which stop a row at the first stop token they
# find after the prompt, never take the padding for generated text.
UNWRITTEN = -1


def any_equal(token_ids, stop_token_ids, where):
    """Bool `(batch, length)`: where `where` is true and the id is one of
    `stop_token_ids` (a tuple of ints)."""
    found = ops.zeros_like(where, dtype="bool")
    for stop in stop_token_ids:
        found = ops.logical_or(found, ops.equal(token_ids, stop))
    return ops.logical_and(found, where)


def check_max_length(max_length):
    """Raise ValueError unless `max_length` is None or an int >= 1."""
    if max_length is None:
        return
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, (int, np.integer))
        or max_length < 1
    ):
        raise ValueError(
            "`max_length` must be None or an int >= 1 (the length of the "
            f"generated sequences, prompt included); received {max_length!r}."
        )


def check_prompts(inputs, vocabulary_size):
    """Raise ValueError unless `inputs` are prompts that `generate` can
    continue: `check_token_inputs`'s structure, shapes and dtypes, at least
    one prompt, each right-padded (its tokens, then the positions to
    generate) and of at least one token, and every prompt token in
    `[0, vocabulary_size)` (what the padding holds is never read).

    Reads the values on the host, once per `generate` call, before the
    compiled generation function runs.
    """
    check_token_inputs(inputs)
    token_ids = ops.convert_to_numpy(inputs["token_ids"])
    mask = ops.convert_to_numpy(inputs["padding_mask"]).astype(bool)
    if token_ids.shape[0] == 0 or token_ids.shape[1] == 0:
        raise ValueError(
            "`token_ids` must hold at least one prompt of at least one "
            f"position; received shape {token_ids.shape}."
        )
    left_padded = np.flatnonzero((mask[:, 1:] & ~mask[:, :-1]).any(axis=1))
    if left_padded.size:
        raise ValueError(
            "`padding_mask` must be right-padded: in each row the prompt's "
            "1s, then the 0s of the positions to generate; rows "
            f"{left_padded.tolist()} have a 1 after a 0."
        )
    empty = np.flatnonzero(~mask[:, 0])
    if empty.size:
        raise ValueError(
            "Every prompt needs at least one token: `padding_mask` is all 0 "
            f"in rows {empty.tolist()}."
        )
    check_token_range(token_ids, vocabulary_size, where=mask)


@keras.saving.register_keras_serializable(package="keras_mlstm")
class XLSTMCausalLM(PresetLoading, CausalLM):
    """An xLSTM language model: predicts each next token from the previous
    ones.

    Train it on text with `fit()` (the preprocessor makes the shifted
    targets and the padding mask); continue prompts with `generate()`,
    whose sampling is set by `compile(sampler=...)` (any
    `keras_hub.samplers` sampler: greedy, top-k, top-p, random, beam,
    contrastive).

    Generation keeps the recurrent state of every block as the cache
    (`[C, n, m]` per `"large"` block, `[C, n, m, conv window]` per
    `"mlstm"` block; a few MB whatever the context), so each new token
    costs one recurrent step. The prompt is processed at once by the
    chunkwise form. `generate` is compiled once per model and input shape
    on JAX and TensorFlow (KerasHub's `make_generate_function`), with the
    weights passed as variables.

    Args:
        backbone: an `XLSTMBackbone`.
        preprocessor: an `XLSTMCausalLMPreprocessor`, or `None` for a model
            that takes token ids (then `generate` takes
            `{"token_ids", "padding_mask"}` and returns ids). Defaults to
            `None`.
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Call arguments:
        inputs: a dict with `"token_ids"` and `"padding_mask"`, int
            `(batch, length)`; padded steps (mask 0) leave the state alone.

    Returns:
        The logits, `(batch, length, vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> backbone = XLSTMBackbone(vocabulary_size=50, num_layers=1,
    ...                          hidden_dim=32, num_heads=2)
    >>> lm = XLSTMCausalLM(backbone)
    >>> lm.compile(sampler="greedy")
    >>> prompt = {"token_ids": np.array([[3, 4, 5, 0, 0, 0]]),
    ...           "padding_mask": np.array([[1, 1, 1, 0, 0, 0]])}
    >>> lm.generate(prompt, stop_token_ids=None)["token_ids"].shape
    (1, 6)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517.
    """

    backbone_cls = XLSTMBackbone
    preprocessor_cls = XLSTMCausalLMPreprocessor

    def __init__(self, backbone, preprocessor=None, **kwargs):
        if not isinstance(backbone, XLSTMBackbone):
            raise ValueError(
                "`backbone` must be an XLSTMBackbone; received "
                f"{type(backbone).__name__}."
            )
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor

        # === Functional model ===
        inputs = backbone.input
        hidden = backbone(inputs)
        outputs = backbone.token_embedding(hidden, reverse=True)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    @classmethod
    def from_xlstm(cls, module, preprocessor=None):
        """An `XLSTMCausalLM` computing what an official PyTorch `xlstm`
        language model computes, with its weights.

        Args:
            module: an `xLSTMLMModel` of mLSTM blocks (`"mlstm"` blocks) or
                an xLSTM 7B `xLSTMLarge` (`"large"` blocks).
            preprocessor: an `XLSTMCausalLMPreprocessor` or `None`.
                Defaults to `None`.

        Returns:
            An `XLSTMCausalLM`.

        Raises:
            ValueError: for other modules or unsupported configurations
                (sLSTM blocks, fused 7B weights, biased `xLSTMLMModel`s).
        """
        kwargs, embedding_key, prefix = backbone_kwargs_from_xlstm(module)
        backbone = cls.backbone_cls(**kwargs)
        load_language_model_weights(
            backbone, module.state_dict(), embedding_key, prefix
        )
        return cls(backbone, preprocessor)

    def __call__(self, inputs, *args, **kwargs):
        check_host_tokens(inputs, self.backbone.vocabulary_size)
        return super().__call__(inputs, *args, **kwargs)

    def generate(
        self,
        inputs,
        max_length=None,
        stop_token_ids="auto",
        strip_prompt=False,
    ):
        """Continue prompts; see `keras_hub.models.CausalLM.generate`.

        The prompts are checked before anything is compiled or run: a
        `ValueError` names a malformed `max_length`, and (once tokenized)
        prompts that are empty, not 2-D, a batch of none, of a float dtype,
        left-padded or holding ids outside the vocabulary.
        """
        check_max_length(max_length)
        return super().generate(
            inputs,
            max_length=max_length,
            stop_token_ids=stop_token_ids,
            strip_prompt=strip_prompt,
        )

    def make_generate_function(self):
        """KerasHub's generation function (compiled once per input shape on
        JAX and TensorFlow), behind `check_prompts`."""
        if self.generate_function is not None:
            return self.generate_function
        compiled = super().make_generate_function()
        vocabulary_size = self.backbone.vocabulary_size

        def checked(inputs, stop_token_ids=None):
            check_prompts(inputs, vocabulary_size)
            return compiled(inputs, stop_token_ids=stop_token_ids)

        self.generate_function = checked
        return checked

    def call_with_cache(self, token_ids, cache, padding_mask=None):
        """Run `token_ids` from the state `cache`.

        Args:
            token_ids: int `(batch, length)`.
            cache: one state per block, as
                `backbone.mlstm_stack.get_initial_state(batch)`.
            padding_mask: `None` or bool `(batch, length)`; masked steps
                leave the state unchanged.

        Returns:
            `(logits, hidden_states, cache)`: `(batch, length, vocab)`,
            `(batch, length, hidden_dim)` and the state after the last
            unmasked step.
        """
        x = self.backbone.token_embedding(token_ids)
        hidden, cache = self.backbone.mlstm_stack(
            x,
            initial_state=cache,
            padding_mask=padding_mask,
            return_state=True,
        )
        logits = self.backbone.token_embedding(hidden, reverse=True)
        return logits, hidden, cache

    def _build_cache(self, token_ids, index):
        """The state after the prompt tokens before `index - 1` (the first
        token the sampler feeds), and the prompt's hidden states."""
        batch, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        cache = self.backbone.mlstm_stack.get_initial_state(batch)
        steps = ops.arange(length, dtype="int32")[None, :]  # (1, T)
        prefill = ops.broadcast_to(steps < index - 1, (batch, length))
        _, hidden, cache = self.call_with_cache(token_ids, cache, prefill)
        return hidden, cache

    def generate_step(self, inputs, stop_token_ids=None):
        """Generate for one batch of `{"token_ids", "padding_mask"}` (the
        prompt, right-padded to the generation length); compilable.

        Args:
            inputs: dict of int `(batch, max_length)` tensors.
            stop_token_ids: `None` or a tuple of ids that end a sequence.

        Returns:
            The dict with the generated ids filled in and the padding mask
            of the generated text.
        """
        padding = inputs["token_ids"]
        padding_mask = ops.cast(inputs["padding_mask"], "bool")
        # The positions the sampler has yet to write hold UNWRITTEN, so that
        # it cannot take what the padding holds for a generated stop token
        # (nor feed it to the model: the prefill reads the prompts alone).
        token_ids = ops.where(padding_mask, padding, UNWRITTEN)
        prompt_lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        # Sampling starts after the shortest prompt; the longer prompts'
        # tokens are fed one step at a time (the sampler keeps them).
        index = ops.min(prompt_lengths)
        hidden_states, cache = self._build_cache(
            ops.maximum(token_ids, 0), index
        )

        def next(prompt, cache, index):
            batch = ops.shape(prompt)[0]
            token = ops.slice(prompt, [0, index - 1], [batch, 1])
            logits, hidden, cache = self.call_with_cache(token, cache)
            return logits[:, 0], hidden[:, 0], cache

        token_ids = self.sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        if stop_token_ids is None:
            padding_mask = ops.ones_like(token_ids, dtype="bool")
        else:
            # Keep what precedes the first generated stop token (included).
            generated = ops.logical_not(padding_mask)
            stops = ops.cast(
                any_equal(token_ids, stop_token_ids, generated), "int32"
            )
            after_stop = ops.cumsum(stops, axis=-1) - stops
            padding_mask = ops.equal(after_stop, 0)
        # After a row's stop, the input's padding again (the sampler leaves
        # the positions past the last row's stop unwritten).
        token_ids = ops.where(padding_mask, token_ids, padding)
        return {"token_ids": token_ids, "padding_mask": padding_mask}
