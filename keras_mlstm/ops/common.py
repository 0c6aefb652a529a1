"""Pieces shared by every mLSTM form: argument checks, gates and read-out.

Notation used in this package:

    B   batch size                  NH  number of heads
    T   sequence length             DK  query/key head dimension
    DV  value head dimension        L   chunk size
    NC  number of chunks, ceil(T / L)

The state of one head is `(C, n, m)`: the matrix memory `C` (DK, DV),
the normaliser `n` (DK,) and the stabiliser `m` (a scalar). `C` and
`n` are stored divided by `exp(m)`, so every exponent the forms compute is
at most zero (see `docs/math.md`).

Every public op checks its arguments here, from static shapes only, before it
computes anything. `prepare` then makes the inputs safe for every form
(`docs/reliability.md`):

- a masked step is selected away before any arithmetic, so whatever it holds
  (NaN, inf) reaches no output, state or gradient;
- a step whose `k`, `v` or gates hold NaN or inf (the gates: NaN) is
  computed as an empty step and its output, every later output and the final
  state are set to NaN afterwards (a step with a non-finite `q`: its own
  output only). The forms thus agree on which outputs are NaN, and no
  non-finite value enters the arithmetic, whose backward pass would turn
  `0 * NaN` into NaN gradients for the steps before it;
- the input gate is clipped to `[-1e30, 1e30]` and the exponential forget
  gate to at most `1e30`; a forget gate of `-inf` stays: a hard reset.
"""

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_mlstm.ops.compat import clip_above
from keras_mlstm.ops.compat import clip_below
from keras_mlstm.ops.compat import maximum
from keras_mlstm.ops.compat import reduce_max

# Log-weight given to an absent input (a masked or padded step). Finite, so
# that no `inf - inf` can appear in a forward or backward pass, and so
# negative that `exp` of it is exactly zero in every float dtype we use.
NEG_LOG_WEIGHT = -1e30

# Gate pre-activations are clipped to this magnitude (the forget gate: from
# above, and only with the exponential activation), so that the stabiliser
# `m` is always finite and `inf - inf` cannot arise. `+inf` thus means
# a write that outweighs every finite write (until a reset), `-inf` no
# write; see `docs/reliability.md`.
GATE_LIMIT = 1e30

# `exp(-m)` is capped at `exp(MAX_LOG_FLOOR)` in the read-out so that a
# very negative stabiliser cannot overflow float32 (and make inf * 0 = NaN in
# the backward pass). It only matters when `m < -80`, where the true output
# is below float32 resolution anyway.
MAX_LOG_FLOOR = 80.0

FORMS = ("parallel", "chunkwise", "recurrent")
FORGET_GATE_ACTIVATIONS = ("sigmoid", "exp")

SEQUENCE_LAYOUT = {
    "q": ("B", "NH", "T", "DK"),
    "k": ("B", "NH", "T", "DK"),
    "v": ("B", "NH", "T", "DV"),
    "input_gate": ("B", "NH", "T"),
    "forget_gate": ("B", "NH", "T"),
    "mask": ("B", "T"),
}
STEP_LAYOUT = {
    "q": ("B", "NH", "DK"),
    "k": ("B", "NH", "DK"),
    "v": ("B", "NH", "DV"),
    "input_gate": ("B", "NH"),
    "forget_gate": ("B", "NH"),
    "mask": ("B",),
}
STATE_LAYOUT = (
    ("C", ("B", "NH", "DK", "DV")),
    ("n", ("B", "NH", "DK")),
    ("m", ("B", "NH")),
)


