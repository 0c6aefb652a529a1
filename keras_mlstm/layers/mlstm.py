"""The MLSTM Keras layer: a drop-in for ``keras.layers.LSTM`` with a matrix
memory, built on ``keras_mlstm.ops.mlstm``.

Notation (see ``keras_mlstm/ops/common.py``): B batch, T time, D input
features, U = units, NH heads, DH = U / NH head size.
"""

import keras
import numpy as np
from keras import ops

from keras_mlstm.layers.base import check_mask
from keras_mlstm.layers.base import check_sequence_inputs
from keras_mlstm.layers.base import known_features
from keras_mlstm.layers.base import to_heads
from keras_mlstm.layers.norms import standardize
from keras_mlstm.ops.common import check_options
from keras_mlstm.ops.common import check_state
from keras_mlstm.ops.common import state_dtype
from keras_mlstm.ops.resolver import mlstm

HEAD_NORM_EPSILON = 1e-5
STATE_NAMES = ("C", "n", "m")


def default_num_heads(units):
    """The largest of 4, 3, 2 heads that divides ``units`` into heads of at
    least 8 features; 1 otherwise."""
    for heads in (4, 3, 2):
        if units % heads == 0 and units // heads >= 8:
            return heads
    return 1


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTM(keras.layers.Layer):
    """The mLSTM layer of xLSTM, used like ``keras.layers.LSTM``.

    For each step with input ``x_t`` it computes, per head,
    ``q, k, v = W_q x, W_k x, W_v x``, the gate pre-activations
    ``i~ = w_i^T x + b_i`` and ``f~ = w_f^T x + b_f``, updates the matrix
    memory ``C`` (DH x DH), the normaliser ``n`` and the stabiliser ``m``
    (see ``keras_mlstm.ops.mlstm``), and outputs
    ``h = sigmoid(W_o x + b_o) * activation(head_norm(mlstm(q, k, v, i~, f~)))``
    with the heads concatenated.

    The whole sequence is computed at once (chunkwise or parallel form), not
    step by step, so training is fast at any length; the state is still that
    of a recurrent network and can be carried across calls.

    Args:
        units: positive int, output width; split into ``num_heads`` heads.
        num_heads: number of heads; must divide ``units``. Default: the
            largest of 4, 3, 2 giving heads of at least 8 features, else 1.
        activation: activation of the read-out before the output gate.
            None (default, the xLSTM paper) or e.g. ``"tanh"`` (with
            ``head_norm=False``, the read-out ``o * tanh(C q / max(|n q|,
            1))`` of the original LSTM-style formulation).
        use_bias: whether the q, k, v and output-gate projections have a
            bias. The gates always do: their biases set the initial memory
            length.
        kernel_initializer: for the q, k, v and output-gate kernel.
        bias_initializer: for that projection's bias.
        kernel_regularizer: applied to every kernel (gate kernels included).
        bias_regularizer: applied to every bias (gate biases included).
        activity_regularizer: applied to the output.
        kernel_constraint: applied to every kernel.
        bias_constraint: applied to every bias.
        dropout: float in [0, 1), fraction of the input features dropped
            (one mask for all steps, as ``LSTM`` does).
        seed: int, seed for the dropout.
        return_sequences: return the whole output sequence, not only the
            last output.
        return_state: also return the final state ``C, n, m``.
        go_backwards: process the sequence backwards (and return the
            reversed sequence, as ``LSTM`` does).
        stateful: keep the final state of each batch as the initial state of
            the next; needs a fixed batch size.
        forget_gate_activation: ``"sigmoid"`` (default, as the official
            xLSTM code) or ``"exp"``.
        form: ``"auto"``, ``"parallel"``, ``"chunkwise"`` or
            ``"recurrent"``; all give the same result (see
            ``keras_mlstm.ops.resolve_form``).
        chunk_size: chunk size of the chunkwise form.
        head_norm: normalise each head's read-out (a layer norm over the head
            with a learnable scale, as the official layer does). Without it
            the read-out's scale varies by orders of magnitude between steps.
        zero_output_for_mask: whether masked steps output zeros (True) or
            repeat the last unmasked output (False, as ``keras.layers.RNN``).
            ``Bidirectional`` sets it to ``return_sequences``.
        **kwargs: base ``Layer`` arguments (``name``, ``dtype``, ...).

    Call arguments:
        sequences: the ``(B, T, D)`` input tensor.
        initial_state: None, or the list ``[C, n, m]`` of float32 tensors
            with shapes ``(B, NH, DH, DH)``, ``(B, NH, DH)``, ``(B, NH)``,
            e.g. the states returned by another MLSTM with
            ``return_state=True``.
        mask: None or a bool ``(B, T)`` tensor; masked steps leave the state
            unchanged (set automatically after ``Embedding(mask_zero=True)``
            or ``Masking``).
        training: whether dropout is active.

    Returns:
        ``(B, T, U)`` with ``return_sequences``, else ``(B, U)``, the output
        at the last unmasked step; with ``return_state``, the list
        ``[output, C, n, m]``. Outputs are in the compute dtype; states are
        float32.

    Example:

    >>> import numpy as np, keras
    >>> model = keras.Sequential([
    ...     keras.Input((20, 8)), MLSTM(32), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.random.rand(16, 20, 8), np.random.rand(16, 1)
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    >>> tuple(model.predict(x, verbose=0).shape)
    (16, 1)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517 (section 2.3, the mLSTM).
        - ``docs/layer.md`` and ``docs/math.md`` in this repository.
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
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        forget_gate_activation="sigmoid",
        form="auto",
        chunk_size=64,
        head_norm=True,
        zero_output_for_mask=False,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)):
            raise ValueError(
                f"`units` must be a positive int; received {units!r}."
            )
        if units < 1:
            raise ValueError(
                f"`units` must be a positive int; received {units}."
            )
        if num_heads is None:
            num_heads = default_num_heads(int(units))
        if (
            isinstance(num_heads, bool)
            or not isinstance(num_heads, (int, np.integer))
            or num_heads < 1
        ):
            raise ValueError(
                f"`num_heads` must be a positive int; received {num_heads!r}."
            )
        if units % num_heads:
            raise ValueError(
                f"`num_heads` ({num_heads}) must divide `units` ({units})."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"`dropout` must be in [0, 1); received {dropout}."
            )
        if isinstance(chunk_size, np.integer):
            chunk_size = int(chunk_size)
        # The same checks, and messages, as the ops the layer calls.
        check_options(forget_gate_activation, 0.0, chunk_size, form)
        self.units = int(units)
        self.num_heads = int(num_heads)
        self.head_size = self.units // self.num_heads
        self.activation = (
            None if activation is None else keras.activations.get(activation)
        )
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = float(dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.stateful = stateful
        self.forget_gate_activation = forget_gate_activation
        self.form = form
        self.chunk_size = int(chunk_size)
        self.head_norm = head_norm
        self.zero_output_for_mask = zero_output_for_mask
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(ndim=3)
        self.states = None

    def build(self, input_shape):
        features = known_features("MLSTM", input_shape)
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: features})
        self.kernel = self.add_weight(
            name="kernel",
            shape=(features, 4 * self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(4 * self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        # Gates stay float32 under mixed precision: their pre-activations are
        # exponentiated, so a bfloat16 rounding of 2^-9 relative would move
        # every weight of the memory. Forget-gate biases spread over [3, 6]
        # across heads, as the official code: sigmoid(3..6) = 0.95..0.998,
        # memories of ~20 to ~400 steps.
        self.input_gate_kernel, self.input_gate_bias = self._add_gate(
            "input", features, "zeros", seed_offset=0
        )
        forget_bias = (
            np.linspace(3.0, 6.0, self.num_heads).tolist()
            if self.num_heads > 1
            else 3.0
        )
        self.forget_gate_kernel, self.forget_gate_bias = self._add_gate(
            "forget",
            features,
            keras.initializers.Constant(forget_bias),
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
        if self.stateful:
            batch = input_shape[0]
            if batch is None:
                raise ValueError(
                    "A stateful MLSTM needs a fixed batch size: give it with "
                    "`keras.Input(shape, batch_size=...)`; received input "
                    f"shape {tuple(input_shape)}."
                )
            self.states = [
                self.add_weight(
                    name=f"state_{name}",
                    shape=shape,
                    initializer="zeros",
                    trainable=False,
                    dtype=state_dtype(self.compute_dtype),
                    autocast=False,
                )
                for name, shape in zip(
                    STATE_NAMES, self._state_shapes(batch), strict=True
                )
            ]

    def call(self, sequences, initial_state=None, mask=None, training=None):
        inputs = sequences
        self._check_call(inputs, initial_state, mask)
        if self.stateful and initial_state is None:
            # Copies: the variables are assigned below, in place on PyTorch,
            # while the backward pass still needs the values read here.
            initial_state = [ops.copy(s.value) for s in self.states]
        if mask is not None:
            mask = ops.cast(mask, "bool")
        if self.go_backwards:
            inputs = ops.flip(inputs, axis=1)
            if mask is not None:
                mask = ops.flip(mask, axis=1)
        x = inputs
        if training and self.dropout > 0.0:
            shape = ops.shape(x)
            x = keras.random.dropout(
                x,
                self.dropout,
                noise_shape=(shape[0], 1, shape[2]),
                seed=self.seed_generator,
            )

        # einsum rather than matmul: Keras's torch matmul computes float64
        # in float32 (see ops/compat.py).
        projected = ops.einsum("btd,du->btu", x, self.kernel)  # (B, T, 4 U)
        if self.use_bias:
            projected = projected + self.bias
        q, k, v, output_gate = ops.split(projected, 4, axis=-1)
        dtype = state_dtype(self.compute_dtype)
        x_gates = ops.cast(x, dtype)
        input_gate = ops.einsum(
            "btd,dh->bth", x_gates, ops.cast(self.input_gate_kernel, dtype)
        )  # (B, T, NH)
        input_gate = input_gate + ops.cast(self.input_gate_bias, dtype)
        forget_gate = ops.einsum(
            "btd,dh->bth", x_gates, ops.cast(self.forget_gate_kernel, dtype)
        )  # (B, T, NH)
        forget_gate = forget_gate + ops.cast(self.forget_gate_bias, dtype)

        h, state = mlstm(
            to_heads(q, self.num_heads),
            to_heads(k, self.num_heads),
            to_heads(v, self.num_heads),
            ops.transpose(input_gate, (0, 2, 1)),
            ops.transpose(forget_gate, (0, 2, 1)),
            initial_state=None
            if initial_state is None
            else tuple(initial_state),
            mask=mask,
            form=self.form,
            chunk_size=self.chunk_size,
            forget_gate_activation=self.forget_gate_activation,
            return_state=True,
        )  # h (B, NH, T, DH)
        if self.head_norm:
            h = self._normalize_heads(h)
        h = ops.transpose(h, (0, 2, 1, 3))  # (B, T, NH, DH)
        shape = ops.shape(h)
        h = ops.reshape(h, (shape[0], shape[1], self.units))  # (B, T, U)
        h = ops.cast(h, self.compute_dtype)
        if self.activation is not None:
            h = self.activation(h)
        outputs = ops.sigmoid(output_gate) * h  # (B, T, U)

        if self.stateful:
            for variable, value in zip(self.states, state, strict=True):
                variable.assign(value)
        if self.return_sequences:
            output = self._mask_sequence(outputs, mask)
        else:
            output = self._last_output(outputs, mask)
        if self.return_state:
            return [output, *state]
        return output

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, length = sequences_shape[0], sequences_shape[1]
        if self.return_sequences:
            output_shape = (batch, length, self.units)
        else:
            output_shape = (batch, self.units)
        if self.return_state:
            return (output_shape, *self._state_shapes(batch))
        return output_shape

    def compute_output_spec(
        self, sequences, initial_state=None, mask=None, training=None
    ):
        shapes = self.compute_output_shape(sequences.shape)
        if not self.return_state:
            return keras.KerasTensor(shapes, dtype=self.compute_dtype)
        output = keras.KerasTensor(shapes[0], dtype=self.compute_dtype)
        dtype = state_dtype(self.compute_dtype)
        states = [keras.KerasTensor(s, dtype=dtype) for s in shapes[1:]]
        return [output, *states]

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask, None, None, None]
        return output_mask

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
                "dropout": self.dropout,
                "seed": self.seed,
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "go_backwards": self.go_backwards,
                "stateful": self.stateful,
                "forget_gate_activation": self.forget_gate_activation,
                "form": self.form,
                "chunk_size": self.chunk_size,
                "head_norm": self.head_norm,
                "zero_output_for_mask": self.zero_output_for_mask,
            }
        )
        return config

    def reset_state(self):
        """Zero the carried state of a stateful layer."""
        if self.states is not None:
            for variable in self.states:
                variable.assign(ops.zeros(variable.shape, variable.dtype))

    def reset_states(self):
        """Alias of ``reset_state``, as Keras's recurrent layers have."""
        self.reset_state()

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

    def _state_shapes(self, batch):
        heads, size = self.num_heads, self.head_size
        return [
            (batch, heads, size, size),
            (batch, heads, size),
            (batch, heads),
        ]

    def _normalize_heads(self, h):
        """Layer norm over each head's DH features, learnable scale."""
        dtype = state_dtype(self.compute_dtype)
        h = standardize(ops.cast(h, dtype), HEAD_NORM_EPSILON)  # (B, NH, T, DH)
        scale = ops.reshape(
            ops.cast(self.head_norm_scale, dtype),
            (self.num_heads, 1, self.head_size),
        )
        return h * scale

    def _mask_sequence(self, outputs, mask):
        """Masked steps output zeros, or repeat the last unmasked output
        (zeros before the first), as ``keras.layers.RNN``."""
        if mask is None:
            return outputs
        keep = ops.expand_dims(mask, -1)  # (B, T, 1)
        if self.zero_output_for_mask:
            return ops.where(keep, outputs, ops.zeros_like(outputs))
        length = ops.shape(mask)[1]
        steps = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
        last = ops.where(mask, steps, -ops.ones_like(steps))  # (B, T)
        last = ops.associative_scan(ops.maximum, last, axis=1)
        gathered = ops.take_along_axis(
            outputs, ops.expand_dims(ops.maximum(last, 0), -1), axis=1
        )  # (B, T, U)
        seen = ops.expand_dims(last >= 0, -1)
        return ops.where(seen, gathered, ops.zeros_like(outputs))

    def _last_output(self, outputs, mask):
        """The output at each sequence's last unmasked step (zeros for a
        fully masked sequence)."""
        if mask is None:
            return outputs[:, -1]
        length = ops.shape(mask)[1]
        steps = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
        last = ops.max(
            ops.where(mask, steps, -ops.ones_like(steps)), axis=1
        )  # (B,)
        index = ops.reshape(ops.maximum(last, 0), (-1, 1, 1))
        output = ops.take_along_axis(outputs, index, axis=1)[:, 0]  # (B, U)
        seen = ops.expand_dims(last >= 0, -1)
        return ops.where(seen, output, ops.zeros_like(output))

    def _check_call(self, inputs, initial_state, mask):
        """Raise ValueError on malformed inputs, before any computation."""
        built = self.kernel.shape[0]
        shape = check_sequence_inputs("MLSTM", inputs, built)
        dims = {
            "B": shape[0],
            "NH": self.num_heads,
            "DK": self.head_size,
            "DV": self.head_size,
        }
        if self.stateful:
            batch = self.states[0].shape[0]
            if shape[0] is not None and shape[0] != batch:
                raise ValueError(
                    f"This stateful MLSTM was built for batch size {batch}; "
                    f"received inputs of shape {shape}. Feed batches of "
                    f"{batch}, or rebuild the layer."
                )
        check_mask(mask, shape)
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                raise ValueError(
                    "`initial_state` must be the list [C, n, m]; received "
                    f"{type(initial_state)}."
                )
            check_state(
                tuple(initial_state), dims, state_dtype(self.compute_dtype)
            )
