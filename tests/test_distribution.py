"""Training under ``keras.distribution`` on JAX, with two virtual CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, set in a
subprocess because JAX fixes its devices at start-up): ``DataParallel`` and
``ModelParallel`` (a ``LayoutMap`` sharding the blocks' projections) give
the losses of single-device training.

Tolerance: 1e-4 relative on each of 4 epoch losses (float32; the sharded
programs sum the gradients in another order, and four epochs of Adam at
1e-2 amplify that: under ModelParallel, measured 7e-8, 3e-7, 1.3e-6 and
1.8e-5 on epochs 1 to 4 for the "large" stack, 9e-6 on epoch 4 for the
"mlstm" one; DataParallel within 5e-7).
"""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json
import sys

import keras
import numpy as np

import keras_mlstm


def train(distribution):
    if distribution is not None:
        keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    # Functional, so that weight paths start at the layer names the
    # LayoutMap names (a Sequential prefixes its own name).
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(16, 64, name="token_embedding")(tokens)
    x = keras_mlstm.MLSTMStack(
        2,
        num_heads=2,
        chunk_size=8,
        block_variant=sys.argv[1],
        seed=0,
        name="mlstm_stack",
    )(x)
    model = keras.Model(tokens, keras.layers.Dense(16, name="lm_head")(x))
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 16, size=(8, 25))
    history = model.fit(
        tokens[:, :-1], tokens[:, 1:], batch_size=8, epochs=4, verbose=0
    )
    keras.distribution.set_distribution(None)
    sharded = {
        v.path: str(getattr(v.value.sharding, "spec", None))
        for v in model.weights
        if "kernel" in v.path
    }
    return history.history["loss"], sharded


devices = keras.distribution.list_devices()
assert len(devices) == 2, devices
single, _ = train(None)
data, _ = train(keras.distribution.DataParallel(devices=devices))
mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
layout = keras.distribution.LayoutMap(mesh)
for name in ("up", "q", "k", "v", "output_gate", "ffn_gate", "ffn_up"):
    layout[rf"mlstm_stack/block_\d+/{name}/kernel"] = (None, "model")
for name in ("down", "out", "ffn_down"):
    layout[rf"mlstm_stack/block_\d+/{name}/kernel"] = ("model", None)
layout["token_embedding/embeddings"] = (None, "model")
model, sharded = train(
    keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")
)
print(json.dumps({"single": single, "data": data, "model": model,
                  "sharded": sharded}))
"""


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution runs on the JAX backend",
)
@pytest.mark.parametrize(
    "variant",
    [
        # examples/distributed_training.py trains this variant the same
        # ways (tests/test_examples.py), and across processes too.
        pytest.param("mlstm", marks=pytest.mark.slow_on("jax")),
        "large",
    ],
)
def test_data_and_model_parallel_match_single_device(variant):
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, variant],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    single = losses["single"]
    assert single[-1] < single[0]  # it trains
    for kind in ("data", "model"):
        for a, b in zip(losses[kind], single, strict=True):
            assert abs(a - b) <= 1e-4 * abs(b), (kind, losses)
    # The layout map took effect: the projections are split over "model".
    specs = losses["sharded"]
    kernels = [p for p in specs if "block_0" in p and "kernel" in p]
    assert any("model" in specs[p] for p in kernels), specs
