"""Gradients: every form against central differences of the reference, and
the forms against each other.

The loss is a fixed random linear function of the outputs and of all three
final state tensors, so every path through the computation is exercised,
the stabiliser ``m`` included.

Tolerances:
- against central differences (float64, step 1e-6): the difference
  quotient's own error is ~1e-10 of the loss (truncation h^2 plus rounding
  1e-16 / h), so 1e-7 of the largest gradient entry over all arguments.
- form against form: float64 1e-9 of the largest entry; float32 1e-4, since
  the backward pass sums T terms of the same ratios as the forward pass.
"""

import numpy as np
import pytest
from reference import central_differences
from reference import weighted_reference_loss
from utils import FORMS
from utils import make_inputs
from utils import make_state
from utils import relative_error
from utils import value_and_grad
from utils import weighted_mlstm_loss

NAMES = ("q", "k", "v", "input_gate", "forget_gate", "C0", "n0", "m0")


def make_case(shape, seed, dtype="float64", regime="strong"):
    rng = np.random.default_rng(seed)
    batch, heads, length, dk, dv = shape
    inputs = make_inputs(rng, shape, regime, dtype)
    state = [np.asarray(s, dtype) for s in make_state(rng, *shape[:2], dk, dv)]
    mask = np.ones((batch, length), bool)
    mask[0, length // 2] = False
    weights = [
        rng.normal(size=(batch, heads, length, dv)),
        rng.normal(size=(batch, heads, dk, dv)),
        rng.normal(size=(batch, heads, dk)),
        rng.normal(size=(batch, heads)),
    ]
    args = [np.asarray(a, dtype) for a in inputs] + state
    return args, mask, [np.asarray(w, dtype) for w in weights]


def op_loss(form, mask, weights, chunk_size):
    return weighted_mlstm_loss(mask, weights, form=form, chunk_size=chunk_size)


@pytest.fixture(scope="module")
def small_case():
    args, mask, weights = make_case((1, 2, 7, 3, 2), seed=10)
    return args, mask, weights, central_differences(args, mask, weights)


@pytest.mark.float64
@pytest.mark.parametrize("form", FORMS)
def test_gradients_match_finite_differences(form, small_case):
    args, mask, weights, expected = small_case
    value, grads = value_and_grad(op_loss(form, mask, weights, 3), args)
    np.testing.assert_allclose(
        value, weighted_reference_loss(args, mask, weights), rtol=1e-10
    )
    # The difference quotients' error is absolute (rounding of the loss over
    # the step), so it is measured against the largest gradient entry of all.
    scale = max(np.max(np.abs(g)) for g in expected)
    for name, grad, grad_fd in zip(NAMES, grads, expected, strict=True):
        assert np.max(np.abs(grad - grad_fd)) < 1e-7 * scale, name


@pytest.mark.parametrize(
    "dtype,tolerance",
    [
        pytest.param("float64", 1e-9, marks=pytest.mark.float64),
        ("float32", 1e-4),
    ],
)
@pytest.mark.parametrize("regime", ["normal", "strong"])
def test_gradients_agree_across_forms(dtype, tolerance, regime):
    args, mask, weights = make_case((2, 2, 45, 8, 4), 11, dtype, regime)
    _, expected = value_and_grad(op_loss("recurrent", mask, weights, 16), args)
    for form, chunk_size in (("parallel", 16), ("chunkwise", 16)):
        _, grads = value_and_grad(
            op_loss(form, mask, weights, chunk_size), args
        )
        for name, grad, grad_ref in zip(NAMES, grads, expected, strict=True):
            assert relative_error(grad, grad_ref) < tolerance, (form, name)
            assert np.all(np.isfinite(grad)), (form, name)
