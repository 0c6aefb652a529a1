"""`mlstm` and `mlstm_step`: the public ops, and the resolver that picks
their form (the fused kernel where one can run, else a `keras.ops` form).

All three forms compute the same function (see `docs/math.md`); they differ
in cost. `resolve_form` is the one place that turns `form="auto"` into a
concrete form.
"""

from keras_mlstm.ops.chunkwise import chunkwise_form
from keras_mlstm.ops.common import FORMS
from keras_mlstm.ops.common import SEQUENCE_LAYOUT
from keras_mlstm.ops.common import STEP_LAYOUT
from keras_mlstm.ops.common import check_chunk_size
from keras_mlstm.ops.common import check_fused
from keras_mlstm.ops.common import check_inputs
from keras_mlstm.ops.common import check_options
from keras_mlstm.ops.common import finish
from keras_mlstm.ops.common import prepare
from keras_mlstm.ops.compat import compiled_on_jax
from keras_mlstm.ops.compat import preferred_chunk_size
from keras_mlstm.ops.fused import choose_fused_kernel
from keras_mlstm.ops.fused import fused_sequence
from keras_mlstm.ops.fused import fused_step
from keras_mlstm.ops.fused import kernel_chunk_size
from keras_mlstm.ops.parallel import parallel_form
from keras_mlstm.ops.recurrent import recurrent_form
from keras_mlstm.ops.recurrent import step_form


def resolve_form(form, sequence_length, chunk_size=64):
    """Map a form name, `"auto"` included, to a concrete form.

    `"auto"` picks `"recurrent"` for a single step, `"parallel"` when
    the sequence fits in one chunk (its quadratic cost is then at most the
    chunkwise form's), and `"chunkwise"` otherwise, including when the
    length is only known at run time.

    Args:
        form: one of `"auto"`, `"parallel"`, `"chunkwise"`,
            `"recurrent"`.
        sequence_length: T, or None when it is not known statically.
        chunk_size: the chunkwise form's chunk size L. Defaults to `64`.

    Returns:
        The concrete form's name.

    Raises:
        ValueError: for an unknown form name, listing the valid ones.

    Example:

    >>> resolve_form("auto", 1000, chunk_size=64)
    'chunkwise'

    References:
        - `docs/math.md`, sections 3 to 5: the forms and their costs.
    """
    if form not in FORMS + ("auto",):
        raise ValueError(
            f"`form` must be one of {FORMS + ('auto',)}; received {form!r}."
        )
    if form != "auto":
        return form
    if sequence_length is None:
        return "chunkwise"
    if sequence_length == 1:
        return "recurrent"
    if sequence_length <= chunk_size:
        return "parallel"
    return "chunkwise"


def resolve_chunk_size(chunk_size, head_size):
    """The chunk size L the chunkwise form uses: `chunk_size` itself, or
    for `"auto"` the one measured fastest on this backend for q/k heads
    of `head_size` (see `ops/compat.py` and docs/benchmarks.md: the
    head size within 16 to 64 on JAX and TensorFlow, 32 on PyTorch).

    Args:
        chunk_size: `"auto"` or a positive int.
        head_size: DK, or None when it is known only at run time.

    Returns:
        A positive int.

    Raises:
        ValueError: for a `chunk_size` that is neither `"auto"` nor an
            int >= 1.

    Example:

    >>> resolve_chunk_size(48, head_size=32)
    48
    >>> resolve_chunk_size("auto", head_size=32)
    32

    References:
        - `docs/benchmarks.md`, "Chunk size": the measurements behind
          `"auto"`.
    """
    check_chunk_size(chunk_size)
    if chunk_size == "auto":
        return preferred_chunk_size(head_size)
    return int(chunk_size)


