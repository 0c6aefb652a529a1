"""The forms compile whole: ``jax.jit``, ``tf.function(jit_compile=True)``
(XLA) and ``torch.compile(fullgraph=True)`` (no graph breaks), and give the
eager results.

Tolerance: 1e-5 of the largest output, float32; compilers fuse and reorder
float32 arithmetic.
"""

import keras
import numpy as np
import pytest
from utils import FORMS
from utils import KERAS_VERSION
from utils import make_inputs
from utils import relative_error
from utils import to_numpy
from utils import value_and_grad

from keras_mlstm import ops as mlstm_ops

BACKEND = keras.backend.backend()


def compile_whole(fn):
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import torch

    return torch.compile(fn, fullgraph=True)


def inputs_and_mask(length=100):
    rng = np.random.default_rng(50)
    inputs = make_inputs(rng, (2, 2, length, 8, 8), "normal", "float32")
    mask = rng.random((2, length)) < 0.9
    return [np.asarray(x, "float32") for x in inputs], mask


# torch.compile takes ~10 s a form on this CPU; the chunkwise form, the
# training path, uses every building block of the parallel form.
FORMS_TO_COMPILE = FORMS if BACKEND != "torch" else ("chunkwise",)


# Before Keras 3.15, `keras.ops` flattens its arguments with Keras's tree
# utilities (optree, then a torch-tree port), which Dynamo cannot trace
# whole: `fullgraph=True` fails inside Keras (measured with 3.10 to 3.14
# and torch 2.13); without it, those calls are graph breaks.
FULLGRAPH_KERAS = pytest.mark.skipif(
    BACKEND == "torch" and KERAS_VERSION < (3, 15),
    reason="torch.compile(fullgraph=True) traces keras.ops from Keras 3.15",
)


@pytest.mark.parametrize("form", FORMS_TO_COMPILE)
@FULLGRAPH_KERAS
def test_compiled_equals_eager(form):
    arrays, mask = inputs_and_mask(100 if BACKEND != "torch" else 48)

    def fn(q, k, v, i, f, mask):
        return mlstm_ops.mlstm(
            q,
            k,
            v,
            i,
            f,
            mask=mask,
            form=form,
            chunk_size=16,
            return_state=True,
        )

    tensors = [keras.ops.convert_to_tensor(a) for a in arrays + [mask]]
    h, state = compile_whole(fn)(*tensors)
    h_eager, state_eager = fn(*tensors)
    assert relative_error(h, to_numpy(h_eager)) < 1e-5
    for s, s_eager in zip(state, state_eager, strict=True):
        assert relative_error(s, to_numpy(s_eager)) < 1e-5


@FULLGRAPH_KERAS
def test_compiled_gradients_equal_eager():
    arrays, mask = inputs_and_mask(100 if BACKEND != "torch" else 48)
    mask = keras.ops.convert_to_tensor(mask)

    def loss(q, k, v, i, f):
        h = mlstm_ops.mlstm(
            q, k, v, i, f, mask=mask, form="chunkwise", chunk_size=16
        )
        return keras.ops.sum(h * h)

    _, expected = value_and_grad(loss, arrays)
    if BACKEND == "jax":
        import jax

        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(*arrays)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def grad_fn(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                value = loss(*tensors)
            return tape.gradient(value, tensors)

        grads = grad_fn(*[tf.constant(a) for a in arrays])
    else:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = torch.compile(loss, fullgraph=True)(*tensors)
        grads = torch.autograd.grad(value, tensors)
    for grad, grad_eager in zip(grads, expected, strict=True):
        assert relative_error(grad, grad_eager) < 1e-4


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="only TensorFlow traces with lengths unknown until run time",
)
@pytest.mark.parametrize("form", ["auto", "chunkwise", "parallel"])
def test_tensorflow_unknown_batch_and_length(form):
    """``tf.function`` with ``None`` batch and time axes, as Keras traces a
    model: the chunkwise form pads and slices with run-time sizes."""
    import tensorflow as tf

    arrays, mask = inputs_and_mask(100)
    specs = [
        tf.TensorSpec((None, 2, None, 8)),
        tf.TensorSpec((None, 2, None, 8)),
        tf.TensorSpec((None, 2, None, 8)),
        tf.TensorSpec((None, 2, None)),
        tf.TensorSpec((None, 2, None)),
        tf.TensorSpec((None, None), tf.bool),
    ]

    @tf.function(input_signature=specs)
    def fn(q, k, v, i, f, mask):
        return mlstm_ops.mlstm(
            q, k, v, i, f, mask=mask, form=form, chunk_size=16
        )

    for length in (100, 37):
        tensors = [a[:, :, :length] for a in arrays] + [mask[:, :length]]
        h = fn(*tensors)
        h_eager = mlstm_ops.mlstm(
            *tensors[:5], mask=tensors[5], form="recurrent"
        )
        assert tuple(h.shape) == (2, 2, length, 8)
        assert relative_error(h, to_numpy(h_eager)) < 1e-5


