"""Pieces shared by every mLSTM form: argument checks, gates and read-out.

Notation used in this package:

    B   batch size                  NH  number of heads
    T   sequence length             DK  query/key head dimension
    DV  value head dimension        L   chunk size
    NC  number of chunks, ceil(T / L)

The state of one head is ``(C, n, m)``: the matrix memory ``C`` (DK, DV),
the normaliser ``n`` (DK,) and the stabiliser ``m`` (a scalar). ``C`` and
``n`` are stored divided by ``exp(m)``, so every exponent the forms compute is
at most zero (see ``docs/math.md``).

Every public op checks its arguments here, from static shapes only, before it
computes anything.
"""

from typing import NamedTuple

import keras
from keras import ops

from keras_mlstm.ops.compat import clip_below
from keras_mlstm.ops.compat import maximum

# Log-weight given to an absent input (a masked or padded step). Finite, so
# that no ``inf - inf`` can appear in a forward or backward pass, and so
# negative that ``exp`` of it is exactly zero in every float dtype we use.
NEG_LOG_WEIGHT = -1e30

# ``exp(-m)`` is capped at ``exp(MAX_LOG_FLOOR)`` in the read-out so that a
# very negative stabiliser cannot overflow float32 (and make inf * 0 = NaN in
# the backward pass). It only matters when ``m < -80``, where the true output
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
    """Checked inputs of a form, cast to the state dtype.

    ``q`` is already scaled by ``1 / sqrt(DK)``; ``log_input`` and
    ``log_forget`` are the log input and log forget gates with masked steps
    turned into identities (``log_forget = 0``, ``log_input = -1e30``);
    ``keep`` is the boolean mask broadcast against the gates, or None.
    """

    q: object
    k: object
    v: object
    log_input: object
    log_forget: object
    state: object
    keep: object
    output_dtype: str


_DTYPE_NAMES = {}


def standardize_dtype(x):
    """The Keras name of ``x``'s dtype (``"float32"``...), cached per dtype
    object: Keras's own lookup costs microseconds per call."""
    name = _DTYPE_NAMES.get(x.dtype)
    if name is None:
        name = _DTYPE_NAMES[x.dtype] = keras.backend.standardize_dtype(x.dtype)
    return name


def as_tensor(x):
    """``x`` as a backend tensor; tensors pass through untouched."""
    return x if ops.is_tensor(x) else ops.convert_to_tensor(x)


def to_dtype(x, dtype):
    """``x`` as a tensor of ``dtype``, cast only when it differs (each
    ``keras.ops`` call costs microseconds of Python in eager PyTorch)."""
    x = as_tensor(x)
    return x if standardize_dtype(x) == dtype else ops.cast(x, dtype)


def state_dtype(value_dtype):
    """The dtype of gates and states for inputs of ``value_dtype``.

    float32 for every input dtype but float64, which keeps float64.
    """
    return "float64" if value_dtype == "float64" else "float32"


def static_shape(x):
    return tuple(None if d is None else int(d) for d in x.shape)


def _describe(axes, dims):
    names = ", ".join(axes)
    sizes = ", ".join(str(dims.get(a)) if dims.get(a) else a for a in axes)
    return f"({names}) = ({sizes})"


def bind_shape(name, x, axes, dims):
    """Check ``x`` against the named ``axes``, recording new sizes in ``dims``.

    Raises:
        ValueError: naming ``name``, the expected layout and sizes, and the
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
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise ValueError(
                f"`chunk_size` must be a positive int; received {chunk_size!r}."
            )
        if chunk_size < 1:
            raise ValueError(
                f"`chunk_size` must be a positive int; received {chunk_size}."
            )
    if form is not None and form not in FORMS + ("auto",):
        raise ValueError(
            f"`form` must be one of {FORMS + ('auto',)}; received {form!r}."
        )


def check_state(state, dims, dtype, name="initial_state"):
    """Check a ``(C, n, m)`` state against the sizes in ``dims``."""
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
    """Check every tensor argument of a form; return ``(dims, value dtype)``.

    ``layout`` is ``SEQUENCE_LAYOUT`` or ``STEP_LAYOUT``.
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
    """The default initial state ``C = 0, n = 0, m = 0``."""
    return (
        ops.zeros((batch_size, num_heads, dk, dv), dtype),
        ops.zeros((batch_size, num_heads, dk), dtype),
        ops.zeros((batch_size, num_heads), dtype),
    )


def prepare(
    q, k, v, input_gate, forget_gate, state, mask, forget_gate_activation
):
    """Cast checked inputs to the state dtype and turn masked steps into
    identities. Works for sequences (gates ``(B, NH, T)``, mask ``(B, T)``)
    and single steps (gates ``(B, NH)``, mask ``(B,)``).
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
    q = to_dtype(q, dtype) / root_dk
    k = to_dtype(k, dtype)
    v = to_dtype(v, dtype)
    log_input = to_dtype(input_gate, dtype)
    forget_gate = to_dtype(forget_gate, dtype)
    if forget_gate_activation == "sigmoid":
        log_forget = ops.log_sigmoid(forget_gate)
    else:
        log_forget = forget_gate
    keep = None
    if mask is not None:
        keep = ops.expand_dims(ops.convert_to_tensor(mask), 1)  # (B, 1, [T])
        log_forget = ops.where(keep, log_forget, ops.zeros_like(log_forget))
        log_input = ops.where(
            keep, log_input, ops.full_like(log_input, NEG_LOG_WEIGHT)
        )
    if state is None:
        shape = ops.shape(v)
        state = zero_state(shape[0], shape[1], dk, shape[-1], dtype)
    else:
        state = tuple(as_tensor(s) for s in state)
    return Prepared(q, k, v, log_input, log_forget, state, keep, output_dtype)


def read_out(numerator, denominator, log_scale, eps):
    """``h = num / (max(|den|, exp(-m)) + eps)`` for stabilised num and den.

    Args:
        numerator: ``(..., DV)``, ``C^T q`` with ``C`` stored over exp(m).
        denominator: ``(...)``, ``n^T q`` with ``n`` stored over exp(m).
        log_scale: ``(...)``, the stabiliser ``m``.
        eps: the constant added to the denominator.
    """
    floor = ops.exp(-clip_below(log_scale, -MAX_LOG_FLOOR))  # (...)
    scale = maximum(abs(denominator), floor) + eps  # (...)
    return numerator / scale[..., None]


def finish(h, prepared):
    """Zero the outputs of masked steps and cast to the dtype of ``v``."""
    if prepared.keep is not None:
        keep = ops.expand_dims(prepared.keep, -1)  # (B, 1, [T,] 1)
        h = ops.where(keep, h, ops.zeros_like(h))
    return to_dtype(h, prepared.output_dtype)
