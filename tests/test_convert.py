"""Weight import from the official PyTorch ``xlstm`` package (installed by
the test requirements, with the pinned CPU torch): randomly initialised
official mLSTMBlock, xLSTMBlockStack and the xLSTM 7B block and stack give
the same outputs in Keras, on every backend, in one pass and step by step
(language models: tests/test_hub_xlstm.py).

Tolerance: 1e-4 of the largest output (float32, issue #5); measured
<= 3.5e-6.
"""

import keras
import numpy as np
import pytest
from utils import relative_error
from utils import to_numpy

import keras_mlstm
from keras_mlstm import MLSTMBlock
from keras_mlstm import MLSTMStack
from keras_mlstm import from_xlstm
from keras_mlstm import load_xlstm_weights
from keras_mlstm import xlstm_state_dict

pytestmark = pytest.mark.slow_on("jax")

torch = pytest.importorskip("torch")
xlstm = pytest.importorskip("xlstm")

from xlstm.blocks.mlstm.block import mLSTMBlock  # noqa: E402
from xlstm.blocks.mlstm.block import mLSTMBlockConfig  # noqa: E402
from xlstm.blocks.mlstm.layer import mLSTMLayerConfig  # noqa: E402
from xlstm.xlstm_block_stack import xLSTMBlockStack  # noqa: E402
from xlstm.xlstm_block_stack import xLSTMBlockStackConfig  # noqa: E402
from xlstm.xlstm_lm_model import xLSTMLMModel  # noqa: E402
from xlstm.xlstm_lm_model import xLSTMLMModelConfig  # noqa: E402

T = 20


