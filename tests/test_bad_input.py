"""Bad input across the public API (issue #9): one table, each case a call
that must raise a ValueError naming the offending argument (and saying what
was expected) before anything is computed.

"Before anything is computed" is checked by replacing the functions that
start a computation (the ops' `prepare`, and the `mlstm` op the layers and
blocks call) with ones that fail the test if reached. Cases whose documented
result is a value (`ACCEPTED`) are checked for that value instead.
"""

import numpy as np
import pytest
from utils import KERAS_VERSION

import keras_mlstm
from keras_mlstm import MLSTM
from keras_mlstm import MaskedPooling
from keras_mlstm import MLSTMBlock
from keras_mlstm import MLSTMCell
from keras_mlstm import MLSTMLargeBlock
from keras_mlstm import MLSTMStack
from keras_mlstm import build_mlstm_model
from keras_mlstm import load_xlstm_weights
from keras_mlstm import mLSTM
from keras_mlstm import mlstm
from keras_mlstm import mlstm_step
from keras_mlstm import resolve_chunk_size
from keras_mlstm import resolve_form
from keras_mlstm import xlstm_state_dict
from keras_mlstm.layers import block as block_module
from keras_mlstm.layers import large_block as large_block_module
from keras_mlstm.layers import mlstm as layer_module
from keras_mlstm.ops import recurrent
from keras_mlstm.ops import resolver

B, NH, T, DK = 2, 2, 5, 4


def zeros(*shape, dtype="float32"):
    return np.zeros(shape, dtype)


def sequence_args(**overrides):
    args = {
        "q": zeros(B, NH, T, DK),
        "k": zeros(B, NH, T, DK),
        "v": zeros(B, NH, T, DK),
        "input_gate": zeros(B, NH, T),
        "forget_gate": zeros(B, NH, T),
    }
    args.update(overrides)
    return args


def op(**kwargs):
    tensors = {k: kwargs.pop(k) for k in list(kwargs) if k in sequence_args()}
    return lambda: mlstm(*sequence_args(**tensors).values(), **kwargs)


def step(**kwargs):
    args = {
        "q": zeros(B, NH, DK),
        "k": zeros(B, NH, DK),
        "v": zeros(B, NH, DK),
        "input_gate": zeros(B, NH),
        "forget_gate": zeros(B, NH),
    }
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    return lambda: mlstm_step(*args.values(), **kwargs)


def built(layer, shape=(B, T, 16)):
    layer.build(shape)
    return layer


def call(make, inputs, **kwargs):
    return lambda: make()(inputs, **kwargs)


X = zeros(B, T, 16)
STATE = [zeros(B, 2, 4, 4), zeros(B, 2, 4), zeros(B, 2)]