def mlstm(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    *,
    initial_state=None,
    mask=None,
    form="auto",
    chunk_size="auto",
    forget_gate_activation="sigmoid",
    eps=1e-6,
    return_state=False,
    fused=None,
    fused_backward="exact",
):
    """The mLSTM cell over a sequence, for every batch entry and head.

    Computes, for t = 1..T, with `lf = log_sigmoid(f~)` (or `lf = f~`
    with `forget_gate_activation="exp"`):

        m_t = max(lf_t + m_{t-1}, i~_t)
        C_t = exp(lf_t + m_{t-1} - m_t) C_{t-1} + exp(i~_t - m_t) k_t v_t^T
        n_t = exp(lf_t + m_{t-1} - m_t) n_{t-1} + exp(i~_t - m_t) k_t
        h_t = C_t^T q_t' / (max(|n_t^T q_t'|, exp(-m_t)) + eps),
              q_t' = q_t / sqrt(DK)

    which is the xLSTM paper's mLSTM with exponential input gate, stabilised.

    Args:
        q: queries, `(B, NH, T, DK)`.
        k: keys, `(B, NH, T, DK)`, same dtype as `q` and `v`.
        v: values, `(B, NH, T, DV)`.
        input_gate: input gate pre-activations `i~`, `(B, NH, T)`.
        forget_gate: forget gate pre-activations `f~`, `(B, NH, T)`.
        initial_state: None (zeros) or `(C, n, m)` with shapes
            `(B, NH, DK, DV)`, `(B, NH, DK)`, `(B, NH)` and the state
            dtype (float32, or float64 for float64 inputs). Defaults to
            `None`.
        mask: None or a bool `(B, T)` tensor. A masked step leaves the
            state unchanged and outputs zeros. Defaults to `None`.
        form: `"auto"`, `"parallel"`, `"chunkwise"` or
            `"recurrent"`; see `resolve_form`. All give the same result.
            Defaults to `"auto"`.
        chunk_size: chunk size L of the chunkwise form, a positive int (T
            need not be a multiple of it) or `"auto"`, the size measured
            fastest on this backend for the head size (see
            `resolve_chunk_size`). Defaults to `"auto"`.
        forget_gate_activation: `"sigmoid"` (the official xLSTM code) or
            `"exp"`. Defaults to `"sigmoid"`.
        eps: added to the read-out's denominator. Defaults to `1e-6`.
        return_state: also return the final state. Defaults to `False`.
        fused: `None`, `True` or `False`: whether to compute with the fused
            `mlstm_kernels` kernel that `keras_mlstm.config` names (TFLA's
            Triton kernels on NVIDIA GPUs by default; one step of a
            length-1 sequence with the step kernel), as
            `keras.ops.dot_product_attention`'s `flash_attention`. `None`
            uses it where it can run (backend PyTorch or JAX, device,
            dtype, shapes, package installed, `form` `"auto"` or
            `"chunkwise"`, the sigmoid forget gate, fused kernels enabled)
            and `keras.ops` elsewhere; `True` raises a `ValueError` saying
            why it cannot run; `False` always uses `keras.ops`. Same
            outputs, states, masks and gradients either way (up to
            rounding). Defaults to `None`.
        fused_backward: `"exact"` or `"kernel"`: how a fused sequence
            kernel is differentiated. `"exact"`: through the `keras.ops`
            chunkwise form, recomputed in the backward pass (the gradients
            of every form). `"kernel"`: the kernel's own backward, faster,
            which leaves out the gradient of the read-out's denominator
            `max(|n^T q|, exp(-m)) + eps` and gives no gradient to the
            initial `n` and `m`: right when a per-head normalisation
            follows (it cancels the denominator, as in the xLSTM blocks)
            and `initial_state` needs no gradient (docs/gpu.md). Defaults
            to `"exact"`.

    Returns:
        `h` of shape `(B, NH, T, DV)` in the dtype of `v`; with
        `return_state`, `(h, (C, n, m))` with the state in the state
        dtype. Gates and states are computed in float32 (float64 for float64
        inputs) whatever the input dtype.

    Raises:
        ValueError: for a shape, rank or dtype mismatch, a non-positive
            `chunk_size`, or an unknown `form` or
            `forget_gate_activation`, before any computation.

    Example:

    >>> import numpy as np
    >>> q = k = v = np.ones((2, 4, 100, 16), "float32")
    >>> i = f = np.zeros((2, 4, 100), "float32")
    >>> h, (c, n, m) = mlstm(q, k, v, i, f, return_state=True)
    >>> tuple(h.shape), tuple(c.shape)
    ((2, 4, 100, 16), (2, 4, 16, 16))

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517, section 2.3 and appendix A.
        - Beck et al., "xLSTM 7B: A Recurrent LLM for Fast and Efficient
          Inference", 2025, arXiv:2503.13427 (the chunkwise form).
    """
    check_options(forget_gate_activation, eps, chunk_size, form)
    check_fused(fused, fused_backward)
    dims, _ = check_inputs(
        q,
        k,
        v,
        input_gate,
        forget_gate,
        initial_state,
        mask,
        SEQUENCE_LAYOUT,
        "initial_state",
    )
    resolved = resolve_chunk_size(chunk_size, dims.get("DK"))
    one_step = dims.get("T") == 1 and form == "auto"
    kernel = choose_fused_kernel(
        "step" if one_step else "sequence",
        fused,
        q,
        v,
        forget_gate_activation,
        form,
    )
    if kernel is not None and one_step:
        h, state = fused_step(
            *(x[:, :, 0] for x in (q, k, v, input_gate, forget_gate)),
            initial_state,
            None if mask is None else mask[:, 0],
            kernel_name=kernel,
            eps=eps,
        )
        h = h[:, :, None]
    elif kernel is not None:
        h, state = fused_sequence(
            q,
            k,
            v,
            input_gate,
            forget_gate,
            initial_state,
            mask,
            kernel_name=kernel,
            chunk_size=kernel_chunk_size(
                chunk_size, resolved, dims.get("T"), kernel
            ),
            eps=eps,
            kernel_backward=fused_backward == "kernel",
        )
    else:
        h, state = _compute(
            q,
            k,
            v,
            input_gate,
            forget_gate,
            initial_state,
            mask,
            form=resolve_form(form, dims.get("T"), resolved),
            chunk_size=resolved,
            forget_gate_activation=forget_gate_activation,
            eps=eps,
        )
    return (h, state) if return_state else h


