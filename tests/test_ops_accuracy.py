"""Every form against the float64 NumPy reference: outputs and final states.

Tolerances:
- float64: 1e-10 of the largest output / state entry. Rounding in float64
  is ~1e-16 per operation; 1e-10 leaves room for T = 512 sequential steps
  and the exponentials, and any algorithmic slip shows as O(1).
- float32: outputs within 1e-5 of the scale of the terms summed to make
  each entry (``reference.mlstm_reference(return_scale=True)``). An output
  is a ratio of sums that can cancel (``n^T q`` near 0), so its float32
  error is set by the size of those terms, not by its own value; measured
  errors are below 7e-7 of that scale at T = 512. States, sums of positive
  weights times k v^T, are held to 1e-5 of their largest entry, and in the
  well-conditioned ``normal`` regime outputs also to 1e-5 of the largest
  output.
"""

import numpy as np
import pytest
from reference import mlstm_reference
from utils import FORMS
from utils import REGIMES
from utils import activation_of
from utils import cast_all
from utils import compiled
from utils import make_inputs
from utils import make_state
from utils import relative_error
from utils import scaled_error

from keras_mlstm import ops as mlstm_ops


def run_and_reference(
    shape,
    regime,
    dtype,
    form,
    seed,
    chunk_size=64,
    with_state=False,
    with_mask=False,
):
    rng = np.random.default_rng(seed)
    inputs = make_inputs(rng, shape, regime, dtype)
    batch, heads, length, dk, dv = shape
    state = (
        cast_all(make_state(rng, batch, heads, dk, dv), dtype)
        if with_state
        else None
    )
    state = [np.asarray(s, np.float64) for s in state] if state else None
    mask = rng.random((batch, length)) < 0.7 if with_mask else None
    activation = activation_of(regime)
    h_ref, state_ref, scale = mlstm_reference(
        *inputs,
        initial_state=state,
        mask=mask,
        forget_gate_activation=activation,
        return_scale=True,
    )

    def run(q, k, v, i, f, state):
        return mlstm_ops.mlstm(
            q,
            k,
            v,
            i,
            f,
            initial_state=state,
            mask=mask,
            form=form,
            chunk_size=chunk_size,
            forget_gate_activation=activation,
            return_state=True,
        )

    h, final = compiled(run)(
        *cast_all(inputs, dtype), cast_all(state, dtype) if state else None
    )
    return (h, final), (h_ref, state_ref, scale)


def assert_matches(result, expected, dtype, regime):
    (h, final), (h_ref, state_ref, scale) = result, expected
    if dtype == "float64":
        assert relative_error(h, h_ref) < 1e-10
        for s, s_ref in zip(final, state_ref, strict=True):
            assert relative_error(s, s_ref) < 1e-10
        return
    assert scaled_error(h, h_ref, scale) < 1e-5
    if regime == "normal":
        assert relative_error(h, h_ref) < 1e-5
    for s, s_ref in zip(final, state_ref, strict=True):
        assert relative_error(s, s_ref) < 1e-5


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize(
    "dtype", ["float32", pytest.param("float64", marks=pytest.mark.float64)]
)
def test_form_matches_reference(form, regime, dtype):
    shape = (2, 3, 200, 16, 8)
    result, expected = run_and_reference(shape, regime, dtype, form, seed=1)
    assert_matches(result, expected, dtype, regime)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("regime", REGIMES)
def test_form_matches_reference_at_t512(form, regime):
    shape = (1, 2, 512, 32, 32)
    result, expected = run_and_reference(shape, regime, "float32", form, 2)
    assert_matches(result, expected, "float32", regime)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "dtype", ["float32", pytest.param("float64", marks=pytest.mark.float64)]
)
def test_initial_state_and_mask(form, dtype):
    shape = (3, 2, 77, 8, 12)
    result, expected = run_and_reference(
        shape,
        "strong",
        dtype,
        form,
        seed=3,
        chunk_size=16,
        with_state=True,
        with_mask=True,
    )
    assert_matches(result, expected, dtype, "strong")


@pytest.mark.float64
@pytest.mark.parametrize("chunk_size", [1, 16, 64, 128])
@pytest.mark.parametrize("length", [1, 37, 101, 128, 257])
def test_chunk_sizes_and_lengths(chunk_size, length):
    """T prime, shorter than, equal to and not a multiple of the chunk."""
    shape = (2, 2, length, 8, 8)
    result, expected = run_and_reference(
        shape, "normal", "float64", "chunkwise", 4, chunk_size, True, True
    )
    assert_matches(result, expected, "float64", "normal")


@pytest.mark.float64
@pytest.mark.parametrize("form", FORMS)
def test_masked_steps_output_zero_and_keep_state(form):
    rng = np.random.default_rng(5)
    shape = (2, 2, 40, 4, 4)
    inputs = make_inputs(rng, shape, "normal", "float64")
    mask = np.ones((2, 40), bool)
    mask[0, 10:25] = False
    h, _ = mlstm_ops.mlstm(
        *inputs, mask=mask, form=form, chunk_size=8, return_state=True
    )
    h = np.asarray(h)
    assert np.all(h[0, :, 10:25] == 0.0)
    # The state after step 9 is carried unchanged through the masked steps:
    # running the unmasked steps alone gives the same outputs afterwards.
    keep = np.r_[0:10, 25:40]
    h_short = mlstm_ops.mlstm(
        *[x[:, :, keep] for x in inputs], form=form, chunk_size=8
    )
    np.testing.assert_allclose(
        np.asarray(h_short)[0], h[0][:, keep], rtol=1e-12, atol=1e-12
    )
