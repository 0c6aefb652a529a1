"""The timing core that every suite shares.

Functions are compiled where the backend compiles (`jax.jit`,
`tf.function(jit_compile=True)`, Keras models with `jit_compile=True`);
PyTorch runs eagerly, as its users run it. `time_interleaved` keeps each
contestant's first call (compilation, warm-up) apart, then calls the
contestants in turn, round after round, and reports each one's median, so
that drift on a shared machine affects them alike.
"""

import contextlib
import functools
import statistics
import time

import keras
import numpy as np

BACKEND = keras.backend.backend()
# `jit_compile` of the Keras models of the `layer`, `flops` and
# `memory` suites: XLA on JAX and TensorFlow, eager on PyTorch.
JIT_COMPILE = BACKEND != "torch"


def block_until_ready(value):
    """Wait for the device to finish computing `value`."""
    if BACKEND == "jax":
        import jax

        jax.block_until_ready(value)
    elif BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    else:
        keras.tree.map_structure(
            lambda x: x.numpy() if hasattr(x, "numpy") else x, value
        )
    return value


# JAX's own timers (`jax.monitoring`) of the stages of a compilation.
JAX_STAGES = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "xla_compile_s",
}
_RECORDING = []


def _add_stage_time(event, seconds, **kwargs):
    stage = JAX_STAGES.get(event)
    if stage is not None:
        for stages in _RECORDING:
            stages[stage] += seconds


@functools.cache
def _listen_to_jax():
    import jax

    jax.monitoring.register_event_duration_secs_listener(_add_stage_time)


@contextlib.contextmanager
def compile_stages():
    """A dict filled, on JAX, with the seconds spent inside the `with`
    block tracing (`trace_s`; a function traced inside another counts in
    both), lowering to StableHLO (`lower_s`) and compiling with XLA
    (`xla_compile_s`); empty on the other backends."""
    stages = {}
    if BACKEND == "jax":
        _listen_to_jax()
        stages.update(dict.fromkeys(JAX_STAGES.values(), 0.0))
        _RECORDING.append(stages)
    try:
        yield stages
    finally:
        if _RECORDING and _RECORDING[-1] is stages:
            _RECORDING.pop()


def compile_gradient(loss):
    """A function returning the gradients of the scalar `loss` with
    respect to all its arguments (tensors, or lists of tensors), compiled
    where the backend compiles."""
    if BACKEND == "jax":
        import jax

        return jax.jit(lambda *args: jax.grad(lambda a: loss(*a))(args))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def gradient(*args):
            with tf.GradientTape() as tape:
                tape.watch(args)
                value = loss(*args)
            return tape.gradient(value, args)

        return gradient
    import torch

    def gradient(*args):
        leaves = [a.detach().requires_grad_() for a in keras.tree.flatten(args)]
        value = loss(*keras.tree.pack_sequence_as(args, leaves))
        return torch.autograd.grad(value, leaves)

    return gradient


def time_interleaved(contestants, repeats):
    """Median seconds per call of each `name -> thunk`, interleaved, and
    the seconds of its first call."""
    first = {}
    for name, thunk in contestants.items():
        start = time.perf_counter()
        block_until_ready(thunk())
        first[name] = time.perf_counter() - start
    samples = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, thunk in contestants.items():
            start = time.perf_counter()
            block_until_ready(thunk())
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(s), "first_call_s": first[name]}
        for name, s in samples.items()
    }


def ratios(result, kinds, key="median_s"):
    """`ratio_<kind>`: ours over the official contestant's `key`, for
    contestants named `ours_<kind>` and `official_<kind>`."""
    return {
        f"ratio_{kind}": result[f"ours_{kind}"][key]
        / result[f"official_{kind}"][key]
        for kind in kinds
    }


def call_with(fn, inputs):
    return lambda: fn(*inputs)


def compile_for_training(model, loss="mse", jit_compile=JIT_COMPILE):
    """`model` compiled with Adam and `loss`; by default its training
    step with XLA on JAX and TensorFlow, eager on PyTorch. `jit_compile=
    "auto"` compiles it as Keras does by default (XLA on JAX; on
    TensorFlow, XLA on accelerators only; eager on PyTorch)."""
    model.compile(optimizer="adam", loss=loss, jit_compile=jit_compile)
    return model


def time_training(models, inputs, targets, repeats):
    """`train_on_batch(inputs, targets)` of each `name -> compiled
    model`, interleaved: `first_call_s` (compilation and the first
    step), then the median `median_s` and `tokens_per_s` (`inputs`
    is `(B, T, ...)`), and the model's `params` and `jit_compile`
    (as Keras resolved it)."""
    result = time_interleaved(
        {
            name: call_with(model.train_on_batch, (inputs, targets))
            for name, model in models.items()
        },
        repeats,
    )
    tokens = inputs.shape[0] * inputs.shape[1]
    for name, timing in result.items():
        timing["tokens_per_s"] = tokens / timing["median_s"]
        timing["params"] = models[name].count_params()
        timing["jit_compile"] = models[name].jit_compile
    return result


def random_arrays(batch, heads, length, dim, seed=0):
    """Inputs of `keras_mlstm.ops.mlstm`: q, k, v `(B, NH, T, D)`,
    input and forget gate pre-activations `(B, NH, T)` (forget gates
    near 1), float32 NumPy."""
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(batch, heads, length, dim)) for _ in range(3)]
    arrays += [
        rng.normal(size=(batch, heads, length)),
        rng.normal(size=(batch, heads, length)) + 3.0,
    ]
    return [a.astype("float32") for a in arrays]


def random_sequences(batch, length, features, seed=0):
    """Inputs and targets `(B, T, features)` for a training step,
    float32 NumPy."""
    rng = np.random.default_rng(seed)
    return tuple(
        rng.normal(size=(batch, length, features)).astype("float32")
        for _ in range(2)
    )
