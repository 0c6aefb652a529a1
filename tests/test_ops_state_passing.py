"""State passing: a sequence fed in pieces, carrying the final state of each
piece into the next, equals one pass over it, for every form and for pieces
run in different forms (the step op included).

Tolerance: float64, 1e-10 of the largest entry (see test_ops_accuracy);
pieces change only the order of float64 roundings.
"""

import numpy as np
import pytest
from reference import mlstm_reference
from utils import FORMS
from utils import make_inputs
from utils import make_state
from utils import relative_error
from utils import to_numpy

from keras_mlstm import ops as mlstm_ops

# Every test here feeds float64 into the ops.
pytestmark = pytest.mark.float64

LENGTH = 150
SPLITS = {
    "two": (61, 89),
    "five": (1, 37, 64, 5, 43),
}


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(20)
    inputs = make_inputs(rng, (2, 2, LENGTH, 6, 5), "strong", "float64")
    state = make_state(rng, 2, 2, 6, 5)
    mask = rng.random((2, LENGTH)) < 0.8
    h, final = mlstm_reference(*inputs, initial_state=state, mask=mask)
    return inputs, state, mask, h, final


def run_in_pieces(inputs, state, mask, sizes, forms, chunk_size=16):
    outputs = []
    start = 0
    for size, form in zip(sizes, forms, strict=True):
        piece = [x[:, :, start : start + size] for x in inputs]
        piece_mask = mask[:, start : start + size]
        if form == "step":
            for t in range(size):
                h, state = mlstm_ops.mlstm_step(
                    *[x[:, :, t] for x in piece], state, mask=piece_mask[:, t]
                )
                outputs.append(to_numpy(h)[:, :, None])
        else:
            h, state = mlstm_ops.mlstm(
                *piece,
                initial_state=state,
                mask=piece_mask,
                form=form,
                chunk_size=chunk_size,
                return_state=True,
            )
            outputs.append(to_numpy(h))
        start += size
    return np.concatenate(outputs, axis=2), state


def assert_equal_to_one_pass(result, case):
    h, state = result
    _, _, _, h_ref, state_ref = case
    assert relative_error(h, h_ref) < 1e-10
    for s, s_ref in zip(state, state_ref, strict=True):
        assert relative_error(s, s_ref) < 1e-10


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("form", FORMS + ("auto",))
def test_pieces_equal_one_pass(form, split, case):
    inputs, state, mask = case[:3]
    sizes = SPLITS[split]
    result = run_in_pieces(inputs, state, mask, sizes, [form] * len(sizes))
    assert_equal_to_one_pass(result, case)


@pytest.mark.parametrize(
    "forms",
    [
        ("chunkwise", "step"),
        ("step", "chunkwise"),
        ("parallel", "recurrent"),
        ("recurrent", "chunkwise", "parallel", "step", "auto"),
        ("step", "parallel", "step", "chunkwise", "recurrent"),
    ],
)
def test_mixed_forms_equal_one_pass(forms, case):
    inputs, state, mask = case[:3]
    sizes = SPLITS["two"] if len(forms) == 2 else SPLITS["five"]
    if forms[0] == "step":  # keep the step-by-step pieces short
        sizes = (3, LENGTH - 3) if len(forms) == 2 else (2, 40, 3, 60, 45)
    result = run_in_pieces(inputs, state, mask, sizes, forms)
    assert_equal_to_one_pass(result, case)


def test_step_sequence_equals_recurrent_form(case):
    inputs, state, mask = case[:3]
    h_steps, state_steps = run_in_pieces(
        inputs, state, mask, (LENGTH,), ("step",)
    )
    h, final = mlstm_ops.mlstm(
        *inputs,
        initial_state=state,
        mask=mask,
        form="recurrent",
        return_state=True,
    )
    # The same float64 operations in the same order; only a compiler's
    # fusion (JAX's scan body is compiled, its eager steps are not) may move
    # the last bits.
    assert relative_error(h_steps, to_numpy(h)) < 1e-14
    for a, b in zip(state_steps, final, strict=True):
        assert relative_error(a, to_numpy(b)) < 1e-14
