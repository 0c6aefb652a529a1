"""The xLSTM mLSTM residual block (Beck et al. 2024, figure 10), as in the
official `xlstm` package's `mLSTMBlock` / `mLSTMLayer`.

Notation: B batch, T time, D embedding width, I inner width
(`proj_factor * D` rounded up to a multiple of 64), NH heads,
DH = I / NH, K causal convolution width.
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
from keras_mlstm.layers.base import gather_steps
from keras_mlstm.layers.base import guard_steps
from keras_mlstm.layers.base import head_gates
from keras_mlstm.layers.base import known_features
from keras_mlstm.layers.base import poison
from keras_mlstm.layers.base import poison_state
from keras_mlstm.layers.base import select_steps
from keras_mlstm.layers.base import small_init_std
from keras_mlstm.layers.base import to_heads
from keras_mlstm.layers.norms import standardize
from keras_mlstm.ops.common import NEG_LOG_WEIGHT
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.common import positive_number
from keras_mlstm.ops.common import state_dtype
from keras_mlstm.ops.resolver import mlstm

NORM_EPSILON = 1e-5


def inner_width(embedding_dim, proj_factor, multiple_of=64):
    """`proj_factor * embedding_dim` rounded up to `multiple_of`, as the
    official `UpProjConfigMixin`."""
    return int(math.ceil(proj_factor * embedding_dim / multiple_of)) * (
        multiple_of
    )


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTMBlock(RecurrentBlock):
    """The mLSTM block of xLSTM: a pre-norm residual block around an mLSTM.

    For inputs `x` of shape `(B, T, D)` it computes, as the official
    `xlstm` package's `mLSTMBlock`:

    - `x_m, z = split(LayerNorm(x) W_up)` (two halves of width I);
    - `x_c = silu(causal_depthwise_conv1d(x_m))` (width K, with bias);
    - `q, k = headwise(x_c)`, `v = headwise(x_m)`: block-diagonal
      projections with blocks of `qkv_proj_blocksize` features;
    - `i~, f~ = [q, k, v] W_i + b_i, [q, k, v] W_f + b_f` (one per head);
    - `h = group_norm(mlstm(q, k, v, i~, f~))` (a layer norm per head);
    - `y = x + dropout(((h + skip * x_c) * silu(z)) W_down)`.

    Norm scales are stored as offsets from 1 (`1 + w`, `w` initialised
    to 0), as the official code. Initialisation as the official code: small
    init (normal, std `sqrt(2 / (5 D))`) for `W_up` and the q, k, v
    blocks, Wang init (std `2 / num_layers / sqrt(D)`) for `W_down`,
    gate kernels 0, forget-gate biases `linspace(3, 6)` over heads,
    input-gate biases normal with std 0.1, skip 1, convolution as PyTorch's
    `Conv1d` (uniform in `+-1 / sqrt(K)`).

    The block is recurrent: `return_state=True` also returns its state
    `[C, n, m, conv]` (the mLSTM memory, float32, and the last `K - 1`
    convolution inputs), which `initial_state` takes back, so a sequence
    fed in pieces (down to one step at a time, for generation) gives the
    outputs of one pass.

    Args:
        num_heads: mLSTM heads; must divide the inner width I. Defaults to
            `4`.
        proj_factor: up-projection factor; I = `proj_factor * D` rounded
            up to a multiple of 64. Defaults to `2.0`.
        conv_kernel_size: K, the causal convolution width (>= 1).
            Defaults to `4`.
        qkv_proj_blocksize: block size of the q, k, v projections; must
            divide I. Defaults to `4`.
        use_bias: biases on the up, q, k, v and down projections (the
            official default). Defaults to `False`.
        dropout: dropout rate on the block's output before the residual.
            Defaults to `0.0`.
        num_layers: number of blocks in the stack, for the Wang init of
            `W_down`. Defaults to `1`.
        form: `"auto"`, `"parallel"`, `"chunkwise"` or `"recurrent"`: how
            the mLSTM is computed (same result). Defaults to `"auto"`.
        chunk_size: chunk length of the chunkwise form, an int or
            `"auto"`, the size measured fastest for the backend and head
            size (see `keras_mlstm.ops.resolve_chunk_size`). Defaults to
            `"auto"`.
        fused: `None`, `True` or `False`: compute the mLSTM with the fused
            `mlstm_kernels` kernel (`None`: where it can run; see
            `keras_mlstm.ops.mlstm`). Defaults to `None`.
        return_state: also return the final state. Defaults to `False`.
        seed: int seed for the initialisers and dropout. Defaults to
            `None`.
        **kwargs: base layer arguments (`name`, `dtype`...).

    Call arguments:
        inputs: `(B, T, D)`.
        initial_state: None (empty state) or `[C, n, m, conv]` with shapes
            `(B, NH, DH, DH)`, `(B, NH, DH)`, `(B, NH)` (float32, or
            float64 for a float64 layer) and `(B, K - 1, I)` (compute
            dtype).
        mask: optional bool `(B, T)`; masked steps are identities: they
            leave the mLSTM state and the convolution window unchanged (the
            convolution reads the unmasked steps only), output zeros, and
            whatever they hold (NaN included) reaches no output, state or
            gradient; padding anywhere gives the outputs and final state of
            the unpadded sequence.
        training: enables dropout.
        return_state: None (the constructor's setting) or a bool, for this
            call only.

    Returns:
        `(B, T, D)` outputs, or with `return_state=True` the list
        `[outputs, C, n, m, conv]`.

    Example:

    >>> import numpy as np
    >>> block = MLSTMBlock(num_heads=2)
    >>> x = np.random.normal(size=(2, 10, 32)).astype("float32")
    >>> tuple(block(x).shape)
    (2, 10, 32)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517, appendix (mLSTM block).
        - The official implementation, `xlstm.blocks.mlstm`
          (github.com/NX-AI/xlstm).
    """

    def __init__(
        self,
        num_heads=4,
        proj_factor=2.0,
        conv_kernel_size=4,
        qkv_proj_blocksize=4,
        use_bias=False,
        dropout=0.0,
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
        self.proj_factor = positive_number("proj_factor", proj_factor)
        self.conv_kernel_size = positive_int(
            "conv_kernel_size", conv_kernel_size
        )
        self.qkv_proj_blocksize = positive_int(
            "qkv_proj_blocksize", qkv_proj_blocksize
        )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"`dropout` must be in [0, 1); received {dropout}."
            )
        self.dropout = float(dropout)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        features = known_features("MLSTMBlock", input_shape)
        self.embedding_dim = int(features)
        inner = inner_width(self.embedding_dim, self.proj_factor)
        if inner % self.num_heads:
            raise ValueError(
                f"`num_heads` ({self.num_heads}) must divide the inner width "
                f"{inner} (= proj_factor {self.proj_factor} x {features} "
                "features, rounded up to a multiple of 64)."
            )
        if inner % self.qkv_proj_blocksize:
            raise ValueError(
                f"`qkv_proj_blocksize` ({self.qkv_proj_blocksize}) must "
                f"divide the inner width {inner}."
            )
        self.inner_dim = inner
        self.head_size = inner // self.num_heads
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: features})
        small = keras.initializers.RandomNormal
        small_std = small_init_std(features)
        blocks = inner // self.qkv_proj_blocksize
        size = self.qkv_proj_blocksize
        bound = 1.0 / math.sqrt(self.conv_kernel_size)

        self.norm_weight = self.add_weight(
            name="norm_weight", shape=(features,), initializer="zeros"
        )
        self.up = self._projection("up", 2 * inner, features, small_std, 0)
        self.conv_kernel = self.add_weight(
            name="conv_kernel",
            shape=(self.conv_kernel_size, inner),
            initializer=keras.initializers.RandomUniform(
                -bound, bound, seed=self._seed(1)
            ),
        )
        self.conv_bias = self.add_weight(
            name="conv_bias",
            shape=(inner,),
            initializer=keras.initializers.RandomUniform(
                -bound, bound, seed=self._seed(2)
            ),
        )
        # (blocks, out, in), the official layout of LinearHeadwiseExpand.
        self.q_kernel, self.k_kernel, self.v_kernel = (
            self.add_weight(
                name=f"{name}_kernel",
                shape=(blocks, size, size),
                initializer=small(stddev=small_std, seed=self._seed(3 + i)),
            )
            for i, name in enumerate("qkv")
        )
        # Gates stay float32 under mixed precision (they are exponentiated).
        self.input_gate_kernel = self.add_weight(
            name="input_gate_kernel",
            shape=(3 * inner, self.num_heads),
            initializer="zeros",
            autocast=False,
        )
        self.input_gate_bias = self.add_weight(
            name="input_gate_bias",
            shape=(self.num_heads,),
            initializer=keras.initializers.RandomNormal(
                stddev=0.1, seed=self._seed(6)
            ),
            autocast=False,
        )
        self.forget_gate_kernel = self.add_weight(
            name="forget_gate_kernel",
            shape=(3 * inner, self.num_heads),
            initializer="zeros",
            autocast=False,
        )
        self.forget_gate_bias = self.add_weight(
            name="forget_gate_bias",
            shape=(self.num_heads,),
            initializer=forget_gate_bias_initializer(self.num_heads),
            autocast=False,
        )
        self.head_norm_weight = self.add_weight(
            name="head_norm_weight", shape=(inner,), initializer="zeros"
        )
        self.skip = self.add_weight(
            name="skip", shape=(inner,), initializer="ones"
        )
        self.down = self._projection(
            "down",
            features,
            inner,
            2.0 / self.num_layers / math.sqrt(features),
            7,
        )
        self.q_bias = self.k_bias = self.v_bias = None
        if self.use_bias:
            self.q_bias, self.k_bias, self.v_bias = (
                self.add_weight(
                    name=f"{name}_bias", shape=(inner,), initializer="zeros"
                )
                for name in "qkv"
            )

    def state_specs(self, batch):
        """`(name, shape, dtype)` of `[C, n, m, conv]` for `batch`."""
        heads, size = self.num_heads, self.head_size
        dtype = state_dtype(self.compute_dtype)
        return [
            ("C", (batch, heads, size, size), dtype),
            ("n", (batch, heads, size), dtype),
            ("m", (batch, heads), dtype),
            (
                "conv",
                (batch, self.conv_kernel_size - 1, self.inner_dim),
                keras.backend.standardize_dtype(self.compute_dtype),
            ),
        ]

    def get_initial_state(self, batch_size):
        """The state before the first step, `[C, n, m, conv]`: `C = 0`,
        `n = 0`, the stabiliser of an empty memory `m = -1e30`
        (`-inf`, the official parallel form's convention) and a zero
        convolution window of `K - 1` steps."""
        specs = self.state_specs(batch_size)
        state = [ops.zeros(shape, dtype) for _, shape, dtype in specs]
        # Not `ops.full`: on PyTorch it makes the fill value a device tensor
        # and reads it back (a host synchronisation on a GPU).
        state[2] = state[2] + NEG_LOG_WEIGHT
        return state

    def call(
        self,
        inputs,
        initial_state=None,
        mask=None,
        training=None,
        return_state=None,
    ):
        """See the class docstring; `return_state` (None: the
        constructor's) overrides the constructor's choice for one call."""
        return_state = self.wants_state(return_state)
        self._check_call(inputs, initial_state, mask)
        dtype = state_dtype(self.compute_dtype)
        batch = ops.shape(inputs)[0]
        # A head norm follows the mLSTM.
        fused_backward = fused_backward_for(True, initial_state)
        if initial_state is None:
            initial_state = self.get_initial_state(batch)
        if mask is not None:
            mask = ops.cast(mask, "bool")
        # Padded and non-finite steps leave the arithmetic by a select (what
        # they hold must reach no gradient); outputs from a non-finite step
        # on are set to NaN at the end.
        inputs, poisoned = guard_steps(inputs, mask)

        normed = ops.cast(
            standardize(ops.cast(inputs, dtype), NORM_EPSILON)
            * (1.0 + ops.cast(self.norm_weight, dtype)),
            self.compute_dtype,
        )
        up = self.up(normed)  # (B, T, 2 I)
        x_m, z = ops.split(up, 2, axis=-1)  # (B, T, I) each
        x_c, new_window = self._causal_conv(
            x_m, ops.cast(initial_state[3], self.compute_dtype), mask
        )  # (B, T, I), (B, K-1, I)

        q = self._headwise(x_c, self.q_kernel, self.q_bias)
        k = self._headwise(x_c, self.k_kernel, self.k_bias)
        v = self._headwise(x_m, self.v_kernel, self.v_bias)
        q, k, v = (ops.cast(t, dtype) for t in (q, k, v))
        input_gate, forget_gate = head_gates(
            [q, k, v],
            self.input_gate_kernel,
            self.input_gate_bias,
            self.forget_gate_kernel,
            self.forget_gate_bias,
        )  # (B, NH, T) each

        heads = self.num_heads
        h, state = mlstm(
            to_heads(q, heads),
            to_heads(k, heads),
            to_heads(v, heads),
            input_gate,
            forget_gate,
            initial_state=tuple(initial_state[:3]),
            mask=mask,
            form=self.form,
            chunk_size=self.chunk_size,
            fused=self.fused,
            fused_backward=fused_backward,
            return_state=True,
        )  # h (B, NH, T, DH), float32
        h = standardize(h, NORM_EPSILON)
        h = from_heads(h, x_c)
        h = h * (1.0 + ops.cast(self.head_norm_weight, dtype))
        h = ops.cast(h, self.compute_dtype)  # (B, T, I)
        h = (h + self.skip * x_c) * ops.silu(z)
        out = self.down(h)  # (B, T, D)
        if training and self.dropout > 0.0:
            out = keras.random.dropout(
                out, self.dropout, seed=self.seed_generator
            )
        outputs = poison(select_steps(inputs + out, mask), poisoned)
        if return_state:
            return [outputs, *poison_state([*state, new_window], poisoned)]
        return outputs

    def _causal_conv(self, x_m, window, mask):
        """`silu` of the causal depthwise convolution over the previous K-1
        inputs `window` (B, K-1, I) and `x_m` (B, T, I); returns it and the
        window after the last step.

        With a mask, the convolution runs over the unmasked steps only,
        gathered in time order, so masked steps are identities: they move
        neither the window nor what the taps of later steps reach.
        """
        length = ops.shape(x_m)[1]
        if mask is not None:
            steps = ops.arange(length, dtype="int32")[None]  # (1, T)
            # Unmasked steps first, each group in time order (unique keys).
            order = ops.argsort(ops.where(mask, steps, steps + length))
            x_m = gather_steps(x_m, order)
        taps = self.conv_kernel_size - 1
        padded = ops.concatenate([window, x_m], axis=1)  # (B, K-1+T, I)
        conv = self.conv_bias + padded[:, taps:] * self.conv_kernel[taps]
        for tap in range(taps):
            conv = conv + padded[:, tap : tap + length] * self.conv_kernel[tap]
        if mask is None:
            return ops.silu(conv), padded[:, length:]
        counted = ops.cast(mask, "int32")
        rank = ops.maximum(ops.cumsum(counted, axis=1) - 1, 0)  # (B, T)
        conv = gather_steps(conv, rank)
        count = ops.sum(counted, axis=1)  # (B,), unmasked steps per row
        last = count[:, None] + ops.arange(taps, dtype="int32")[None]
        new_window = gather_steps(padded, last)
        return ops.silu(conv), new_window

    def _headwise(self, x, kernel, bias):
        """Block-diagonal projection: (B, T, I) -> (B, T, I)."""
        shape = ops.shape(x)
        blocks = self.inner_dim // self.qkv_proj_blocksize
        x = ops.reshape(
            x, (shape[0], shape[1], blocks, self.qkv_proj_blocksize)
        )
        x = ops.einsum("btgi,goi->btgo", x, kernel)
        x = ops.reshape(x, shape)
        return x if bias is None else x + bias

    def _check_call(self, inputs, initial_state, mask):
        """Raise ValueError on malformed inputs, before any computation."""
        shape = check_sequence_inputs("MLSTMBlock", inputs, self.embedding_dim)
        check_mask(mask, shape)
        if initial_state is not None:
            self.check_initial_state(initial_state, shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "proj_factor": self.proj_factor,
                "conv_kernel_size": self.conv_kernel_size,
                "qkv_proj_blocksize": self.qkv_proj_blocksize,
                "use_bias": self.use_bias,
                "dropout": self.dropout,
                "num_layers": self.num_layers,
                "form": self.form,
                "chunk_size": self.chunk_size,
                "fused": self.fused,
                "return_state": self.return_state,
                "seed": self.seed,
            }
        )
        return config
