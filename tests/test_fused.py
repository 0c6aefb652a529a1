"""The fused kernels' glue (`keras_mlstm/ops/fused.py`), tested on a CPU.

On a GPU `fused=None` runs `mlstm_kernels`' Triton kernels. Here the same
dispatch is routed, through `keras_mlstm.config`, to its native PyTorch
kernels, which take the same arguments from the same registries
(`chunkwise--native_custbw`, a hand-written backward like the Triton
kernel's, and the `native` step). Everything the glue does runs: masked
steps made identities, lengths padded to the chunk size, states in and
out, non-finite inputs, the one-step kernel, the layers, blocks, stack and
generation. The Triton kernels themselves could not run here: see
docs/gpu.md ("Triton's interpreter").

Tolerances (float32 kernels against the float64 reference):
- outputs within 1e-5 of the scale of the terms summed per entry, and
  states within 1e-5 of their largest entry, as the keras.ops forms
  (tests/test_ops_accuracy.py);
- gradients with respect to each argument on its own (q, k, v, each gate,
  each initial state tensor; a kernel can be right forward and wrong
  backward) within 1e-3 of that argument's largest entry of the central
  differences of the reference (float64, step 1e-6): float32's backward
  sums T terms of the ratios the forward computes;
- fused against keras.ops in float32: 1e-4 of the largest entry.

On JAX the glue is the same `keras.ops` code, but `mlstm_kernels.jax`
cannot be imported without `jax_triton` and a CUDA `jaxlib`; there the
tests check that `fused=True` says so. TensorFlow has no fused kernels.
"""

import keras
import numpy as np
import pytest
from keras import ops
from reference import central_differences
from reference import mlstm_reference
from utils import import_keras_hub
from utils import make_inputs
from utils import make_state
from utils import relative_error
from utils import scaled_error
from utils import to_numpy
from utils import value_and_grad
from utils import weighted_mlstm_loss

import keras_mlstm
from keras_mlstm import config
from keras_mlstm import mlstm
from keras_mlstm import mlstm_step
from keras_mlstm.ops import fused as fused_module

BACKEND = keras.backend.backend()
TORCH = pytest.mark.skipif(
    BACKEND != "torch",
    reason="the native kernels standing in for Triton's on a CPU are "
    "PyTorch's (mlstm_kernels.jax needs jax_triton and a CUDA jaxlib)",
)
NAMES = ("q", "k", "v", "input_gate", "forget_gate", "C0", "n0", "m0")


@pytest.fixture
def native_kernels():
    """Route the fused dispatch to `mlstm_kernels`' native kernels."""
    sequence, step = config.fused_kernel_names()
    config.enable_fused_kernels("chunkwise--native_custbw", "native")
    yield
    config.enable_fused_kernels(sequence, step)


def masks(kind, batch, length):
    mask = np.ones((batch, length), bool)
    if kind == "right":  # padding after the prompt, as generation feeds
        mask[0, length - 9 :] = False
    elif kind == "holes":
        mask[0, 3:7] = False
        mask[1, :2] = False
    elif kind == "empty row":
        mask[1] = False
    return None if kind == "none" else mask


def case(length, seed, regime="normal", shape=(2, 2, None, 16, 32)):
    rng = np.random.default_rng(seed)
    batch, heads, _, dk, dv = shape
    shape = (batch, heads, length, dk, dv)
    inputs = [a.astype("float32") for a in make_inputs(rng, shape, regime)]
    state = [s.astype("float32") for s in make_state(rng, batch, heads, dk, dv)]
    return inputs, state


@TORCH
@pytest.mark.parametrize("length", [37, 64])
@pytest.mark.parametrize("mask_kind", ["none", "right", "holes", "empty row"])
@pytest.mark.parametrize("with_state", [False, True])
def test_fused_outputs_and_states_match_the_reference(
    native_kernels, length, mask_kind, with_state
):
    inputs, state = case(length, seed=length)
    mask = masks(mask_kind, 2, length)
    initial = state if with_state else None
    h, final = mlstm(
        *inputs,
        initial_state=initial,
        mask=mask,
        chunk_size=16,
        return_state=True,
        fused=True,
    )
    h_ref, final_ref, scale = mlstm_reference(
        *inputs, initial_state=initial, mask=mask, return_scale=True
    )
    assert scaled_error(h, h_ref, scale) < 1e-5
    for got, expected in zip(final, final_ref, strict=True):
        assert relative_error(got, expected) < 1e-5
    h_ops, final_ops = mlstm(
        *inputs,
        initial_state=initial,
        mask=mask,
        chunk_size=16,
        return_state=True,
        fused=False,
    )
    assert relative_error(h, to_numpy(h_ops)) < 1e-4
    for got, expected in zip(final, final_ops, strict=True):
        assert relative_error(got, to_numpy(expected)) < 1e-4


