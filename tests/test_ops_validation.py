"""Bad input: a ValueError naming the argument and what was expected,
raised from static shapes before any computation.

"Before any computation" is checked by replacing the function that starts
the computation (``prepare``) with one that fails the test if reached.
"""

import numpy as np
import pytest
from keras import ops

from keras_mlstm import ops as mlstm_ops
from keras_mlstm.ops import recurrent
from keras_mlstm.ops import resolver

B, NH, T, DK, DV = 2, 3, 10, 4, 5


@pytest.fixture(autouse=True)
def no_computation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("computation started before validation")

    monkeypatch.setattr(resolver, "prepare", fail)
    monkeypatch.setattr(recurrent, "prepare", fail)


def arrays(**overrides):
    shapes = {
        "q": (B, NH, T, DK),
        "k": (B, NH, T, DK),
        "v": (B, NH, T, DV),
        "input_gate": (B, NH, T),
        "forget_gate": (B, NH, T),
    }
    out = {name: np.zeros(shape, "float32") for name, shape in shapes.items()}
    out.update(overrides)
    return out


def state(c=(B, NH, DK, DV), n=(B, NH, DK), m=(B, NH), dtype="float32"):
    return (np.zeros(c, dtype), np.zeros(n, dtype), np.zeros(m, dtype))


def call(**kwargs):
    tensors = arrays(
        **{k: kwargs.pop(k) for k in list(kwargs) if k in arrays()}
    )
    return mlstm_ops.mlstm(
        tensors["q"],
        tensors["k"],
        tensors["v"],
        tensors["input_gate"],
        tensors["forget_gate"],
        **kwargs,
    )


BAD_SEQUENCE_CALLS = [
    ("q", dict(q=np.zeros((B, NH, T), "float32")), "rank 4"),
    ("k", dict(k=np.zeros((B, NH, T, DK + 1), "float32")), "DK = 5"),
    ("k", dict(k=np.zeros((B, NH, T + 1, DK), "float32")), "T = 11"),
    ("v", dict(v=np.zeros((B + 1, NH, T, DV), "float32")), "B = 3"),
    ("v", dict(v=np.zeros((B, NH + 1, T, DV), "float32")), "NH = 4"),
    ("v", dict(v=np.zeros((B, NH, T, DV, 1), "float32")), "rank 4"),
    ("input_gate", dict(input_gate=np.zeros((B, NH), "float32")), "rank 3"),
    (
        "forget_gate",
        dict(forget_gate=np.zeros((B, NH, T - 1), "float32")),
        "T = 9",
    ),
    ("mask", dict(mask=np.ones((B, T + 2), bool)), "(B, T)"),
    ("mask", dict(mask=np.ones((B, NH, T), bool)), "rank 2"),
    ("mask", dict(mask=np.ones((B, T), "float32")), "bool"),
    ("q", dict(q=np.zeros((B, NH, T, DK), "int32")), "floating"),
    ("q", dict(q=np.zeros((B, NH, T, DK), "float64")), "dtype of `v`"),
    ("input_gate", dict(input_gate=np.zeros((B, NH, T), "int32")), "float"),
    (
        "T",
        dict(
            q=np.zeros((B, NH, 0, DK), "float32"),
            k=np.zeros((B, NH, 0, DK), "float32"),
            v=np.zeros((B, NH, 0, DV), "float32"),
            input_gate=np.zeros((B, NH, 0), "float32"),
            forget_gate=np.zeros((B, NH, 0), "float32"),
        ),
        ">= 1",
    ),
    ("initial_state", dict(initial_state=state()[:2]), "3 tensors"),
    ("initial_state", dict(initial_state=np.zeros(3)), "tuple"),
    (
        "initial_state[C]",
        dict(initial_state=state(c=(B, NH, DV, DK))),
        "DK = 5",
    ),
    ("initial_state[n]", dict(initial_state=state(n=(B, NH))), "rank 3"),
    ("initial_state[m]", dict(initial_state=state(m=(B + 1, NH))), "B = 3"),
    (
        "initial_state[C]",
        dict(initial_state=state(dtype="float64")),
        "float32",
    ),
    ("chunk_size", dict(chunk_size=0), "int >= 1"),
    ("chunk_size", dict(chunk_size=-4), "int >= 1"),
    ("chunk_size", dict(chunk_size=2.5), "int >= 1"),
    ("chunk_size", dict(chunk_size=True), "int >= 1"),
    ("form", dict(form="fast"), "'parallel', 'chunkwise', 'recurrent'"),
    ("forget_gate_activation", dict(forget_gate_activation="relu"), "exp"),
    ("eps", dict(eps=-1.0), ">= 0"),
    ("eps", dict(eps="small"), "float"),
]


@pytest.mark.parametrize(
    "name,kwargs,expected",
    BAD_SEQUENCE_CALLS,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_SEQUENCE_CALLS)],
)
def test_mlstm_rejects_bad_input(name, kwargs, expected):
    with pytest.raises(ValueError) as info:
        call(**kwargs)
    message = str(info.value)
    assert (f"`{name}`" in message) or (name == "T" and "T" in message)
    assert expected in message


STEP_SHAPES = {
    "q": (B, NH, DK),
    "k": (B, NH, DK),
    "v": (B, NH, DV),
    "input_gate": (B, NH),
    "forget_gate": (B, NH),
}

BAD_STEP_CALLS = [
    ("q", dict(q=(B, NH, T, DK)), "rank 3"),
    ("k", dict(k=(B, NH, DK + 2)), "DK = 6"),
    ("forget_gate", dict(forget_gate=(B, NH, 1)), "rank 2"),
    ("state[C]", dict(state=state(c=(B, NH, DK, DV + 1))), "DV = 6"),
    ("state", dict(state=state() + (np.zeros(1),)), "3 tensors"),
    ("mask", dict(mask=np.ones((B, 1), bool)), "rank 1"),
]


@pytest.mark.parametrize("name,kwargs,expected", BAD_STEP_CALLS)
def test_mlstm_step_rejects_bad_input(name, kwargs, expected):
    tensors = {
        n: np.zeros(kwargs.pop(n, shape), "float32")
        for n, shape in STEP_SHAPES.items()
    }
    with pytest.raises(ValueError) as info:
        mlstm_ops.mlstm_step(*tensors.values(), **kwargs)
    assert f"`{name}`" in str(info.value)
    assert expected in str(info.value)


def test_resolve_form_lists_valid_names():
    with pytest.raises(ValueError, match="parallel.*chunkwise.*recurrent"):
        mlstm_ops.resolve_form("quadratic", 100)


@pytest.mark.parametrize(
    "length,expected",
    [(1, "recurrent"), (2, "parallel"), (64, "parallel"), (65, "chunkwise")],
)
def test_resolve_form_auto(length, expected):
    assert mlstm_ops.resolve_form("auto", length, chunk_size=64) == expected
    assert mlstm_ops.resolve_form("parallel", length) == "parallel"
    assert mlstm_ops.resolve_form("auto", None) == "chunkwise"


def test_tensors_of_the_backend_are_checked_too():
    q = ops.zeros((B, NH, T, DK + 1))
    with pytest.raises(ValueError, match="`k`"):
        call(q=q)
