"""The xLSTM 7B block (Beck et al. 2025, arXiv:2503.13427), as the official
`xlstm` package's `xlstm_large` model (`mLSTMBlock` of
`xLSTMLarge`).

Notation: B batch, T time, D embedding width, NH heads, QK = qk_dim_factor
x D, V = v_dim_factor x D, F the feed-forward width.
"""

import math

import keras
from keras import ops

from keras_mlstm.layers.base import RecurrentBlock
from keras_mlstm.layers.base import check_mask
from keras_mlstm.layers.base import check_sequence_inputs
from keras_mlstm.layers.base import forget_gate_bias_initializer
from keras_mlstm.layers.base import from_heads
from keras_mlstm.layers.base import fused_backward_for
from keras_mlstm.layers.base import guard_steps
from keras_mlstm.layers.base import head_gates
from keras_mlstm.layers.base import known_features
from keras_mlstm.layers.base import poison
from keras_mlstm.layers.base import poison_state
from keras_mlstm.layers.base import select_steps
from keras_mlstm.layers.base import small_init_std
from keras_mlstm.layers.base import to_heads
from keras_mlstm.layers.norms import rms_normalize
from keras_mlstm.layers.norms import soft_cap
from keras_mlstm.layers.norms import standardize
from keras_mlstm.ops.common import positive_number
from keras_mlstm.ops.common import state_dtype
from keras_mlstm.ops.resolver import mlstm