@TORCH
@pytest.mark.parametrize("regime", ["normal", "strong"])
def test_fused_gradients_of_each_argument(native_kernels, regime):
    """A loss of the outputs and of the three final state tensors, so that
    every path back to every argument counts; T=13 pads to 16 with
    identity steps, and a hole in the mask."""
    inputs, state = case(13, seed=5, regime=regime, shape=(1, 2, None, 4, 4))
    args = [np.asarray(a, np.float64) for a in inputs + state]
    mask = np.ones((1, 13), bool)
    mask[0, 6:8] = False
    rng = np.random.default_rng(6)
    weights = [
        rng.normal(size=s).astype("float32")
        for s in ((1, 2, 13, 4), (1, 2, 4, 4), (1, 2, 4), (1, 2))
    ]
    expected = central_differences(args, mask, weights)
    float32 = [a.astype("float32") for a in args]
    _, fused = value_and_grad(
        weighted_mlstm_loss(mask, weights, chunk_size=8, fused=True), float32
    )
    _, plain = value_and_grad(
        weighted_mlstm_loss(mask, weights, chunk_size=8, fused=False), float32
    )
    for name, got, ops_grad, reference in zip(
        NAMES, fused, plain, expected, strict=True
    ):
        assert np.all(np.isfinite(got)), name
        assert relative_error(got, reference) < 1e-3, name
        assert relative_error(got, ops_grad) < 1e-4, name


@TORCH
def test_padded_steps_reach_nothing_through_the_kernel(native_kernels):
    """What masked steps hold, NaN and inf included, reaches no output,
    state or gradient (the glue selects it away before the kernel)."""
    inputs, _ = case(20, seed=2)
    mask = masks("holes", 2, 20)
    dirty = [a.copy() for a in inputs]
    for array in dirty:
        array[0, :, 3:7] = np.nan
        array[1, :, :2] = np.inf
    clean = mlstm(*inputs, mask=mask, return_state=True, fused=True)
    spoilt = mlstm(*dirty, mask=mask, return_state=True, fused=True)
    np.testing.assert_array_equal(to_numpy(spoilt[0]), to_numpy(clean[0]))
    for a, b in zip(spoilt[1], clean[1], strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))

    def loss(*arrays):
        return ops.sum(mlstm(*arrays, mask=mask, fused=True))

    _, grads = value_and_grad(loss, dirty)
    for grad in grads:
        assert np.all(np.isfinite(grad))
        assert np.all(grad[0, :, 3:7] == 0) and np.all(grad[1, :, :2] == 0)


@TORCH
def test_fused_step_and_one_step_sequences(native_kernels):
    inputs, state = case(1, seed=3)
    step_inputs = [x[:, :, 0] for x in inputs]
    mask = np.array([True, False])
    for fn, arguments, kwargs in (
        (mlstm_step, step_inputs, {"state": state, "mask": mask}),
        (
            mlstm,
            inputs,
            {
                "initial_state": state,
                "mask": mask[:, None],
                "return_state": True,
            },
        ),
    ):
        h, final = fn(*arguments, fused=True, **kwargs)
        h_ops, final_ops = fn(*arguments, fused=False, **kwargs)
        assert relative_error(h, to_numpy(h_ops)) < 1e-5
        assert np.all(to_numpy(h)[1] == 0)  # a masked entry outputs zeros
        for got, expected in zip(final, final_ops, strict=True):
            assert relative_error(got, to_numpy(expected)) < 1e-5
        np.testing.assert_array_equal(to_numpy(final[0])[1], state[0][1])


