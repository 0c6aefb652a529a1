"""`MLSTMStack`: `num_layers` mLSTM blocks and a final norm, as the official
`xlstm` package's `xLSTMBlockStack` made of mLSTM blocks, or its xLSTM 7B
`xLSTMLargeBlockStack`. It owns the block configuration: the models built
on it (`build_mlstm_model`, KerasHub's `XLSTMBackbone`) take its arguments
(`STACK_ARGUMENTS`) and pass them on unchanged."""

import inspect

import keras
from keras import ops

from keras_mlstm.layers.base import RENAMED
from keras_mlstm.layers.base import ReturnsState
from keras_mlstm.layers.base import SublayerPolicies
from keras_mlstm.layers.base import check_mask
from keras_mlstm.layers.base import guard_steps
from keras_mlstm.layers.base import known_features
from keras_mlstm.layers.base import poison
from keras_mlstm.layers.base import reject_renamed
from keras_mlstm.layers.base import upgrade_config
from keras_mlstm.layers.block import NORM_EPSILON
from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.large_block import MLSTMLargeBlock
from keras_mlstm.layers.norms import rms_normalize
from keras_mlstm.layers.norms import standardize
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.common import positive_number
from keras_mlstm.ops.common import state_dtype
from keras_mlstm.ops.common import static_shape