@pytest.mark.skipif(
    BACKEND != "jax",
    reason="symbolic inputs reach the ops' torch and tf workarounds in "
    "compat.py; only JAX ran the ops on keras.Input before they compiled",
)
@pytest.mark.parametrize("op", ["mlstm", "mlstm_step"])
def test_symbolic_inputs_give_symbolic_outputs(op):
    """On JAX, `keras.Input` tensors still go through the ops symbolically,
    as before the ops ran as one compiled program there
    (`compat.compiled_on_jax` passes them by `jax.jit`)."""
    time = (5,) if op == "mlstm" else ()
    q = keras.Input(batch_shape=(2, 3, *time, 4))
    i = keras.Input(batch_shape=(2, 3, *time))
    h, (c, n, m) = getattr(mlstm_ops, op)(
        q, q, q, i, i, **({"return_state": True} if op == "mlstm" else {})
    )
    assert keras.backend.is_keras_tensor(h)
    assert tuple(h.shape) == (2, 3, *time, 4)
    assert tuple(c.shape) == (2, 3, 4, 4)
    assert tuple(m.shape) == (2, 3)


def largest_gradient_tensor(layer, batch, length, features):
    """The most elements of any tensor in TensorFlow's graph of the
    gradient of `sum(layer(x)^2)` with respect to the layer's weights."""
    import tensorflow as tf

    layer.build((batch, length, features))

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(layer(x) ** 2)
        return tape.gradient(value, layer.trainable_variables)

    spec = tf.TensorSpec((batch, length, features))
    graph = gradient.get_concrete_function(spec).graph
    return max(
        int(np.prod(output.shape.as_list()))
        for op in graph.get_operations()
        for output in op.outputs
        if output.shape.rank is not None and output.shape.is_fully_defined()
    )


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the broadcast was in TensorFlow's einsum gradient only",
)
@pytest.mark.parametrize("name", ["MLSTM", "MLSTMBlock", "MLSTMLargeBlock"])
def test_tensorflow_gradient_does_not_broadcast_kernels(name):
    """Issue #11: TensorFlow's gradient of `einsum("...d,du->...u")` with
    respect to the kernel builds a (d, u, B, T) tensor (here 64 x 256 x 4 x
    32 = 2.1M elements for `MLSTM(64)`'s kernel); it made an `MLSTM(128)`
    training step 565 ms instead of 37 ms. Every kernel product goes
    through `ops.common.linear` now, whose gradient graph has no tensor
    beyond the activations: (B, T, 4 U) = 32k elements, the chunkwise
    form's (B, NH, NC, L, L) = 16k, the blocks' inner (B, T, 2 I) = 32k
    and the kernels themselves (at most 64 x 512 = 32k)."""
    import keras_mlstm

    layer = {
        "MLSTM": lambda: keras_mlstm.MLSTM(64, return_sequences=True),
        "MLSTMBlock": lambda: keras_mlstm.MLSTMBlock(num_heads=4),
        "MLSTMLargeBlock": lambda: keras_mlstm.MLSTMLargeBlock(num_heads=4),
    }[name]()
    assert largest_gradient_tensor(layer, 4, 32, 64) < 200_000


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="the choice is TensorFlow's only"
)
def test_tensorflow_uses_the_loop_outside_xla_and_prefixes_inside():
    """Issue #11: the chunkwise form carries the state across chunks with
    an associative scan only where XLA would make the loop's gradient
    quadratic; outside XLA (Keras's default on a CPU: a graph without XLA,
    and eager) the loop, linear in the chunks (an MLSTM(128) step at
    T=4096: 1144 ms with the scan, 457 ms with the loop)."""
    import tensorflow as tf

    from keras_mlstm.ops.compat import sequential_scan_gradient_is_quadratic

    seen = []

    def probe(x):
        seen.append(sequential_scan_gradient_is_quadratic())
        return x

    x = tf.constant(1.0)
    probe(x)
    tf.function(probe)(x)
    tf.function(probe, jit_compile=True)(x)
    tf.function(lambda y: tf.function(probe)(y), jit_compile=True)(x)
    assert seen == [False, False, True, True]
