"""Pieces the layers share: input checks, head reshapes, and the plumbing
of a recurrent block (its state, `return_state`, symbolic outputs)."""

import math
import re

import keras
import numpy as np
from keras import ops

from keras_mlstm.layers.projection import Projection
from keras_mlstm.ops.common import check_chunk_size
from keras_mlstm.ops.common import check_fused
from keras_mlstm.ops.common import check_options
from keras_mlstm.ops.common import from_first
from keras_mlstm.ops.common import linear
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.common import static_shape
from keras_mlstm.ops.compat import reduce_max


def check_sequence_inputs(name, inputs, features):
    """Raise ValueError unless `inputs` is `(B, T >= 1, features)`;
    return its static shape."""
    shape = static_shape(inputs)
    if len(shape) != 3:
        raise ValueError(
            f"{name} expects inputs of rank 3, (batch, time, features); "
            f"received shape {shape}."
        )
    if shape[-1] is not None and shape[-1] != features:
        raise ValueError(
            f"{name} was built for {features} input features; received "
            f"inputs of shape {shape}."
        )
    if shape[1] == 0:
        raise ValueError(
            f"{name} inputs need at least one time step; received shape "
            f"{shape}."
        )
    return shape


def known_features(name, input_shape):
    """The last axis of `input_shape`, which must be known to build."""
    features = input_shape[-1]
    if features is None:
        raise ValueError(
            f"The last axis (features) of the {name} input must be known; "
            f"received input shape {tuple(input_shape)}."
        )
    return int(features)


# Renamed by issue #20 in the blocks, the stack and the models built on
# it (old -> new): the depth is `num_layers` everywhere, as in KerasHub.
RENAMED = {"num_blocks": "num_layers"}


def reject_renamed(owner, kwargs, renames):
    """Raise TypeError naming the new name of any argument of `kwargs`
    that `renames` (old name -> new name) lists; `owner` names the class
    or function."""
    for old, new in renames.items():
        if old in kwargs:
            raise TypeError(
                f"{owner}() got the argument `{old}`, which is now `{new}` "
                "(docs/migration.md lists every renamed argument)."
            )


def upgrade_config(config, renames):
    """`config` with the keys `renames` lists under their new names: the
    configs of files saved before the rename load unchanged."""
    return {renames.get(key, key): value for key, value in config.items()}


def small_init_std(width):
    """The standard deviation of the official xLSTM "small init" for
    weights that read a `width`-wide input (embeddings, up-projections):
    `sqrt(2 / (5 width))` (Nguyen and Salazar, 2019)."""
    return math.sqrt(2.0 / (5.0 * width))


def forget_gate_bias_initializer(num_heads):
    """The official xLSTM forget-gate biases: spread over [3, 6] across
    heads (3 for one head), so that the heads start with memories of about
    20 to 400 steps (sigmoid(3) = 0.95, sigmoid(6) = 0.998)."""
    values = np.linspace(3.0, 6.0, num_heads).tolist() if num_heads > 1 else 3.0
    return keras.initializers.Constant(values)


def last_step(x, mask):
    """`x` (B, T, F) at each sequence's last unmasked step, `(B, F)`: the
    last step for `mask=None`, zeros for a fully masked sequence."""
    if mask is None:
        return x[:, -1]
    length = ops.shape(mask)[1]
    steps = ops.arange(length, dtype="int32")[None]  # (1, T)
    last = reduce_max(ops.where(mask, steps, -1), axis=1)  # (B,), B = 0 too
    index = ops.reshape(ops.maximum(last, 0), (-1, 1))
    chosen = gather_steps(x, index)[:, 0]  # (B, F)
    return ops.where((last >= 0)[:, None], chosen, ops.zeros_like(chosen))


