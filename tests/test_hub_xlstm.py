"""Official PyTorch `xlstm` language models into `XLSTMCausalLM`
(`XLSTMCausalLM.from_xlstm`): a randomly initialised, perturbed
`xLSTMLMModel` of mLSTM blocks (tied and separate head) and an xLSTM 7B
`xLSTMLarge` give the official logits within 1e-4 of the largest (float32,
as tests/test_convert.py), and greedy generation equals the official
model's greedy continuation (its full forward rerun for every token).
"""

import numpy as np
import pytest
from test_convert import T
from test_convert import large_config
from test_convert import perturbed
from test_convert import stack_config
from utils import import_keras_hub
from utils import relative_error
from utils import to_numpy

import_keras_hub()
torch = pytest.importorskip("torch")
pytest.importorskip("xlstm")

from xlstm.xlstm_lm_model import xLSTMLMModel  # noqa: E402
from xlstm.xlstm_lm_model import xLSTMLMModelConfig  # noqa: E402

from keras_mlstm.models.xlstm import XLSTMCausalLM  # noqa: E402

pytestmark = pytest.mark.slow_on("jax")


def official_logits(official, tokens):
    with torch.no_grad():
        out = official(torch.from_numpy(tokens))
    return (out[0] if isinstance(out, tuple) else out).numpy()


def official_greedy(official, prompt, total, pad_to=None):
    """Greedy continuation by the official model, rerun on the prefix
    (right-padded to `pad_to` for the xLSTM 7B's chunked kernels)."""
    tokens = prompt.copy()
    while tokens.shape[1] < total:
        width = tokens.shape[1] if pad_to is None else pad_to
        padded = np.zeros((len(tokens), width), tokens.dtype)
        padded[:, : tokens.shape[1]] = tokens
        logits = official_logits(official, padded)[:, tokens.shape[1] - 1]
        tokens = np.concatenate([tokens, logits.argmax(-1)[:, None]], 1)
    return tokens


def our_greedy(lm, prompt, total):
    lm.compile(sampler="greedy")
    token_ids = np.zeros((len(prompt), total), "int32")
    token_ids[:, : prompt.shape[1]] = prompt
    mask = np.zeros_like(token_ids)
    mask[:, : prompt.shape[1]] = 1
    inputs = {"token_ids": token_ids, "padding_mask": mask}
    return to_numpy(lm.generate(inputs, stop_token_ids=None)["token_ids"])


def logits_of(lm, tokens):
    mask = np.ones_like(tokens)
    return to_numpy(lm({"token_ids": tokens, "padding_mask": mask}))


@pytest.mark.parametrize("tie", [False, True])
def test_xlstm_lm_model(tie):
    official = perturbed(
        xLSTMLMModel(
            stack_config(xLSTMLMModelConfig, vocab_size=37, tie_weights=tie)
        )
    )
    lm = XLSTMCausalLM.from_xlstm(official)
    assert lm.backbone.block_variant == "mlstm"
    assert lm.backbone.tie_word_embeddings == tie
    tokens = np.random.default_rng(2).integers(0, 37, size=(2, T))
    expected = official_logits(official, tokens)
    assert relative_error(logits_of(lm, tokens), expected) < 1e-4
    np.testing.assert_array_equal(
        our_greedy(lm, tokens[:, :6], 14),
        official_greedy(official, tokens[:, :6], 14),
    )


def test_xlstm_7b_large():
    from xlstm.xlstm_large.model import xLSTMLarge

    official = perturbed(xLSTMLarge(large_config()))
    lm = XLSTMCausalLM.from_xlstm(official)
    assert lm.backbone.block_variant == "large"
    assert lm.backbone.logit_soft_cap == official.config.output_logit_soft_cap
    tokens = np.random.default_rng(5).integers(0, 41, size=(2, 32))
    expected = official_logits(official, tokens)
    assert relative_error(logits_of(lm, tokens), expected) < 1e-4
    # The official kernels take multiples of their chunk (16): the prefix
    # is right-padded to 32, which causality leaves without effect.
    np.testing.assert_array_equal(
        our_greedy(lm, tokens[:, :16], 24),
        official_greedy(official, tokens[:, :16], 24, pad_to=32),
    )


def test_unsupported_modules_raise():
    from xlstm.xlstm_large.model import xLSTMLarge

    with pytest.raises(ValueError, match="xLSTMLMModel or xLSTMLarge"):
        XLSTMCausalLM.from_xlstm(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="weight_mode"):
        XLSTMCausalLM.from_xlstm(xLSTMLarge(large_config(weight_mode="fused")))
    biased = xLSTMLMModel(
        stack_config(xLSTMLMModelConfig, vocab_size=9, bias=True)
    )
    with pytest.raises(ValueError, match="bias"):
        XLSTMCausalLM.from_xlstm(biased)
