"""Workarounds for `keras.ops` backend bugs; the package's only backend
switches. Each was found by a test in `tests/` that fails without it.

- `keras.ops.scan` follows `jax.lax.scan`, but its TensorFlow
  implementation (Keras 3.8 to 3.15 at least) stores the per-step outputs in
  arrays shaped like the carry, so a step that carries a state `(C, n, m)`
  and emits an output `h` fails there. `scan` routes TensorFlow to a
  `tf.while_loop` with one `TensorArray` per output. On PyTorch,
  `keras.ops.scan` flattens its arguments with `keras.tree`, which
  `torch.compile(fullgraph=True)` cannot trace; `scan` runs the same
  Python loop over plain tuples there.
- On PyTorch, `keras.ops.cumsum`, `maximum` and `matmul` compute
  float64 input in float32: their dtype goes through
  `keras.backend.result_type`, which maps 64-bit types to 32-bit on every
  backend but TensorFlow. `cumsum` and `maximum` here call `torch`
  directly there; the math uses `einsum` (unaffected) for products.
- On JAX, `keras.ops.tanh` computes float64 in float32 (the same
  `result_type` mapping); `tanh` calls `jax.numpy` there.
- On PyTorch, `keras.ops.max` inspects its result with `isinstance`,
  which `torch.compile(fullgraph=True)` cannot trace; `reduce_max` calls
  `torch.amax`. On TensorFlow, `keras.ops.max` asserts that the tensor
  is not empty, which fails for a batch of size 0; `reduce_max` calls
  `tf.reduce_max`.

- Under XLA, TensorFlow's gradient of a `while_loop` that writes one
  output per iteration to a `TensorArray` costs O(iterations^2) (measured:
  64 -> 256 iterations, 119 -> 2095 ms; 6.7 -> 23 ms without the outputs).
  `sequential_scan_gradient_is_quadratic` tells the chunkwise form to use
  an associative scan there instead (O(NC log NC) work: at T=16k its
  per-token cost is 1.75x that at T=1k). Outside XLA (Keras's default for
  TensorFlow on a CPU, and eager TensorFlow) the loop stays, linear.

- On JAX, `keras.ops` runs eagerly op by op, and JAX compiles each op
  for each new shape: a first eager call of the chunkwise form at a new
  shape took 4.4 s (about 300 small compilations) and every later call
  0.2 s; under `jax.jit` the same call compiled in 0.7 s and then took
  0.6 ms. `compiled_on_jax` compiles the ops' computation as one program
  there (inlined when the caller is itself traced, as in `fit`).

- `chunk_size="auto"` is a measured choice per backend
  (`preferred_chunk_size`): forward+backward of the chunkwise op at
  B=8, NH=4, T in {256, 1024}, head sizes 16, 32 and 64, chunks 16 to 128,
  on a 2-core CPU (docs/benchmarks.md). On JAX and TensorFlow (XLA) the
  fastest chunk equals the head size, within 16 to 64 (64 against 16 at
  head size 16, T=1024: 1.7x on JAX, 1.5x on TensorFlow); on PyTorch,
  which runs each operation eagerly, 32 was fastest or within 5 % at every
  head size.

Every other backend goes straight to `keras.ops`.
"""

import keras
from keras import ops
from keras import tree


def scan(step, init, xs, outputs_like):
    """Scan `step(carry, x) -> (carry, y)` over axis 0 of `xs`.

    Args:
        step: the step function.
        init: the initial carry, a nest of tensors.
        xs: a nest of tensors sharing their leading (scanned) axis.
        outputs_like: a nest of tensors with the shapes and dtypes of `y`.

    Returns:
        `(final_carry, ys)`, `ys` stacked along a new leading axis.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_scan(step, init, xs, outputs_like)
    if backend == "torch":
        return _python_scan(step, init, xs)
    return ops.scan(step, init, xs)


def compile_function(fn):
    """`fn` compiled where the backend compiles a function of tensors
    (`jax.jit`; `tf.function` with XLA); as it is on PyTorch."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=True)
    return fn


def compiled_on_jax(fn, static_argnames):
    """`fn` under `jax.jit` on JAX (see the module docstring); `fn`
    itself on the other backends and for symbolic (`KerasTensor`) inputs.

    Args:
        fn: a function of tensors (nests of tensors and None allowed).
        static_argnames: the names of `fn`'s keyword arguments that are
            Python values (hashable), part of the compiled program.

    Returns:
        The function to call in place of `fn`.
    """
    if keras.backend.backend() != "jax":
        return fn
    import jax

    compiled = jax.jit(fn, static_argnames=static_argnames)

    def call(*args, **kwargs):
        if any(map(keras.backend.is_keras_tensor, tree.flatten(args))):
            return fn(*args, **kwargs)
        return compiled(*args, **kwargs)

    return call