def fused_backward_for(head_norm, initial_state):
    """The `fused_backward` a layer asks of `keras_mlstm.ops.mlstm`:
    `"kernel"` where a fused kernel's own backward is exact, else
    `"exact"`.

    The kernels' backward leaves out the read-out denominator's gradient,
    which a per-head norm right after the mLSTM cancels (`head_norm`), and
    the initial `n` and `m`'s, which matter only for a given state (a
    stateful layer's carried state takes no gradient: it counts as none).
    """
    return "kernel" if head_norm and initial_state is None else "exact"


def gather_steps(x, index):
    """`x` (B, T, F) at the steps `index` (B, S), integers, of each
    sequence: `(B, S, F)`.

    One gather of rows of the flattened `(B * T, F)` steps, not
    `ops.take_along_axis`, which on TensorFlow (Keras 3.10 to 3.15)
    broadcasts the indices to the full shape: forward and backward at
    B=16, T=256, F=256 built 193 graph operations and took 15.5 ms there,
    against 68 and 3.5 ms for this (docs/benchmarks.md, issue #22).
    """
    shape = ops.shape(x)
    batch, length, features = shape[0], shape[1], x.shape[-1]
    offsets = ops.arange(batch, dtype="int32")[:, None] * length  # (B, 1)
    rows = ops.reshape(ops.cast(index, "int32") + offsets, (-1,))
    gathered = ops.take(ops.reshape(x, (-1, features)), rows, axis=0)
    return ops.reshape(gathered, (batch, ops.shape(index)[1], features))


def check_mask(mask, shape, name="mask"):
    """Raise ValueError naming `name` unless `mask` is None or `(B, T)` of
    `shape`."""
    if mask is None:
        return
    mask_shape = static_shape(mask)
    if len(mask_shape) != 2 or any(
        a is not None and b is not None and a != b
        for a, b in zip(mask_shape, shape[:2], strict=True)
    ):
        raise ValueError(
            f"`{name}` must have shape (batch, time) = {tuple(shape[:2])}; "
            f"received shape {mask_shape}."
        )


def guard_steps(x, mask):
    """Make the steps of `x` (B, T, F) safe to compute with.

    Masked steps and steps holding NaN or inf are set to zero by a select,
    so that what they held reaches no arithmetic (and so no gradient: the
    backward pass of `0 * NaN` is NaN, of a select is not). Returns the
    cleaned `x` and `poisoned` (B, T): True from the first unmasked
    non-finite step on, the outputs that `poison` sets to NaN.
    """
    bad = ~ops.isfinite(ops.sum(x, axis=-1))  # (B, T)
    if mask is not None:
        mask = ops.cast(mask, "bool")
        bad = bad & mask  # what padding holds is no error
        keep = mask & ~bad
    else:
        keep = ~bad
    x = ops.where(keep[..., None], x, 0.0)
    poisoned = from_first(bad)  # (B, T)
    return x, poisoned


def poison(x, poisoned):
    """`x` with NaN where `poisoned`, broadcast from the leading axes (the
    steps (B, T) of an output, or the batch (B,) of a state)."""
    for _ in range(len(x.shape) - len(poisoned.shape)):
        poisoned = poisoned[..., None]
    return ops.where(poisoned, float("nan"), x)


def poison_state(state, poisoned):
    """The tensors of `state` (each with batch axis first) set to NaN for
    the rows whose last step is `poisoned` (B, T)."""
    return [poison(s, poisoned[:, -1]) for s in state]


def select_steps(x, mask):
    """`x` (B, T, F) with the steps where `mask` (B, T) is False set to
    zero by a select (whatever they held, NaN included, is gone, in the
    gradient too); `x` itself for `mask=None`."""
    if mask is None:
        return x
    return ops.where(ops.cast(mask, "bool")[..., None], x, 0.0)


def to_heads(x, num_heads):
    """`(B, T, W)` -> `(B, NH, T, W / NH)`."""
    shape = ops.shape(x)
    # The static head size, not -1: with a traced batch size TensorFlow
    # cannot infer a -1 axis statically, and later code needs it.
    size = x.shape[-1] // num_heads
    x = ops.reshape(x, (shape[0], shape[1], num_heads, size))
    return ops.transpose(x, (0, 2, 1, 3))