def _compute(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    initial_state,
    mask,
    *,
    form,
    chunk_size,
    forget_gate_activation,
    eps,
):
    """`mlstm` after its checks, with a concrete form: `(h, state)`."""
    prepared = prepare(
        q,
        k,
        v,
        input_gate,
        forget_gate,
        initial_state,
        mask,
        forget_gate_activation,
    )
    if form == "parallel":
        h, state = parallel_form(prepared, eps)
    elif form == "chunkwise":
        h, state = chunkwise_form(prepared, eps, chunk_size)
    else:
        h, state = recurrent_form(prepared, eps)
    return finish(h, state, prepared)


_compute = compiled_on_jax(
    _compute,
    static_argnames=("form", "chunk_size", "forget_gate_activation", "eps"),
)


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
    fused=None,
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
        fused: `None`, `True` or `False`: compute the step with the fused
            `mlstm_kernels` step kernel that `keras_mlstm.config` names, as
            `keras_mlstm.ops.mlstm`'s `fused`. Defaults to `None`.

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
    check_fused(fused)
    check_inputs(
        q, k, v, input_gate, forget_gate, state, mask, STEP_LAYOUT, "state"
    )
    kernel = choose_fused_kernel("step", fused, q, v, forget_gate_activation)
    if kernel is not None:
        return fused_step(
            q,
            k,
            v,
            input_gate,
            forget_gate,
            state,
            mask,
            kernel_name=kernel,
            eps=eps,
        )
    return step_form(
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
