"""`MLSTMStack`: `num_blocks` mLSTM blocks and a final norm, as the
official `xlstm` package's `xLSTMBlockStack` made of mLSTM blocks, or
its xLSTM 7B `xLSTMLargeBlockStack`."""

import keras
from keras import ops

from keras_mlstm.layers.base import ReturnsState
from keras_mlstm.layers.base import SublayerPolicies
from keras_mlstm.layers.base import guard_steps
from keras_mlstm.layers.base import poison
from keras_mlstm.layers.block import NORM_EPSILON
from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.large_block import MLSTMLargeBlock
from keras_mlstm.layers.norms import rms_normalize
from keras_mlstm.layers.norms import standardize
from keras_mlstm.ops.common import positive_int
from keras_mlstm.ops.common import state_dtype

BLOCK_VARIANTS = ("mlstm", "large")
LARGE_NORM_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTMStack(SublayerPolicies, ReturnsState, keras.layers.Layer):
    """A stack of mLSTM blocks followed by a norm.

    Usable as a layer (`model.add(MLSTMStack(4))`) on `(B, T, D)`
    inputs; D is kept throughout. Any sequence length works
    (`context_length` is not needed, unlike the official code).

    Two block variants: `"mlstm"` (`MLSTMBlock`, the xLSTM paper's
    block; a final layer norm) and `"large"` (`MLSTMLargeBlock`, the
    xLSTM 7B block; a final RMSNorm).

    Args:
        num_blocks: number of blocks.
        num_heads: heads per block. Defaults to `4`.
        proj_factor: `"mlstm"`: the up-projection factor. Defaults to
            `2.0`.
        conv_kernel_size: `"mlstm"`: the causal convolution width.
            Defaults to `4`.
        qkv_proj_blocksize: `"mlstm"`: block size of the q, k, v
            projections. Defaults to `4`.
        use_bias: biases on the blocks' projections. Defaults to `False`.
        dropout: `"mlstm"`: dropout rate at the end of every block.
            Defaults to `0.0`.
        form: how the mLSTM is computed, as `keras_mlstm.ops.mlstm`.
            Defaults to `"auto"`.
        chunk_size: chunk length of the chunkwise form, an int or
            `"auto"` (see `keras_mlstm.ops.resolve_chunk_size`). Defaults
            to `"auto"`.
        post_norm: end with a norm (the official `add_post_blocks_norm` /
            `add_out_norm`). Defaults to `True`.
        block_variant: `"mlstm"` or `"large"`. Defaults to `"mlstm"`.
        qk_dim_factor: `"large"`: QK / D (see `MLSTMLargeBlock`).
            Defaults to `0.5`.
        v_dim_factor: `"large"`: V / D. Defaults to `1.0`.
        ffn_proj_factor: `"large"`: feed-forward width / D before
            rounding. Defaults to `2.6667`.
        gate_soft_cap: `"large"`: soft cap of the gate pre-activations.
            Defaults to `15.0`.
        return_state: also return the blocks' states. Defaults to `False`.
        seed: int seed for initialisers and dropout. Defaults to `None`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, D)`.
        initial_state: None or a list with one block state per block (see
            `MLSTMBlock` / `MLSTMLargeBlock`), as returned with
            `return_state`.
        mask: optional bool `(B, T)`.
        training: enables dropout.
        return_state: None (the constructor's setting) or a bool.

    Returns:
        `(B, T, D)`, or with `return_state` the list
        `[outputs, states]` with `states` one state per block
        (`[C, n, m, conv]` for `"mlstm"` blocks, `[C, n, m]` for
        `"large"` ones).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((None, 32)), MLSTMStack(2)])
    >>> tuple(model(np.zeros((1, 7, 32), "float32")).shape)
    (1, 7, 32)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517.
    """

    def __init__(
        self,
        num_blocks,
        num_heads=4,
        proj_factor=2.0,
        conv_kernel_size=4,
        qkv_proj_blocksize=4,
        use_bias=False,
        dropout=0.0,
        form="auto",
        chunk_size="auto",
        post_norm=True,
        block_variant="mlstm",
        qk_dim_factor=0.5,
        v_dim_factor=1.0,
        ffn_proj_factor=2.6667,
        gate_soft_cap=15.0,
        return_state=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_blocks = positive_int("num_blocks", num_blocks)
        if block_variant not in BLOCK_VARIANTS:
            raise ValueError(
                f"`block_variant` must be one of {BLOCK_VARIANTS}; received "
                f"{block_variant!r}."
            )
        self.block_variant = block_variant
        common = {
            "num_heads": num_heads,
            "use_bias": use_bias,
            "form": form,
            "chunk_size": chunk_size,
        }
        mlstm_only = {
            "proj_factor": proj_factor,
            "conv_kernel_size": conv_kernel_size,
            "qkv_proj_blocksize": qkv_proj_blocksize,
            "dropout": dropout,
        }
        large_only = {
            "qk_dim_factor": qk_dim_factor,
            "v_dim_factor": v_dim_factor,
            "ffn_proj_factor": ffn_proj_factor,
            "gate_soft_cap": gate_soft_cap,
        }
        if block_variant == "large" and dropout:
            raise ValueError(
                "`dropout` is not supported by the 'large' (xLSTM 7B) block "
                f"variant; received dropout={dropout}."
            )
        self.block_config = {**common, **mlstm_only, **large_only}
        block_class = MLSTMBlock
        block_kwargs = {**common, **mlstm_only}
        if block_variant == "large":
            block_class = MLSTMLargeBlock
            block_kwargs = {**common, **large_only}
        self.post_norm = bool(post_norm)
        self.return_state = return_state
        self.seed = seed
        # Built here, so argument errors surface at construction.
        self.blocks = [
            block_class(
                num_blocks=self.num_blocks,
                seed=None if seed is None else seed + 100 * index,
                name=f"block_{index}",
                dtype=self.dtype_policy,
                **block_kwargs,
            )
            for index in range(self.num_blocks)
        ]
        self.supports_masking = True

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last axis (features) of the MLSTMStack input must be "
                f"known; received input shape {tuple(input_shape)}."
            )
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
        """The initial (empty) state of every block."""
        return [block.get_initial_state(batch_size) for block in self.blocks]

    def call(
        self,
        inputs,
        initial_state=None,
        mask=None,
        training=None,
        return_state=None,
    ):
        return_state = self.wants_state(return_state)
        if initial_state is not None and (
            not isinstance(initial_state, (list, tuple))
            or len(initial_state) != self.num_blocks
        ):
            raise ValueError(
                f"`initial_state` must be a list of {self.num_blocks} block "
                f"states; received {initial_state!r}."
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
            x = rms_normalize(x, LARGE_NORM_EPSILON) * weight
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

    def compute_mask(self, inputs, mask=None, return_state=None):
        if self.wants_state(return_state):
            count = len(self.blocks[0].state_specs(None))
            return [mask, [[None] * count] * self.num_blocks]
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(self.block_config)
        config.update(
            {
                "num_blocks": self.num_blocks,
                "post_norm": self.post_norm,
                "block_variant": self.block_variant,
                "return_state": self.return_state,
                "seed": self.seed,
            }
        )
        return config