def twins(make, x, **call):
    """A layer with `fused=True` and its `fused=False` twin, same weights;
    their outputs and weight gradients."""
    fused = make(fused=True)
    fused(x, **call)
    plain = fused.__class__.from_config({**fused.get_config(), "fused": False})
    plain(x, **call)
    plain.set_weights(fused.get_weights())
    results = []
    for layer in (fused, plain):
        weights = layer.trainable_weights

        def loss(*values, layer=layer, weights=weights):
            mapping = list(zip(weights, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                out = layer(x, **call)
            out = out[0] if isinstance(out, (list, tuple)) else out
            return ops.sum(out * ops.cos(ops.convert_to_tensor(x[..., :1])))

        values = [to_numpy(w) for w in weights]
        results.append(value_and_grad(loss, values))
    return results


@TORCH
@pytest.mark.parametrize(
    "make",
    [
        lambda fused: keras_mlstm.MLSTM(
            32, num_heads=2, return_sequences=True, fused=fused
        ),
        lambda fused: keras_mlstm.MLSTMBlock(num_heads=2, fused=fused, seed=1),
        lambda fused: keras_mlstm.MLSTMLargeBlock(
            num_heads=2, fused=fused, seed=1
        ),
        lambda fused: keras_mlstm.MLSTMStack(
            2, num_heads=2, block_variant="large", fused=fused, seed=1
        ),
    ],
    ids=["MLSTM", "MLSTMBlock", "MLSTMLargeBlock", "MLSTMStack"],
)
def test_layers_give_the_same_outputs_and_gradients_either_way(
    native_kernels, make
):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 21, 32)).astype("float32")
    mask = np.ones((2, 21), bool)
    mask[1, 15:] = False
    (value, grads), (value_ops, grads_ops) = twins(make, x, mask=mask)
    assert abs(value - value_ops) <= 1e-4 * abs(value_ops)
    # Against the largest gradient entry of all the weights (a bias whose
    # gradient is 1e-5 carries the others' rounding).
    scale = max(np.max(np.abs(g)) for g in grads_ops)
    for got, expected in zip(grads, grads_ops, strict=True):
        assert np.max(np.abs(got - expected)) < 1e-4 * scale


@TORCH
def test_generation_is_the_same_with_the_fused_kernels(native_kernels):
    """Prefill (sequence kernel) and each new token (step kernel)."""
    keras_hub = import_keras_hub()
    del keras_hub
    from keras_mlstm.models.xlstm import XLSTMBackbone
    from keras_mlstm.models.xlstm import XLSTMCausalLM

    token_ids = np.zeros((2, 12), "int32")
    token_ids[0, :3], token_ids[1, :6] = [5, 6, 7], [9, 8, 7, 6, 5, 4]
    inputs = {"token_ids": token_ids, "padding_mask": token_ids > 0}
    generated, spy = {}, []
    run = fused_module.run_step_kernel

    def counted(*args, **kwargs):
        spy.append(1)
        return run(*args, **kwargs)

    for fused in (True, False):
        keras.utils.set_random_seed(0)
        backbone = XLSTMBackbone(
            vocabulary_size=20,
            num_layers=2,
            hidden_dim=32,
            num_heads=2,
            block_variant="large",
            fused=fused,
        )
        lm = XLSTMCausalLM(backbone)
        lm.compile(sampler="greedy")
        fused_module.run_step_kernel = counted
        try:
            out = lm.generate(inputs, stop_token_ids=None)
        finally:
            fused_module.run_step_kernel = run
        generated[fused] = to_numpy(out["token_ids"])
    np.testing.assert_array_equal(generated[True], generated[False])
    assert spy  # the step kernel ran


def test_fused_true_says_why_the_kernel_cannot_run(native_kernels):
    inputs, _ = case(8, seed=1)
    reasons = {
        "form": ({"form": "parallel"}, "form='parallel'"),
        "exp": ({"forget_gate_activation": "exp"}, "sigmoid forget gate"),
    }
    if BACKEND != "torch":
        expected = "mlstm_kernels" if BACKEND == "jax" else "has no fused"
        with pytest.raises(ValueError, match=expected):
            mlstm(*inputs, fused=True)
        return
    for kwargs, message in reasons.values():
        with pytest.raises(ValueError, match=message):
            mlstm(*inputs, fused=True, **kwargs)
    with pytest.raises(ValueError, match="float64"):
        mlstm(*[a.astype("float64") for a in inputs], fused=True)
    config.enable_fused_kernels("chunkwise--triton_xl_chunk", "triton")
    with pytest.raises(ValueError, match="NVIDIA GPUs"):
        mlstm(*inputs, fused=True)


