"""An independent float64 NumPy reference of the mLSTM step recurrence.

Written from the equations of issue #2 / ``docs/math.md``, one time step at a
time, sharing no code with ``keras_mlstm``:

    lf_t = log_sigmoid(f~_t)            (or f~_t for the "exp" gate)
    m_t  = max(lf_t + m_{t-1}, i~_t)
    C_t  = exp(lf_t + m_{t-1} - m_t) C_{t-1} + exp(i~_t - m_t) k_t v_t^T
    n_t  = exp(lf_t + m_{t-1} - m_t) n_{t-1} + exp(i~_t - m_t) k_t
    h_t  = C_t^T q_t' / (max(|n_t^T q_t'|, exp(-m_t)) + eps),  q' = q/sqrt(DK)

A masked step keeps the state and outputs zeros.

Non-finite gates have the meaning documented in docs/reliability.md: the
input gate is clipped to [-1e30, 1e30] (+inf: a write that outweighs every
finite one; -inf: no write), and with the exponential forget gate the log
forget gate is clipped above at 1e30; a forget gate of -inf (log forget
gate -inf) is a hard reset. NaN and inf in q, k, v propagate by IEEE
arithmetic.

With ``return_scale=True`` it also returns, per output entry, the scale of
the terms summed to produce it:

    scale_t = (|q_t'|^T A_t + |h_t| |q_t'|^T a_t) / (max(|n_t^T q_t'|,
              exp(-m_t)) + eps)

where ``A_t`` and ``a_t`` follow the recurrence of ``C_t`` and ``n_t`` with
``|k|`` and ``|v|`` in place of ``k`` and ``v``. A sum of terms computed with
unit rounding u is accurate to about ``u * T * scale_t``, whatever the
cancellation inside it, so tests state float32 tolerances relative to it.
"""

import numpy as np


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def mlstm_reference(
    q,
    k,
    v,
    input_gate,
    forget_gate,
    initial_state=None,
    mask=None,
    forget_gate_activation="sigmoid",
    eps=1e-6,
    return_scale=False,
):
    """Return ``h (B, NH, T, DV)`` and the final ``(C, n, m)``, in float64.

    With ``return_scale``, also the ``(B, NH, T, DV)`` scale described above.
    """
    q, k, v, i, f = (
        np.asarray(x, np.float64) for x in (q, k, v, input_gate, forget_gate)
    )
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    if initial_state is None:
        c = np.zeros((batch, heads, dk, dv))
        n = np.zeros((batch, heads, dk))
        m = np.zeros((batch, heads))
    else:
        c, n, m = (np.array(s, np.float64) for s in initial_state)
    i = np.clip(i, -1e30, 1e30)
    if forget_gate_activation == "sigmoid":
        lf = log_sigmoid(f)
    else:
        lf = np.minimum(f, 1e30)
    keep = np.ones((batch, length), bool) if mask is None else np.asarray(mask)
    h = np.zeros((batch, heads, length, dv))
    scale = np.zeros((batch, heads, length, dv))
    c_abs, n_abs = np.abs(c), np.abs(n)
    for t in range(length):
        m_new = np.maximum(lf[:, :, t] + m, i[:, :, t])
        decay = np.exp(lf[:, :, t] + m - m_new)
        weight = np.exp(i[:, :, t] - m_new)
        c_new = (
            decay[..., None, None] * c
            + weight[..., None, None]
            * k[:, :, t, :, None]
            * v[:, :, t, None, :]
        )
        n_new = decay[..., None] * n + weight[..., None] * k[:, :, t]
        q_t = q[:, :, t] / np.sqrt(dk)
        numerator = np.einsum("bhkv,bhk->bhv", c_new, q_t)
        denominator = np.maximum(
            np.abs(np.einsum("bhk,bhk->bh", n_new, q_t)), np.exp(-m_new)
        )
        h_t = numerator / (denominator + eps)[..., None]
        c_abs_new = decay[..., None, None] * c_abs + weight[
            ..., None, None
        ] * np.abs(k[:, :, t, :, None] * v[:, :, t, None, :])
        n_abs_new = decay[..., None] * n_abs + weight[..., None] * np.abs(
            k[:, :, t]
        )
        scale_t = (
            np.einsum("bhkv,bhk->bhv", c_abs_new, np.abs(q_t))
            + np.abs(h_t)
            * np.einsum("bhk,bhk->bh", n_abs_new, np.abs(q_t))[..., None]
        ) / (denominator + eps)[..., None]
        on = keep[:, t]
        h[on, :, t] = h_t[on]
        scale[on, :, t] = scale_t[on]
        c[on], n[on], m[on] = c_new[on], n_new[on], m_new[on]
        c_abs[on], n_abs[on] = c_abs_new[on], n_abs_new[on]
    if return_scale:
        return h, (c, n, m), scale
    return h, (c, n, m)


