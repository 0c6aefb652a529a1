"""The MLSTM Keras layer: a drop-in for `keras.layers.LSTM` with a matrix
memory, computed over whole sequences by `keras_mlstm.ops.mlstm`.

Notation (see `keras_mlstm/ops/common.py`): B batch, T time, D input
features, U = units, NH heads, DH = U / NH head size.
"""

import keras
from keras import ops

# Keras's own recurrent layers create their stream-state variables with
# tracking off (`keras.layers.RNN._create_state_variables`), so that the
# state is not a weight: `get_weights` and saved files hold the same weights
# with and without `stateful`. This layer does the same.
from keras.src.utils.tracking import no_automatic_dependency_tracking

from keras_mlstm.layers.base import check_mask
from keras_mlstm.layers.base import check_sequence_inputs
from keras_mlstm.layers.base import fused_backward_for
from keras_mlstm.layers.base import gather_steps
from keras_mlstm.layers.base import guard_steps
from keras_mlstm.layers.base import last_step
from keras_mlstm.layers.base import poison
from keras_mlstm.layers.base import poison_state
from keras_mlstm.layers.base import to_heads
from keras_mlstm.layers.mlstm_cell import STATE_NAMES
from keras_mlstm.layers.mlstm_cell import MLSTMCell
from keras_mlstm.ops.common import check_chunk_size
from keras_mlstm.ops.common import check_fused
from keras_mlstm.ops.common import check_options
from keras_mlstm.ops.common import check_state
from keras_mlstm.ops.common import rate
from keras_mlstm.ops.common import state_dtype
from keras_mlstm.ops.resolver import mlstm

# Arguments of `keras.layers.LSTM` that have no meaning for the mLSTM: the
# values accepted (LSTM's defaults, and values that change nothing here),
# and why others are refused.
LSTM_ONLY_ARGUMENTS = {
    "recurrent_activation": (
        ("sigmoid",),
        "the mLSTM has no recurrent gate activation: its input gate is "
        "exponential and its forget gate is set by `forget_gate_activation`",
    ),
    "recurrent_initializer": (
        ("orthogonal",),
        "the mLSTM has no recurrent kernel (no hidden-to-hidden connection)",
    ),
    "recurrent_regularizer": (
        (None,),
        "the mLSTM has no recurrent kernel (no hidden-to-hidden connection)",
    ),
    "recurrent_constraint": (
        (None,),
        "the mLSTM has no recurrent kernel (no hidden-to-hidden connection)",
    ),
    "recurrent_dropout": (
        (0, 0.0),
        "the mLSTM has no recurrent connection to drop; use `dropout`",
    ),
    "unit_forget_bias": (
        (True,),
        "the forget-gate biases are initialised per head to linspace(3, 6) "
        "as in the official xLSTM code",
    ),
    "implementation": (
        (1, 2),
        "LSTM's implementation modes 1 and 2 compute the same function, as "
        "MLSTM's `form` values do; there is no other",
    ),
    "unroll": (
        (False,),
        "MLSTM never loops over time steps (it computes the sequence in "
        "parallel or chunkwise form), so there is no loop to unroll",
    ),
    "use_cudnn": (
        ("auto", False),
        "there is no cuDNN kernel for the mLSTM; its training path is made "
        "of matrix products already",
    ),
}


