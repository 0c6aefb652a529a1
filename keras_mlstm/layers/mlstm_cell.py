"""`MLSTMCell`: the weights and one time step of the `MLSTM` layer, as
`keras.layers.LSTMCell` is to `LSTM`.

Notation (see `keras_mlstm/ops/common.py`): B batch, T time, D input
features, U = units, NH heads, DH = U / NH head size.
"""

import keras
from keras import ops

from keras_mlstm.layers.base import forget_gate_bias_initializer
from keras_mlstm.layers.norms import standardize
from keras_mlstm.ops.common import check_options
from keras_mlstm.ops.common import linear
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.common import state_dtype
from keras_mlstm.ops.common import to_dtype
from keras_mlstm.ops.resolver import mlstm_step

HEAD_NORM_EPSILON = 1e-5
STATE_NAMES = ("C", "n", "m")


def default_num_heads(units):
    """The largest of 4, 3, 2 heads that divides `units` into heads of at
    least 8 features; 1 otherwise."""
    for heads in (4, 3, 2):
        if units % heads == 0 and units // heads >= 8:
            return heads
    return 1


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTMCell(keras.layers.Layer):
    """One step of the mLSTM: the cell of the `MLSTM` layer.

    Holds the layer's weights and computes, for one input `x` of shape
    `(B, D)`, the output `h` of shape `(B, U)` and the next state (see
    `MLSTM` for the equations). Use it to run the recurrence step by step,
    in `keras.layers.RNN` or a hand-written loop; `MLSTM` computes whole
    sequences with the same weights at once, which is much faster to train.

    As every Keras cell, it keeps flat states, the previous output first
    (what `keras.layers.RNN` repeats at masked steps): `[h, C, n, m]` with
    shapes `(B, U)`, `(B, NH * DH * DH)`, `(B, NH * DH)`, `(B, NH)`; `MLSTM`
    returns the same `C, n, m` with their head axes, `(B, NH, DH, DH)`,
    `(B, NH, DH)`, `(B, NH)`.

    Args:
        units: positive int, output width; split into `num_heads` heads.
        num_heads: number of heads; must divide `units`. Defaults to
            `None`: the largest of 4, 3, 2 that gives heads of at least 8
            features, else 1.
        activation: activation of the read-out before the output gate.
            Defaults to `None` (the xLSTM paper).
        use_bias: whether the q, k, v and output-gate projection has a bias.
            The gates always have one. Defaults to `True`.
        kernel_initializer: initializer of that projection's kernel.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of its bias. Defaults to `"zeros"`.
        kernel_regularizer: applied to every kernel (gates included).
            Defaults to `None`.
        bias_regularizer: applied to every bias. Defaults to `None`.
        kernel_constraint: applied to every kernel. Defaults to `None`.
        bias_constraint: applied to every bias. Defaults to `None`.
        seed: int seed of the gate kernels' initializer. Defaults to `None`.
        forget_gate_activation: `"sigmoid"` or `"exp"`. Defaults to
            `"sigmoid"` (the official xLSTM code).
        head_norm: normalise each head's read-out with a learnable scale.
            Defaults to `True`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, D)`.
        states: the list `[h, C, n, m]` (see above), e.g.
            `get_initial_state(batch_size)`; `h` is not read (the mLSTM has
            no hidden-to-hidden connection).
        training: unused; accepted for `keras.layers.RNN`.

    Returns:
        `(output, new_states)`: `(B, U)` in the compute dtype and the list
        `[output, C, n, m]`.

    Example:

    >>> import keras, numpy as np
    >>> x = np.random.normal(size=(2, 5, 3)).astype("float32")
    >>> cell = MLSTMCell(16)
    >>> states = cell.get_initial_state(batch_size=2)
    >>> for t in range(5):
    ...     output, states = cell(x[:, t], states)
    >>> rnn = keras.layers.RNN(cell)  # the same steps, as a layer
    >>> bool(keras.ops.all(keras.ops.isclose(rnn(x), output, atol=1e-6)))
    True

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517 (section 2.3, the mLSTM).
    """

    def __init__(
        self,
        units,
        num_heads=None,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        forget_gate_activation="sigmoid",
        head_norm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = positive_int("units", units)
        if num_heads is None:
            num_heads = default_num_heads(self.units)
        self.num_heads = positive_int("num_heads", num_heads)
        if self.units % self.num_heads:
            raise ValueError(
                f"`num_heads` ({self.num_heads}) must divide `units` "
                f"({self.units})."
            )
        check_options(forget_gate_activation, 0.0)
        self.head_size = self.units // self.num_heads
        self.activation = (
            None if activation is None else keras.activations.get(activation)
        )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = seed
        self.forget_gate_activation = forget_gate_activation
        self.head_norm = bool(head_norm)
        self.output_size = self.units

    @property
    def input_dtype(self):
        # Inputs stay in the variable dtype (float32 under mixed precision):
        # the projections are computed from them in float32 (see `build`).
        return self.variable_dtype

    @property
    def state_size(self):
        """The sizes of the flat states `[h, C, n, m]`."""
        heads, size = self.num_heads, self.head_size
        return [self.units, heads * size * size, heads * size, heads]

    @property
    def head_state_shapes(self):
        """The shapes of `C`, `n` and `m` with their head axes, without the
        batch axis (the states of `MLSTM`)."""
        heads, size = self.num_heads, self.head_size
        return [(heads, size, size), (heads, size), (heads,)]

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last axis (features) of the MLSTM input must be known; "
                f"received input shape {tuple(input_shape)}."
            )
        features = int(features)
        # Every weight stays float32 under mixed precision (autocast=False)
        # and the projections are computed in float32: the gates are
        # exponentiated, and the read-out C q / max(|n q|, ...) is a ratio
        # that flips sign where n q crosses 0, so a bfloat16 rounding of
        # q, k or v (2^-9) moved outputs by up to 1.4x their largest value
        # at inputs of scale 1e3 (measured); in float32 only the rounding of
        # the output itself remains (docs/reliability.md).
        self.kernel = self.add_weight(
            name="kernel",
            shape=(features, 4 * self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(4 * self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                autocast=False,
            )
        self.input_gate_kernel, self.input_gate_bias = self._add_gate(
            "input", features, "zeros", seed_offset=0
        )
        self.forget_gate_kernel, self.forget_gate_bias = self._add_gate(
            "forget",
            features,
            forget_gate_bias_initializer(self.num_heads),
            seed_offset=1,
        )
        self.head_norm_scale = None
        if self.head_norm:
            self.head_norm_scale = self.add_weight(
                name="head_norm_scale",
                shape=(self.units,),
                initializer="ones",
                autocast=False,
            )

    def call(self, inputs, states, training=None):
        q, k, v, output_gate, input_gate, forget_gate = self.project(inputs)
        batch = ops.shape(inputs)[0]
        heads = (batch, self.num_heads, self.head_size)
        dtype = state_dtype(self.compute_dtype)
        memory = tuple(
            ops.reshape(to_dtype(state, dtype), (batch, *shape))
            for state, shape in zip(
                states[1:], self.head_state_shapes, strict=True
            )
        )
        h, (c, n, m) = mlstm_step(
            ops.reshape(q, heads),
            ops.reshape(k, heads),
            ops.reshape(v, heads),
            input_gate,
            forget_gate,
            memory,
            forget_gate_activation=self.forget_gate_activation,
        )  # (B, NH, DH)
        output = self.read_out(h[:, :, None], output_gate[:, None])[:, 0]
        flat = [
            ops.reshape(s, (batch, size))
            for s, size in zip((c, n, m), self.state_size[1:], strict=True)
        ]
        return output, [output, *flat]

    def project(self, x):
        """The projections of inputs `(..., D)`: `q, k, v` (float32, or
        float64 for a float64 cell) and the output-gate pre-activation
        (compute dtype), each `(..., U)`, and the input and forget gate
        pre-activations `(..., NH)` (float32 or float64)."""
        dtype = state_dtype(self.compute_dtype)
        if not keras.backend.is_float_dtype(x.dtype):
            x = ops.cast(x, dtype)  # integer features, as LSTM accepts them
        projected = linear(
            to_dtype(x, dtype), to_dtype(self.kernel, dtype)
        )  # (..., 4 U)
        if self.use_bias:
            projected = projected + to_dtype(self.bias, dtype)
        q, k, v, output_gate = ops.split(projected, 4, axis=-1)
        output_gate = to_dtype(output_gate, self.compute_dtype)
        gates = ops.concatenate(
            [self.input_gate_kernel, self.forget_gate_kernel], axis=-1
        )
        biases = ops.concatenate(
            [self.input_gate_bias, self.forget_gate_bias], axis=-1
        )
        gate_values = linear(
            to_dtype(x, dtype), to_dtype(gates, dtype)
        ) + to_dtype(biases, dtype)  # (..., 2 NH)
        input_gate, forget_gate = ops.split(gate_values, 2, axis=-1)
        q, k, v = (to_dtype(t, dtype) for t in (q, k, v))
        return q, k, v, output_gate, input_gate, forget_gate

    def read_out(self, h, output_gate):
        """`sigmoid(o) * activation(head_norm(h))`.

        Args:
            h: the mLSTM read-out `(B, NH, T, DH)`, float32 or float64.
            output_gate: the output-gate pre-activation `(B, T, U)`.

        Returns:
            `(B, T, U)` in the compute dtype.
        """
        if self.head_norm:
            h = standardize(h, HEAD_NORM_EPSILON)  # (B, NH, T, DH)
            scale = ops.reshape(
                ops.cast(self.head_norm_scale, h.dtype),
                (self.num_heads, 1, self.head_size),
            )
            h = h * scale
        h = ops.transpose(h, (0, 2, 1, 3))  # (B, T, NH, DH)
        shape = ops.shape(h)
        h = ops.reshape(h, (shape[0], shape[1], self.units))  # (B, T, U)
        h = ops.cast(h, self.compute_dtype)
        if self.activation is not None:
            h = self.activation(h)
        return ops.sigmoid(output_gate) * h

    def get_initial_state(self, batch_size=None):
        """Zeros `[h, C, n, m]` (flat) for `batch_size` sequences: `h` in
        the compute dtype, the memory in the state dtype (float32; float64
        for a float64 cell)."""
        dtype = state_dtype(self.compute_dtype)
        h = ops.zeros((batch_size, self.units), self.compute_dtype)
        return [h] + [
            ops.zeros((batch_size, size), dtype) for size in self.state_size[1:]
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "num_heads": self.num_heads,
                "activation": keras.activations.serialize(self.activation)
                if self.activation is not None
                else None,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
                "seed": self.seed,
                "forget_gate_activation": self.forget_gate_activation,
                "head_norm": self.head_norm,
            }
        )
        return config

    def _add_gate(self, kind, features, bias_initializer, seed_offset):
        """A gate's float32 kernel (small normal init) and bias."""
        seed = None if self.seed is None else self.seed + seed_offset
        kernel = self.add_weight(
            name=f"{kind}_gate_kernel",
            shape=(features, self.num_heads),
            initializer=keras.initializers.RandomNormal(stddev=0.01, seed=seed),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        bias = self.add_weight(
            name=f"{kind}_gate_bias",
            shape=(self.num_heads,),
            initializer=bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
            autocast=False,
        )
        return kernel, bias