# (argument named in the message, call)
CASES = [
    # keras_mlstm.mlstm / mlstm_step / resolve_form
    ("q", op(q=zeros(B, NH, T))),
    ("k", op(k=zeros(B, NH, T, DK + 1))),
    ("v", op(v=zeros(B + 1, NH, T, DK))),
    ("input_gate", op(input_gate=zeros(B, NH))),
    ("forget_gate", op(forget_gate=zeros(B, NH, T + 1))),
    ("q", op(q=zeros(B, NH, T, DK, dtype="int32"))),
    ("k", op(k=zeros(B, NH, T, DK, dtype="float64"))),
    ("mask", op(mask=np.ones((B, T + 1), bool))),
    ("mask", op(mask=np.ones((B, T), "float32"))),
    ("initial_state", op(initial_state=STATE[:2])),
    (
        "initial_state[C]",
        op(
            initial_state=[zeros(B, NH, DK, DK + 1)] * 1
            + [zeros(B, NH, DK), zeros(B, NH)]
        ),
    ),
    (
        "initial_state[m]",
        op(
            initial_state=[
                zeros(B, NH, DK, DK),
                zeros(B, NH, DK),
                zeros(B, NH, dtype="float16"),
            ]
        ),
    ),
    ("chunk_size", op(chunk_size=0)),
    ("chunk_size", op(chunk_size=2.0)),
    ("chunk_size", op(chunk_size="64")),
    ("fused", op(fused="yes")),
    ("fused", op(fused=1)),
    ("fused", lambda: MLSTM(4, fused="auto")),
    ("fused", lambda: MLSTMStack(1, fused=0)),
    (
        "sequence_kernel",
        lambda: keras_mlstm.config.enable_fused_kernels(sequence_kernel=3),
    ),
    ("form", op(form="fast")),
    ("forget_gate_activation", op(forget_gate_activation="relu")),
    ("eps", op(eps=-1e-6)),
    ("eps", op(eps=float("nan"))),
    ("T", op(**{n: a[:, :, :0] for n, a in sequence_args().items()})),
    ("q", step(q=zeros(B, NH, T, DK))),
    ("state", step(state=STATE[:1])),
    ("mask", step(mask=np.ones((B, 1), bool))),
    ("form", lambda: resolve_form("quadratic", 10)),
    ("chunk_size", lambda: resolve_chunk_size("fastest", 16)),
    ("chunk_size", lambda: resolve_chunk_size(0, 16)),
    # MLSTM and MLSTMCell: constructor
    ("units", lambda: MLSTM(0)),
    ("units", lambda: MLSTM("8")),
    ("units", lambda: MLSTM(2.5)),
    ("units", lambda: MLSTM(True)),
    ("num_heads", lambda: MLSTM(12, num_heads=5)),
    ("num_heads", lambda: MLSTM(12, num_heads=0)),
    ("dropout", lambda: MLSTM(16, dropout="0.1")),
    ("dropout", lambda: MLSTM(16, dropout=1.0)),
    ("dropout", lambda: MLSTM(16, dropout=float("nan"))),
    ("chunk_size", lambda: MLSTM(16, chunk_size=-1)),
    ("form", lambda: MLSTM(16, form="loop")),
    ("forget_gate_activation", lambda: MLSTM(16, forget_gate_activation=0)),
    ("recurrent_dropout", lambda: MLSTM(16, recurrent_dropout=0.1)),
    ("unroll", lambda: MLSTM(16, unroll=True)),
    ("use_cudnn", lambda: MLSTM(16, use_cudnn=True)),
    ("units", lambda: MLSTMCell(-3)),
    # MLSTM: call
    # (the rank and width come from Keras's InputSpec, checked by Keras)
    ("expected ndim=3", call(lambda: built(MLSTM(8)), zeros(B, 16))),
    ("to have value 16", call(lambda: built(MLSTM(8)), zeros(B, T, 3))),
    ("time step", call(lambda: built(MLSTM(8)), zeros(B, 0, 16))),
    ("mask", call(lambda: built(MLSTM(8)), X, mask=np.ones((B, T + 1), bool))),
    ("initial_state", call(lambda: built(MLSTM(8)), X, initial_state="s")),
    (
        "initial_state[C]",
        call(
            lambda: built(MLSTM(8, num_heads=2)),
            X,
            initial_state=[zeros(B, 2, 4, 5), zeros(B, 2, 4), zeros(B, 2)],
        ),
    ),
    (
        "batch size",
        call(
            lambda: built(MLSTM(8, stateful=True), (B, None, 16)),
            zeros(B + 1, T, 16),
        ),
    ),
    # MLSTMBlock, MLSTMLargeBlock, MLSTMStack
    ("proj_factor", lambda: MLSTMBlock(proj_factor=float("inf"))),
    ("proj_factor", lambda: MLSTMBlock(proj_factor=0)),
    ("proj_factor", lambda: MLSTMBlock(proj_factor="2")),
    ("conv_kernel_size", lambda: MLSTMBlock(conv_kernel_size=0)),
    ("qkv_proj_blocksize", lambda: built(MLSTMBlock(qkv_proj_blocksize=5))),
    ("num_heads", lambda: built(MLSTMBlock(num_heads=5))),
    ("dropout", lambda: MLSTMBlock(dropout=-0.5)),
    ("num_layers", lambda: MLSTMBlock(num_layers=0)),
    ("qk_dim_factor", lambda: MLSTMLargeBlock(qk_dim_factor=float("nan"))),
    ("norm_epsilon", lambda: MLSTMLargeBlock(norm_epsilon=0.0)),
    ("gate_soft_cap", lambda: MLSTMLargeBlock(gate_soft_cap=-15.0)),
    ("num_heads", lambda: built(MLSTMLargeBlock(num_heads=3))),
    (
        "initial_state",
        call(lambda: built(MLSTMBlock(num_heads=2)), X, initial_state=STATE),
    ),
    (
        "mask",
        call(
            lambda: built(MLSTMLargeBlock(num_heads=2)),
            X,
            mask=np.ones((B, T, 1), bool),
        ),
    ),
    ("num_layers", lambda: MLSTMStack(0)),
    (
        "padding_mask",
        call(lambda: MLSTMStack(2), X, padding_mask=np.ones((B, T, 1), bool)),
    ),
    ("block_variant", lambda: MLSTMStack(2, block_variant="slstm")),
    ("dropout", lambda: MLSTMStack(2, block_variant="large", dropout=0.1)),
    pytest.param(
        "initial_state",
        call(lambda: MLSTMStack(2, num_heads=2), X, initial_state=[None]),
        marks=pytest.mark.skipif(
            KERAS_VERSION < (3, 13),
            reason="before Keras 3.13, Layer.__call__ reads the None in "
            "initial_state itself (AttributeError) before the stack's check",
        ),
    ),
    # models, conversion, small layers
    ("task", lambda: build_mlstm_model("translation", vocabulary_size=10)),
    (
        "vocabulary_size",
        lambda: build_mlstm_model("classification", vocabulary_size=0),
    ),
    (
        "vocabulary_size",
        lambda: build_mlstm_model("classification", vocabulary_size=10.0),
    ),
    (
        "hidden_dim",
        lambda: build_mlstm_model("regression", input_dim=2, hidden_dim=0),
    ),
    ("input_dim", lambda: build_mlstm_model("regression", output_dim=1)),
    (
        "num_classes",
        lambda: build_mlstm_model("classification", vocabulary_size=10),
    ),
    (
        "pooling",
        lambda: build_mlstm_model(
            "classification", vocabulary_size=10, num_classes=2, pooling="max"
        ),
    ),
    ("input_size", lambda: mLSTM(0, 8)),
    ("num_layers", lambda: mLSTM(4, 8, num_layers=-1)),
    ("dropout", lambda: mLSTM(4, 8, dropout=2)),
    (
        "hidden_state",
        lambda: mLSTM(4, 8)(zeros(B, T, 4), hidden_state=[(zeros(B, 8),)]),
    ),
    ("pooling", lambda: MaskedPooling("max")),
    ("target", lambda: load_xlstm_weights(MLSTMBlock(num_heads=2), {})),
    ("source", lambda: xlstm_state_dict(MLSTMBlock(num_heads=2))),
]


