"""The recurrent form: the mLSTM step, and a scan of it over time.

One step costs O(DK * DV) per head and keeps O(1) state, which makes it the
form for generation and streaming. Over a whole sequence it is a loop over
time steps, so the layers use it only for T == 1; it also serves as the plain
statement of the recurrence that the other forms are held to.

Notation (see `common.py`): B, NH, T, DK, DV.
"""

from keras import ops

from keras_mlstm.ops.common import STEP_LAYOUT
from keras_mlstm.ops.common import check_inputs
from keras_mlstm.ops.common import check_options
from keras_mlstm.ops.common import finish
from keras_mlstm.ops.common import prepare
from keras_mlstm.ops.common import read_out
from keras_mlstm.ops.compat import compiled_on_jax
from keras_mlstm.ops.compat import maximum
from keras_mlstm.ops.compat import scan


def step_core(q, k, v, log_input, log_forget, state, eps):
    """One stabilised step on prepared inputs.

    Args:
        q: `(B, NH, DK)`, already scaled by `1 / sqrt(DK)`.
        k: `(B, NH, DK)`.
        v: `(B, NH, DV)`.
        log_input: `(B, NH)`, the input gate pre-activation `i~`.
        log_forget: `(B, NH)`, the log forget gate.
        state: `(C, n, m)` with shapes `(B, NH, DK, DV)`, `(B, NH, DK)`,
            `(B, NH)`.
        eps: the read-out constant.

    Returns:
        `(h, (C, n, m))` with `h` of shape `(B, NH, DV)`.
    """
    c_prev, n_prev, m_prev = state
    m = maximum(log_forget + m_prev, log_input)  # (B, NH)
    decay = ops.exp(log_forget + m_prev - m)  # (B, NH)
    weight = ops.exp(log_input - m)  # (B, NH)
    # Indexing with None and the @ operator (not ops.expand_dims, einsum)
    # save eager PyTorch a keras.ops dispatch each; every backend's tensors
    # support both, and @ keeps float64 (unlike ops.matmul on PyTorch).
    weighted_k = weight[..., None] * k  # (B, NH, DK)
    c = (
        decay[..., None, None] * c_prev
        + weighted_k[..., None] * v[..., None, :]
    )  # (B, NH, DK, DV)
    n = decay[..., None] * n_prev + weighted_k  # (B, NH, DK)
    row = q[..., None, :]  # (B, NH, 1, DK)
    numerator = (row @ c)[..., 0, :]  # (B, NH, DV)
    denominator = (row @ n[..., None])[..., 0, 0]  # (B, NH)
    return read_out(numerator, denominator, m, eps), (c, n, m)


def recurrent_form(prepared, eps):
    """The step scanned over axis 2 (time) of prepared sequence inputs.

    Returns:
        `(h, state)` with `h` of shape `(B, NH, T, DV)`.
    """
    xs = tuple(
        ops.moveaxis(x, 2, 0)
        for x in (
            prepared.q,  # (T, B, NH, DK)
            prepared.k,  # (T, B, NH, DK)
            prepared.v,  # (T, B, NH, DV)
            prepared.log_input,  # (T, B, NH)
            prepared.log_forget,  # (T, B, NH)
        )
    )

    def step(state, x):
        h, state = step_core(*x, state, eps)
        return state, h

    outputs_like = ops.zeros_like(prepared.v[:, :, 0])  # (B, NH, DV)
    state, h = scan(step, prepared.state, xs, outputs_like)  # h (T, B, NH, DV)
    return ops.moveaxis(h, 0, 2), state


def mlstm_step(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    state=None,
    *,
    mask=None,
    forget_gate_activation="sigmoid",
    eps=1e-6,
):
    """One mLSTM time step, for generation and streaming.

    Computes the recurrence of `keras_mlstm.ops.mlstm` for a single step
    with O(1) state; feeding a sequence step by step gives exactly the
    outputs and final state of `mlstm` over it.

    Args:
        q: query, `(B, NH, DK)`.
        k: key, `(B, NH, DK)`, same dtype as `q` and `v`.
        v: value, `(B, NH, DV)`.
        input_gate: input gate pre-activation `i~`, `(B, NH)`.
        forget_gate: forget gate pre-activation `f~`, `(B, NH)`.
        state: None (zeros) or `(C, n, m)` with shapes `(B, NH, DK, DV)`,
            `(B, NH, DK)`, `(B, NH)` and the state dtype (float32, or
            float64 for float64 inputs). Defaults to `None`.
        mask: None or a bool `(B,)` tensor; a masked entry keeps its state
            and outputs zeros. Defaults to `None`.
        forget_gate_activation: `"sigmoid"` or `"exp"`. Defaults to
            `"sigmoid"`.
        eps: added to the read-out's denominator. Defaults to `1e-6`.

    Returns:
        `(h, (C, n, m))`: `h` of shape `(B, NH, DV)` in the dtype of
        `v`, and the new state in the state dtype.

    Raises:
        ValueError: for a shape, rank or dtype mismatch or an unknown
            `forget_gate_activation`, before any computation.

    Example:

    >>> import numpy as np
    >>> q = k = v = np.ones((2, 4, 16), "float32")
    >>> i = f = np.zeros((2, 4), "float32")
    >>> h, state = mlstm_step(q, k, v, i, f)
    >>> h, state = mlstm_step(q, k, v, i, f, state)
    >>> tuple(h.shape)
    (2, 4, 16)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517, section 2.3.
    """
    check_options(forget_gate_activation, eps)
    check_inputs(
        q, k, v, input_gate, forget_gate, state, mask, STEP_LAYOUT, "state"
    )
    return _step(
        q,
        k,
        v,
        input_gate,
        forget_gate,
        state,
        mask,
        forget_gate_activation=forget_gate_activation,
        eps=eps,
    )


def _step(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    state,
    mask,
    *,
    forget_gate_activation,
    eps,
):
    """`mlstm_step` after its checks: `(h, new_state)`."""
    prepared = prepare(
        q, k, v, input_gate, forget_gate, state, mask, forget_gate_activation
    )
    h, new_state = step_core(
        prepared.q,
        prepared.k,
        prepared.v,
        prepared.log_input,
        prepared.log_forget,
        prepared.state,
        eps,
    )
    return finish(h, new_state, prepared)


_step = compiled_on_jax(
    _step, static_argnames=("forget_gate_activation", "eps")
)
