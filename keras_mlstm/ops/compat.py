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

- The fused kernels of `mlstm_kernels` are PyTorch and JAX functions:
  `fused_kernel` looks one up in the registry of the current backend,
  `on_accelerator` tells whether a tensor lives on a GPU (its Triton
  kernels run on NVIDIA GPUs only), and `run_sequence_kernel` /
  `run_step_kernel` call one with the backend's dtype objects and its
  layout of the stabiliser `m` (`(B, NH, 1)` on PyTorch and for JAX's
  steps, `(B, NH)` for JAX's sequences). TensorFlow has none: it stays on
  XLA. `exact_backward` runs one function forward and takes the gradients
  of another (a `torch.autograd.Function`, a `jax.custom_vjp`): the
  kernels' own backward drops the read-out denominator's gradient and the
  initial `n` and `m`'s, so the fused form is differentiated through the
  `keras.ops` chunkwise form unless the caller allows the kernel's.

Every other backend goes straight to `keras.ops`.
"""

import functools
import importlib

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


# The `mlstm_kernels` registries: (lister, getter) by kind.
_REGISTRIES = {
    "sequence": ("get_available_mlstm_kernels", "get_mlstm_kernel"),
    "step": ("get_available_mlstm_step_kernels", "get_mlstm_step_kernel"),
}


@functools.cache
def fused_kernel(kind, name):
    """The `mlstm_kernels` kernel `name` of `kind` (`"sequence"` or
    `"step"`) for the current backend, or a str saying why there is none
    (looked up once: the backend is fixed for the process).
    """
    backend = keras.backend.backend()
    if backend not in ("torch", "jax"):
        return (
            f"the {backend} backend has no fused mLSTM kernels (mlstm_kernels "
            "has PyTorch and JAX ones); it runs the mLSTM with keras.ops"
            + (", compiled by XLA" if backend == "tensorflow" else "")
        )
    lister, getter = _REGISTRIES[kind]
    try:
        module = importlib.import_module(f"mlstm_kernels.{backend}")
        available = getattr(module, lister)()
    except ImportError as error:
        return (
            f"mlstm_kernels.{backend} cannot be imported ({error}); install "
            'the cuda extra: pip install -e ".[cuda]"'
        )
    if name not in available:
        return (
            f"mlstm_kernels.{backend} has no {kind} kernel {name!r} here "
            f"(Triton not installed?); it has {sorted(available)}"
        )
    return getattr(module, getter)(name)


def fused_by_default():
    """Whether `fused=None` may take a fused kernel on this backend: on
    PyTorch; on JAX only on request (`fused=True`): its Triton kernels
    need `jax_triton` with a CUDA `jaxlib`, which this project has not run
    them with."""
    return keras.backend.backend() == "torch"


def on_accelerator(x):
    """Whether `x` lives on a GPU (JAX: whether its default device is one,
    which traced arrays are placed on)."""
    backend = keras.backend.backend()
    if backend == "torch":
        device = getattr(x, "device", None)  # NumPy inputs are on the host
        return getattr(device, "type", None) == "cuda"
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    return False


def _kernel_dtype(dtype):
    if keras.backend.backend() == "torch":
        import torch

        return getattr(torch, dtype)
    import jax.numpy as jnp

    return jnp.dtype(dtype)


def run_sequence_kernel(kernel, q, k, v, i, f, state, eps, chunk_size, dtype):
    """`(h, (C, n, m))` of a sequence kernel; `m` is `(B, NH)` in and out,
    and the kernel computes in `dtype` (a dtype name)."""
    c, n, m = state
    torch = keras.backend.backend() == "torch"
    h, (c, n, m) = kernel(
        q,
        k,
        v,
        i,
        f,
        c_initial=c,
        n_initial=n,
        m_initial=m[..., None] if torch else m,
        return_last_states=True,
        eps=eps,
        chunk_size=chunk_size,
        autocast_kernel_dtype=_kernel_dtype(dtype),
    )
    return h, (c, n, m[..., 0] if torch else m)


def run_step_kernel(kernel, q, k, v, i, f, state, eps):
    """`(h, (C, n, m))` of a step kernel; gates and `m` are `(B, NH)` in
    and out."""
    c, n, m = state
    h, (c, n, m) = kernel(
        q, k, v, i[..., None], f[..., None], c, n, m[..., None], eps=eps
    )
    return h, (c, n, m[..., 0])


def exact_backward(fast, exact, tensors):
    """`fast(*tensors)` (a tuple of tensors), differentiated as
    `exact(*tensors)`: the backward pass recomputes `exact` and takes its
    gradients. PyTorch and JAX."""
    if keras.backend.backend() == "torch":
        return _torch_exact_backward().apply(fast, exact, *tensors)
    import jax

    @jax.custom_vjp
    def run(*xs):
        return fast(*xs)

    def forward(*xs):
        return fast(*xs), xs

    def backward(xs, grads):
        return jax.vjp(exact, *xs)[1](grads)

    run.defvjp(forward, backward)
    return run(*tensors)


@functools.cache
def _torch_exact_backward():
    """The `torch.autograd.Function` of `exact_backward`, made on first use
    (torch is imported on the PyTorch backend only)."""
    import torch

    class TorchExactBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, fast, exact, *tensors):
            ctx.exact = exact
            ctx.save_for_backward(*tensors)
            with torch.no_grad():
                return tuple(fast(*tensors))

        @staticmethod
        def backward(ctx, *grads):
            tensors = [
                t.detach().requires_grad_(needs)
                for t, needs in zip(
                    ctx.saved_tensors, ctx.needs_input_grad[2:], strict=True
                )
            ]
            with torch.enable_grad():
                outputs = ctx.exact(*tensors)
            wanted = [t for t in tensors if t.requires_grad]
            found = iter(
                torch.autograd.grad(outputs, wanted, grads, allow_unused=True)
            )
            return (
                None,
                None,
                *(next(found) if t.requires_grad else None for t in tensors),
            )

    return TorchExactBackward