def perturbed(module, seed=0, scale=0.1):
    """Move every official parameter off its initial value (several are
    initialised to zeros or ones, which would hide a mix-up)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return module.eval()


def layer_config(**kwargs):
    return mLSTMLayerConfig(**{"num_heads": 2, **kwargs})


def stack_config(cls=xLSTMBlockStackConfig, **kwargs):
    args = {
        "mlstm_block": mLSTMBlockConfig(mlstm=layer_config()),
        "embedding_dim": 32,
        "context_length": T,
        "num_blocks": 2,
    }
    args.update(kwargs)
    return cls(**args)


def official_outputs(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"bias": True, "proj_factor": 1.5, "conv1d_kernel_size": 2}],
    ids=["default", "bias"],
)
def test_block(kwargs):
    config = mLSTMBlockConfig(
        mlstm=layer_config(embedding_dim=48, context_length=T, **kwargs),
        _num_blocks=1,
    )
    config.__post_init__()
    official = perturbed(mLSTMBlock(config))
    block = from_xlstm(official)
    assert isinstance(block, MLSTMBlock)
    x = np.random.default_rng(0).normal(size=(2, T, 48)).astype("float32")
    expected = official_outputs(official, x)
    assert relative_error(to_numpy(block(x)), expected) < 1e-4


def test_stack_in_one_pass_and_step_by_step():
    official = perturbed(xLSTMBlockStack(stack_config()))
    stack = from_xlstm(official)
    assert isinstance(stack, MLSTMStack) and stack.num_layers == 2
    x = np.random.default_rng(1).normal(size=(2, T, 32)).astype("float32")
    expected = official_outputs(official, x)
    assert relative_error(to_numpy(stack(x)), expected) < 1e-4
    # Step by step, ours against the official step().
    state, ours, theirs, official_state = None, [], [], None
    with torch.no_grad():
        for t in range(T):
            y, state = stack(
                x[:, t : t + 1], initial_state=state, return_state=True
            )
            ours.append(to_numpy(y))
            y_t, official_state = official.step(
                torch.from_numpy(x[:, t : t + 1]), state=official_state
            )
            theirs.append(y_t.numpy())
    ours, theirs = np.concatenate(ours, 1), np.concatenate(theirs, 1)
    assert relative_error(ours, theirs) < 1e-4
    assert relative_error(ours, expected) < 1e-4


def test_export_round_trips_through_the_official_module():
    """Keras -> official state dict -> official module gives our outputs."""
    stack = MLSTMStack(2, num_heads=2, seed=0)
    x = np.random.default_rng(3).normal(size=(2, T, 32)).astype("float32")
    expected = to_numpy(stack(x))
    official = xLSTMBlockStack(stack_config()).eval()
    state = {k: torch.from_numpy(v) for k, v in xlstm_state_dict(stack).items()}
    official.load_state_dict(state, strict=True)
    assert relative_error(official_outputs(official, x), expected) < 1e-4


def test_unsupported_modules_and_mismatches_raise():
    sconfig = stack_config(slstm_at=[1])
    with pytest.raises(ValueError, match="sLSTM"):
        keras_mlstm.models.convert.stack_kwargs(sconfig)
    with pytest.raises(ValueError, match="not supported"):
        from_xlstm(torch.nn.Linear(2, 2))
    language_model = xLSTMLMModel(
        stack_config(xLSTMLMModelConfig, vocab_size=9)
    )
    with pytest.raises(ValueError, match="XLSTMCausalLM.from_xlstm"):
        from_xlstm(language_model)
    official = xLSTMBlockStack(stack_config())
    stack = MLSTMStack(1, num_heads=2)
    stack.build((None, None, 32))
    with pytest.raises(ValueError, match="no counterpart"):
        load_xlstm_weights(stack, official.state_dict())
    wide = MLSTMStack(2, num_heads=2)
    wide.build((None, None, 64))
    with pytest.raises(ValueError, match="shape"):
        load_xlstm_weights(wide, official.state_dict())
    with pytest.raises(ValueError, match="target"):
        load_xlstm_weights(keras.layers.Dense(2), {})


def large_config(**kwargs):
    from xlstm.xlstm_large.model import xLSTMLargeConfig

    args = {
        "embedding_dim": 64,
        "num_heads": 2,
        "num_blocks": 2,
        "vocab_size": 41,
        # The official pure-PyTorch kernels (the default ones need Triton).
        "chunkwise_kernel": "chunkwise--native_autograd",
        "sequence_kernel": "native_sequence__native",
        "step_kernel": "native",
        "mode": "train",
        "chunk_size": 16,
        "autocast_kernel_dtype": "float32",
        # The official layer unpacks (h, state) from its backend, which
        # returns both only with this set.
        "return_last_states": True,
    }
    args.update(kwargs)
    return xLSTMLargeConfig(**args)


def test_xlstm_7b_block_and_stack_with_biases():
    from xlstm.xlstm_large.model import xLSTMLarge

    official = perturbed(xLSTMLarge(large_config(use_bias=True)))
    x = np.random.default_rng(6).normal(size=(2, 32, 64)).astype("float32")
    stack = from_xlstm(official.backbone)
    with torch.no_grad():
        expected, _ = official.backbone(torch.from_numpy(x))
    assert relative_error(to_numpy(stack(x)), expected.numpy()) < 1e-4
    block = from_xlstm(official.backbone.blocks[0])
    with torch.no_grad():
        expected, _ = official.backbone.blocks[0](torch.from_numpy(x))
    assert relative_error(to_numpy(block(x)), expected.numpy()) < 1e-4
    # And back: our export loads into the official stack.
    state = {k: torch.from_numpy(v) for k, v in xlstm_state_dict(stack).items()}
    fresh = xLSTMLarge(large_config(use_bias=True)).backbone.eval()
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        again, _ = fresh(torch.from_numpy(x))
    assert relative_error(again.numpy(), expected_stack(stack, x)) < 1e-4


def expected_stack(stack, x):
    return to_numpy(stack(x))


def test_xlstm_7b_fused_weights_raise():
    config = large_config(weight_mode="fused")
    with pytest.raises(ValueError, match="weight_mode"):
        keras_mlstm.models.convert.large_kwargs(config)