@pytest.fixture
def no_computation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("computation started before validation")

    monkeypatch.setattr(resolver, "prepare", fail)
    monkeypatch.setattr(recurrent, "prepare", fail)
    for module in (layer_module, block_module, large_block_module):
        monkeypatch.setattr(module, "mlstm", fail)


def test_the_table_covers_the_public_api():
    assert len(CASES) >= 60
    names = set(keras_mlstm.__all__) - {"config", "layers", "models", "ops"}
    covered = {
        "MLSTM",
        "MLSTMCell",
        "MLSTMBlock",
        "MLSTMLargeBlock",
        "MLSTMStack",
        "MaskedPooling",
        "build_mlstm_model",
        "load_xlstm_weights",
        "xlstm_state_dict",
        "mLSTM",
        "mlstm",
        "mlstm_step",
        "resolve_chunk_size",
        "resolve_form",
    }
    # from_xlstm's are in tests/test_convert.py (they need torch modules).
    assert names - covered == {"from_xlstm"}


@pytest.mark.parametrize(
    "argument,make",
    CASES,
    ids=[f"{i}-{getattr(c, 'values', c)[0]}" for i, c in enumerate(CASES)],
)
def test_bad_input_is_named_before_compute(argument, make, no_computation):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    named = f"`{argument}`" in message or argument in message
    assert named, message
    assert "received" in message or "must" in message, message


ACCEPTED = [
    # documented results of inputs that look odd but are valid
    (
        "NumPy ints as sizes",
        lambda: (
            build_mlstm_model(
                "classification",
                vocabulary_size=np.int64(20),
                num_classes=np.int64(3),
                hidden_dim=np.int32(16),
                num_layers=1,
                num_heads=2,
            ).output_shape
        ),
        (None, 3),
    ),
    (
        "int32 inputs to MLSTM",
        lambda: tuple(MLSTM(4)(np.ones((B, T, 3), "int32")).shape),
        (B, 4),
    ),
    (
        "chunk_size beyond T",
        lambda: tuple(mlstm(*sequence_args().values(), chunk_size=2**30).shape),
        (B, NH, T, DK),
    ),
    (
        "empty batch",
        lambda: tuple(MLSTM(4)(np.ones((0, T, 3), "float32")).shape),
        (0, 4),
    ),
    (
        "LSTM arguments at LSTM's defaults",
        lambda: MLSTM(4, unit_forget_bias=True, recurrent_dropout=0.0).units,
        4,
    ),
]


@pytest.mark.parametrize(
    "name,make,expected", ACCEPTED, ids=[c[0] for c in ACCEPTED]
)
def test_odd_but_valid_input_gives_the_documented_result(name, make, expected):
    assert make() == expected
