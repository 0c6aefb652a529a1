"""GPU readiness of the `keras.ops` path, checked on a CPU: nothing makes
a tensor on the host or reads a value back to it inside a step (on a GPU,
either would copy or stall).

- PyTorch, with `KERAS_TORCH_DEVICE=meta`: every tensor Keras makes lives
  on PyTorch's shape-only device, so making one on the CPU or reading a
  value fails. Every layer, block, stack and the backbone run forward
  there. (Backward cannot: Keras's meta mode turns each tensor it converts
  into a fresh `torch.empty_like`, so no gradient survives, Keras's own
  `Dense` included.) In a fresh process: Keras fixes its device at import.
- JAX, under `jax.transfer_guard("disallow")`: a jitted training step
  (forward and backward) of models holding every layer and block, and
  KerasHub's compiled generation function of `XLSTMCausalLM`, on inputs
  already on the device.
"""

import keras
import numpy as np
import pytest
from keras import ops
from utils import KERAS_VERSION
from utils import import_keras_hub
from utils import run_under_backend

import keras_mlstm

BACKEND = keras.backend.backend()

META = r"""
import os
import sys

os.environ["KERAS_TORCH_DEVICE"] = "meta"
import keras

import keras_mlstm

x = keras.random.normal((2, 20, 32))
assert str(x.device) == "meta", x.device
layers = {
    "MLSTM": keras_mlstm.MLSTM(32, return_sequences=True, num_heads=2),
    "MLSTM, masked": keras_mlstm.MLSTM(32, num_heads=2),
    "MLSTMBlock": keras_mlstm.MLSTMBlock(num_heads=2),
    "MLSTMLargeBlock": keras_mlstm.MLSTMLargeBlock(num_heads=2),
    "MLSTMStack": keras_mlstm.MLSTMStack(2, num_heads=2),
    "MLSTMStack, large": keras_mlstm.MLSTMStack(
        2, num_heads=2, block_variant="large"
    ),
}
mask = keras.ops.arange(20)[None] < keras.ops.convert_to_tensor([[15], [20]])
done = []
for name, layer in layers.items():
    y = layer(x, mask=mask) if "masked" in name else layer(x)
    assert str(y.device) == "meta", (name, y.device)
    done.append(name)
if sys.argv[1] == "hub":
    from keras_mlstm.models.xlstm import XLSTMBackbone
    from keras_mlstm.models.xlstm import XLSTMCausalLM

    for variant in ("large", "mlstm"):
        backbone = XLSTMBackbone(
            vocabulary_size=20,
            num_layers=2,
            hidden_dim=32,
            num_heads=2,
            block_variant=variant,
        )
        lm = XLSTMCausalLM(backbone)
        ids = keras.ops.ones((2, 7), "int32")
        logits = lm({"token_ids": ids, "padding_mask": ids})
        assert str(logits.device) == "meta", logits.device
        cache = backbone.mlstm_stack.get_initial_state(2)
        logits, _, cache = lm.call_with_cache(ids[:, :1], cache)
        assert str(logits.device) == "meta", logits.device
        done.append(f"XLSTMCausalLM, {variant}")
print(done)
"""


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's meta device")
@pytest.mark.skipif(
    KERAS_VERSION < (3, 14),
    reason="Keras reads KERAS_TORCH_DEVICE since 3.14 (older ones put every "
    "tensor on the CPU here)",
)
def test_every_layer_runs_forward_on_the_meta_device():
    try:
        import keras_hub  # noqa: F401

        which = "hub"
    except ImportError:
        which = "core"
    out = run_under_backend("torch", META, which).stdout
    assert "MLSTMStack, large" in out
    if which == "hub":
        assert "XLSTMCausalLM, mlstm" in out


def device_put(tree):
    import jax

    return jax.tree_util.tree_map(jax.device_put, tree)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's transfer guard")
@pytest.mark.parametrize(
    "make",
    [
        lambda: keras_mlstm.MLSTM(16, num_heads=2, return_sequences=True),
        lambda: keras_mlstm.MLSTMStack(2, num_heads=2),
        lambda: keras_mlstm.MLSTMStack(2, num_heads=2, block_variant="large"),
    ],
    ids=["MLSTM", "MLSTMStack", "MLSTMStack-large"],
)
def test_a_jitted_training_step_transfers_nothing(make):
    import jax

    model = keras.Sequential(
        [keras.Input((None, 32)), make(), keras.layers.Dense(1)]
    )
    rng = np.random.default_rng(0)
    x = device_put(rng.normal(size=(2, 20, 32)).astype("float32"))
    y = device_put(np.ones((2, 20, 1), "float32"))
    mask = device_put(np.arange(20)[None] < np.array([[15], [20]]))
    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def step(trainable, fixed, x, y, mask):
        def loss(trainable):
            predicted, _ = model.stateless_call(trainable, fixed, x)
            weight = ops.cast(mask, "float32")[..., None]
            return ops.sum(weight * (predicted - y) ** 2)

        return jax.value_and_grad(loss)(trainable)

    step(trainable, fixed, x, y, mask)  # compiles
    with jax.transfer_guard("disallow"):
        value, grads = step(trainable, fixed, x, y, mask)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's transfer guard")
@pytest.mark.parametrize("variant", ["large", "mlstm"])
def test_the_compiled_generation_transfers_nothing(variant):
    """KerasHub's compiled generation function (its `generate` adds the
    host-side work around it: `check_prompts` reads the prompts once, and
    the results come back)."""
    import jax

    keras_hub = import_keras_hub()
    from keras_mlstm.models.xlstm import XLSTMBackbone
    from keras_mlstm.models.xlstm import XLSTMCausalLM

    lm = XLSTMCausalLM(
        XLSTMBackbone(
            vocabulary_size=20,
            num_layers=2,
            hidden_dim=32,
            num_heads=2,
            block_variant=variant,
        )
    )
    lm.compile(sampler="greedy")
    compiled = keras_hub.models.CausalLM.make_generate_function(lm)
    token_ids = np.zeros((2, 10), "int32")
    token_ids[0, :3], token_ids[1, :5] = [1, 2, 3], [4, 5, 6, 7, 8]
    inputs = device_put({"token_ids": token_ids, "padding_mask": token_ids > 0})
    expected = compiled(inputs, stop_token_ids=None)  # compiles
    with jax.transfer_guard("disallow"):
        out = compiled(inputs, stop_token_ids=None)
    np.testing.assert_array_equal(
        np.asarray(out["token_ids"]), np.asarray(expected["token_ids"])
    )


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is the backend")
def test_tensorflow_beside_another_backend_grows_its_gpu_memory_on_demand():
    """The hub models import TensorFlow (through `keras_hub`) under JAX and
    PyTorch; Keras sets `TF_FORCE_GPU_ALLOW_GROWTH` there, so TensorFlow
    takes GPU memory as it needs it rather than all of it at start-up."""
    import os
    import sys

    import_keras_hub()
    from keras_mlstm.models import xlstm  # noqa: F401

    assert "tensorflow" in sys.modules
    assert os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH") == "true"