def round_up(value, multiple):
    """`value` rounded up to a multiple of `multiple` (the official
    `round_up_to_next_multiple_of`)."""
    return int(((value + multiple - 1) // multiple) * multiple)


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTMLargeBlock(RecurrentBlock):
    """The xLSTM 7B block: an mLSTM layer and a SwiGLU feed-forward, each
    in a pre-norm (RMSNorm) residual branch.

    For inputs `x` of shape `(B, T, D)`, as the official `xlstm_large`
    code:

    - `u = RMSNorm(x)`; `q, k = u W_q, u W_k` (width QK = D / 2),
      `v = u W_v` and the output gate `o~ = u W_o` (width V = D);
    - `i~, f~ = c tanh((u W_{i,f} + b_{i,f}) / c)`, soft-capped at
      `c = gate_soft_cap` (15), one per head;
    - `h = per-head LayerNorm(mlstm(q, k, v, i~, f~))`;
    - `x = x + (sigmoid(o~) * h) W_out`;
    - `x = x + (silu(RMSNorm(x) W_gate) * (RMSNorm(x) W_up)) W_down`,
      with F = `ffn_proj_factor` x D rounded up to a multiple of 64.

    Norm weights multiply directly (ones at init). Initialisation: small
    init (normal, std `sqrt(2 / (5 D))`) for the q, k, v, output-gate and
    feed-forward input projections, Wang init (std
    `2 / num_layers / sqrt(D)`) for `W_out` and `W_down`, gate kernels
    zero, forget-gate biases `linspace(3, 6)` over heads and input-gate
    biases -10 (the xLSTM 7B paper's choice, which keeps early input gates
    small).

    Args:
        num_heads: mLSTM heads; must divide QK and V. Defaults to `4`.
        qk_dim_factor: QK / D. Defaults to `0.5`.
        v_dim_factor: V / D. Defaults to `1.0`.
        ffn_proj_factor: F / D before rounding. Defaults to `2.6667`.
        gate_soft_cap: soft cap of the gate pre-activations. Defaults to
            `15.0`.
        norm_epsilon: epsilon of every norm. Defaults to `1e-6`.
        use_bias: biases on projections and norms. Defaults to `False`.
        num_layers: blocks in the stack, for the Wang init. Defaults to `1`.
        form: how the mLSTM is computed (as `keras_mlstm.ops.mlstm`).
            Defaults to `"auto"`.
        chunk_size: chunk length of the chunkwise form, an int or
            `"auto"`, the size measured fastest for the backend and head
            size (see `keras_mlstm.ops.resolve_chunk_size`). Defaults to
            `"auto"`.
        fused: `None`, `True` or `False`: compute the mLSTM with the fused
            `mlstm_kernels` kernel (`None`: where it can run; see
            `keras_mlstm.ops.mlstm`). Defaults to `None`.
        return_state: also return the mLSTM state `[C, n, m]`. Defaults
            to `False`.
        seed: int seed for the initialisers. Defaults to `None`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, D)`.
        initial_state: None (zeros) or `[C, n, m]`, shapes
            `(B, NH, QK / NH, V / NH)`, `(B, NH, QK / NH)`, `(B, NH)`.
        mask: optional bool `(B, T)`: masked steps leave the state
            unchanged and output zeros; whatever they hold (NaN included)
            reaches no output, state or gradient.
        training: unused (no dropout), for Keras.
        return_state: None (the constructor's) or a bool for this call.

    Returns:
        `(B, T, D)`, or `[outputs, C, n, m]` with `return_state`.

    Example:

    >>> import numpy as np
    >>> block = MLSTMLargeBlock(num_heads=2)
    >>> tuple(block(np.zeros((1, 5, 32), "float32")).shape)
    (1, 5, 32)

    References:
        - Beck et al., "xLSTM 7B: A Recurrent LLM for Fast and Efficient
          Inference", 2025, arXiv:2503.13427.
        - The official implementation, `xlstm.xlstm_large.model`.
    """

    def __init__(
        self,
        num_heads=4,
        qk_dim_factor=0.5,
        v_dim_factor=1.0,
        ffn_proj_factor=2.6667,
        gate_soft_cap=15.0,
        norm_epsilon=1e-6,
        use_bias=False,
        num_layers=1,
        form="auto",
        chunk_size="auto",
        fused=None,
        return_state=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_common(
            num_heads,
            num_layers,
            use_bias,
            form,
            chunk_size,
            fused,
            return_state,
            seed,
        )
        self.qk_dim_factor = positive_number("qk_dim_factor", qk_dim_factor)
        self.v_dim_factor = positive_number("v_dim_factor", v_dim_factor)
        self.ffn_proj_factor = positive_number(
            "ffn_proj_factor", ffn_proj_factor
        )
        self.norm_epsilon = positive_number("norm_epsilon", norm_epsilon)
        self.gate_soft_cap = (
            None
            if gate_soft_cap is None
            else positive_number("gate_soft_cap", gate_soft_cap)
        )

    def build(self, input_shape):
        features = known_features("MLSTMLargeBlock", input_shape)
        features = int(features)
        self.embedding_dim = features
        self.qk_dim = int(features * self.qk_dim_factor)
        self.v_dim = int(features * self.v_dim_factor)
        self.ffn_dim = round_up(features * self.ffn_proj_factor, 64)
        for name, width in (("QK", self.qk_dim), ("V", self.v_dim)):
            if width < 1 or width % self.num_heads:
                raise ValueError(
                    f"`num_heads` ({self.num_heads}) must divide the {name} "
                    f"width {width} (from {features} features)."
                )
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: features})
        small = small_init_std(features)
        wang = 2.0 / self.num_layers / math.sqrt(features)

        def vector(name, size, initializer, **kwargs):
            return self.add_weight(
                name=name, shape=(size,), initializer=initializer, **kwargs
            )

        self.norm_mlstm_weight = vector("norm_mlstm_weight", features, "ones")
        self.q = self._projection("q", self.qk_dim, features, small, 0)
        self.k = self._projection("k", self.qk_dim, features, small, 1)
        self.v = self._projection("v", self.v_dim, features, small, 2)
        self.output_gate = self._projection(
            "output_gate", self.v_dim, features, small, 3
        )
        # Gates stay float32 under mixed precision (they are exponentiated).
        self.input_gate_kernel = self.add_weight(
            name="input_gate_kernel",
            shape=(features, self.num_heads),
            initializer="zeros",
            autocast=False,
        )
        self.input_gate_bias = vector(
            "input_gate_bias",
            self.num_heads,
            keras.initializers.Constant(-10.0),
            autocast=False,
        )
        self.forget_gate_kernel = self.add_weight(
            name="forget_gate_kernel",
            shape=(features, self.num_heads),
            initializer="zeros",
            autocast=False,
        )
        self.forget_gate_bias = vector(
            "forget_gate_bias",
            self.num_heads,
            forget_gate_bias_initializer(self.num_heads),
            autocast=False,
        )
        self.head_norm_weight = vector("head_norm_weight", self.v_dim, "ones")
        self.out = self._projection("out", features, self.v_dim, wang, 4)
        self.norm_ffn_weight = vector("norm_ffn_weight", features, "ones")
        self.ffn_gate = self._projection(
            "ffn_gate", self.ffn_dim, features, small, 5
        )
        self.ffn_up = self._projection(
            "ffn_up", self.ffn_dim, features, small, 6
        )
        self.ffn_down = self._projection(
            "ffn_down", features, self.ffn_dim, wang, 7
        )
        # The norms' biases (the projections' are in their Dense layers).
        self.biases = {}
        if self.use_bias:
            for name, size in (
                ("norm_mlstm", features),
                ("head_norm", self.v_dim),
                ("norm_ffn", features),
            ):
                self.biases[name] = vector(f"{name}_bias", size, "zeros")

    def state_specs(self, batch):
        """`(name, shape, dtype)` of `[C, n, m]` for `batch`."""
        heads = self.num_heads
        dk, dv = self.qk_dim // heads, self.v_dim // heads
        dtype = state_dtype(self.compute_dtype)
        return [
            ("C", (batch, heads, dk, dv), dtype),
            ("n", (batch, heads, dk), dtype),
            ("m", (batch, heads), dtype),
        ]

    def _bias(self, x, name):
        bias = self.biases.get(name)
        return x if bias is None else x + bias

    def _norm(self, x, weight, name):
        dtype = state_dtype(self.compute_dtype)
        x = rms_normalize(ops.cast(x, dtype), self.norm_epsilon)
        x = ops.cast(x, self.compute_dtype) * weight
        return self._bias(x, name)

    def call(
        self,
        inputs,
        initial_state=None,
        mask=None,
        training=None,
        return_state=None,
    ):
        return_state = self.wants_state(return_state)
        self._check_call(inputs, initial_state, mask)
        dtype = state_dtype(self.compute_dtype)
        if mask is not None:
            mask = ops.cast(mask, "bool")
        # Padded and non-finite steps leave the arithmetic by a select (what
        # they hold must reach no gradient); outputs from a non-finite step
        # on are set to NaN at the end.
        inputs, poisoned = guard_steps(inputs, mask)

        u = self._norm(inputs, self.norm_mlstm_weight, "norm_mlstm")
        q, k, v, o = self.q(u), self.k(u), self.v(u), self.output_gate(u)
        input_gate, forget_gate = head_gates(
            [ops.cast(u, dtype)],
            self.input_gate_kernel,
            self.input_gate_bias,
            self.forget_gate_kernel,
            self.forget_gate_bias,
        )  # (B, NH, T) each
        input_gate = soft_cap(input_gate, self.gate_soft_cap)
        forget_gate = soft_cap(forget_gate, self.gate_soft_cap)
        h, state = mlstm(
            to_heads(ops.cast(q, dtype), self.num_heads),
            to_heads(ops.cast(k, dtype), self.num_heads),
            to_heads(ops.cast(v, dtype), self.num_heads),
            input_gate,
            forget_gate,
            initial_state=None
            if initial_state is None
            else tuple(initial_state),
            mask=mask,
            form=self.form,
            chunk_size=self.chunk_size,
            fused=self.fused,
            # A head norm follows the mLSTM.
            fused_backward=fused_backward_for(True, initial_state),
            return_state=True,
        )  # (B, NH, T, V / NH), float32
        h = standardize(h, self.norm_epsilon)
        h = from_heads(h, o)
        h = ops.cast(h, self.compute_dtype) * self.head_norm_weight
        h = self._bias(h, "head_norm")
        branch = self.out(ops.sigmoid(o) * h)
        x = inputs + select_steps(branch, mask)

        u = self._norm(x, self.norm_ffn_weight, "norm_ffn")
        branch = self.ffn_down(ops.silu(self.ffn_gate(u)) * self.ffn_up(u))
        outputs = x + select_steps(branch, mask)
        outputs = poison(outputs, poisoned)
        if return_state:
            return [outputs, *poison_state(state, poisoned)]
        return outputs

    def _check_call(self, inputs, initial_state, mask):
        """Raise ValueError on malformed inputs, before any computation."""
        shape = check_sequence_inputs(
            "MLSTMLargeBlock", inputs, self.embedding_dim
        )
        check_mask(mask, shape)
        if initial_state is not None:
            self.check_initial_state(initial_state, shape[0])

    def get_initial_state(self, batch_size):
        """The zero state `[C, n, m]` (`m = 0`, as `mlstm_kernels`)."""
        return [
            ops.zeros(shape, dtype)
            for _, shape, dtype in self.state_specs(batch_size)
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "qk_dim_factor": self.qk_dim_factor,
                "v_dim_factor": self.v_dim_factor,
                "ffn_proj_factor": self.ffn_proj_factor,
                "gate_soft_cap": self.gate_soft_cap,
                "norm_epsilon": self.norm_epsilon,
                "use_bias": self.use_bias,
                "num_layers": self.num_layers,
                "form": self.form,
                "chunk_size": self.chunk_size,
                "fused": self.fused,
                "return_state": self.return_state,
                "seed": self.seed,
            }
        )
        return config
