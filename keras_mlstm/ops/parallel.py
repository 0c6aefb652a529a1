"""The parallel form: all T outputs at once from a (T, T) matrix of weights.

Cost O(T^2 (DK + DV)) time and O(T^2) memory per head: the fastest form for
short sequences. The building blocks here also serve the chunkwise form,
which applies them inside each chunk.

For positions `t >= s` of one head, with `lf` the log forget gate and
`i~` the input gate pre-activation:

    D[t, s] = lf[s+1] + ... + lf[t] + i~[s]       log weight of input s at t
    a[t]    = lf[1] + ... + lf[t]                  log decay of the state
                                                   carried in, at t
    m[t]    = max(a[t] + m0, max_s D[t, s])        the step recurrence's m

The partial sums inside `D` are taken as sums of the segment itself (not as
differences of one long cumulative sum), so their rounding error scales with
the segment's own decay and not with the sequence length.

Notation (see `common.py`): B, NH, T, DK, DV; `...` is any batch of
leading axes, (B, NH) here and (B, NH, NC) in the chunkwise form.
"""

from keras import ops

from keras_mlstm.ops.common import read_out
from keras_mlstm.ops.compat import cumsum
from keras_mlstm.ops.compat import maximum
from keras_mlstm.ops.compat import reduce_max


def log_weights(log_input, log_forget):
    """The log weight matrix `D` and the cumulative log decay `a`.

    Args:
        log_input: `(..., T)`.
        log_forget: `(..., T)`, in `[-inf, 1e30]` (`-inf`: a reset).

    Returns:
        `D` of shape `(..., T, T)`, `-inf` above the diagonal, and
        `a` of shape `(..., T)`.
    """
    length = ops.shape(log_forget)[-1]
    index = ops.arange(length)
    rows = ops.expand_dims(index, 1)  # (T, 1)
    cols = ops.expand_dims(index, 0)  # (1, T)
    # [r, s] = lf[r] for r > s, else 0, by a select (a reset's -inf times 0
    # would be NaN); a cumulative sum down the rows gives
    # [t, s] = lf[s+1] + ... + lf[t], which reads no row after t.
    segment = cumsum(
        ops.where(
            rows > cols,
            ops.expand_dims(log_forget, -1),
            0.0,
        ),
        axis=-2,
    )  # (..., T, T)
    # -inf above the diagonal, not a large negative number: exp of it is 0
    # whatever the stabiliser, so no later step can weigh on an output, even
    # when every earlier weight is tiny (m near -1e30).
    log_d = ops.where(
        rows >= cols,
        segment + ops.expand_dims(log_input, -2),
        float("-inf"),
    )  # (..., T, T)
    # a[t] = lf[0] + (lf[1] + ... + lf[t]), the first column of `segment`:
    # no second cumulative sum, which XLA compiles as two kernels forward
    # and two backward.
    log_decay = log_forget[..., :1] + segment[..., 0]  # (..., T)
    return log_d, log_decay


def local_state(log_end_weights, k, v):
    """The state built from zero by the inputs of one segment.

    Args:
        log_end_weights: `(..., T)`, the log weight of each input at the end
            of the segment (the last row of `D`).
        k: `(..., T, DK)`.
        v: `(..., T, DV)`.

    Returns:
        `(C, n, m)` of shapes `(..., DK, DV)`, `(..., DK)`, `(...)`,
        stabilised by their own `m` (at least the last input's log
        weight, so finite).
    """
    m = reduce_max(log_end_weights, axis=-1)  # (...)
    weight = ops.exp(log_end_weights - ops.expand_dims(m, -1))  # (..., T)
    weighted_k = k * ops.expand_dims(weight, -1)  # (..., T, DK)
    c = ops.einsum("...tk,...tv->...kv", weighted_k, v)  # (..., DK, DV)
    n = ops.sum(weighted_k, axis=-2)  # (..., DK)
    return c, n, m


def combine_states(state, log_decay, local):
    """Decay `state` by `exp(log_decay)` and add the `local` state.

    Both states are stabilised by their own `m`; the result is stabilised
    by the larger of the two exponents, so no exponential here exceeds 1.
    """
    c_prev, n_prev, m_prev = state
    c_local, n_local, m_local = local
    m = maximum(log_decay + m_prev, m_local)  # (...)
    decay = ops.exp(log_decay + m_prev - m)  # (...)
    scale = ops.exp(m_local - m)  # (...)
    c = (
        ops.expand_dims(decay, (-2, -1)) * c_prev
        + ops.expand_dims(scale, (-2, -1)) * c_local
    )  # (..., DK, DV)
    n = (
        ops.expand_dims(decay, -1) * n_prev
        + ops.expand_dims(scale, -1) * n_local
    )  # (..., DK)
    return c, n, m


def outputs(q, k, v, log_d, log_decay, state, eps):
    """The outputs of a segment, given the state carried into it.

    Args:
        q: `(..., T, DK)`, scaled by `1 / sqrt(DK)`.
        k: `(..., T, DK)`.
        v: `(..., T, DV)`.
        log_d: `(..., T, T)` from `log_weights`.
        log_decay: `(..., T)` from `log_weights`.
        state: `(C, n, m)` before the segment's first step.
        eps: the read-out constant.

    Returns:
        `h` of shape `(..., T, DV)`.
    """
    c_prev, n_prev, m_prev = state
    log_carried = log_decay + ops.expand_dims(m_prev, -1)  # (..., T)
    m = maximum(reduce_max(log_d, axis=-1), log_carried)  # (..., T)
    scores = ops.einsum("...tk,...sk->...ts", q, k)  # (..., T, T)
    weights = ops.exp(log_d - ops.expand_dims(m, -1)) * scores  # (..., T, T)
    carried = ops.exp(log_carried - m)  # (..., T)
    numerator = ops.einsum("...ts,...sv->...tv", weights, v) + ops.expand_dims(
        carried, -1
    ) * ops.einsum("...tk,...kv->...tv", q, c_prev)  # (..., T, DV)
    denominator = ops.sum(weights, axis=-1) + carried * ops.einsum(
        "...tk,...k->...t", q, n_prev
    )  # (..., T)
    return read_out(numerator, denominator, m, eps)


def parallel_form(prepared, eps):
    """The parallel form on prepared inputs (see `common.prepare`).

    Returns:
        `(h, state)` with `h` of shape `(B, NH, T, DV)`.
    """
    log_d, log_decay = log_weights(prepared.log_input, prepared.log_forget)
    h = outputs(
        prepared.q,
        prepared.k,
        prepared.v,
        log_d,
        log_decay,
        prepared.state,
        eps,
    )
    local = local_state(log_d[..., -1, :], prepared.k, prepared.v)
    state = combine_states(prepared.state, log_decay[..., -1], local)
    return h, state
