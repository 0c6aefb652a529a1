"""Helpers for the tests: inputs, comparisons and per-backend gradients."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FORMS = ("parallel", "chunkwise", "recurrent")

# (major, minor) of the Keras under test: the newest, or the lowest that
# `pyproject.toml` allows in the floor run of `tests/run_all_backends.py`.
KERAS_VERSION = tuple(int(part) for part in keras.version().split(".")[:2])

# Gate regimes: ``normal`` is a trained model's range (forget gate open,
# input gate near zero), ``strong`` saturates both gates, ``exp`` uses the
# exponential forget gate, whose log can be positive (the memory grows).
REGIMES = ("normal", "strong", "exp")


def import_keras_hub():
    """`keras_hub`, or a skip: where it is not installed, and in the core's
    floor run, where the installed `keras-hub` fails to import under a
    Keras older than it requires (an ImportError, not a missing module)."""
    return pytest.importorskip("keras_hub", exc_type=ImportError)


def make_inputs(rng, shape, regime="normal", dtype="float32"):
    """Random ``q, k, v, input_gate, forget_gate`` for ``shape``.

    ``shape`` is ``(B, NH, T, DK, DV)``. The arrays are rounded to ``dtype``
    and returned as float64 NumPy arrays holding exactly those values, so the
    float64 reference sees what the op sees.
    """
    batch, heads, length, dk, dv = shape
    q = rng.normal(size=(batch, heads, length, dk))
    k = rng.normal(size=(batch, heads, length, dk))
    v = rng.normal(size=(batch, heads, length, dv))
    gates = (batch, heads, length)
    if regime == "normal":
        i = rng.normal(size=gates)
        f = rng.normal(size=gates) + 3.0
    elif regime == "strong":
        i = rng.uniform(-10.0, 10.0, size=gates)
        f = rng.uniform(-10.0, 10.0, size=gates)
    elif regime == "exp":
        i = rng.normal(size=gates)
        f = 0.1 * rng.normal(size=gates)
    else:
        raise ValueError(regime)
    arrays = [q, k, v, i, f]
    return [np.asarray(a.astype(dtype), np.float64) for a in arrays]


def activation_of(regime):
    return "exp" if regime == "exp" else "sigmoid"


def make_state(rng, batch, heads, dk, dv):
    """A nonzero state ``(C, n, m)``, as float64 arrays."""
    return (
        rng.normal(size=(batch, heads, dk, dv)),
        rng.normal(size=(batch, heads, dk)),
        rng.normal(size=(batch, heads)),
    )


def cast_all(arrays, dtype):
    return [np.asarray(a, dtype) for a in arrays]


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def named_weights(layer):
    """A layer's weights as arrays, keyed by their path under the layer
    with "/" read as "_" ("up/kernel" -> "up_kernel"): the names the float64
    references in reference.py take."""
    prefix = layer.path + "/"
    return {
        w.path.removeprefix(prefix).replace("/", "_"): to_numpy(w)
        for w in layer.weights
    }


def relative_error(actual, expected):
    """``max |actual - expected| / max |expected|``."""
    actual = np.asarray(to_numpy(actual), np.float64)
    expected = np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected))
    return np.max(np.abs(actual - expected)) / (scale if scale > 0 else 1.0)


def scaled_error(actual, expected, scale):
    """``max |actual - expected| / scale``, with ``scale`` from the
    reference's ``return_scale``: the size of the terms summed per entry."""
    actual = np.asarray(to_numpy(actual), np.float64)
    return np.max(np.abs(actual - expected) / np.maximum(scale, 1e-300))


def compiled(fn):
    """``fn`` under ``jax.jit`` on JAX, ``tf.function`` on TensorFlow.

    Eager JAX compiles every primitive separately, once per new shape, and
    eager TensorFlow runs a ``while_loop`` step by step from Python; the
    whole-function forms are what training uses and are 5-30x faster on the
    many shapes the tests use. PyTorch runs eagerly. Eager JAX and
    TensorFlow are exercised by the state-passing and gradient tests.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def value_and_grad(fn, args, has_aux=False):
    """Value and gradients of scalar ``fn(*args)`` w.r.t. every argument.

    ``args`` are NumPy arrays; the backend's own autodiff is used. With
    ``has_aux``, ``fn`` returns ``(scalar, aux)`` and the value returned is
    ``(scalar, aux)`` too, as in ``jax.value_and_grad``.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        # One compiled function per `fn`, kept on it: a test that passes
        # the same `fn` again with new arrays of the same shapes reuses the
        # compiled program.
        compiled_fns = getattr(fn, "__dict__", {}).setdefault(
            "_value_and_grad", {}
        )
        key = (len(args), has_aux)
        if key not in compiled_fns:
            compiled_fns[key] = jax.jit(
                jax.value_and_grad(
                    fn, argnums=tuple(range(len(args))), has_aux=has_aux
                )
            )
        grad_fn = compiled_fns[key]
        value, grads = grad_fn(*[jax.numpy.asarray(a) for a in args])
    elif backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = tape.gradient(value[0] if has_aux else value, tensors)
    elif backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        value = fn(*tensors)
        grads = torch.autograd.grad(value[0] if has_aux else value, tensors)
    else:
        raise ValueError(backend)
    value = tuple(map(to_numpy, value)) if has_aux else to_numpy(value)
    return value, [to_numpy(g) for g in grads]


def run_under_backend(backend, code, *args, timeout=300):
    """Run the Python source `code` with `args` as `sys.argv[1:]` in a fresh
    process under Keras backend `backend`, from the repository root; fail
    the test with the end of its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code, *(str(a) for a in args)],
        env=dict(os.environ, KERAS_BACKEND=backend),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weighted_mlstm_loss(mask, weights, **options):
    """The `keras.ops` twin of `reference.weighted_reference_loss`: a
    function of q, k, v, the gates and `(C0, n0, m0)` through
    `keras_mlstm.ops.mlstm(..., **options)`."""
    from keras_mlstm.ops import mlstm

    weights = [keras.ops.convert_to_tensor(w) for w in weights]

    def loss(q, k, v, i, f, c0, n0, m0):
        h, state = mlstm(
            q,
            k,
            v,
            i,
            f,
            initial_state=(c0, n0, m0),
            mask=mask,
            return_state=True,
            **options,
        )
        total = keras.ops.sum(h * weights[0])
        for s, w in zip(state, weights[1:], strict=True):
            total = total + keras.ops.sum(s * w)
        return total

    return loss
