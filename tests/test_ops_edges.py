"""The ops on the inputs nobody plans for (issue #9): garbage in masked
steps, non-finite values after a step, infinite gates, empty batches and
chunk sizes beyond the sequence. Regression tests for each defect, on
every form and backend, all in float32.

Exactness: a masked step is selected away before any arithmetic, and a
step after t reaches an output at or before t only as exact zeros (weights
exp(-inf) = 0 times finite values), which leave every sum unchanged. So
these tests compare bitwise where the computation is the same, and against
the float64 reference (`tests/reference.py`) within 1e-5 of the scale of
the summed terms otherwise (as `test_ops_accuracy`).
"""

import keras
import numpy as np
import pytest
from reference import mlstm_reference
from utils import FORMS
from utils import compiled
from utils import make_inputs
from utils import make_state
from utils import relative_error
from utils import scaled_error
from utils import to_numpy
from utils import value_and_grad

from keras_mlstm import ops as mlstm_ops
from keras_mlstm.ops.common import from_first

# What padding may hold; `garbage_like` spreads all of it over the masked
# entries of one array, so one case exercises every kind.
GARBAGE = (np.nan, np.inf, -np.inf, 3e38, -3e38)


def garbage_like(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice(np.array(GARBAGE, "float32"), size=shape)


NAMES = ("q", "k", "v", "input_gate", "forget_gate")


def run_each(array_sets, form, chunk_size=4, state=None, **kwargs):
    """`mlstm` on float32 copies of each of `array_sets`, through one
    function compiled where the backend compiles (so JAX and TensorFlow
    compile it once for sets of the same shapes); returns NumPy
    `(h, (C, n, m))` per set."""

    def fn(*tensors):
        return mlstm_ops.mlstm(
            *tensors[:5],
            initial_state=None if state is None else tensors[5:],
            form=form,
            chunk_size=chunk_size,
            return_state=True,
            **kwargs,
        )

    fn = compiled(fn)
    results = []
    for arrays in array_sets:
        tensors = [np.asarray(a, "float32") for a in arrays]
        if state is not None:
            tensors += [np.asarray(s, "float32") for s in state]
        h, final = fn(*tensors)
        results.append((to_numpy(h), tuple(to_numpy(s) for s in final)))
    return results


def run(arrays, form, chunk_size=4, state=None, **kwargs):
    """`run_each` for one set of arrays."""
    return run_each([arrays], form, chunk_size, state, **kwargs)[0]


def gradients(array_sets, form, weights, mask=None, chunk_size=4):
    """For each of `array_sets`: the value and gradients of
    `sum(h * weights)` with respect to every input, through one loss
    function (compiled once on JAX)."""

    def loss(*tensors):
        h = mlstm_ops.mlstm(
            *tensors, mask=mask, form=form, chunk_size=chunk_size
        )
        return keras.ops.sum(h * keras.ops.convert_to_tensor(weights))

    return [
        value_and_grad(loss, [np.asarray(a, "float32") for a in arrays])
        for arrays in array_sets
    ]


def inputs(seed=0, shape=(2, 2, 11, 4, 3)):
    rng = np.random.default_rng(seed)
    return [a.astype("float32") for a in make_inputs(rng, shape)]


@pytest.mark.parametrize("form", FORMS)
def test_masked_steps_are_invisible_whatever_they_hold(form):
    """Issue #9 item 1: NaN, +-inf and +-3e38 in masked steps reach no
    output, state or gradient: the results equal those with zeros there,
    bitwise, and the gradient at a masked step is zero."""
    clean = inputs()
    mask = np.ones((2, 11), bool)
    mask[0, :3] = False  # left padding
    mask[1, 4:6] = False  # a hole
    mask[1, 9:] = False  # right padding
    dirty = [a.copy() for a in clean]
    for index, array in enumerate(dirty):
        padded = np.moveaxis(array, 2, 1)  # (B, T, NH, ...), a view
        padded[~mask] = garbage_like(padded[~mask].shape, index)
    for array in clean:
        np.moveaxis(array, 2, 1)[~mask] = 0.0
    (h_clean, state_clean), (h, state) = run_each(
        [clean, dirty], form, mask=mask
    )
    np.testing.assert_array_equal(h, h_clean)
    assert np.all(np.moveaxis(h, 2, 1)[~mask] == 0.0)
    for s, s_clean in zip(state, state_clean, strict=True):
        np.testing.assert_array_equal(s, s_clean)
    weights = np.random.default_rng(1).normal(size=h.shape).astype("float32")
    (value, grads), (value_clean, grads_clean) = gradients(
        [dirty, clean], form, weights, mask=mask
    )
    assert value == value_clean
    for name, grad, grad_clean in zip(NAMES, grads, grads_clean, strict=True):
        assert np.all(np.isfinite(grad)), name
        np.testing.assert_array_equal(grad, grad_clean, err_msg=name)
        assert np.all(np.moveaxis(grad, 2, 1)[~mask] == 0.0), name


@pytest.mark.parametrize("garbage", ["non-finite", "random"])
@pytest.mark.parametrize("form", FORMS)
def test_outputs_and_gradients_are_causal(form, garbage):
    """Issue #9 item 2: the output at step t, and its gradient with respect
    to the inputs up to t, do not change (bitwise) when everything after t
    changes, non-finite values included."""
    arrays = inputs(2)
    t = 5
    if garbage == "random":
        rng = np.random.default_rng(3)
        changed = [a.copy() for a in arrays]
        for array in changed:
            array[:, :, t + 1 :] = 100 * rng.normal(
                size=array[:, :, t + 1 :].shape
            )
    else:
        changed = [a.copy() for a in arrays]
        for index, array in enumerate(changed):
            array[:, :, t + 1 :] = garbage_like(
                array[:, :, t + 1 :].shape, index
            )
    (h, _), (h_changed, _) = run_each([arrays, changed], form)
    np.testing.assert_array_equal(h_changed[:, :, : t + 1], h[:, :, : t + 1])
    weights = np.zeros(h.shape, "float32")
    weights[:, :, : t + 1] = np.random.default_rng(4).normal(
        size=weights[:, :, : t + 1].shape
    )
    (_, grads), (_, grads_changed) = gradients([arrays, changed], form, weights)
    for name, grad, grad_changed in zip(
        NAMES, grads, grads_changed, strict=True
    ):
        np.testing.assert_array_equal(
            grad_changed[:, :, : t + 1], grad[:, :, : t + 1], err_msg=name
        )


@pytest.mark.parametrize("form", FORMS)
def test_non_finite_inputs_poison_exactly_the_outputs_they_reach(form):
    """A NaN or inf in k, v or a gate makes that step's output, every later
    one and the final state NaN; in q, that step's output only. The forms
    agree on which, and the finite outputs equal the reference."""
    base = inputs(5)
    for name, step in (("k", 4), ("v", 7), ("input_gate", 2), ("q", 6)):
        arrays = [a.copy() for a in base]
        index = NAMES.index(name)
        value = np.inf if name == "v" else np.nan
        arrays[index][0, 1, step] = value
        h, state = run(arrays, form)
        expected = np.zeros(h.shape, bool)
        if name == "q":
            expected[0, 1, step] = True
        else:
            expected[0, 1, step:] = True
        np.testing.assert_array_equal(np.isnan(h), expected, err_msg=name)
        assert np.all(np.isfinite(h[~expected]))
        for s in state:
            bad = np.isnan(s).reshape(2, 2, -1).any(-1)
            assert bad[0, 1] == (name != "q") and bad.sum() == bad[0, 1]
        h_ref, _, scale = mlstm_reference(*arrays, return_scale=True)
        assert (
            scaled_error(h[~expected], h_ref[~expected], scale[~expected])
            < 1e-5
        )


@pytest.mark.parametrize("batch", [3, 0])
def test_from_first_is_a_cumulative_or_over_the_steps(batch):
    """`from_first` (the poisoning and `guard_steps`' steps) against
    NumPy's cumulative OR: rows with no flag, a flag at the first step, at
    the last step and at several; eagerly and compiled; empty batches."""
    flags = np.random.default_rng(0).random((batch, 2, 9)) < 0.15
    if batch:
        flags[0, 0], flags[0, 1] = False, False
        flags[1, 0, 0] = flags[1, 1, -1] = True
        flags[2, 0, [2, 5]] = True
    expected = np.logical_or.accumulate(flags, axis=-1)
    for fn in (from_first, compiled(from_first)):
        got = to_numpy(fn(keras.ops.convert_to_tensor(flags)))
        np.testing.assert_array_equal(got, expected)


GATE_CASES = {
    "reset": ("forget_gate", 5, -np.inf),
    "dominate": ("input_gate", 3, np.inf),
    "no write": ("input_gate", 6, -np.inf),
    "dominate then reset": (
        ("input_gate", 2, np.inf),
        ("forget_gate", 8, -np.inf),
    ),
    "huge gates": ("input_gate", slice(None), 1e4),
}


@pytest.mark.parametrize("case", list(GATE_CASES))
@pytest.mark.parametrize("activation", ["sigmoid", "exp"])
def test_infinite_gates_have_one_meaning_in_every_form(case, activation):
    """Issue #9 item 3: -inf forget = a hard reset, +inf input = a write
    that outweighs every finite one, -inf input = no write
    (docs/reliability.md); every form computes that meaning, as the
    reference does, with no NaN."""
    arrays = inputs(6)
    changes = GATE_CASES[case]
    if isinstance(changes[0], str):
        changes = (changes,)
    for name, step, value in changes:
        arrays[NAMES.index(name)][:, :, step] = value
    if activation == "exp":
        arrays[4] = arrays[4] * 0.1  # log forget gates near 0.3
    state = make_state(np.random.default_rng(7), 2, 2, 4, 3)
    h_ref, state_ref, scale = mlstm_reference(
        *arrays,
        initial_state=state,
        forget_gate_activation=activation,
        return_scale=True,
    )
    results = {}
    # Gates of 1e4 are rounded to ulp(1e4) = 1e-3 in float32 sums, the
    # relative error of the weights they make; ordinary gates: 1e-5.
    tolerance = 1e-3 if case == "huge gates" else 1e-5
    for form in FORMS:
        h, final = run(
            arrays, form, state=state, forget_gate_activation=activation
        )
        assert np.all(np.isfinite(h)), form
        assert scaled_error(h, h_ref, scale) < tolerance, form
        for s, s_ref in zip(final, state_ref, strict=True):
            assert relative_error(s, s_ref) < tolerance, form
        results[form] = h
    if case == "reset" and activation == "sigmoid":
        # A reset: what came before step 5 is forgotten exactly.
        cut = [a[:, :, 5:] for a in arrays]
        h_after, _ = run(cut, "recurrent", state=state)
        np.testing.assert_allclose(
            results["recurrent"][:, :, 5:], h_after, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("masked", [False, True])
def test_empty_batch(form, masked):
    """Issue #9 item 4: B = 0 gives empty results of the right shapes,
    eagerly and compiled, with or without a mask and a state."""
    arrays = [a[:0] for a in inputs()]
    mask = np.ones((0, 11), bool) if masked else None
    state = make_state(np.random.default_rng(0), 0, 2, 4, 3)
    h, final = run(arrays, form, state=state, mask=mask)
    assert h.shape == (0, 2, 11, 3)
    assert [s.shape for s in final] == [(0, 2, 4, 3), (0, 2, 4), (0, 2)]
    eager = mlstm_ops.mlstm(*arrays, mask=mask, form=form, chunk_size=4)
    assert tuple(eager.shape) == (0, 2, 11, 3)
    step, _ = mlstm_ops.mlstm_step(*[a[:, :, 0] for a in arrays])
    assert tuple(step.shape) == (0, 2, 3)


def test_chunk_size_beyond_the_sequence_costs_nothing_more():
    """Issue #9 item 5: a chunk larger than T is taken as T. With the
    sequence padded to the chunk, chunk_size = 2**30 at T = 10 would need
    ~34 GB; here it is the chunk-of-T computation, bitwise."""
    arrays = inputs(8, shape=(1, 2, 10, 8, 8))
    h_huge, state_huge = run(arrays, "chunkwise", chunk_size=2**30)
    h_t, state_t = run(arrays, "chunkwise", chunk_size=10)
    np.testing.assert_array_equal(h_huge, h_t)
    for a, b in zip(state_huge, state_t, strict=True):
        np.testing.assert_array_equal(a, b)
    h_ref, _, scale = mlstm_reference(*arrays, return_scale=True)
    assert scaled_error(h_huge, h_ref, scale) < 1e-5


@pytest.mark.parametrize("head_size", [4, 16, 32, 64, 128, None])
def test_auto_chunk_size_is_the_measured_choice(head_size):
    """`chunk_size="auto"` resolves to the sizes measured fastest in
    docs/benchmarks.md ("Chunk size"): the q/k head size within 16 to 64
    under XLA (JAX, TensorFlow), 64 when the head size is unknown, and 32
    on PyTorch."""
    if keras.backend.backend() == "torch":
        expected = 32
    else:
        expected = {4: 16, 16: 16, 32: 32, 64: 64, 128: 64, None: 64}
        expected = expected[head_size]
    assert mlstm_ops.resolve_chunk_size("auto", head_size) == expected
    assert mlstm_ops.resolve_chunk_size(24, head_size) == 24


def test_auto_chunk_size_is_the_explicit_one():
    """The op with `chunk_size="auto"` (its default) is the op with the
    chunk size "auto" resolves to, bitwise, and within 1e-5 of the float64
    reference."""
    arrays = inputs(9, shape=(2, 2, 70, 16, 8))
    chunk = mlstm_ops.resolve_chunk_size("auto", head_size=16)
    h_auto, state_auto = run(arrays, "chunkwise", chunk_size="auto")
    h_chunk, state_chunk = run(arrays, "chunkwise", chunk_size=chunk)
    np.testing.assert_array_equal(h_auto, h_chunk)
    for a, b in zip(state_auto, state_chunk, strict=True):
        np.testing.assert_array_equal(a, b)
    h_ref, _, scale = mlstm_reference(*arrays, return_scale=True)
    assert scaled_error(h_auto, h_ref, scale) < 1e-5