def sequential_scan_gradient_is_quadratic():
    """True when TensorFlow builds an XLA program (see the module
    docstring): inside `tf.function(jit_compile=True)`, Keras's
    `jit_compile=True` included, however deeply nested."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


def preferred_chunk_size(head_size):
    """The chunk size `chunk_size="auto"` stands for, on this backend,
    for q/k heads of `head_size` (None: unknown until run time)."""
    if keras.backend.backend() == "torch":
        return 32
    if head_size is None:
        return 64
    return min(max(int(head_size), 16), 64)


def cumsum(x, axis):
    """Cumulative sum along `axis`, in the dtype of `x`."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.cumsum(x, dim=axis)
    return ops.cumsum(x, axis=axis)


def maximum(x, y):
    """Elementwise maximum of two tensors of one dtype, in that dtype."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.maximum(x, y)
    return ops.maximum(x, y)


def tanh(x):
    """`tanh` in the dtype of `x` (on JAX, `keras.ops.tanh` computes
    float64 in float32, like the ops listed above)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.numpy.tanh(x)
    return ops.tanh(x)


def clip_below(x, low):
    """`max(x, low)` for a Python float `low`, in the dtype of `x`."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.clamp(x, min=low)
    return ops.maximum(x, ops.full_like(x, low))


def clip_above(x, high):
    """`min(x, high)` for a Python float `high`, in the dtype of `x`."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.clamp(x, max=high)
    return ops.minimum(x, ops.full_like(x, high))


def reduce_max(x, axis):
    """Maximum over `axis` (ties share the gradient, on every backend);
    an empty batch gives an empty result."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.amax(x, dim=axis)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.reduce_max(x, axis=axis)
    return ops.max(x, axis=axis)


def _map_tuples(fn, *nests):
    """`fn` over the leaves of equally nested tuples."""
    if isinstance(nests[0], tuple):
        return tuple(
            _map_tuples(fn, *parts) for parts in zip(*nests, strict=True)
        )
    return fn(*nests)


def _first_leaf(nest):
    return _first_leaf(nest[0]) if isinstance(nest, tuple) else nest


def _python_scan(step, init, xs):
    import torch

    # Unbind once: indexing x[i] in the loop would make the backward pass
    # scatter each step's gradient into a full-size zero tensor, O(steps^2).
    slices = _map_tuples(lambda x: list(torch.unbind(x, 0)), xs)
    carry, ys = init, []
    for index in range(_first_leaf(xs).shape[0]):
        carry, y = step(carry, _map_tuples(lambda x, i=index: x[i], slices))
        ys.append(y)
    return carry, _map_tuples(lambda *y: torch.stack(y), *ys)


def _tensorflow_scan(step, init, xs, outputs_like):
    import tensorflow as tf

    xs_flat = [tf.convert_to_tensor(x) for x in tree.flatten(xs)]
    length = xs_flat[0].shape[0]
    if length is None:
        length = tf.shape(xs_flat[0])[0]
    xs_arrays = [
        tf.TensorArray(x.dtype, size=length, element_shape=x.shape[1:]).unstack(
            x
        )
        for x in xs_flat
    ]
    like_flat = tree.flatten(outputs_like)
    ys_arrays = [
        tf.TensorArray(y.dtype, size=length, element_shape=y.shape)
        for y in like_flat
    ]
    init_flat = [tf.convert_to_tensor(c) for c in tree.flatten(init)]

    def body(index, carry_flat, arrays):
        x = tree.pack_sequence_as(xs, [a.read(index) for a in xs_arrays])
        carry = tree.pack_sequence_as(init, carry_flat)
        carry, y = step(carry, x)
        arrays = [
            a.write(index, v)
            for a, v in zip(arrays, tree.flatten(y), strict=True)
        ]
        return index + 1, tree.flatten(carry), arrays

    _, carry_flat, ys_arrays = tf.while_loop(
        lambda index, *_: index < length,
        body,
        (0, init_flat, ys_arrays),
        maximum_iterations=length,  # lets XLA differentiate the loop
    )
    ys = [a.stack() for a in ys_arrays]
    return (
        tree.pack_sequence_as(init, carry_flat),
        tree.pack_sequence_as(outputs_like, ys),
    )