def from_heads(h, like):
    """`(B, NH, T, DH)` -> the shape of `like`, `(B, T, NH * DH)`."""
    return ops.reshape(ops.transpose(h, (0, 2, 1, 3)), ops.shape(like))


def head_gates(parts, input_kernel, input_bias, forget_kernel, forget_bias):
    """The input and forget gate pre-activations, each `(B, NH, T)`.

    The kernels `(E, NH)` read the concatenation of `parts`, tensors
    `(B, T, E_j)` with `sum E_j = E`, in the dtype of `parts`. Both
    gates come from one product per part with the two kernels side by side,
    without materialising the concatenation: two `(E, NH)` products of a
    concatenated input took several times as long (forward+backward on
    JAX, B=8, T=256, E=768: 12.4 ms against 2.3 ms, side by side).
    """
    dtype = parts[0].dtype
    heads = input_kernel.shape[-1]
    kernel = ops.cast(
        ops.concatenate([input_kernel, forget_kernel], axis=-1), dtype
    )  # (E, 2 NH)
    gates = ops.cast(
        ops.concatenate([input_bias, forget_bias], axis=-1), dtype
    )  # (2 NH,)
    start = 0
    for part in parts:
        width = part.shape[-1]
        gates = gates + linear(part, kernel[start : start + width])
        start += width
    gates = ops.transpose(gates, (0, 2, 1))  # (B, 2 NH, T)
    return gates[:, :heads], gates[:, heads:]


class SublayerPolicies:
    """Mixin for layers that make their own sublayers: the dtype policies
    of the quantized ones survive `get_config` and `from_config`.

    `model.quantize("int8")` gives each quantized `Dense` a quantized
    policy of its own, which the parent's config does not hold, so a
    reloaded parent would rebuild float sublayers and fail to load their
    int8 kernels and scales. As KerasHub's `Backbone` does, the config's
    `dtype` becomes a `keras.dtype_policies.DTypePolicyMap` from each
    quantized sublayer's path to its policy. A parent built from it (or
    handed one by a KerasHub backbone) looks up each sublayer's policy
    when it makes the sublayer (`sublayer_policy`), so that the sublayer
    holds a plain policy: Keras's `Dense` saves an int8 kernel's scale
    only when its own policy says int8 (Keras 3.15), and a map's says
    the default.

    The keys are patterns of the paths from this layer's name down
    (`^(?:.*/)?block/up$`): the models around it change where a layer's
    path starts (a layer built in a `Sequential` is under its name; the
    same layer rebuilt by `load_model` is not).
    """

    def sublayer_policy(self, name):
        """The dtype policy of the sublayer `name` made in `build`."""
        policy = self.dtype_policy
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            return policy[f"{self.path}/{name}"]
        return policy

    def get_config(self):
        config = super().get_config()
        quantized = [
            layer
            for layer in self._flatten_layers(include_self=False)
            if layer.quantization_mode is not None
        ]
        if not quantized:  # an unbuilt layer (no path yet) among others
            return config
        outside = self.path[: len(self.path) - len(self.name)]
        patterns = {
            "^(?:.*/)?" + re.escape(layer.path.removeprefix(outside)) + "$": (
                layer.dtype_policy
            )
            for layer in quantized
        }
        policy = self.dtype_policy
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            policy = policy.default_policy
        config["dtype"] = keras.dtype_policies.serialize(
            keras.dtype_policies.DTypePolicyMap(policy, patterns)
        )
        return config


class ReturnsState:
    """Mixin: a `return_state` set at construction, overridable per call."""

    def wants_state(self, return_state):
        """The call's `return_state`, or the constructor's for None."""
        return self.return_state if return_state is None else return_state


