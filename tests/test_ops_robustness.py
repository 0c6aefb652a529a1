"""Robustness: long sequences with saturated gates, degenerate shapes and
masks; every output finite and equal to the reference where it is computed.

Tolerance for gates drawn in [-50, 50] (float32): 1e-4 of the scale of the
summed terms (see test_ops_accuracy). The exponents then reach ~100 in size,
and float32 rounds such an argument by up to ulp(100) = 7.6e-6, which is the
relative error of the weight it makes; the reference sees the same rounded
inputs but computes the exponents in float64.
"""

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

from keras_mlstm import ops as mlstm_ops


def saturated_inputs(rng, shape):
    batch, heads, length, dk, dv = shape
    arrays = [
        rng.normal(size=(batch, heads, length, dk)),
        rng.normal(size=(batch, heads, length, dk)),
        rng.normal(size=(batch, heads, length, dv)),
        rng.uniform(-50.0, 50.0, size=(batch, heads, length)),
        rng.uniform(-50.0, 50.0, size=(batch, heads, length)),
    ]
    return [np.asarray(a.astype("float32"), np.float64) for a in arrays]


def run(inputs, form, chunk_size=64, **kwargs):
    def fn(*arrays):
        return mlstm_ops.mlstm(
            *arrays,
            form=form,
            chunk_size=chunk_size,
            return_state=True,
            **kwargs,
        )

    return compiled(fn)(*[np.asarray(x, "float32") for x in inputs])


@pytest.fixture(scope="module")
def long_case():
    rng = np.random.default_rng(30)
    inputs = saturated_inputs(rng, (1, 1, 65536, 4, 4))
    return inputs, mlstm_reference(*inputs, return_scale=True)


@pytest.mark.parametrize("form", ["chunkwise", "recurrent"])
def test_t65536_saturated_gates(form, long_case):
    inputs, (h_ref, state_ref, scale) = long_case
    h, state = run(inputs, form)
    h = to_numpy(h)
    assert np.all(np.isfinite(h))
    assert scaled_error(h, h_ref, scale) < 1e-4
    for s, s_ref in zip(state, state_ref, strict=True):
        assert np.all(np.isfinite(to_numpy(s)))
        assert relative_error(s, s_ref) < 1e-4


def test_parallel_t4096_saturated_gates():
    rng = np.random.default_rng(31)
    inputs = saturated_inputs(rng, (1, 1, 4096, 4, 4))
    h_ref, state_ref, scale = mlstm_reference(*inputs, return_scale=True)
    h, state = run(inputs, "parallel")
    assert np.all(np.isfinite(to_numpy(h)))
    assert scaled_error(h, h_ref, scale) < 1e-4
    for s, s_ref in zip(state, state_ref, strict=True):
        assert relative_error(s, s_ref) < 1e-4


@pytest.mark.parametrize(
    "form,chunk_size",
    [("chunkwise", size) for size in (1, 16, 64, 128)]
    + [("parallel", 64), ("recurrent", 64)],
)
def test_prime_length_saturated_gates(form, chunk_size):
    rng = np.random.default_rng(32)
    inputs = saturated_inputs(rng, (2, 2, 211, 5, 3))
    h_ref, state_ref, scale = mlstm_reference(*inputs, return_scale=True)
    h, state = run(inputs, form, chunk_size)
    assert scaled_error(h, h_ref, scale) < 1e-4
    for s, s_ref in zip(state, state_ref, strict=True):
        assert relative_error(s, s_ref) < 1e-4


@pytest.mark.float64
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 4, 4), (1, 3, 1, 2, 7), (1, 1, 9, 7, 2), (3, 1, 130, 1, 1)],
)
def test_degenerate_shapes(form, shape):
    """T = 1, B = 1, NH = 1, DK != DV, DK = DV = 1."""
    rng = np.random.default_rng(33)
    inputs = make_inputs(rng, shape, "normal", "float64")
    state = make_state(rng, shape[0], shape[1], shape[3], shape[4])
    h_ref, state_ref = mlstm_reference(*inputs, initial_state=state)
    h, final = compiled(
        lambda *a: mlstm_ops.mlstm(
            *a[:5], initial_state=a[5:], form=form, return_state=True
        )
    )(*inputs, *state)
    assert tuple(h.shape) == shape[:3] + shape[4:]
    assert relative_error(h, h_ref) < 1e-10
    for s, s_ref in zip(final, state_ref, strict=True):
        assert relative_error(s, s_ref) < 1e-10


@pytest.mark.float64
@pytest.mark.parametrize("form", FORMS)
def test_all_masked_rows(form):
    """A fully masked row outputs zeros and returns its initial state
    exactly; the other rows are unaffected."""
    rng = np.random.default_rng(34)
    shape = (3, 2, 70, 4, 6)
    inputs = make_inputs(rng, shape, "strong", "float64")
    state = make_state(rng, 3, 2, 4, 6)
    mask = np.ones((3, 70), bool)
    mask[1] = False
    mask[2, 35:] = False
    h, final = compiled(
        lambda *a: mlstm_ops.mlstm(
            *a[:5],
            initial_state=a[5:],
            mask=mask,
            form=form,
            chunk_size=16,
            return_state=True,
        )
    )(*inputs, *state)
    h = to_numpy(h)
    assert np.all(h[1] == 0.0) and np.all(h[2, :, 35:] == 0.0)
    for s, s0 in zip(final, state, strict=True):
        np.testing.assert_array_equal(to_numpy(s)[1], s0[1])
    h_ref, state_ref = mlstm_reference(*inputs, initial_state=state, mask=mask)
    assert relative_error(h, h_ref) < 1e-10
    for s, s_ref in zip(final, state_ref, strict=True):
        assert relative_error(s, s_ref) < 1e-10


@pytest.mark.float64
def test_padding_is_an_exact_identity():
    """T not a multiple of the chunk: the final state equals the one from a
    run whose length is a multiple, fed the same steps."""
    rng = np.random.default_rng(35)
    inputs = make_inputs(rng, (1, 2, 64, 4, 4), "normal", "float64")
    _, state_exact = mlstm_ops.mlstm(
        *inputs, form="chunkwise", chunk_size=32, return_state=True
    )
    _, state_padded = mlstm_ops.mlstm(
        *inputs, form="chunkwise", chunk_size=48, return_state=True
    )
    h_ref, state_ref = mlstm_reference(*inputs)
    for a, b, c in zip(state_exact, state_padded, state_ref, strict=True):
        assert relative_error(a, c) < 1e-12
        assert relative_error(b, c) < 1e-12
