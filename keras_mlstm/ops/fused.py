"""The fused form: `mlstm` and `mlstm_step` through a kernel of the official
`mlstm_kernels` package (TFLA's `triton_xl_chunk` on NVIDIA GPUs, or any
kernel of its registries; `keras_mlstm.config` picks them).

The kernels compute the stabilised mLSTM of the other forms (q scaled by
`1 / sqrt(DK)` inside, exponential input gate, sigmoid forget gate, the
same read-out and states), but they take no mask, need T to be a multiple
of their chunk size, and have no exponential forget gate. The glue, in
`keras.ops`, makes them compute exactly what the other forms compute:

1. `prepare` (common.py) selects masked and non-finite steps away, as for
   every form, and leaves `q` unscaled;
2. masked steps become identities the kernel understands: input gate
   -1e30 (nothing written), forget gate pre-activation +1e30 (its log
   sigmoid is 0: nothing forgotten), zero `k` and `v`;
3. T is padded to P, a multiple of the chunk size L, with such steps,
   which leave the state exactly unchanged (the stabiliser `m` stays at
   `max(m, -1e30) = m`);
4. the kernel runs (`compat.run_sequence_kernel`), its outputs are cut
   back to T, and `finish` zeroes the masked outputs and sets those of
   non-finite steps to NaN.

Notation (see `common.py`): B, NH, T, DK, DV, L, P = NC * L.
"""

from keras import ops

from keras_mlstm import config
from keras_mlstm.ops.chunkwise import chunkwise_form
from keras_mlstm.ops.common import as_tensor
from keras_mlstm.ops.common import finish
from keras_mlstm.ops.common import prepare
from keras_mlstm.ops.common import standardize_dtype
from keras_mlstm.ops.compat import compiled_on_jax
from keras_mlstm.ops.compat import exact_backward
from keras_mlstm.ops.compat import fused_by_default
from keras_mlstm.ops.compat import fused_kernel
from keras_mlstm.ops.compat import on_accelerator
from keras_mlstm.ops.compat import run_sequence_kernel
from keras_mlstm.ops.compat import run_step_kernel
from keras_mlstm.ops.recurrent import step_form

# The forget pre-activation of an identity step: log_sigmoid(1e30) = 0.
OPEN_FORGET = 1e30
KERNEL_DTYPES = ("float32", "bfloat16", "float16")
# TFLA's own chunk size for `chunk_size="auto"` with a Triton kernel.
TRITON_CHUNK_SIZE = 128


def choose_fused_kernel(kind, fused, q, v, forget_gate_activation, form="auto"):
    """The name of the fused kernel of `kind` (`"sequence"` or `"step"`)
    for this call, or None for `keras.ops`: `fused=None` takes it where it
    can run and `keras_mlstm.config` allows, `True` requires it (a
    ValueError says why it cannot run), `False` never takes it."""
    if fused is False or (
        fused is None
        and not (config.is_fused_kernels_enabled() and fused_by_default())
    ):
        return None
    name, reason = find_fused_kernel(kind, q, v, forget_gate_activation, form)
    if name is None and fused is True:
        raise ValueError(
            f"`fused=True`, but the fused {kind} kernel cannot compute this "
            f"call: {reason}."
        )
    return name


def find_fused_kernel(kind, q, v, forget_gate_activation, form="auto"):
    """`(kernel name, None)` if the configured fused kernel of `kind`
    (`"sequence"` or `"step"`) can compute this call, else `(None, why)`.
    The cheap reasons come first: this runs on every call.
    """
    sequence_kernel, step_kernel = config.fused_kernel_names()
    name = sequence_kernel if kind == "sequence" else step_kernel
    if "triton" in name and not on_accelerator(q):
        return None, (
            f"the Triton kernel {name!r} runs on NVIDIA GPUs; the inputs "
            "are not on one"
        )
    if form not in ("auto", "chunkwise"):
        return None, f"form={form!r} asks for that keras.ops form"
    if forget_gate_activation != "sigmoid":
        return None, (
            "the kernels have the sigmoid forget gate only; "
            f"forget_gate_activation={forget_gate_activation!r}"
        )
    dtype = standardize_dtype(v)
    if dtype not in KERNEL_DTYPES:
        return None, (
            f"the kernels compute in {', '.join(KERNEL_DTYPES)}; the inputs "
            f"are {dtype}"
        )
    kernel = fused_kernel(kind, name)
    if isinstance(kernel, str):
        return None, kernel
    if "triton" in name:
        sizes = (q.shape[-1], v.shape[-1])
        if any(size is None or size % 16 for size in sizes):
            return None, (
                f"the Triton kernel {name!r} needs head sizes that are "
                f"multiples of 16; received DK, DV = {sizes}"
            )
    return name, None


def kernel_chunk_size(chunk_size, resolved, length, name):
    """The kernel's L: the given int, TFLA's 128 for a Triton kernel under
    `"auto"` (else the resolved size); never far above T (a power of two
    of at least 16 covering it), so that short sequences pad little."""
    size = resolved
    if chunk_size == "auto" and "triton" in name:
        size = TRITON_CHUNK_SIZE
    if length is not None:
        cover = 16
        while cover < length:
            cover *= 2
        size = min(size, cover)
    return size