def mlstm_layer_reference(
    x,
    weights,
    num_heads,
    activation=None,
    head_norm=True,
    forget_gate_activation="sigmoid",
    mask=None,
    initial_state=None,
    go_backwards=False,
    return_sequences=False,
    zero_output_for_mask=False,
    head_norm_epsilon=1e-5,
):
    """The MLSTM layer in float64, from its documented equations.

    ``weights`` maps the layer's weight names (``kernel``, ``bias``,
    ``input_gate_kernel``, ``input_gate_bias``, ``forget_gate_kernel``,
    ``forget_gate_bias``, ``head_norm_scale``) to arrays. Returns the output
    and the final ``(C, n, m)``.
    """
    x = np.asarray(x, np.float64)
    mask = None if mask is None else np.asarray(mask, bool)
    if go_backwards:
        x = x[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    batch, length, _ = x.shape
    w = {name: np.asarray(a, np.float64) for name, a in weights.items()}
    projected = x @ w["kernel"]
    if "bias" in w:
        projected = projected + w["bias"]
    units = projected.shape[-1] // 4
    q, k, v, o = np.split(projected, 4, axis=-1)
    size = units // num_heads

    def heads(a):  # (B, T, U) -> (B, NH, T, DH)
        return a.reshape(batch, length, num_heads, size).transpose(0, 2, 1, 3)

    def gates(kind):  # (B, NH, T)
        pre = x @ w[f"{kind}_gate_kernel"] + w[f"{kind}_gate_bias"]
        return pre.transpose(0, 2, 1)

    h, state = mlstm_reference(
        heads(q),
        heads(k),
        heads(v),
        gates("input"),
        gates("forget"),
        initial_state=initial_state,
        mask=mask,
        forget_gate_activation=forget_gate_activation,
    )
    if head_norm:
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        h = (h - mean) / np.sqrt(var + head_norm_epsilon)
        h = h * w["head_norm_scale"].reshape(num_heads, 1, size)
    h = h.transpose(0, 2, 1, 3).reshape(batch, length, units)
    if activation == "tanh":
        h = np.tanh(h)
    elif activation is not None:
        raise ValueError(activation)
    out = h / (1.0 + np.exp(-o))
    if mask is not None:
        for b in range(batch):
            previous = np.zeros(units)
            for t in range(length):
                if mask[b, t]:
                    previous = out[b, t]
                else:
                    out[b, t] = 0.0 if zero_output_for_mask else previous
    return (out if return_sequences else out[:, -1]), state


def _layer_norm(x, weight, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * (1.0 + weight)


def _silu(x):
    return x / (1.0 + np.exp(-x))


def mlstm_block_reference(x, weights, num_heads, blocksize=4, mask=None):
    """The mLSTM block in float64, from the equations of the official
    ``xlstm`` package's ``mLSTMLayer`` (and issue #5), for an empty initial
    state (``C = 0, n = 0, m = -inf``: the official parallel form's).

    ``weights`` maps the block's weight names (``norm_weight``,
    ``up_kernel`` (D, 2I), ``conv_kernel`` (K, I), ``conv_bias``,
    ``q_kernel`` / ``k_kernel`` / ``v_kernel`` (I / bs, bs, bs) as
    (block, out, in), gate kernels (3I, NH) and biases, ``head_norm_weight``,
    ``skip``, ``down_kernel`` (I, D)) to arrays. A masked step enters the
    A masked step is skipped: the convolution runs over each row's unmasked
    steps only (so its window after the sequence holds the last unmasked
    inputs), the memory is unchanged, and the step outputs zeros.
    Returns ``(outputs, (C, n, m), conv_window)``.
    """
    w = {name: np.asarray(a, np.float64) for name, a in weights.items()}
    x = np.asarray(x, np.float64)
    batch, length, _ = x.shape
    keep = np.ones((batch, length), bool) if mask is None else np.asarray(mask)
    up = _layer_norm(x, w["norm_weight"]) @ w["up_kernel"]
    inner = up.shape[-1] // 2
    x_m, z = up[..., :inner], up[..., inner:]
    width = w["conv_kernel"].shape[0]
    conv = np.zeros_like(x_m) + w["conv_bias"]
    windows = np.zeros((batch, width - 1, inner))
    for b in range(batch):
        steps = np.flatnonzero(keep[b])
        row = np.concatenate([np.zeros((width - 1, inner)), x_m[b, steps]])
        for position, t in enumerate(steps):
            for j in range(width):
                conv[b, t] += row[position + j] * w["conv_kernel"][j]
        windows[b] = row[len(steps) :]
    x_c = _silu(conv)

    def headwise(a, kernel):
        blocks = a.reshape(batch, length, inner // blocksize, blocksize)
        return np.einsum("btgi,goi->btgo", blocks, kernel).reshape(a.shape)

    q = headwise(x_c, w["q_kernel"])
    k = headwise(x_c, w["k_kernel"])
    v = headwise(x_m, w["v_kernel"])
    gate_in = np.concatenate([q, k, v], -1)
    i = (gate_in @ w["input_gate_kernel"] + w["input_gate_bias"]).transpose(
        0, 2, 1
    )
    f = (gate_in @ w["forget_gate_kernel"] + w["forget_gate_bias"]).transpose(
        0, 2, 1
    )
    size = inner // num_heads

    def heads(a):
        return a.reshape(batch, length, num_heads, size).transpose(0, 2, 1, 3)

    empty = (
        np.zeros((batch, num_heads, size, size)),
        np.zeros((batch, num_heads, size)),
        np.full((batch, num_heads), -1e30),
    )
    h, state = mlstm_reference(
        heads(q), heads(k), heads(v), i, f, initial_state=empty, mask=keep
    )
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    h = ((h - mean) / np.sqrt(var + 1e-5)).transpose(0, 2, 1, 3)
    h = h.reshape(batch, length, inner) * (1.0 + w["head_norm_weight"])
    out = ((h + w["skip"] * x_c) * _silu(z)) @ w["down_kernel"]
    out = np.where(keep[..., None], x + out, 0.0)
    return out, state, windows


def _rms_norm(x, weight, eps=1e-6):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * weight


def mlstm_large_block_reference(x, weights, num_heads, cap=15.0, mask=None):
    """The xLSTM 7B block in float64, from the equations of the official
    ``xlstm.xlstm_large.model`` (and issue #5): RMSNorm, q/k/v/output-gate
    projections, soft-capped gates, the mLSTM from a zero state, per-head
    layer norm, ``sigmoid(o) * h`` out-projection, then the RMSNorm SwiGLU
    feed-forward; both residual. Norm weights multiply directly, epsilon
    1e-6. Masked steps keep the state and output zeros. Returns
    ``(outputs, (C, n, m))``.
    """
    w = {name: np.asarray(a, np.float64) for name, a in weights.items()}
    x = np.asarray(x, np.float64)
    batch, length, _ = x.shape
    keep = np.ones((batch, length), bool) if mask is None else np.asarray(mask)
    u = _rms_norm(x, w["norm_mlstm_weight"])
    q, k, v = (u @ w[f"{n}_kernel"] for n in "qkv")
    o = u @ w["output_gate_kernel"]

    def gate(kind):
        pre = u @ w[f"{kind}_gate_kernel"] + w[f"{kind}_gate_bias"]
        return (cap * np.tanh(pre / cap)).transpose(0, 2, 1)

    def heads(a):
        size = a.shape[-1] // num_heads
        return a.reshape(batch, length, num_heads, size).transpose(0, 2, 1, 3)

    h, state = mlstm_reference(
        heads(q), heads(k), heads(v), gate("input"), gate("forget"), mask=keep
    )
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    h = ((h - mean) / np.sqrt(var + 1e-6)).transpose(0, 2, 1, 3)
    h = h.reshape(batch, length, -1) * w["head_norm_weight"]
    branch = (h / (1.0 + np.exp(-o))) @ w["out_kernel"]
    x = x + branch * keep[..., None]
    u = _rms_norm(x, w["norm_ffn_weight"])
    gate_ = u @ w["ffn_gate_kernel"]
    branch = (_silu(gate_) * (u @ w["ffn_up_kernel"])) @ w["ffn_down_kernel"]
    return np.where(keep[..., None], x + branch, 0.0), state


def weighted_reference_loss(args, mask, weights):
    """A fixed linear function of the reference's outputs and final state:
    `args` are q, k, v, the gates and `(C0, n0, m0)`; `weights` one array
    per output (h, C, n, m)."""
    h, state = mlstm_reference(*args[:5], initial_state=args[5:], mask=mask)
    total = np.sum(h * weights[0])
    for s, w in zip(state, weights[1:], strict=True):
        total += np.sum(s * w)
    return total


def central_differences(args, mask, weights, step=1e-6):
    """The gradients of `weighted_reference_loss` with respect to each of
    `args` (float64), by central differences of step `step`."""
    grads = []
    for index, arg in enumerate(args):
        grad = np.zeros_like(arg)
        for position in np.ndindex(arg.shape):
            shifted = [a.copy() for a in args]
            shifted[index][position] += step
            up = weighted_reference_loss(shifted, mask, weights)
            shifted[index][position] -= 2 * step
            down = weighted_reference_loss(shifted, mask, weights)
            grad[position] = (up - down) / (2 * step)
        grads.append(grad)
    return grads
