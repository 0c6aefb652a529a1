"""``mLSTM(input_size, hidden_size, num_layers, dropout)``: the interface
of the widely copied PyTorch port PyxLSTM, on stabilised MLSTM layers."""

import keras

from keras_mlstm.layers.mlstm import MLSTM
from keras_mlstm.ops.common import positive_int


@keras.saving.register_keras_serializable(package="keras_mlstm")
class mLSTM(keras.layers.Layer):  # noqa: N801 (the name users port from)
    """``num_layers`` stacked ``MLSTM`` layers with the PyxLSTM interface:
    ``outputs, hidden_states = mlstm(inputs, hidden_states)``.

    Unlike PyxLSTM's mLSTM (no normaliser or stabiliser: its memory
    overflows and its outputs go NaN within a few steps of large inputs),
    every layer here keeps the xLSTM paper's normaliser ``n`` and
    stabiliser ``m``, so outputs stay finite for inputs of any length and
    scale.

    Args:
        input_size: features of the inputs (checked at the first call).
        hidden_size: width of every layer's output.
        num_layers: number of stacked layers. Default 1.
        dropout: dropout rate between layers (not after the last), in
            training. Default 0.
        num_heads: heads per layer; default as ``MLSTM``.
        **kwargs: base layer arguments, plus ``form`` and ``chunk_size``
            passed to every ``MLSTM``.

    Call arguments:
        inputs: ``(B, T, input_size)``.
        hidden_states: None (zero states) or the ``hidden_states`` returned
            by a previous call: continues from there, so a long sequence fed
            in pieces gives the outputs of one pass.
        training: enables dropout.

    Returns:
        ``(outputs, hidden_states)``: ``outputs`` of shape
        ``(B, T, hidden_size)`` from the last layer, and ``hidden_states``
        the list of each layer's final state ``[C, n, m]`` (float32).

    Example:

    >>> import numpy as np
    >>> mlstm = mLSTM(input_size=8, hidden_size=16, num_layers=2, dropout=0.1)
    >>> x = np.random.normal(size=(4, 12, 8)).astype("float32")
    >>> outputs, hidden_states = mlstm(x)
    >>> outputs, hidden_states = mlstm(x, hidden_states)  # continue
    >>> tuple(outputs.shape), len(hidden_states)
    ((4, 12, 16), 2)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517.
        - PyxLSTM (github.com/muditbhargava66/PyxLSTM), the interface.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        dropout=0.0,
        num_heads=None,
        form="auto",
        chunk_size=64,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"`dropout` must be in [0, 1); received {dropout}."
            )
        self.dropout = float(dropout)
        self.num_heads = num_heads
        self.form = form
        self.chunk_size = chunk_size
        self.mlstm_layers = [
            MLSTM(
                hidden_size,
                num_heads=num_heads,
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

    def build(self, input_shape):
        if input_shape[-1] != self.input_size:
            raise ValueError(
                f"mLSTM was created with input_size={self.input_size}; "
                f"received inputs of shape {tuple(input_shape)}."
            )
        shape = tuple(input_shape)
        for layer in self.mlstm_layers:
            layer.build(shape)
            shape = shape[:-1] + (self.hidden_size,)

    def call(self, inputs, hidden_states=None, training=None):
        if inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"mLSTM was created with input_size={self.input_size}; "
                f"received inputs of shape {tuple(inputs.shape)}."
            )
        if hidden_states is not None and (
            not isinstance(hidden_states, (list, tuple))
            or len(hidden_states) != self.num_layers
        ):
            raise ValueError(
                f"`hidden_states` must be a list of {self.num_layers} states "
                "[C, n, m], as returned by a previous call; received "
                f"{hidden_states!r}."
            )
        x = inputs
        states = []
        for index, layer in enumerate(self.mlstm_layers):
            if index and self.dropout:
                x = self.dropout_layer(x, training=training)
            state = None if hidden_states is None else hidden_states[index]
            x, *state = layer(
                x,
                initial_state=None if state is None else list(state),
                training=training,
            )
            states.append(state)
        return x, states

    def compute_output_spec(self, inputs, hidden_states=None, training=None):
        batch, length = inputs.shape[0], inputs.shape[1]
        outputs = keras.KerasTensor(
            (batch, length, self.hidden_size), dtype=self.compute_dtype
        )
        states = []
        for layer in self.mlstm_layers:
            if not layer.built:
                self.build(inputs.shape)
            states.append(
                [
                    keras.KerasTensor(shape, dtype="float32")
                    for shape in layer._state_shapes(batch)
                ]
            )
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
