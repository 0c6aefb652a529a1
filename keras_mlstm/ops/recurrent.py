"""The recurrent form: the mLSTM step, and a scan of it over time.

One step costs O(DK * DV) per head and keeps O(1) state, which makes it the
form for generation and streaming. Over a whole sequence it is a loop over
time steps, so the layers use it only for T == 1; it also serves as the plain
statement of the recurrence that the other forms are held to.

Notation (see `common.py`): B, NH, T, DK, DV.
"""

from keras import ops

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


def step_form(
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
    """`mlstm_step` after its checks, through `keras.ops`:
    `(h, new_state)`."""
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


step_form = compiled_on_jax(
    step_form, static_argnames=("forget_gate_activation", "eps")
)
