"""Training under ``keras.distribution`` on JAX, with two virtual CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, set in a
subprocess because JAX fixes its devices at start-up): ``DataParallel`` and
``ModelParallel`` (``XLSTMBackbone.get_layout_map``: the blocks'
projections, the embedding and the output projection split over a "model"
axis) give the losses of single-device training, and the map really
shards those weights.

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
from utils import import_keras_hub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json
import sys

import keras
import numpy as np

from keras_mlstm.models.xlstm import XLSTMBackbone
from keras_mlstm.models.xlstm import XLSTMCausalLM


def train(distribution):
    if distribution is not None:
        keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    backbone = XLSTMBackbone(
        vocabulary_size=16,
        num_layers=2,
        hidden_dim=64,
        num_heads=2,
        chunk_size=8,
        block_variant=sys.argv[1],
        seed=0,
    )
    model = XLSTMCausalLM(backbone)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 16, size=(8, 25)).astype("int32")
    inputs = {"token_ids": tokens[:, :-1], "padding_mask": tokens[:, :-1] >= 0}
    history = model.fit(
        inputs, tokens[:, 1:], batch_size=8, epochs=4, verbose=0
    )
    keras.distribution.set_distribution(None)
    sharded = {
        v.path: list(getattr(v.value.sharding, "spec", None) or [])
        for v in model.weights
    }
    return history.history["loss"], sharded


devices = keras.distribution.list_devices()
assert len(devices) == 2, devices
single, _ = train(None)
data, _ = train(keras.distribution.DataParallel(devices=devices))
mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
model, sharded = train(
    keras.distribution.ModelParallel(
        layout_map=XLSTMBackbone.get_layout_map(mesh), batch_dim_name="batch"
    )
)
print(json.dumps({"single": single, "data": data, "model": model,
                  "sharded": sharded}))
"""

# (the projections the layout map splits by columns, by rows), per variant
SPLIT = {
    "mlstm": (("up",), ("down",)),
    "large": (
        ("q", "k", "v", "output_gate", "ffn_gate", "ffn_up"),
        ("out", "ffn_down"),
    ),
}


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
    import_keras_hub()
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
    # `XLSTMBackbone.get_layout_map` took effect: every projection of every
    # block is split over "model", by columns or rows, and so are the
    # embedding table (by vocabulary) and the separate output projection.
    specs = losses["sharded"]
    columns, rows = SPLIT[variant]
    for block in (0, 1):
        for names, spec in ((columns, ["batch", "model"]), (rows, ["model"])):
            for name in names:
                path = f"mlstm_stack/block_{block}/{name}/kernel"
                assert specs[path][: len(spec)] == spec, (path, specs[path])
    assert specs["token_embedding/embeddings"][0] == "model", specs
    assert specs["token_embedding/reverse_embeddings"][1] == "model", specs
    replicated = [p for p, spec in specs.items() if "model" not in spec]
    assert any("gate_bias" in p for p in replicated), replicated