BLOCK_VARIANTS = ("mlstm", "large")
# Measured for a new user's first model (docs/architecture.md, "Which
# block"): at equal width and depth the paper's block learns more per step
# and solves associative recall (0.9996 at 16 pairs, the 7B block 0.104).
DEFAULT_BLOCK_VARIANT = "mlstm"
_COMMON = ("num_heads", "use_bias", "form", "chunk_size", "fused")
_VARIANT_ARGUMENTS = {
    "mlstm": (
        *_COMMON,
        "proj_factor",
        "conv_kernel_size",
        "qkv_proj_blocksize",
        "dropout",
    ),
    "large": (
        *_COMMON,
        "qk_dim_factor",
        "v_dim_factor",
        "ffn_proj_factor",
        "gate_soft_cap",
        "norm_epsilon",
    ),
}


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTMStack(SublayerPolicies, ReturnsState, keras.layers.Layer):
    """A stack of mLSTM blocks followed by a norm: the body of every
    xLSTM model here.

    Usable as a layer (`model.add(MLSTMStack(4))`) on `(B, T, D)` inputs;
    D is kept throughout. Any sequence length works (`context_length` is
    not needed, unlike the official code).

    Two block variants: `"mlstm"` (`MLSTMBlock`, the xLSTM paper's block;
    a final layer norm) and `"large"` (`MLSTMLargeBlock`, the xLSTM 7B
    block; a final RMSNorm). The arguments marked with a variant apply to
    that variant only.

    Args:
        num_layers: int. The number of blocks (required; the default,
            `None`, lets an old `num_blocks` argument be named in the
            error). Defaults to `None`.
        num_heads: int. Heads per block. Defaults to `4`.
        block_variant: `"mlstm"` or `"large"`. Defaults to `"mlstm"`, the
            better first choice measured in docs/architecture.md ("Which
            block": it learns more per step, and solves associative
            recall, which the 7B block does not).
        dropout: `"mlstm"`: dropout rate at the end of every block.
            Defaults to `0.0`.
        use_bias: bool. Biases on the blocks' projections (and, `"large"`,
            norms). Defaults to `False`.
        proj_factor: `"mlstm"`: the up-projection factor. Defaults to
            `2.0`.
        conv_kernel_size: `"mlstm"`: the causal convolution width.
            Defaults to `4`.
        qkv_proj_blocksize: `"mlstm"`: block size of the q, k, v
            projections. Defaults to `4`.
        qk_dim_factor: `"large"`: query/key width over D (see
            `MLSTMLargeBlock`). Defaults to `0.5`.
        v_dim_factor: `"large"`: value width over D. Defaults to `1.0`.
        ffn_proj_factor: `"large"`: feed-forward width over D before
            rounding up to a multiple of 64. Defaults to `2.6667`.
        gate_soft_cap: `"large"`: soft cap of the gate pre-activations.
            Defaults to `15.0`.
        norm_epsilon: `"large"`: epsilon of every norm of the blocks and
            of the final RMSNorm. Defaults to `1e-6`.
        form: how the mLSTM is computed, as `keras_mlstm.ops.mlstm`.
            Defaults to `"auto"`.
        chunk_size: chunk length of the chunkwise form, an int or
            `"auto"` (see `keras_mlstm.ops.resolve_chunk_size`). Defaults
            to `"auto"`.
        fused: `None`, `True` or `False`: compute the mLSTM with the fused
            `mlstm_kernels` kernel (`None`: where it can run; see
            `keras_mlstm.ops.mlstm`). Defaults to `None`.
        post_norm: bool. End with a norm (the official
            `add_post_blocks_norm` / `add_out_norm`). Defaults to `True`.
        return_state: bool. Also return the blocks' states. Defaults to
            `False`.
        seed: int seed for initialisers and dropout. Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, T, D)`.
        initial_state: None or the states, one per block (see Returns), as
            returned with `return_state`.
        mask: optional bool `(B, T)`, the Keras mask (e.g. from
            `Embedding(mask_zero=True)`); the output carries it on.
        padding_mask: optional bool or int `(B, T)`, as KerasHub's
            backbones take it: masked steps as with `mask`, but the output
            carries no Keras mask. With both, a step runs where both are
            true.
        training: enables dropout.
        return_state: None (the constructor's setting) or a bool.

    Returns:
        `(B, T, D)`, or with `return_state` the list `[outputs, states]`:
        `states[i]` is block `i`'s state, a list (`[C, n, m, conv]` for
        `"mlstm"` blocks, `[C, n, m]` for `"large"` ones). KerasHub's
        `XLSTMCausalLM` keeps this list as its generation cache.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((None, 32)), MLSTMStack(2)])
    >>> tuple(model(np.zeros((1, 7, 32), "float32")).shape)
    (1, 7, 32)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517.
        - Beck et al., "xLSTM 7B: A Recurrent LLM for Fast and Efficient
          Inference", 2025, arXiv:2503.13427.
    """

    def __init__(
        self,
        num_layers=None,
        num_heads=4,
        block_variant=DEFAULT_BLOCK_VARIANT,
        dropout=0.0,
        use_bias=False,
        proj_factor=2.0,
        conv_kernel_size=4,
        qkv_proj_blocksize=4,
        qk_dim_factor=0.5,
        v_dim_factor=1.0,
        ffn_proj_factor=2.6667,
        gate_soft_cap=15.0,
        norm_epsilon=1e-6,
        form="auto",
        chunk_size="auto",
        fused=None,
        post_norm=True,
        return_state=False,
        seed=None,
        **kwargs,
    ):
        reject_renamed("MLSTMStack", kwargs, RENAMED)
        super().__init__(**kwargs)
        self.num_layers = positive_int("num_layers", num_layers)
        if block_variant not in BLOCK_VARIANTS:
            raise ValueError(
                f"`block_variant` must be one of {BLOCK_VARIANTS}; received "
                f"{block_variant!r}."
            )
        if block_variant == "large" and dropout:
            raise ValueError(
                "`dropout` is not supported by the 'large' (xLSTM 7B) block "
                f"variant; received dropout={dropout}."
            )
        self.block_variant = block_variant
        self.block_config = {
            "num_heads": num_heads,
            "use_bias": use_bias,
            "form": form,
            "chunk_size": chunk_size,
            "fused": fused,
            "proj_factor": proj_factor,
            "conv_kernel_size": conv_kernel_size,
            "qkv_proj_blocksize": qkv_proj_blocksize,
            "dropout": dropout,
            "qk_dim_factor": qk_dim_factor,
            "v_dim_factor": v_dim_factor,
            "ffn_proj_factor": ffn_proj_factor,
            "gate_soft_cap": gate_soft_cap,
            "norm_epsilon": positive_number("norm_epsilon", norm_epsilon),
        }
        self.post_norm = bool(post_norm)
        self.return_state = return_state
        self.seed = seed
        block_class = (
            MLSTMBlock if block_variant == "mlstm" else MLSTMLargeBlock
        )
        block_kwargs = {
            name: self.block_config[name]
            for name in _VARIANT_ARGUMENTS[block_variant]
        }
        # Built here, so argument errors surface at construction.
        self.blocks = [
            block_class(
                num_layers=self.num_layers,
                seed=None if seed is None else seed + 100 * index,
                name=f"block_{index}",
                dtype=self.dtype_policy,
                **block_kwargs,
            )
            for index in range(self.num_layers)
        ]
        self.supports_masking = True

    def build(self, input_shape):
        features = known_features("MLSTMStack", input_shape)
        for block in self.blocks:
            block.build(input_shape)
        self.post_norm_weight = self.post_norm_bias = None
        if self.post_norm:
            # The mlstm variant stores its norm scale as 1 + w (w = 0), the
            # large one as the scale itself, each as its official code.
            large = self.block_variant == "large"
            self.post_norm_weight = self.add_weight(
                name="post_norm_weight",
                shape=(features,),
                initializer="ones" if large else "zeros",
            )
            if large and self.block_config["use_bias"]:
                self.post_norm_bias = self.add_weight(
                    name="post_norm_bias",
                    shape=(features,),
                    initializer="zeros",
                )

    def get_initial_state(self, batch_size):
        """The initial (empty) state of every block, the `states` list of
        `return_state`."""
        return [block.get_initial_state(batch_size) for block in self.blocks]

    def call(
        self,
        inputs,
        initial_state=None,
        mask=None,
        padding_mask=None,
        training=None,
        return_state=None,
    ):
        return_state = self.wants_state(return_state)
        if initial_state is not None and (
            not isinstance(initial_state, (list, tuple))
            or len(initial_state) != self.num_layers
        ):
            raise ValueError(
                f"`initial_state` must be a list of {self.num_layers} block "
                f"states; received {initial_state!r}."
            )
        if padding_mask is not None:
            check_mask(padding_mask, static_shape(inputs), "padding_mask")
            padding_mask = ops.cast(padding_mask, "bool")
            mask = (
                padding_mask
                if mask is None
                else ops.logical_and(ops.cast(mask, "bool"), padding_mask)
            )
        x = inputs
        states = []
        for index, block in enumerate(self.blocks):
            x, *state = block(
                x,
                initial_state=None
                if initial_state is None
                else initial_state[index],
                mask=mask,
                training=training,
                return_state=True,
            )
            states.append(state)
        if self.post_norm:
            # The blocks set outputs from a non-finite step on to NaN: the
            # norm's weights must not see them (0 * NaN in the backward).
            x, poisoned = guard_steps(x, mask)
            x = poison(self._post_norm(x), poisoned)
        if return_state:
            return [x, states]
        return x

    def _post_norm(self, x):
        dtype = state_dtype(self.compute_dtype)
        x = ops.cast(x, dtype)
        weight = ops.cast(self.post_norm_weight, dtype)
        if self.block_variant == "large":
            x = rms_normalize(x, self.block_config["norm_epsilon"]) * weight
            if self.post_norm_bias is not None:
                x = x + ops.cast(self.post_norm_bias, dtype)
        else:
            x = standardize(x, NORM_EPSILON) * (1.0 + weight)
        return ops.cast(x, self.compute_dtype)

    def compute_output_spec(
        self,
        inputs,
        initial_state=None,
        mask=None,
        padding_mask=None,
        training=None,
        return_state=None,
    ):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not self.wants_state(return_state):
            return outputs
        states = [
            block.compute_output_spec(inputs, return_state=True)[1:]
            for block in self.blocks
        ]
        return [outputs, states]

    def compute_mask(
        self, inputs, mask=None, padding_mask=None, return_state=None
    ):
        if self.wants_state(return_state):
            count = len(self.blocks[0].state_specs(None))
            return [mask, [[None] * count] * self.num_layers]
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(self.block_config)
        config.update(
            {
                "num_layers": self.num_layers,
                "block_variant": self.block_variant,
                "post_norm": self.post_norm,
                "return_state": self.return_state,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Files saved before issue #20 name the depth `num_blocks`.
        return super().from_config(upgrade_config(config, RENAMED))


# What the models built on the stack take and pass on: every argument of
# the stack but `return_state` (those models return hidden states only).
STACK_ARGUMENTS = tuple(
    name
    for name in inspect.signature(MLSTMStack.__init__).parameters
    if name not in ("self", "return_state", "kwargs")
)


def split_stack_arguments(kwargs):
    """`(stack arguments, the rest)` of `kwargs`."""
    stack = {k: v for k, v in kwargs.items() if k in STACK_ARGUMENTS}
    rest = {k: v for k, v in kwargs.items() if k not in STACK_ARGUMENTS}
    return stack, rest