class Prepared(NamedTuple):
    """Checked inputs of a form, cast to the state dtype and made safe.

    `q` is already scaled by `1 / sqrt(DK)` (unless `prepare` was asked
    not to: the fused kernels scale it themselves); `log_input` and
    `log_forget` are the log input and log forget gates with masked steps
    turned into identities (`log_forget = 0`, `log_input = -1e30`, zero
    `k` and `v`), and `forget_gate` the forget gate's pre-activation
    before its log (masked steps hold 0 there: only `log_forget` makes
    them identities); `keep` is the boolean mask broadcast against the
    gates, or None. `poisoned` is True for the outputs that are NaN (a
    non-finite input at or before them) and `poisoned_state` for the
    batch entries and heads whose final state is NaN.
    """

    q: object
    k: object
    v: object
    log_input: object
    log_forget: object
    forget_gate: object
    state: object
    keep: object
    poisoned: object
    poisoned_state: object
    output_dtype: str


_DTYPE_NAMES = {}


def standardize_dtype(x):
    """The Keras name of `x`'s dtype (`"float32"`...), cached per dtype
    object: Keras's own lookup costs microseconds per call."""
    name = _DTYPE_NAMES.get(x.dtype)
    if name is None:
        name = _DTYPE_NAMES[x.dtype] = keras.backend.standardize_dtype(x.dtype)
    return name


def as_tensor(x):
    """`x` as a backend tensor; tensors pass through untouched."""
    return x if ops.is_tensor(x) else ops.convert_to_tensor(x)


def to_dtype(x, dtype):
    """`x` as a tensor of `dtype`, cast only when it differs (each
    `keras.ops` call costs microseconds of Python in eager PyTorch)."""
    x = as_tensor(x)
    return x if standardize_dtype(x) == dtype else ops.cast(x, dtype)


def linear(x, kernel):
    """`x` `(..., I)` times `kernel` `(I, O)`: `(..., O)`.

    `einsum` with the batch axes named, not `ops.matmul`, whose PyTorch
    version computes float64 operands in float32 (Keras 3.15), nor an
    `"..."` einsum, whose TensorFlow gradient broadcasts through a
    `(..., I, O)` tensor (measured: a block's training step 1.5 s instead
    of 0.05 s, an `MLSTM(128)` step 585 ms instead of 26 ms). Inputs of
    rank up to 9.
    """
    axes = "abcdefgh"[: len(x.shape) - 1]
    return ops.einsum(f"{axes}i,io->{axes}o", x, kernel)


def state_dtype(value_dtype):
    """The dtype of gates and states for inputs of `value_dtype`.

    float32 for every input dtype but float64, which keeps float64.
    """
    return "float64" if value_dtype == "float64" else "float32"


def static_shape(x):
    """The shape of `x` with every size not known as an int set to None
    (JAX's symbolic sizes included: `int()` of one raises)."""
    return tuple(
        int(d) if isinstance(d, (int, np.integer)) else None for d in x.shape
    )


def positive_int(name, value, minimum=1):
    """`value` as an int >= `minimum`, or ValueError naming `name`.

    Python and NumPy integers are accepted; bools, floats and strings are
    not.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an int >= {minimum}; received {value!r}."
        )
    return int(value)


def positive_number(name, value, allow_zero=False):
    """`value` as a finite float > 0 (>= 0 with `allow_zero`), or
    ValueError naming `name`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (0 <= value if allow_zero else 0 < value)
        or not value < float("inf")
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"`{name}` must be a finite number {bound}; received {value!r}."
        )
    return float(value)