def check_lstm_only_arguments(kwargs):
    """Remove the `keras.layers.LSTM`-only arguments from `kwargs`, raising
    ValueError for a value that would mean something the mLSTM lacks."""
    for name, (accepted, why) in LSTM_ONLY_ARGUMENTS.items():
        if name not in kwargs:
            continue
        value = kwargs.pop(name)
        if value not in accepted:
            raise ValueError(
                f"`{name}` is an argument of keras.layers.LSTM with no "
                f"meaning for MLSTM ({why}); it must be "
                f"{' or '.join(repr(a) for a in accepted)}; received "
                f"{value!r}."
            )


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTM(keras.layers.Layer):
    """The mLSTM layer of xLSTM, used like `keras.layers.LSTM`.

    For each step with input `x_t` it computes, per head,
    `q, k, v = W_q x, W_k x, W_v x`, the gate pre-activations
    `i~ = w_i^T x + b_i` and `f~ = w_f^T x + b_f`, updates the matrix
    memory `C` (DH x DH), the normaliser `n` and the stabiliser `m`
    (see `keras_mlstm.ops.mlstm`), and outputs
    `h = sigmoid(W_o x + b_o) * activation(head_norm(mlstm(q, k, v, i~, f~)))`
    with the heads concatenated.

    The whole sequence is computed at once (chunkwise or parallel form), not
    step by step, so training is fast at any length; the state is still that
    of a recurrent network and can be carried across calls. The weights live
    in `layer.cell`, an `MLSTMCell` that runs one step at a time.

    Args:
        units: positive int, output width; split into `num_heads` heads.
        num_heads: number of heads; must divide `units`. Defaults to
            `None`: the largest of 4, 3, 2 that gives heads of at least 8
            features, else 1.
        activation: activation of the read-out before the output gate.
            Defaults to `None` (the xLSTM paper). `"tanh"` with
            `head_norm=False` gives the read-out
            `o * tanh(C q / max(|n q|, 1))` of the LSTM-style formulation.
        use_bias: whether the q, k, v and output-gate projection has a
            bias. The gates always have one: their biases set the initial
            memory length. Defaults to `True`.
        kernel_initializer: initializer of that projection's kernel.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of its bias. Defaults to `"zeros"`.
        kernel_regularizer: applied to every kernel (gate kernels
            included). Defaults to `None`.
        bias_regularizer: applied to every bias (gate biases included).
            Defaults to `None`.
        activity_regularizer: applied to the output. Defaults to `None`.
        kernel_constraint: applied to every kernel. Defaults to `None`.
        bias_constraint: applied to every bias. Defaults to `None`.
        dropout: fraction of the input features dropped in training, in
            [0, 1) (one mask for all steps, as `LSTM`). Defaults to `0.0`.
        seed: int seed of the dropout and of the gate kernels' initializer.
            Defaults to `None`.
        return_sequences: return the whole output sequence, not only the
            last output. Defaults to `False`.
        return_state: also return the final state `C, n, m`. Defaults to
            `False`.
        go_backwards: process the sequence backwards (and return the
            reversed sequence, as `LSTM` does). Defaults to `False`.
        stateful: carry the final state of each batch into the next; needs
            a fixed batch size. As with `LSTM`, the carried state is not a
            weight (`get_weights` is unchanged) and is not saved. Defaults
            to `False`.
        forget_gate_activation: `"sigmoid"` (the official xLSTM code) or
            `"exp"`. Defaults to `"sigmoid"`.
        form: `"auto"`, `"parallel"`, `"chunkwise"` or `"recurrent"`; all
            give the same result (see `keras_mlstm.ops.resolve_form`).
            Defaults to `"auto"`.
        chunk_size: chunk size of the chunkwise form (a larger one than T
            is taken as T), an int or `"auto"`, the size measured fastest
            for the backend and head size (see
            `keras_mlstm.ops.resolve_chunk_size`). Defaults to `"auto"`.
        fused: `None`, `True` or `False`: compute the mLSTM with the fused
            `mlstm_kernels` kernel (`None`: where it can run; see
            `keras_mlstm.ops.mlstm`). Defaults to `None`.
        head_norm: normalise each head's read-out (a layer norm over the
            head with a learnable scale, as the official layer does).
            Defaults to `True`.
        zero_output_for_mask: whether masked steps output zeros (True) or
            repeat the last unmasked output (False, as `keras.layers.RNN`).
            `Bidirectional` sets it to `return_sequences`. Defaults to
            `False`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...), and the
            `keras.layers.LSTM` arguments that have no meaning for the mLSTM
            (`recurrent_activation`, `recurrent_initializer`,
            `recurrent_regularizer`, `recurrent_constraint`,
            `recurrent_dropout`, `unit_forget_bias`, `implementation`,
            `unroll`, `use_cudnn`), accepted at LSTM's defaults so that code
            written for LSTM runs; other values raise a ValueError saying
            why.

    Call arguments:
        sequences: the `(B, T, D)` input tensor.
        initial_state: None, or the list `[C, n, m]` of float32 tensors
            with shapes `(B, NH, DH, DH)`, `(B, NH, DH)`, `(B, NH)`, e.g.
            the states returned by another MLSTM with `return_state=True`
            or `get_initial_state(batch_size)`.
        mask: None or a bool `(B, T)` tensor; masked steps leave the state
            unchanged and whatever they hold (NaN included) reaches no
            output, state or gradient (set automatically after
            `Embedding(mask_zero=True)` or `Masking`).
        training: whether dropout is active.

    Returns:
        `(B, T, U)` with `return_sequences`, else `(B, U)`, the output at
        the last unmasked step; with `return_state`, the tuple
        `(output, C, n, m)`. Outputs are in the compute dtype; states are
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
        - `docs/layer.md` and `docs/math.md` in this repository.
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
        chunk_size="auto",
        fused=None,
        head_norm=True,
        zero_output_for_mask=False,
        **kwargs,
    ):
        check_lstm_only_arguments(kwargs)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        chunk_size = check_chunk_size(chunk_size)
        # The same checks, and messages, as the ops the layer calls.
        check_options(forget_gate_activation, 0.0, form=form)
        check_fused(fused)
        self.cell = MLSTMCell(
            units,
            num_heads=num_heads,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            seed=seed,
            forget_gate_activation=forget_gate_activation,
            head_norm=head_norm,
            dtype=self.dtype_policy,
            trainable=kwargs.get("trainable", True),
            name="mlstm_cell",
        )
        self.dropout = rate("dropout", dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.form = form
        self.chunk_size = chunk_size
        self.fused = fused
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(ndim=3)
        self.states = None

    # The cell's settings, readable here as on `keras.layers.LSTM`.
    units = property(lambda self: self.cell.units)
    num_heads = property(lambda self: self.cell.num_heads)
    head_size = property(lambda self: self.cell.head_size)
    activation = property(lambda self: self.cell.activation)
    use_bias = property(lambda self: self.cell.use_bias)
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    bias_initializer = property(lambda self: self.cell.bias_initializer)
    kernel_regularizer = property(lambda self: self.cell.kernel_regularizer)
    bias_regularizer = property(lambda self: self.cell.bias_regularizer)
    kernel_constraint = property(lambda self: self.cell.kernel_constraint)
    bias_constraint = property(lambda self: self.cell.bias_constraint)
    forget_gate_activation = property(
        lambda self: self.cell.forget_gate_activation
    )
    head_norm = property(lambda self: self.cell.head_norm)
    # Its weights too.
    kernel = property(lambda self: self.cell.kernel)
    bias = property(lambda self: self.cell.bias)
    input_gate_kernel = property(lambda self: self.cell.input_gate_kernel)
    input_gate_bias = property(lambda self: self.cell.input_gate_bias)
    forget_gate_kernel = property(lambda self: self.cell.forget_gate_kernel)
    forget_gate_bias = property(lambda self: self.cell.forget_gate_bias)
    head_norm_scale = property(lambda self: self.cell.head_norm_scale)

    @property
    def input_dtype(self):
        # Inputs stay in the variable dtype (float32 under mixed precision):
        # the gates are computed from them in float32 (see MLSTMCell).
        return self.variable_dtype

    @property
    def state_size(self):
        """The shapes of the states `C`, `n` and `m` without the batch
        axis."""
        return self.cell.head_state_shapes

    def build(self, sequences_shape, initial_state_shape=None):
        features = sequences_shape[-1]
        self.cell.build(tuple(sequences_shape[:1]) + tuple(sequences_shape[2:]))
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: features})
        if self.stateful:
            if self.states is not None:
                self.reset_state()
            else:
                batch = sequences_shape[0]
                if batch is None:
                    raise ValueError(
                        "A stateful MLSTM needs a fixed batch size: give it "
                        "with `keras.Input(shape, batch_size=...)`; received "
                        f"input shape {tuple(sequences_shape)}."
                    )
                self._create_state_variables(batch)

    @no_automatic_dependency_tracking
    def _create_state_variables(self, batch_size):
        dtype = state_dtype(self.compute_dtype)
        self.states = [
            keras.Variable(
                ops.zeros((batch_size, *shape), dtype),
                trainable=False,
                dtype=dtype,
                # Read back as stored: inside a mixed-precision call Keras
                # would cast an autocast variable to the compute dtype.
                autocast=False,
                name=f"state_{name}",
            )
            for name, shape in zip(STATE_NAMES, self.state_size, strict=True)
        ]

    def get_initial_state(self, batch_size):
        """The state before the first step, `[C, n, m]`, all zeros, for
        `batch_size` sequences (float32; float64 for a float64 layer)."""
        dtype = state_dtype(self.compute_dtype)
        return [
            ops.zeros((batch_size, *shape), dtype) for shape in self.state_size
        ]

    def call(self, sequences, initial_state=None, mask=None, training=None):
        self._check_call(sequences, initial_state, mask)
        fused_backward = fused_backward_for(self.head_norm, initial_state)
        if self.stateful and initial_state is None:
            # Copies: the variables are assigned below, in place on PyTorch,
            # while the backward pass still needs the values read here.
            initial_state = [ops.copy(s.value) for s in self.states]
        x = sequences
        if mask is not None:
            mask = ops.cast(mask, "bool")
        if self.go_backwards:
            x = ops.flip(x, axis=1)
            if mask is not None:
                mask = ops.flip(mask, axis=1)
        # Padded and non-finite steps leave the arithmetic (a select, not a
        # product, so that nothing they hold reaches a gradient); outputs
        # from a non-finite step on are set to NaN afterwards.
        x, poisoned = guard_steps(x, mask)
        if training and self.dropout > 0.0:
            shape = ops.shape(x)
            x = keras.random.dropout(
                x,
                self.dropout,
                noise_shape=(shape[0], 1, shape[2]),
                seed=self.seed_generator,
            )

        q, k, v, output_gate, input_gate, forget_gate = self.cell.project(x)
        heads = self.num_heads
        h, state = mlstm(
            to_heads(q, heads),
            to_heads(k, heads),
            to_heads(v, heads),
            ops.transpose(input_gate, (0, 2, 1)),
            ops.transpose(forget_gate, (0, 2, 1)),
            initial_state=None
            if initial_state is None
            else tuple(initial_state),
            mask=mask,
            form=self.form,
            chunk_size=self.chunk_size,
            fused=self.fused,
            fused_backward=fused_backward,
            forget_gate_activation=self.forget_gate_activation,
            return_state=True,
        )  # h (B, NH, T, DH), float32
        outputs = poison(self.cell.read_out(h, output_gate), poisoned)
        state = poison_state(state, poisoned)

        if self.stateful:
            for variable, value in zip(self.states, state, strict=True):
                variable.assign(value)
        if self.return_sequences:
            output = self._mask_sequence(outputs, mask)
        else:
            output = last_step(outputs, mask)
        if self.return_state:
            return (output, *state)
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
        return (output, *states)

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask, None, None, None]
        return output_mask

    def get_config(self):
        cell = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell.pop(key)
        config = {**super().get_config(), **cell}
        config.update(
            {
                "dropout": self.dropout,
                "seed": self.seed,
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "go_backwards": self.go_backwards,
                "stateful": self.stateful,
                "form": self.form,
                "chunk_size": self.chunk_size,
                "fused": self.fused,
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
        """Alias of `reset_state`, as Keras's recurrent layers have."""
        self.reset_state()

    def _state_shapes(self, batch):
        return [(batch, *shape) for shape in self.state_size]

    def _mask_sequence(self, outputs, mask):
        """Masked steps output zeros, or repeat the last unmasked output
        (zeros before the first), as `keras.layers.RNN`."""
        if mask is None:
            return outputs
        keep = ops.expand_dims(mask, -1)  # (B, T, 1)
        if self.zero_output_for_mask:
            return ops.where(keep, outputs, ops.zeros_like(outputs))
        length = ops.shape(mask)[1]
        steps = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
        last = ops.where(mask, steps, -ops.ones_like(steps))  # (B, T)
        last = ops.associative_scan(ops.maximum, last, axis=1)
        gathered = gather_steps(outputs, ops.maximum(last, 0))  # (B, T, U)
        seen = ops.expand_dims(last >= 0, -1)
        return ops.where(seen, gathered, ops.zeros_like(outputs))

    def _check_call(self, inputs, initial_state, mask):
        """Raise ValueError on malformed inputs, before any computation."""
        built = self.cell.kernel.shape[0]
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
