"""Text generation with a language model from ``build_mlstm_model``: a
chunkwise prefill of the prompt, then one O(1)-state step per token."""

import keras
import numpy as np
from keras import ops

from keras_mlstm.models.builder import language_model_parts
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.common import positive_number
from keras_mlstm.ops.compat import compile_function


@keras.saving.register_keras_serializable(package="keras_mlstm")
def generate(
    model,
    prompt_tokens,
    max_new_tokens,
    temperature=1.0,
    top_k=None,
    seed=None,
    return_logits=False,
):
    """Continue ``prompt_tokens`` with a language model.

    The prompt is processed at once (chunkwise form), then each new token
    costs one recurrent step of every block, with the state carried (O(1)
    memory and time per token whatever the context length). The step is
    compiled on JAX (``jax.jit``) and TensorFlow (XLA).

    Args:
        model: a model from ``build_mlstm_model("language_model", ...)``.
        prompt_tokens: int array ``(B, T0)``, T0 >= 1.
        max_new_tokens: number of tokens to append (>= 0).
        temperature: > 0 samples from ``softmax(logits / temperature)``;
            0 picks the most likely token (greedy).
        top_k: None, or sample among the ``top_k`` most likely tokens.
        seed: int seed of the sampling.
        return_logits: also return the logits each new token was drawn
            from.

    Returns:
        int32 NumPy array ``(B, T0 + max_new_tokens)``, and with
        ``return_logits`` the float32 ``(B, max_new_tokens, vocab_size)``
        logits.

    Raises:
        ValueError: for a model that is not such a language model, or a
            malformed prompt or argument.

    Example:

    >>> import numpy as np
    >>> from keras_mlstm import build_mlstm_model
    >>> model = build_mlstm_model(
    ...     "language_model", vocab_size=20, embedding_dim=32, num_blocks=1
    ... )
    >>> generate(model, np.array([[1, 2, 3]]), 4, temperature=0).shape
    (1, 7)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517, section 2.3 (recurrent form).
    """
    embedding, stack, head, cap = language_model_parts(model)
    prompt = np.asarray(prompt_tokens)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(
            "`prompt_tokens` must be an int array of shape (batch, length) "
            f"with length >= 1; received shape {prompt.shape}."
        )
    if not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(
            "`prompt_tokens` must hold int token ids; received dtype "
            f"{prompt.dtype}."
        )
    vocab = embedding.input_dim
    if prompt.size and (prompt.min() < 0 or prompt.max() >= vocab):
        raise ValueError(
            f"`prompt_tokens` must be ids in [0, {vocab}); received values "
            f"in [{prompt.min()}, {prompt.max()}]."
        )
    max_new_tokens = positive_int("max_new_tokens", max_new_tokens, 0)
    temperature = positive_number("temperature", temperature, allow_zero=True)
    if top_k is not None and positive_int("top_k", top_k) > vocab:
        raise ValueError(
            f"`top_k` must be None or an int in [1, {vocab}]; received "
            f"{top_k!r}."
        )
    if not len(prompt):  # an empty batch: nothing to generate from
        tokens = np.zeros((0, prompt.shape[1] + max_new_tokens), "int32")
        if return_logits:
            return tokens, np.zeros((0, max_new_tokens, vocab), "float32")
        return tokens

    def logits_of(hidden):
        logits = (
            embedding(hidden, reverse=True) if head is None else head(hidden)
        )
        return logits if cap is None else cap(logits)

    def run(tokens, states):
        hidden, states = stack(
            embedding(tokens), initial_state=states, return_state=True
        )
        return ops.cast(logits_of(hidden[:, -1]), "float32"), states

    step = compile_function(run)
    generator = keras.random.SeedGenerator(seed)
    prompt = prompt.astype("int32")
    logits, states = run(
        ops.convert_to_tensor(prompt), stack.get_initial_state(len(prompt))
    )
    new_tokens, all_logits = [], []
    for index in range(max_new_tokens):
        if index:
            token = ops.convert_to_tensor(new_tokens[-1][:, None])
            logits, states = step(token, states)
        all_logits.append(ops.convert_to_numpy(logits))
        new_tokens.append(
            _sample(logits, temperature, top_k, generator).astype("int32")
        )
    tokens = np.concatenate([prompt, *[t[:, None] for t in new_tokens]], 1)
    if return_logits:
        shape = (len(prompt), 0, vocab)
        stacked = (
            np.stack(all_logits, 1) if all_logits else np.zeros(shape, "f4")
        )
        return tokens, stacked
    return tokens


def _sample(logits, temperature, top_k, generator):
    """Token ids ``(B,)`` drawn from float32 ``logits (B, V)``."""
    if temperature == 0:
        return ops.convert_to_numpy(ops.argmax(logits, axis=-1))
    logits = logits / temperature
    if top_k is not None:
        threshold = ops.top_k(logits, top_k)[0][:, -1:]
        logits = ops.where(logits < threshold, -1e30, logits)
    drawn = keras.random.categorical(logits, 1, seed=generator)
    return ops.convert_to_numpy(drawn)[:, 0]
