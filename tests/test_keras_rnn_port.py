"""Keras's own recurrent-layer tests, ported to `MLSTM`.

`keras/src/layers/rnn/lstm_test.py` test by test, with `MLSTM` in place of
`LSTM` and Keras's own `testing.TestCase.run_layer_test`; then the parts of
`rnn_test.py` (shapes, serialization, stateful batch checks, the cell inside
`keras.layers.RNN`) and `bidirectional_test.py` (basics, correctness,
statefulness, initial state, masking, return_state, output shapes) that
apply. Keras's expected numbers are LSTM's; here every expected number
comes from the float64 reference of the layer's equations
(`tests/reference.py`) fed the layer's own weights. Tolerance: 1e-5 of the
largest output, as Keras's (atol=rtol=1e-5): float32 rounding through the
projections, the ratio read-out and the head norm stays below 1e-6 at these
sizes.

Where mLSTM genuinely differs, the ported test asserts the documented
behaviour instead (docs/layer.md, "Differences from keras.layers.LSTM"):
`recurrent_dropout`, `unit_forget_bias=False` and the other LSTM-only
arguments at non-default values raise ValueError; the state is `[C, n, m]`.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import initializers
from keras import layers
from keras.src import testing
from reference import mlstm_layer_reference

from keras_mlstm import MLSTM
from keras_mlstm import MLSTMCell

pytestmark = pytest.mark.slow_on("jax")

# Keras's tests use constant initializers (0.01, 0.03). With constant
# weights every feature of an mLSTM head reads the same value, which the head
# norm maps to exactly zero: seeded random weights keep the outputs
# informative.
CONSTANTS = dict(
    kernel_initializer=initializers.RandomNormal(stddev=0.3, seed=11),
    bias_initializer=initializers.RandomNormal(stddev=0.3, seed=12),
)


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def weights_of(layer):
    return {w.name: numpy(w) for w in layer.weights}


def expected(layer, sequence, **kwargs):
    """The float64 reference output (and state) of `layer` on `sequence`."""
    return mlstm_layer_reference(
        sequence,
        weights_of(layer),
        layer.num_heads,
        activation=None if layer.activation is None else "tanh",
        head_norm=layer.head_norm,
        forget_gate_activation=layer.forget_gate_activation,
        go_backwards=layer.go_backwards,
        return_sequences=layer.return_sequences,
        zero_output_for_mask=layer.zero_output_for_mask,
        **kwargs,
    )


class LSTMTestPorted(testing.TestCase):
    """`lstm_test.py`, test by test."""

    def test_basics(self):
        self.run_layer_test(
            MLSTM,
            init_kwargs={"units": 3, "dropout": 0.5},
            input_shape=(3, 2, 4),
            call_kwargs={"training": True},
            expected_output_shape=(3, 3),
            expected_num_trainable_weights=7,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )
        # LSTM's second case sets recurrent_dropout: mLSTM has no recurrent
        # connection, and says so.
        with self.assertRaisesRegex(ValueError, "recurrent_dropout.*dropout"):
            MLSTM(units=3, dropout=0.5, recurrent_dropout=0.5)
        # LSTM's regularizers give 3 losses (kernel, recurrent kernel,
        # bias); MLSTM has no recurrent kernel and its kernel and bias
        # regularizers also apply to the two gates' kernels and biases.
        self.run_layer_test(
            MLSTM,
            init_kwargs={
                "units": 3,
                "return_sequences": True,
                "bias_regularizer": "l1",
                "kernel_regularizer": "l2",
            },
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 2, 3),
            expected_num_losses=6,
            expected_num_trainable_weights=7,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )

    def check_correctness(self, form, **kwargs):
        sequence = np.arange(72).reshape((3, 6, 4)).astype("float32")
        layer = MLSTM(3, form=form, seed=1, **CONSTANTS, **kwargs)
        output = layer(sequence)
        reference, _ = expected(layer, sequence)
        self.assertAllClose(output, reference, atol=1e-5, rtol=1e-5)
        return numpy(output)

    def test_correctness(self):
        # LSTM parametrizes over `implementation` (1, 2: one function);
        # MLSTM's counterpart is `form`.
        for form in ("parallel", "chunkwise", "recurrent"):
            plain = self.check_correctness(form)
            backwards = self.check_correctness(form, go_backwards=True)
            self.assertNotAllClose(plain, backwards)
            # `unroll` has no loop to unroll: only False is accepted.
            self.check_correctness(form, unroll=False)
            self.check_correctness(form, use_bias=False)
        with self.assertRaisesRegex(ValueError, "unroll"):
            MLSTM(3, unroll=True)
        with self.assertRaisesRegex(ValueError, "unit_forget_bias"):
            MLSTM(3, unit_forget_bias=False)

    def test_statefulness(self):
        sequence = np.arange(24).reshape((2, 3, 4)).astype("float32")
        layer = MLSTM(4, stateful=True, seed=1, **CONSTANTS)
        layer(sequence)
        output = layer(sequence)
        # The second call continues the first: the reference over both.
        twice = np.concatenate([sequence, sequence], axis=1)
        reference, _ = expected(layer, twice)
        self.assertAllClose(output, reference, atol=1e-5, rtol=1e-5)
        layer.reset_state()
        layer(sequence)
        output = layer(sequence)
        self.assertAllClose(output, reference, atol=1e-5, rtol=1e-5)

    def test_stateful_basics(self):
        """`rnn_test.py`'s `run_layer_test` of a stateful layer: its
        mixed-precision pass (`mixed_float16`) calls a stateful layer,
        whose carried state stays float32."""
        self.run_layer_test(
            MLSTM,
            init_kwargs={"units": 3, "stateful": True},
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 3),
            expected_num_trainable_weights=7,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )
        layer = MLSTM(3, stateful=True, dtype="mixed_float16")
        output = layer(np.ones((3, 2, 4), "float32"))
        self.assertEqual(
            keras.backend.standardize_dtype(output.dtype), "float16"
        )
        for state in layer.states:
            self.assertEqual(state.dtype, "float32")
            self.assertEqual(
                keras.backend.standardize_dtype(state.value.dtype), "float32"
            )
        self.assertGreater(np.abs(numpy(layer.states[0])).max(), 0.0)

    def test_pass_initial_state(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        rng = np.random.default_rng(0)
        initial_state = [
            rng.normal(size=(2, 1, 2, 2)).astype("float32"),
            rng.normal(size=(2, 1, 2)).astype("float32"),
            rng.normal(size=(2, 1)).astype("float32"),
        ]
        for go_backwards in (False, True):
            layer = MLSTM(2, go_backwards=go_backwards, seed=1, **CONSTANTS)
            output = layer(sequence, initial_state=initial_state)
            reference, _ = expected(
                layer, sequence, initial_state=initial_state
            )
            self.assertAllClose(output, reference, atol=1e-5, rtol=1e-5)

    def test_masking(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        mask = np.array([[True, True, True, False], [True, True, False, False]])
        cases = [
            dict(),
            dict(return_sequences=True),
            dict(return_sequences=True, zero_output_for_mask=True),
        ]
        for kwargs in cases:
            layer = MLSTM(2, seed=1, **CONSTANTS, **kwargs)
            output = layer(sequence, mask=mask)
            reference, _ = expected(layer, sequence, mask=mask)
            self.assertAllClose(output, reference, atol=1e-5, rtol=1e-5)
        backwards_mask = np.array(
            [[False, True, True, True], [False, False, True, True]]
        )
        layer = MLSTM(2, go_backwards=True, seed=1, **CONSTANTS)
        output = layer(sequence, mask=backwards_mask)
        reference, _ = expected(layer, sequence, mask=backwards_mask)
        self.assertAllClose(output, reference, atol=1e-5, rtol=1e-5)


class LSTMSurfaceTest(testing.TestCase):
    """What code written for `LSTM` touches besides `lstm_test.py`."""

    def test_lstm_only_arguments_at_lstm_defaults_are_accepted(self):
        layer = MLSTM(
            4,
            recurrent_activation="sigmoid",
            recurrent_initializer="orthogonal",
            recurrent_regularizer=None,
            recurrent_constraint=None,
            recurrent_dropout=0.0,
            unit_forget_bias=True,
            implementation=2,
            unroll=False,
            use_cudnn="auto",
        )
        self.assertEqual(layer(np.ones((2, 3, 5), "float32")).shape, (2, 4))
        # None of them enters the config: they mean nothing here.
        self.assertNotIn("recurrent_activation", layer.get_config())

    def test_lstm_only_arguments_elsewhere_raise_and_say_why(self):
        cases = {
            "recurrent_activation": "hard_sigmoid",
            "recurrent_initializer": "glorot_uniform",
            "recurrent_regularizer": "l2",
            "recurrent_constraint": "max_norm",
            "recurrent_dropout": 0.2,
            "unit_forget_bias": False,
            "implementation": 3,
            "unroll": True,
            "use_cudnn": True,
        }
        for name, value in cases.items():
            with self.assertRaisesRegex(ValueError, f"`{name}`.*LSTM"):
                MLSTM(4, **{name: value})

    def test_return_state_is_a_tuple_as_lstm(self):
        x = np.ones((2, 3, 5), "float32")
        out = MLSTM(4, return_state=True)(x)
        self.assertIsInstance(out, tuple)
        self.assertIsInstance(layers.LSTM(4, return_state=True)(x), tuple)
        self.assertEqual(
            [tuple(t.shape) for t in out],
            [(2, 4), (2, 1, 4, 4), (2, 1, 4), (2, 1)],
        )

    def test_cell_state_size_and_initial_state(self):
        layer = MLSTM(12, num_heads=3)
        self.assertIsInstance(layer.cell, MLSTMCell)
        self.assertEqual(layer.state_size, [(3, 4, 4), (3, 4), (3,)])
        state = layer.get_initial_state(5)
        self.assertEqual(
            [tuple(s.shape) for s in state], [(5, 3, 4, 4), (5, 3, 4), (5, 3)]
        )
        for s in state:
            # NumPy's check: Keras's assertAllEqual before 3.14 compares
            # only the elements of the first axis.
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(s), np.zeros(tuple(s.shape))
            )
        x = np.random.default_rng(0).normal(size=(5, 6, 2))
        self.assertAllClose(
            layer(x.astype("float32"), initial_state=state), layer(x)
        )
        # LSTM reaches its weights through `cell` too.
        self.assertIs(layer.kernel, layer.cell.kernel)
        self.assertEqual(
            layer.weights[0].path, f"{layer.name}/mlstm_cell/kernel"
        )

    def test_integer_inputs_as_lstm(self):
        x = np.arange(24).reshape((2, 3, 4)).astype("int32")
        layer = MLSTM(4, seed=1, **CONSTANTS)
        output = layer(x)
        reference, _ = expected(layer, x.astype("float64"))
        self.assertAllClose(output, reference, atol=1e-5, rtol=1e-5)
        self.assertEqual(tuple(layers.LSTM(4)(x).shape), (2, 4))


class RNNTestPorted(testing.TestCase):
    """The parts of `rnn_test.py` that apply."""

    def test_cell_inside_keras_rnn(self):
        """`keras.layers.RNN(MLSTMCell(...))` works as Keras's cells do,
        and steps through the same function as `MLSTM` (same weights)."""
        self.run_layer_test(
            layers.RNN,
            init_kwargs={"cell": MLSTMCell(5)},
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 5),
            expected_num_trainable_weights=7,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
            supports_masking=True,
        )
        self.run_layer_test(
            layers.RNN,
            init_kwargs={"cell": MLSTMCell(5), "return_sequences": True},
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 2, 5),
            expected_num_trainable_weights=7,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
            supports_masking=True,
        )
        sequence = np.random.default_rng(0).normal(size=(3, 7, 4))
        sequence = sequence.astype("float32")
        mask = np.ones((3, 7), bool)
        mask[0, 5:] = False
        mask[1, :2] = False
        for kwargs in (dict(), dict(go_backwards=True)):
            layer = MLSTM(8, return_sequences=True, seed=2, **kwargs)
            whole = layer(sequence, mask=mask)
            stepped = layers.RNN(layer.cell, return_sequences=True, **kwargs)
            self.assertAllClose(
                stepped(sequence, mask=mask), whole, atol=1e-5, rtol=1e-5
            )

    def test_compute_output_shape(self):
        for batch, length in ((3, 4), (None, None)):
            shape = (batch, length, 5)
            for sequences in (False, True):
                for state in (False, True):
                    layer = MLSTM(
                        8, return_sequences=sequences, return_state=state
                    )
                    out = (batch, length, 8) if sequences else (batch, 8)
                    want = out
                    if state:
                        want = (
                            out,
                            (batch, 1, 8, 8),
                            (batch, 1, 8),
                            (batch, 1),
                        )
                    self.assertEqual(layer.compute_output_shape(shape), want)

    def test_serialization(self):
        for kwargs in (dict(), dict(return_sequences=True, num_heads=2)):
            self.run_class_serialization_test(MLSTM(4, **kwargs))
        self.run_class_serialization_test(MLSTMCell(4))

    def test_stateful_batch_size_mismatch_raises(self):
        layer = MLSTM(2, stateful=True)
        inputs = layers.Input(shape=(5, 3), batch_size=4)
        model = keras.Model(inputs, layer(inputs))
        model(np.ones((4, 5, 3), "float32"))
        with self.assertRaisesRegex(ValueError, "batch size"):
            model(np.ones((1, 5, 3), "float32"))

    def test_stateful_weights_are_the_stateless_weights(self):
        """As `LSTM(stateful=True)`: the stream state is not a weight, so
        the Keras recipe `stateful.set_weights(trained.get_weights())`
        works."""
        trained = keras.Sequential([layers.Input((None, 3)), MLSTM(6)])
        stateful_layer = MLSTM(6, stateful=True)
        stateful = keras.Sequential(
            [layers.Input((None, 3), batch_size=2), stateful_layer]
        )
        self.assertLen(stateful.get_weights(), len(trained.get_weights()))
        self.assertLen(stateful.weights, 7)
        stateful.set_weights(trained.get_weights())
        x = np.random.default_rng(1).normal(size=(2, 9, 3)).astype("float32")
        self.assertAllClose(stateful(x), trained(x))
        lstm, stateful_lstm = layers.LSTM(6), layers.LSTM(6, stateful=True)
        keras.Sequential([layers.Input((None, 3)), lstm])
        keras.Sequential([layers.Input((None, 3), batch_size=2), stateful_lstm])
        self.assertLen(stateful_lstm.weights, len(lstm.weights))


class BidirectionalTestPorted(testing.TestCase):
    """The parts of `bidirectional_test.py` that apply."""

    def test_basics(self):
        self.run_layer_test(
            layers.Bidirectional,
            init_kwargs={"layer": MLSTM(4)},
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 8),
            expected_num_trainable_weights=14,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )
        self.run_layer_test(
            layers.Bidirectional,
            init_kwargs={
                "layer": MLSTM(4),
                "backward_layer": MLSTM(4, go_backwards=True),
                "merge_mode": "sum",
            },
            input_shape=(3, 2, 4),
            expected_output_shape=(3, 4),
            expected_num_trainable_weights=14,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )

    def references(self, layer, sequence, **kwargs):
        forward, _ = expected(layer.forward_layer, sequence, **kwargs)
        backward, _ = expected(layer.backward_layer, sequence, **kwargs)
        return forward, backward

    def test_correctness(self):
        sequence = np.arange(24).reshape((2, 3, 4)).astype("float32")
        # merge_mode=None returns both directions; Keras's merges of them
        # ("ave", "mul", "sum") are Keras's own code, "concat" checked too.
        for merge_mode in (None, "concat"):
            layer = layers.Bidirectional(
                MLSTM(2, seed=1, **CONSTANTS), merge_mode=merge_mode
            )
            output = layer(sequence)
            forward, backward = self.references(layer, sequence)
            if merge_mode is None:
                self.assertAllClose(output[0], forward, atol=1e-5, rtol=1e-5)
                self.assertAllClose(output[1], backward, atol=1e-5, rtol=1e-5)
            else:
                merged = np.concatenate([forward, backward], -1)
                self.assertAllClose(output, merged, atol=1e-5, rtol=1e-5)

    def test_statefulness(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        layer = layers.Bidirectional(
            MLSTM(2, stateful=True, seed=1, **CONSTANTS)
        )
        layer(sequence)
        output = layer(sequence)
        # Each direction carries its own stream: the forward one continues
        # over [x, x], the backward one reads x backwards twice.
        twice = np.concatenate([sequence, sequence], axis=1)
        forward, _ = expected(layer.forward_layer, twice)
        backward, _ = expected(layer.backward_layer, twice)
        self.assertAllClose(
            output,
            np.concatenate([forward, backward], -1),
            atol=1e-5,
            rtol=1e-5,
        )
        layer.reset_state()
        layer(sequence)
        self.assertAllClose(layer(sequence), output, atol=1e-5, rtol=1e-5)

    def test_pass_initial_state(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        rng = np.random.default_rng(3)

        def state():
            return [
                rng.normal(size=(2, 1, 2, 2)).astype("float32"),
                rng.normal(size=(2, 1, 2)).astype("float32"),
                rng.normal(size=(2, 1)).astype("float32"),
            ]

        forward_state, backward_state = state(), state()
        layer = layers.Bidirectional(MLSTM(2, seed=1, **CONSTANTS))
        output = layer(sequence, initial_state=forward_state + backward_state)
        forward, _ = expected(
            layer.forward_layer, sequence, initial_state=forward_state
        )
        backward, _ = expected(
            layer.backward_layer, sequence, initial_state=backward_state
        )
        self.assertAllClose(
            output,
            np.concatenate([forward, backward], -1),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_masking(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        mask = np.array([[True, True, False, True], [True, False, False, True]])
        layer = layers.Bidirectional(MLSTM(2, seed=1, **CONSTANTS))
        output = layer(sequence, mask=mask)
        forward, backward = self.references(layer, sequence, mask=mask)
        self.assertAllClose(
            output,
            np.concatenate([forward, backward], -1),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_return_state(self):
        sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
        layer = layers.Bidirectional(
            MLSTM(2, return_state=True, seed=1, **CONSTANTS)
        )
        output, c1, n1, m1, c2, n2, m2 = layer(sequence)
        forward, forward_state = expected(layer.forward_layer, sequence)
        backward, backward_state = expected(layer.backward_layer, sequence)
        self.assertAllClose(
            output,
            np.concatenate([forward, backward], -1),
            atol=1e-5,
            rtol=1e-5,
        )
        for got, want in zip(
            (c1, n1, m1, c2, n2, m2),
            (*forward_state, *backward_state),
            strict=True,
        ):
            self.assertAllClose(got, want, atol=1e-5, rtol=1e-5)

    def test_output_shape(self):
        x = np.array([[[101, 202], [303, 404]]], "float32")
        for merge_mode in ["ave", "concat", "mul", "sum", None]:
            layer = layers.Bidirectional(
                MLSTM(2, return_state=True), merge_mode=merge_mode
            )
            output = layer(x)
            output_shape = layer.compute_output_shape(x.shape)
            for out, shape in zip(output, output_shape, strict=True):
                self.assertEqual(tuple(out.shape), tuple(shape))
        for merge_mode in ["concat", "ave", "mul", "sum"]:
            layer = layers.Bidirectional(MLSTM(2), merge_mode=merge_mode)
            output = layer(x)
            self.assertEqual(
                tuple(output.shape), layer.compute_output_shape(x.shape)
            )


def missing_gradient_warnings(model, data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data, epochs=1, batch_size=4, verbose=0)
    return [str(w.message) for w in caught if "radients do not exist" in str(w)]


@pytest.mark.parametrize("head_norm", [True, False])
def test_encoder_decoder_recipe(head_norm):
    """The classic Keras encoder-decoder: the encoder's output is dropped
    and its states start the decoder. The mLSTM's output-only weight
    `head_norm_scale` then gets no gradient, and TensorFlow and PyTorch
    warn about it (harmless); an encoder built with `head_norm=False` has
    no output-only weight and trains silently (docs/layer.md)."""
    rng = np.random.default_rng(0)
    encoder_in = layers.Input((None, 3))
    decoder_in = layers.Input((None, 4))
    encoder = MLSTM(8, return_state=True, head_norm=head_norm)
    _, *states = encoder(encoder_in)
    decoded = MLSTM(8, return_sequences=True)(decoder_in, initial_state=states)
    model = keras.Model([encoder_in, decoder_in], layers.Dense(4)(decoded))
    model.compile("adam", "mse")
    data = (
        [
            rng.normal(size=(8, 5, 3)).astype("float32"),
            rng.normal(size=(8, 6, 4)).astype("float32"),
        ],
        rng.normal(size=(8, 6, 4)).astype("float32"),
    )
    found = missing_gradient_warnings(model, data)
    if head_norm and keras.backend.backend() != "jax":
        assert found and all("head_norm_scale" in w for w in found)
    else:
        assert not found
    encoder_kernel = encoder.cell.kernel
    before = numpy(encoder_kernel)
    model.fit(*data, epochs=1, batch_size=4, verbose=0)
    # The encoder learns through its states.
    assert not np.allclose(before, numpy(encoder_kernel))
