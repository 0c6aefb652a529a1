"""The chunkwise form: parallel inside chunks of L steps, recurrent across.

Cost O(T L (DK + DV) + T DK DV) time and O(T L + NC DK DV) memory per head,
linear in T; the only sequential part is a loop over the NC = ceil(T / L)
chunks, never over time steps. Phases, per head:

1. Pad T to NC * L with identity steps (`lf = 0`, `i~ = -1e30`), which
   leave the state exactly unchanged, and split into chunks.
   O(T (DK + DV)).
2. Inside every chunk at once: the log weight matrix `D` (L, L) and the
   cumulative log decay `a` (L,). O(T L).
3. Inside every chunk at once: the state each chunk builds from zero,
   `C_c = sum_s exp(D[L-1, s] - m_c) k_s v_s^T`. O(T DK DV).
4. Across chunks, sequentially: the state entering each chunk, by decaying
   the previous one by the chunk's total `exp(a[L-1])` and adding the
   chunk's own state, stabilised. O(NC DK DV), NC steps. (On TensorFlow
   under XLA, whose gradient of a loop that emits per-step outputs is
   quadratic in the number of steps, the same maps are composed by an
   associative scan: O(NC log NC DK DV) in log2(NC) steps.)
5. Inside every chunk at once: the outputs from the chunk's inputs (an
   (L, L) masked attention) plus the state entering the chunk.
   O(T L (DK + DV) + T DK DV).
6. Drop the padded steps.

Phases 2, 3 and 5 are the parallel form's building blocks applied with the
chunks as an extra batch axis. A chunk size above T is taken as T, so the
cost follows T whatever the chunk size asked for.

Notation (see `common.py`): B, NH, T, DK, DV, L, NC.
"""

from keras import ops

from keras_mlstm.ops.common import NEG_LOG_WEIGHT
from keras_mlstm.ops.compat import scan
from keras_mlstm.ops.compat import sequential_scan_gradient_is_quadratic
from keras_mlstm.ops.parallel import combine_states
from keras_mlstm.ops.parallel import local_state
from keras_mlstm.ops.parallel import log_weights
from keras_mlstm.ops.parallel import outputs


def _to_chunks(x, chunk_size, count, padding, value=0.0):
    """Pad axis 2 of `x` by `padding` and split it into `count` chunks
    of `chunk_size` (sizes given, not inferred: a -1 is ambiguous for an
    empty batch)."""
    if padding is not None:
        widths = [[0, 0]] * len(x.shape)
        widths[2] = [0, padding]
        x = ops.pad(x, widths, constant_values=value)
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], shape[1], count, chunk_size) + shape[3:])


def _carry_in_sequence(state, chunk_decay, local):
    """Phase 4 as a loop over the NC chunks: O(NC DK DV) work."""

    def step(carried, chunk):
        decay, chunk_local = chunk
        return combine_states(carried, decay, chunk_local), carried

    return scan(step, state, (chunk_decay, local), state)


def _carry_by_prefixes(state, chunk_decay, local):
    """Phase 4 without a loop: O(NC log NC DK DV) work in log2(NC) steps.

    A chunk acts on the state as `x -> exp(G) x + S` (decay G, local state
    S, stabilised); two chunks in a row compose into one map of that form,
    with `combine_states` for S. Inclusive prefixes of that composition
    (Hillis-Steele doubling, static shapes), applied to the initial state,
    give the state after every chunk.
    """

    def compose(first, second):
        decay_a, local_a = first
        decay_b, local_b = second
        return decay_a + decay_b, combine_states(local_a, decay_b, local_b)

    def take(nest, start, stop):
        return nest[0][start:stop], tuple(s[start:stop] for s in nest[1])

    count = chunk_decay.shape[0]
    prefix = (chunk_decay, local)
    shift = 1
    while shift < count:
        head = take(prefix, None, shift)
        tail = compose(take(prefix, None, -shift), take(prefix, shift, None))
        prefix = (
            ops.concatenate([head[0], tail[0]], axis=0),
            tuple(
                ops.concatenate([h, t], axis=0)
                for h, t in zip(head[1], tail[1], strict=True)
            ),
        )
        shift *= 2
    decay, composed = prefix
    after = combine_states(
        tuple(ops.expand_dims(s, 0) for s in state), decay, composed
    )  # the state after each chunk, (NC, B, NH, ...)
    entering = tuple(
        ops.concatenate([ops.expand_dims(s0, 0), s[:-1]], axis=0)
        for s0, s in zip(state, after, strict=True)
    )
    return tuple(s[-1] for s in after), entering


def chunkwise_form(prepared, eps, chunk_size):
    """The chunkwise form on prepared inputs (see `common.prepare`).

    A `chunk_size` larger than T is taken as T: the cost follows the
    sequence, never the chunk size.

    Returns:
        `(h, state)` with `h` of shape `(B, NH, T, DV)`.
    """
    length = prepared.q.shape[2]
    if length is None:  # only known at run time: always pad, then slice
        length = ops.shape(prepared.q)[2]
        chunk_size = ops.minimum(chunk_size, length)
        padding = (-length) % chunk_size
        padded = length + padding
    else:
        chunk_size = min(chunk_size, length)
        padding = (-length) % chunk_size or None
        padded = length + (padding or 0)
    count = padded // chunk_size

    # 1. Identity padding, then chunks.
    def chunks(x, value=0.0):
        return _to_chunks(x, chunk_size, count, padding, value)

    q = chunks(prepared.q)  # (B, NH, NC, L, DK)
    k = chunks(prepared.k)  # (B, NH, NC, L, DK)
    v = chunks(prepared.v)  # (B, NH, NC, L, DV)
    log_input = chunks(prepared.log_input, NEG_LOG_WEIGHT)  # (B, NH, NC, L)
    log_forget = chunks(prepared.log_forget)  # (B, NH, NC, L)

    # 2. Log weights inside each chunk.
    log_d, log_decay = log_weights(log_input, log_forget)  # (B, NH, NC, L, L)

    # 3. The state each chunk builds from zero.
    local = local_state(log_d[..., -1, :], k, v)  # (B, NH, NC, DK, DV), ...

    # 4. The state entering each chunk, carried across chunks.
    chunk_decay = ops.moveaxis(log_decay[..., -1], 2, 0)  # (NC, B, NH)
    local = tuple(ops.moveaxis(s, 2, 0) for s in local)  # (NC, B, NH, ...)
    if sequential_scan_gradient_is_quadratic() and chunk_decay.shape[0]:
        final_state, entering = _carry_by_prefixes(
            prepared.state, chunk_decay, local
        )
    else:
        final_state, entering = _carry_in_sequence(
            prepared.state, chunk_decay, local
        )
    entering = tuple(ops.moveaxis(s, 0, 2) for s in entering)

    # 5. Outputs of every chunk.
    h = outputs(q, k, v, log_d, log_decay, entering, eps)  # (B, NH, NC, L, DV)

    # 6. Back to (B, NH, T, DV), without the padding.
    shape = ops.shape(h)
    h = ops.reshape(h, (shape[0], shape[1], padded, shape[-1]))
    if padding is not None:
        h = h[:, :, :length]
    return h, final_state