def rate(name, value):
    """`value` as a float in [0, 1), or ValueError naming `name`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"`{name}` must be a number in [0, 1); received {value!r}."
        )
    return float(value)


def _describe(axes, dims):
    names = ", ".join(axes)
    sizes = ", ".join(str(dims.get(a)) if dims.get(a) else a for a in axes)
    return f"({names}) = ({sizes})"


def bind_shape(name, x, axes, dims):
    """Check `x` against the named `axes`, recording new sizes in `dims`.

    Raises:
        ValueError: naming `name`, the expected layout and sizes, and the
            received shape, when the rank or a known size differs.
    """
    shape = static_shape(x)
    if len(shape) != len(axes):
        raise ValueError(
            f"`{name}` must have rank {len(axes)} and shape "
            f"{_describe(axes, dims)}; received shape {shape}."
        )
    for axis, size in zip(axes, shape, strict=True):
        known = dims.get(axis)
        if size is not None and known is not None and size != known:
            raise ValueError(
                f"`{name}` must have shape {_describe(axes, dims)}; received "
                f"shape {shape} ({axis} = {size}, expected {known})."
            )
    for axis, size in zip(axes, shape, strict=True):
        if dims.get(axis) is None and size is not None:
            dims[axis] = size


def check_float(name, x):
    dtype = standardize_dtype(x)
    if "float" not in dtype:
        raise ValueError(
            f"`{name}` must have a floating dtype; received dtype {dtype}."
        )
    return dtype


def check_chunk_size(chunk_size):
    """`chunk_size` as `"auto"` or an int >= 1, or ValueError."""
    if isinstance(chunk_size, str):
        if chunk_size != "auto":
            raise ValueError(
                '`chunk_size` must be "auto" or an int >= 1; received '
                f"{chunk_size!r}."
            )
        return chunk_size
    return positive_int("chunk_size", chunk_size)


FUSED_BACKWARDS = ("exact", "kernel")


def check_fused(fused, fused_backward="exact"):
    """Raise ValueError unless `fused` is None, True or False and
    `fused_backward` one of `FUSED_BACKWARDS`."""
    if fused is not None and not isinstance(fused, bool):
        raise ValueError(
            "`fused` must be None (the fused kernel where it can run), True "
            f"(required) or False (keras.ops); received {fused!r}."
        )
    if fused_backward not in FUSED_BACKWARDS:
        raise ValueError(
            f"`fused_backward` must be one of {FUSED_BACKWARDS}; received "
            f"{fused_backward!r}."
        )


def check_options(forget_gate_activation, eps, chunk_size=None, form=None):
    """Check the non-tensor arguments shared by the ops."""
    if forget_gate_activation not in FORGET_GATE_ACTIVATIONS:
        raise ValueError(
            "`forget_gate_activation` must be one of "
            f"{FORGET_GATE_ACTIVATIONS}; received {forget_gate_activation!r}."
        )
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"`eps` must be a float >= 0; received {eps!r}.")
    if not eps >= 0.0 or eps == float("inf"):
        raise ValueError(f"`eps` must be a finite float >= 0; received {eps}.")
    if chunk_size is not None:
        check_chunk_size(chunk_size)
    if form is not None and form not in FORMS + ("auto",):
        raise ValueError(
            f"`form` must be one of {FORMS + ('auto',)}; received {form!r}."
        )


def check_state(state, dims, dtype, name="initial_state"):
    """Check a `(C, n, m)` state against the sizes in `dims`."""
    if not isinstance(state, (tuple, list)) or len(state) != 3:
        count = len(state) if isinstance(state, (tuple, list)) else None
        raise ValueError(
            f"`{name}` must be a tuple (C, n, m) of 3 tensors with shapes "
            f"{_describe(STATE_LAYOUT[0][1], dims)}, "
            f"{_describe(STATE_LAYOUT[1][1], dims)}, "
            f"{_describe(STATE_LAYOUT[2][1], dims)}; received "
            + (f"{count} items." if count is not None else f"{type(state)}.")
        )
    for tensor, (part, axes) in zip(state, STATE_LAYOUT, strict=True):
        bind_shape(f"{name}[{part}]", tensor, axes, dims)
        got = standardize_dtype(tensor)
        if got != dtype:
            raise ValueError(
                f"`{name}[{part}]` must have dtype {dtype} (the state dtype "
                f"for these inputs); received dtype {got}."
            )


def check_inputs(
    q, k, v, input_gate, forget_gate, state, mask, layout, state_name
):
    """Check every tensor argument of a form; return `(dims, value dtype)`.

    `layout` is `SEQUENCE_LAYOUT` or `STEP_LAYOUT`.
    """
    dims = {}
    tensors = {
        "q": q,
        "k": k,
        "v": v,
        "input_gate": input_gate,
        "forget_gate": forget_gate,
    }
    for name, tensor in tensors.items():
        if tensor is None or not hasattr(tensor, "shape"):
            raise ValueError(
                f"`{name}` must be a tensor of shape "
                f"({', '.join(layout[name])}); received {type(tensor)}."
            )
        bind_shape(name, tensor, layout[name], dims)
        check_float(name, tensor)
    value_dtype = standardize_dtype(v)
    for name in ("q", "k"):
        got = standardize_dtype(tensors[name])
        if got != value_dtype:
            raise ValueError(
                f"`{name}` must have the dtype of `v` ({value_dtype}); "
                f"received dtype {got}."
            )
    if "T" in layout["q"] and dims.get("T") == 0:
        raise ValueError(
            "The sequence length T (axis 2 of `q`) must be >= 1; received 0."
        )
    if mask is not None:
        bind_shape("mask", mask, layout["mask"], dims)
        got = standardize_dtype(mask)
        if got != "bool":
            raise ValueError(
                f"`mask` must have dtype bool; received dtype {got}."
            )
    if state is not None:
        check_state(state, dims, state_dtype(value_dtype), state_name)
    return dims, value_dtype


def zero_state(batch_size, num_heads, dk, dv, dtype):
    """The default initial state `C = 0, n = 0, m = 0`."""
    return (
        ops.zeros((batch_size, num_heads, dk, dv), dtype),
        ops.zeros((batch_size, num_heads, dk), dtype),
        ops.zeros((batch_size, num_heads), dtype),
    )


def _select(keep, x, value):
    """`x` where `keep`, else `value` (`keep` broadcast to `x`)."""
    # A Python scalar keeps the dtype of `x` on every backend, and spares
    # a full-size constant tensor per select.
    return ops.where(keep, x, value)


def from_first(flags):
    """True from the first True of `flags` along the last axis on: a
    cumulative OR over the steps, `(..., T)` bool in and out, T >= 1 (the
    ops and layers refuse empty sequences before they get here).

    Taken as `T - t <= max over flagged steps s of T - s`, one maximum
    and a comparison. A cumulative sum, the obvious way, is a window
    reduction, which XLA compiles as two kernels forward and two backward
    (alone, (16, 4, 4, 64, 64) along an axis of 64: 0.15 s to compile,
    against 0.01 s for an elementwise product).
    """
    length = ops.shape(flags)[-1]
    countdown = length - ops.arange(length, dtype="int32")  # (T,), T..1
    latest = reduce_max(ops.where(flags, countdown, 0), axis=-1)  # (...)
    return ops.less_equal(countdown, ops.expand_dims(latest, -1))  # (..., T)


def _non_finite_steps(q, k, v, input_gate, forget_gate):
    """Per step, `(bad_read, bad_write)` of shape (B, NH[, T]): `q`
    holds NaN or inf; `k` or `v` hold NaN or inf, or a gate is NaN.

    One sum per vector: it is non-finite iff an entry is (the inputs are
    finite floats of a magnitude whose sums do not overflow)."""
    bad_read = ~ops.isfinite(ops.sum(q, axis=-1))
    written = ops.sum(k, axis=-1) + ops.sum(v, axis=-1)
    bad_write = (
        ~ops.isfinite(written) | ops.isnan(input_gate) | ops.isnan(forget_gate)
    )
    return bad_read, bad_write


def prepare(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    state,
    mask,
    forget_gate_activation,
    scale_query=True,
):
    """Cast checked inputs to the state dtype, select masked steps away and
    make non-finite inputs safe (see the module docstring). Works for
    sequences (gates `(B, NH, T)`, mask `(B, T)`) and single steps
    (gates `(B, NH)`, mask `(B,)`). `scale_query=False` leaves `q`
    unscaled, for kernels that scale it themselves.
    """
    output_dtype = standardize_dtype(v)
    dtype = state_dtype(output_dtype)
    q = as_tensor(q)
    dk = q.shape[-1]
    if dk is None:  # known only at run time (a traced, reshaped tensor)
        dk = ops.shape(q)[-1]
        root_dk = ops.sqrt(ops.cast(dk, dtype))
    else:
        # A Python float keeps full precision in any dtype; ops.cast of one
        # would round it through float32 first on TensorFlow.
        root_dk = dk**0.5
    q, k, v = (to_dtype(x, dtype) for x in (q, k, v))
    input_gate = to_dtype(input_gate, dtype)
    forget_gate = to_dtype(forget_gate, dtype)
    sequence = len(input_gate.shape) == 3

    # 1. Masked steps: select before any arithmetic, so that what they hold
    # reaches no output and no gradient (a select, unlike * 0, drops NaN).
    keep = None
    if mask is not None:
        keep = ops.expand_dims(as_tensor(mask), 1)  # (B, 1, [T])
        q, k, v = (_select(keep[..., None], x, 0.0) for x in (q, k, v))
        input_gate = _select(keep, input_gate, NEG_LOG_WEIGHT)
        forget_gate = _select(keep, forget_gate, 0.0)

    # 2. Non-finite steps: computed as empty steps, NaN set afterwards.
    bad_read, bad_write = _non_finite_steps(
        q, k, v, input_gate, forget_gate
    )  # (B, NH[, T]) each
    q = _select(~bad_read[..., None], q, 0.0)
    k, v = (_select(~bad_write[..., None], x, 0.0) for x in (k, v))
    input_gate = _select(~bad_write, input_gate, NEG_LOG_WEIGHT)
    forget_gate = _select(~bad_write, forget_gate, 0.0)
    if sequence:
        written = from_first(bad_write)  # (B, NH, T)
        poisoned_state = written[..., -1]  # (B, NH)
    else:
        written = poisoned_state = bad_write  # (B, NH)
    poisoned = written | bad_read

    # 3. Gates in the log domain, clipped so that the stabiliser is finite.
    log_input = clip_above(clip_below(input_gate, -GATE_LIMIT), GATE_LIMIT)
    if forget_gate_activation == "sigmoid":
        log_forget = ops.log_sigmoid(forget_gate)  # in [-inf, 0]
    else:
        log_forget = clip_above(forget_gate, GATE_LIMIT)
    if keep is not None:
        log_forget = _select(keep, log_forget, 0.0)

    if scale_query:
        q = q / root_dk
    if state is None:
        shape = ops.shape(v)
        state = zero_state(shape[0], shape[1], dk, shape[-1], dtype)
    else:
        state = tuple(as_tensor(s) for s in state)
    return Prepared(
        q,
        k,
        v,
        log_input,
        log_forget,
        forget_gate,
        state,
        keep,
        poisoned,
        poisoned_state,
        output_dtype,
    )


def read_out(numerator, denominator, log_scale, eps):
    """`h = num / (max(|den|, exp(-m)) + eps)` for stabilised num and den.

    Args:
        numerator: `(..., DV)`, `C^T q` with `C` stored over exp(m).
        denominator: `(...)`, `n^T q` with `n` stored over exp(m).
        log_scale: `(...)`, the stabiliser `m`.
        eps: the constant added to the denominator.
    """
    floor = ops.exp(-clip_below(log_scale, -MAX_LOG_FLOOR))  # (...)
    scale = maximum(abs(denominator), floor) + eps  # (...)
    return numerator / scale[..., None]


def finish(h, state, prepared):
    """Set the outputs and states of non-finite steps to NaN, zero the
    outputs of masked steps, and cast `h` to the dtype of `v`."""
    nan = float("nan")
    h = _select(~prepared.poisoned[..., None], h, nan)
    if prepared.keep is not None:
        h = _select(prepared.keep[..., None], h, 0.0)
    bad = prepared.poisoned_state
    c, n, m = state
    state = (
        _select(~bad[..., None, None], c, nan),
        _select(~bad[..., None], n, nan),
        _select(~bad, m, nan),
    )
    return to_dtype(h, prepared.output_dtype), state