def test_fused_none_uses_keras_ops_where_the_kernel_cannot_run(monkeypatch):
    """With the default (Triton) kernels on a CPU, `fused=None` computes
    with keras.ops, and `disable_fused_kernels` keeps it there."""

    def fail(*args, **kwargs):
        raise AssertionError("a fused kernel ran")

    monkeypatch.setattr(fused_module, "run_sequence_kernel", fail)
    monkeypatch.setattr(fused_module, "run_step_kernel", fail)
    inputs, _ = case(8, seed=1)
    expected = to_numpy(mlstm(*inputs, fused=False))
    np.testing.assert_array_equal(to_numpy(mlstm(*inputs)), expected)
    config.disable_fused_kernels()
    try:
        assert not config.is_fused_kernels_enabled()
        np.testing.assert_array_equal(to_numpy(mlstm(*inputs)), expected)
    finally:
        config.enable_fused_kernels()
    assert config.is_fused_kernels_enabled()


@TORCH
def test_the_kernels_own_backward_is_exact_only_after_a_head_norm(
    native_kernels,
):
    """`fused_backward="kernel"` takes `mlstm_kernels`' hand-written
    backward (`native_custbw` here, the design of the Triton kernels'),
    which leaves out the gradient of the read-out's denominator ("it cancels
    out in the groupnorm", says their source) and of the initial `n` and
    `m`. On a plain loss the gradients are wrong; after a per-head
    normalisation, as the xLSTM blocks compute, they are the exact ones."""
    inputs, state = case(24, seed=8)
    rng = np.random.default_rng(9)
    weight = rng.normal(size=(2, 2, 24, 32)).astype("float32")

    def loss_of(fused_backward, normalised):
        def loss(q, k, v, i, f):
            h = mlstm(
                q,
                k,
                v,
                i,
                f,
                chunk_size=8,
                fused=True,
                fused_backward=fused_backward,
            )
            if normalised:  # a layer norm over each head's features
                h = h - ops.mean(h, axis=-1, keepdims=True)
                h = h / ops.sqrt(ops.mean(h * h, axis=-1, keepdims=True))
            return ops.sum(h * ops.convert_to_tensor(weight))

        return loss

    for normalised, agree in ((False, False), (True, True)):
        _, exact = value_and_grad(loss_of("exact", normalised), inputs)
        _, kernel = value_and_grad(loss_of("kernel", normalised), inputs)
        pairs = zip(kernel, exact, strict=True)
        errors = [relative_error(a, b) for a, b in pairs]
        if agree:
            assert max(errors) < 1e-4, errors
        else:
            assert max(errors[:2]) > 0.1, errors  # q and k
            assert errors[2] < 1e-4, errors  # v: no denominator in its path


@TORCH
def test_layers_given_a_state_take_the_exact_backward(native_kernels):
    """An encoder's state into a decoder: the gradient reaches the state
    (`n` and `m` included, which the kernels' own backward zeroes), so the
    layers differentiate exactly: as the float64 layer with the same
    weights does.

    The initialisation is seeded: with this one the read-out of 2 of the 4
    (batch, head) pairs depends on `n` (elsewhere `exp(-m)` bounds the
    denominator and `n`'s gradient is exactly 0 in every form). The loss is
    a sum of squares, so the outputs' gradients do not cancel. Tolerances:
    `C` and `m` within 1e-4 of their largest gradient entry; `n`, whose
    gradient passes through the read-out's division, within 1e-2 (both
    float32 paths measured at most 2.3e-3 from float64 over 8 seeds).
    """
    keras.utils.set_random_seed(6)
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 9, 8))
    state = make_state(rng, 2, 2, 8, 8)
    layer = keras_mlstm.MLSTM(16, num_heads=2, fused=True)
    layer.build(x.shape)
    exact = keras_mlstm.MLSTM(16, num_heads=2, fused=False, dtype="float64")
    exact.build(x.shape)
    exact.set_weights([w.astype("float64") for w in layer.get_weights()])

    def state_grads(layer, dtype):
        def loss(c, n, m):
            y = layer(x.astype(dtype), initial_state=[c, n, m])
            return ops.sum(ops.square(y))

        return value_and_grad(loss, [s.astype(dtype) for s in state])[1]

    got = state_grads(layer, "float32")
    expected = state_grads(exact, "float64")
    for name, g, e, tolerance in zip(
        ("C", "n", "m"), got, expected, (1e-4, 1e-2, 1e-4), strict=True
    ):
        g = to_numpy(g)
        assert np.any(e != 0), name
        np.testing.assert_array_equal(g == 0, e == 0, err_msg=name)
        assert relative_error(g, e) < tolerance, name
