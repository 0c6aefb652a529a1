"""Half-precision inputs: gates and states in float32, outputs in the input
dtype, close to the float32 result, and no overflow.

Tolerances: outputs relative to the scale of the summed terms (see
test_ops_accuracy; an output near a cancelling denominator amplifies any
input perturbation), states relative to their largest entry. bfloat16 keeps
8 significant bits: rounding q, k, v and the gates moves each term by a few
times 2^-9 = 2e-3 relative, and the output's own rounding adds 2^-9; 2e-2
bounds that (measured: 2e-3 outputs, 6e-3 states). float16 keeps 11 bits,
a factor 8 finer: 3e-3 (measured: 2e-4, 5e-4). The internal arithmetic is
float32, so these errors are all input and output rounding.
"""

import numpy as np
import pytest
from keras import ops
from reference import mlstm_reference
from utils import FORMS
from utils import make_inputs
from utils import relative_error
from utils import scaled_error
from utils import to_numpy

from keras_mlstm import ops as mlstm_ops
from keras_mlstm.ops.common import standardize_dtype

TOLERANCE = {"bfloat16": 2e-2, "float16": 3e-3}


def as_dtype(array, dtype):
    return ops.cast(ops.convert_to_tensor(np.asarray(array, "float32")), dtype)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
def test_half_precision_close_to_float32(form, dtype):
    rng = np.random.default_rng(40)
    inputs = make_inputs(rng, (2, 2, 100, 16, 16), "normal", "float32")
    h32, state32 = mlstm_ops.mlstm(
        *[np.asarray(x, "float32") for x in inputs],
        form=form,
        chunk_size=32,
        return_state=True,
    )
    _, _, scale = mlstm_reference(*inputs, return_scale=True)
    h, state = mlstm_ops.mlstm(
        *[as_dtype(x, dtype) for x in inputs],
        form=form,
        chunk_size=32,
        return_state=True,
    )
    assert standardize_dtype(h) == dtype
    for s in state:
        assert standardize_dtype(s) == "float32"
    h = np.asarray(to_numpy(ops.cast(h, "float32")), np.float64)
    assert scaled_error(h, to_numpy(h32), scale) < TOLERANCE[dtype]
    for s, s32 in zip(state, state32, strict=True):
        assert relative_error(s, to_numpy(s32)) < TOLERANCE[dtype]


@pytest.mark.parametrize("form", FORMS + ("step",))
@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
def test_half_precision_does_not_overflow(form, dtype):
    """Large activations and saturated gates whose exponentials would
    overflow float16 (exp(12) > 65504) stay finite."""
    rng = np.random.default_rng(41)
    shape = (1, 2, 80)
    q = 30.0 * rng.normal(size=shape + (8,))
    k = 30.0 * rng.normal(size=shape + (8,))
    v = 30.0 * rng.normal(size=shape + (8,))
    gates = [rng.uniform(-50.0, 50.0, size=shape) for _ in range(2)]
    arrays = [as_dtype(x, dtype) for x in (q, k, v, *gates)]
    if form == "step":
        h, state = mlstm_ops.mlstm_step(*[x[:, :, 0] for x in arrays])
        h, state = mlstm_ops.mlstm_step(*[x[:, :, 1] for x in arrays], state)
    else:
        h, state = mlstm_ops.mlstm(
            *arrays, form=form, chunk_size=16, return_state=True
        )
    assert standardize_dtype(h) == dtype
    assert np.all(np.isfinite(to_numpy(ops.cast(h, "float32"))))
    for s in state:
        assert standardize_dtype(s) == "float32"
        assert np.all(np.isfinite(to_numpy(s)))
