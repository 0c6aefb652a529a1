"""`mLSTM(input_size, hidden_size, num_layers, dropout)`: the interface of
the widely copied PyTorch port PyxLSTM, on stabilised `MLSTM` layers.

Notation: B batch, T time, H = hidden_size, NH heads, DH = H / NH.
"""

import keras
from keras import ops

from keras_mlstm.layers.base import check_sequence_inputs
from keras_mlstm.layers.mlstm import MLSTM
from keras_mlstm.ops.common import bind_shape
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.common import rate
from keras_mlstm.ops.common import standardize_dtype
from keras_mlstm.ops.common import state_dtype


@keras.saving.register_keras_serializable(package="keras_mlstm")
class mLSTM(keras.layers.Layer):  # noqa: N801 (the name users port from)
    """`num_layers` stacked `MLSTM` layers with the interface of PyxLSTM's
    `mLSTM`: `outputs, hidden_state = mlstm(inputs, hidden_state)`.

    Each layer's state is the tuple `(h, C, n, m)`: as in PyxLSTM,
    `hidden_state[i][0]` is the layer's last output `h` and
    `hidden_state[i][1]` its matrix memory `C` (hidden x hidden for one
    head), followed by the xLSTM paper's normaliser `n` and stabiliser `m`,
    which PyxLSTM lacks: its memory overflows and its outputs turn NaN
    within a few steps of large inputs, while here outputs stay finite for
    inputs of any length and scale. `C` and `n` are stored divided by
    `exp(m)`, and `C` is laid out (key, value), the transpose of the
    paper's `v k^T`.

    PyxLSTM's cell also feeds `h` back into its gates through a
    hidden-to-hidden matrix; the paper's mLSTM has no such recurrence (its
    gates read only the input), and neither has this layer: an `h` passed
    back in `hidden_state` is checked for shape and not used.

    The stacked `MLSTM` layers are the list `mlstm.layers` (PyxLSTM's list
    of cells); each keeps its weights in its `cell`.

    Args:
        input_size: positive int, features of the inputs.
        hidden_size: positive int, width of every layer's output.
        num_layers: positive int, number of stacked layers. Defaults to `1`.
        dropout: rate in [0, 1) of the dropout applied between layers (not
            after the last one), in training only. Defaults to `0.0`.
        num_heads: positive int, heads per layer; must divide
            `hidden_size`. Defaults to `1` (PyxLSTM's single hidden x hidden
            memory).
        form: how each `MLSTM` computes the sequence (`"auto"`,
            `"parallel"`, `"chunkwise"` or `"recurrent"`; same result).
            Defaults to `"auto"`.
        chunk_size: chunk size of the chunkwise form, an int or `"auto"`
            (see `keras_mlstm.ops.resolve_chunk_size`). Defaults to
            `"auto"`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the `(B, T, input_size)` input tensor.
        hidden_state: None (zero states), or a list of one tuple
            `(h, C, n, m)` per layer, as returned by a previous call or by
            `init_hidden(batch_size)`: the call continues from there, so a
            sequence fed in pieces gives the outputs of one pass. Shapes:
            `h` `(B, H)`; for one head `C` `(B, H, H)`, `n` `(B, H)`, `m`
            `(B,)`; for `NH` heads `C` `(B, NH, DH, DH)`, `n`
            `(B, NH, DH)`, `m` `(B, NH)`. Any other structure raises a
            `ValueError` before anything is computed.
        training: whether dropout is active.

    Returns:
        The tuple `(outputs, hidden_state)`: `outputs` of shape
        `(B, T, hidden_size)` from the last layer (compute dtype), and
        `hidden_state` the list of each layer's final `(h, C, n, m)`, with
        the shapes above (`h` in the compute dtype, the others float32, or
        float64 for a float64 layer).

    Example:

    >>> import numpy as np
    >>> mlstm = mLSTM(input_size=8, hidden_size=16, num_layers=2, dropout=0.1)
    >>> x = np.random.normal(size=(4, 12, 8)).astype("float32")
    >>> outputs, hidden_state = mlstm(x)
    >>> tuple(outputs.shape)
    (4, 12, 16)
    >>> h, C, n, m = hidden_state[0]  # the first layer's state
    >>> tuple(h.shape), tuple(C.shape), tuple(n.shape), tuple(m.shape)
    ((4, 16), (4, 16, 16), (4, 16), (4,))
    >>> outputs, hidden_state = mlstm(x, hidden_state=hidden_state)  # more
    >>> len(mlstm.layers), len(mlstm.init_hidden(batch_size=4))
    (2, 2)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517 (section 2.3, the mLSTM).
        - PyxLSTM, github.com/muditbhargava66/PyxLSTM (`xLSTM/mlstm.py`),
          the interface; `docs/migration.md` maps its names to these.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        dropout=0.0,
        num_heads=1,
        form="auto",
        chunk_size="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.dropout = rate("dropout", dropout)
        self.num_heads = positive_int("num_heads", num_heads)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"`num_heads` ({self.num_heads}) must divide `hidden_size` "
                f"({self.hidden_size})."
            )
        self.head_size = self.hidden_size // self.num_heads
        self.form = form
        self.chunk_size = chunk_size
        # `keras.layers.Layer` defines no `layers` (only `keras.Model`
        # does), so the PyxLSTM name is free: Keras tracks the list like
        # any attribute, and `.keras` files hold the weights under it.
        self.layers = [
            MLSTM(
                self.hidden_size,
                num_heads=self.num_heads,
                return_sequences=True,
                return_state=True,
                form=form,
                chunk_size=chunk_size,
                name=f"mlstm_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(self.num_layers)
        ]
        self.dropout_layer = keras.layers.Dropout(self.dropout)

    @property
    def input_dtype(self):
        # Inputs and states stay in the variable dtype (float32 under mixed
        # precision): the states are float32 there, as MLSTM expects them.
        return self.variable_dtype

    def build(self, input_shape):
        shape = tuple(input_shape)
        self._check_inputs(keras.KerasTensor(shape))
        for layer in self.layers:
            layer.build(shape)
            shape = shape[:-1] + (self.hidden_size,)

    def call(self, inputs, hidden_state=None, training=None):
        shape = self._check_inputs(inputs)
        self._check_hidden_state(hidden_state, shape[0])
        x = inputs
        states = []
        for index, layer in enumerate(self.layers):
            if index and self.dropout:
                x = self.dropout_layer(x, training=training)
            memory = None
            if hidden_state is not None:
                memory = self._to_memory(hidden_state[index])
            x, *memory = layer(x, initial_state=memory, training=training)
            states.append(self._from_memory(x[:, -1], memory))
        return x, states

    def compute_output_spec(self, inputs, hidden_state=None, training=None):
        batch = inputs.shape[0]
        self._check_hidden_state(hidden_state, batch)
        outputs = keras.KerasTensor(
            (batch, inputs.shape[1], self.hidden_size),
            dtype=self.compute_dtype,
        )
        states = [
            tuple(
                keras.KerasTensor(shape, dtype=dtype)
                for shape, dtype in self._state_specs(batch)
            )
            for _ in range(self.num_layers)
        ]
        return outputs, states

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_size": self.input_size,
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "dropout": self.dropout,
                "num_heads": self.num_heads,
                "form": self.form,
                "chunk_size": self.chunk_size,
            }
        )
        return config

    def init_hidden(self, batch_size):
        """The state before the first step, as PyxLSTM's `init_hidden`:
        one tuple `(h, C, n, m)` of zeros per layer, for `batch_size`
        sequences (the state used when `hidden_state` is None)."""
        batch_size = positive_int("batch_size", batch_size, minimum=0)
        return [
            tuple(
                ops.zeros(shape, dtype)
                for shape, dtype in self._state_specs(batch_size)
            )
            for _ in range(self.num_layers)
        ]

    def _state_layout(self):
        """Each part of a layer's state: its name and axes. One head's
        axis is dropped, so that `C` is `(B, H, H)` as in PyxLSTM."""
        if self.num_heads == 1:
            memory = (("C", ("B", "H", "H")), ("n", ("B", "H")), ("m", ("B",)))
        else:
            memory = (
                ("C", ("B", "NH", "DH", "DH")),
                ("n", ("B", "NH", "DH")),
                ("m", ("B", "NH")),
            )
        return (("h", ("B", "H")),) + memory

    def _dims(self, batch):
        return {
            "B": batch,
            "H": self.hidden_size,
            "NH": self.num_heads,
            "DH": self.head_size,
        }

    def _state_specs(self, batch):
        """`(shape, dtype)` of `h`, `C`, `n` and `m` for `batch`."""
        dims = self._dims(batch)
        memory_dtype = state_dtype(self.compute_dtype)
        return [
            (
                tuple(dims[axis] for axis in axes),
                self.compute_dtype if name == "h" else memory_dtype,
            )
            for name, axes in self._state_layout()
        ]

    def _to_memory(self, state):
        """`(h, C, n, m)` -> the `[C, n, m]` of `MLSTM`, with a head axis."""
        memory = list(state[1:])
        if self.num_heads == 1:
            memory = [ops.expand_dims(part, 1) for part in memory]
        return memory

    def _from_memory(self, h, memory):
        """`h` and `MLSTM`'s `[C, n, m]` -> `(h, C, n, m)`."""
        if self.num_heads == 1:
            memory = [ops.squeeze(part, 1) for part in memory]
        return (h, *memory)

    def _check_inputs(self, inputs):
        """Raise ValueError unless `inputs` is `(B, T, input_size)`; return
        its static shape."""
        return check_sequence_inputs(
            f"mLSTM(input_size={self.input_size})", inputs, self.input_size
        )

    def _check_hidden_state(self, hidden_state, batch):
        """Raise ValueError unless `hidden_state` is None or one
        `(h, C, n, m)` per layer with the expected shapes and dtypes (from
        static shapes, before anything is computed)."""
        if hidden_state is None:
            return
        layout = self._state_layout()
        dims = self._dims(batch)
        if not (
            isinstance(hidden_state, (list, tuple))
            and len(hidden_state) == self.num_layers
            and all(
                isinstance(state, (list, tuple))
                and len(state) == len(layout)
                and all(hasattr(part, "shape") for part in state)
                for state in hidden_state
            )
        ):
            expected = ", ".join(
                f"{name} {_tuple_text(axes)} = "
                f"{_tuple_text(str(dims[axis] or axis) for axis in axes)}"
                for name, axes in layout
            )
            raise ValueError(
                f"`hidden_state` must be None or a list of "
                f"{self.num_layers} tuples (h, C, n, m), one per layer, "
                f"with shapes {expected}, as returned by a previous call or "
                f"by `init_hidden(batch_size)`; received "
                f"{_structure(hidden_state)}."
            )
        memory_dtype = state_dtype(self.compute_dtype)
        for index, state in enumerate(hidden_state):
            for position, (part, (name, axes)) in enumerate(
                zip(state, layout, strict=True)
            ):
                label = f"hidden_state[{index}][{position}]"
                bind_shape(label, part, axes, dims)
                dtype = standardize_dtype(part)
                if name != "h" and dtype != memory_dtype:
                    raise ValueError(
                        f"`{label}` ({name}) must have dtype {memory_dtype}; "
                        f"received dtype {dtype}."
                    )


def _tuple_text(items):
    """`items` written as a Python tuple: `(B, H)`, `(B,)`."""
    items = list(items)
    return f"({', '.join(items)}{',' if len(items) == 1 else ''})"


def _structure(value):
    """A short description of a nested state: shapes for tensors, type
    names for anything else."""
    if isinstance(value, list):
        return f"[{', '.join(_structure(item) for item in value)}]"
    if isinstance(value, tuple):
        return _tuple_text(_structure(item) for item in value)
    if hasattr(value, "shape"):
        return str(tuple(value.shape))
    return type(value).__name__