def _kernel_sequence(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    initial_state,
    mask,
    kernel_name,
    chunk_size,
    eps,
):
    """Phases 1-4 of the module docstring: `(h, C, n, m)`."""
    dtype = standardize_dtype(v)
    prepared = prepare(
        q,
        k,
        v,
        input_gate,
        forget_gate,
        initial_state,
        mask,
        "sigmoid",
        scale_query=False,
    )
    forget = prepared.forget_gate  # (B, NH, T)
    if prepared.keep is not None:
        forget = ops.where(prepared.keep, forget, OPEN_FORGET)
    length = ops.shape(prepared.q)[2]
    padding = -length % chunk_size

    # 2-3. Identity steps up to P.
    def pad(x, value=0.0):
        widths = [[0, 0]] * len(x.shape)
        widths[2] = [0, padding]
        return ops.pad(x, widths, constant_values=value)

    q, k, v = (pad(x) for x in (prepared.q, prepared.k, prepared.v))
    log_input = pad(prepared.log_input, -OPEN_FORGET)  # (B, NH, P)
    forget = pad(forget, OPEN_FORGET)  # (B, NH, P)

    # 4. The kernel, then the outputs of the T real steps.
    h, state = run_sequence_kernel(
        fused_kernel("sequence", kernel_name),
        q,
        k,
        v,
        log_input,
        forget,
        prepared.state,
        eps,
        chunk_size,
        dtype,
    )  # h (B, NH, P, DV)
    h, state = finish(h[:, :, :length], state, prepared)
    return (h, *state)


def _ops_sequence(
    q, k, v, input_gate, forget_gate, initial_state, mask, chunk_size, eps
):
    """The same through the `keras.ops` chunkwise form: `(h, C, n, m)`."""
    prepared = prepare(
        q, k, v, input_gate, forget_gate, initial_state, mask, "sigmoid"
    )
    h, state = finish(*chunkwise_form(prepared, eps, chunk_size), prepared)
    return (h, *state)


def _fused_sequence(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    initial_state,
    mask,
    *,
    kernel_name,
    chunk_size,
    eps,
    kernel_backward,
):
    """`mlstm` through the sequence kernel `kernel_name`: `(h, state)`.

    Differentiated through the kernel's own backward with
    `kernel_backward`, else exactly: through the `keras.ops` chunkwise
    form, recomputed in the backward pass (`compat.exact_backward`).
    """
    if kernel_backward:
        h, *state = _kernel_sequence(
            q,
            k,
            v,
            input_gate,
            forget_gate,
            initial_state,
            mask,
            kernel_name,
            chunk_size,
            eps,
        )
        return h, tuple(state)
    return _with_exact_backward(
        lambda *xs: _kernel_sequence(*xs, mask, kernel_name, chunk_size, eps),
        lambda *xs: _ops_sequence(*xs, mask, chunk_size, eps),
        (q, k, v, input_gate, forget_gate),
        initial_state,
    )


def _flat(result):
    """`(h, (C, n, m))` -> `(h, C, n, m)`."""
    h, state = result
    return (h, *state)


def _with_exact_backward(fast, exact, inputs, state):
    """`fast(*inputs, state)`, a tuple `(h, C, n, m)`, differentiated as
    `exact(*inputs, state)` (`compat.exact_backward`): `(h, (C, n, m))`.
    `state` may be None."""
    tensors = [as_tensor(x) for x in inputs]
    if state is not None:
        tensors += [as_tensor(s) for s in state]
    count = len(inputs)

    def unflatten(fn):
        def run(*xs):
            carried = None if len(xs) == count else tuple(xs[count:])
            return fn(*xs[:count], carried)

        return run

    h, *final = exact_backward(unflatten(fast), unflatten(exact), tensors)
    return h, tuple(final)


fused_sequence = compiled_on_jax(
    _fused_sequence,
    static_argnames=("kernel_name", "chunk_size", "eps", "kernel_backward"),
)


def _kernel_step(q, k, v, input_gate, forget_gate, state, mask, name, eps):
    """One step through the step kernel `name`: `(h, C, n, m)`."""
    prepared = prepare(
        q, k, v, input_gate, forget_gate, state, mask, "sigmoid", False
    )
    forget = prepared.forget_gate  # (B, NH)
    if prepared.keep is not None:
        forget = ops.where(prepared.keep, forget, OPEN_FORGET)
    h, state = run_step_kernel(
        fused_kernel("step", name),
        prepared.q,
        prepared.k,
        prepared.v,
        prepared.log_input,
        forget,
        prepared.state,
        eps,
    )  # h (B, NH, DV)
    h, state = finish(h, state, prepared)
    return (h, *state)


def _fused_step(
    q, k, v, input_gate, forget_gate, state, mask, *, kernel_name, eps
):
    """`mlstm_step` through the step kernel `kernel_name`: `(h, state)`,
    differentiated exactly through the `keras.ops` step (Triton's step
    kernel has no backward)."""
    return _with_exact_backward(
        lambda *xs: _kernel_step(*xs, mask, kernel_name, eps),
        lambda *xs: _flat(
            step_form(*xs, mask, forget_gate_activation="sigmoid", eps=eps)
        ),
        (q, k, v, input_gate, forget_gate),
        state,
    )


fused_step = compiled_on_jax(
    _fused_step, static_argnames=("kernel_name", "eps")
)