class RecurrentBlock(SublayerPolicies, ReturnsState, keras.layers.Layer):
    """Base of the blocks: a layer `(B, T, D) -> (B, T, D)` with a state.

    Subclasses call `_set_common` and define `state_specs(batch)`, a
    list of `(name, shape, dtype)`, and `get_initial_state`; this base
    gives the per-call `return_state` override, the state checks and the
    symbolic output shapes, specs and masks.
    """

    def __init__(self, **kwargs):
        reject_renamed(type(self).__name__, kwargs, RENAMED)
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, config):
        # Files saved before issue #20 name the depth `num_blocks`.
        return super().from_config(upgrade_config(config, RENAMED))

    def _set_common(
        self,
        num_heads,
        num_layers,
        use_bias,
        form,
        chunk_size,
        fused,
        return_state,
        seed,
    ):
        """Check and store the arguments every block takes."""
        self.num_heads = positive_int("num_heads", num_heads)
        self.num_layers = positive_int("num_layers", num_layers)
        self.chunk_size = check_chunk_size(chunk_size)
        check_options("sigmoid", 0.0, form=form)
        check_fused(fused)
        self.fused = fused
        self.use_bias = bool(use_bias)
        self.form = form
        self.return_state = return_state
        self.seed = seed
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def _seed(self, offset):
        """A distinct initialiser seed per weight (None stays None)."""
        return None if self.seed is None else self.seed + offset

    def _projection(self, name, units, input_dim, stddev, offset):
        """A built `Projection` (a `Dense`), kernel normal(0, stddev).

        Projections are `Dense` layers, not raw weights, so that Keras'
        `enable_lora` and `quantize` apply to them. The sublayer's name
        makes its weights read `{name}_kernel` / `{name}_bias` in the
        block's variable paths.
        """
        layer = Projection(
            units,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=stddev, seed=self._seed(offset)
            ),
            dtype=self.sublayer_policy(name),
            name=name,
        )
        layer.build((None, None, input_dim))
        return layer

    def check_initial_state(self, initial_state, batch):
        """Raise ValueError unless `initial_state` matches
        `state_specs(batch)` in count, shapes and dtypes."""
        specs = self.state_specs(batch)
        names = ", ".join(name for name, _, _ in specs)
        if not isinstance(initial_state, (list, tuple)) or len(
            initial_state
        ) != len(specs):
            raise ValueError(
                f"`initial_state` must be the list [{names}] with shapes "
                f"{[shape for _, shape, _ in specs]}; received "
                f"{initial_state!r}."
            )
        for tensor, (name, expected, dtype) in zip(
            initial_state, specs, strict=True
        ):
            got = static_shape(tensor)
            if len(got) != len(expected) or any(
                a is not None and b is not None and a != b
                for a, b in zip(got, expected, strict=True)
            ):
                raise ValueError(
                    f"`initial_state[{name}]` must have shape {expected}; "
                    f"received shape {got}."
                )
            got_dtype = keras.backend.standardize_dtype(tensor.dtype)
            if got_dtype != dtype:
                raise ValueError(
                    f"`initial_state[{name}]` must have dtype {dtype}; "
                    f"received dtype {got_dtype}."
                )

    def compute_output_shape(
        self, input_shape, initial_state_shape=None, return_state=None
    ):
        if self.wants_state(return_state):
            specs = self.state_specs(input_shape[0])
            return (tuple(input_shape), *[shape for _, shape, _ in specs])
        return tuple(input_shape)

    def compute_output_spec(
        self,
        inputs,
        initial_state=None,
        mask=None,
        training=None,
        return_state=None,
    ):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not self.wants_state(return_state):
            return outputs
        if not self.built:
            self.build(inputs.shape)
        states = [
            keras.KerasTensor(shape, dtype=dtype)
            for _, shape, dtype in self.state_specs(inputs.shape[0])
        ]
        return [outputs, *states]

    def compute_mask(self, inputs, mask=None, return_state=None):
        if self.wants_state(return_state):
            return [mask] + [None] * len(self.state_specs(None))
        return mask
