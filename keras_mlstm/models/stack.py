"""``MLSTMStack``: ``num_blocks`` mLSTM blocks and a final norm, as the
official ``xlstm`` package's ``xLSTMBlockStack`` made of mLSTM blocks."""

import keras
from keras import ops

from keras_mlstm.layers.block import BLOCK_STATE_NAMES
from keras_mlstm.layers.block import NORM_EPSILON
from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.block import _positive_int
from keras_mlstm.layers.norms import standardize
from keras_mlstm.ops.common import state_dtype


@keras.saving.register_keras_serializable(package="keras_mlstm")
class MLSTMStack(keras.layers.Layer):
    """A stack of ``MLSTMBlock``s followed by a layer norm.

    Usable as a layer (``model.add(MLSTMStack(4))``) on ``(B, T, D)``
    inputs; D is kept throughout. Any sequence length works
    (``context_length`` is not needed, unlike the official code).

    Args:
        num_blocks: number of blocks.
        num_heads: heads per block. Default 4.
        proj_factor: the blocks' up-projection factor. Default 2.
        conv_kernel_size: the blocks' causal convolution width. Default 4.
        qkv_proj_blocksize: block size of the q, k, v projections.
            Default 4.
        use_bias: biases on the blocks' projections. Default False.
        dropout: dropout rate at the end of every block.
        form: how the mLSTM is computed, as ``keras_mlstm.ops.mlstm``.
        chunk_size: chunk length of the chunkwise form. Default 64.
        post_norm: end with a layer norm (the official
            ``add_post_blocks_norm``). Default True.
        return_state: also return the blocks' states.
        seed: int seed for initialisers and dropout.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``(B, T, D)``.
        initial_state: None or a list with one ``[C, n, m, conv]`` per
            block (see ``MLSTMBlock``), as returned with ``return_state``.
        mask: optional bool ``(B, T)``.
        training: enables dropout.
        return_state: None (the constructor's setting) or a bool.

    Returns:
        ``(B, T, D)``, or with ``return_state`` the list
        ``[outputs, states]`` with ``states`` one ``[C, n, m, conv]`` per
        block.

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
        chunk_size=64,
        post_norm=True,
        return_state=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_blocks = _positive_int("num_blocks", num_blocks)
        self.block_config = {
            "num_heads": num_heads,
            "proj_factor": proj_factor,
            "conv_kernel_size": conv_kernel_size,
            "qkv_proj_blocksize": qkv_proj_blocksize,
            "use_bias": use_bias,
            "dropout": dropout,
            "form": form,
            "chunk_size": chunk_size,
        }
        self.post_norm = bool(post_norm)
        self.return_state = return_state
        self.seed = seed
        # Built here, so argument errors surface at construction.
        self.blocks = [
            MLSTMBlock(
                num_blocks=self.num_blocks,
                seed=None if seed is None else seed + 100 * index,
                name=f"block_{index}",
                dtype=self.dtype_policy,
                **self.block_config,
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
        self.post_norm_weight = None
        if self.post_norm:
            self.post_norm_weight = self.add_weight(
                name="post_norm_weight", shape=(features,), initializer="zeros"
            )

    def get_initial_state(self, batch_size):
        """The empty state of every block."""
        return [block.get_initial_state(batch_size) for block in self.blocks]

    def call(
        self,
        inputs,
        initial_state=None,
        mask=None,
        training=None,
        return_state=None,
    ):
        if return_state is None:
            return_state = self.return_state
        if initial_state is not None and (
            not isinstance(initial_state, (list, tuple))
            or len(initial_state) != self.num_blocks
        ):
            raise ValueError(
                f"`initial_state` must be a list of {self.num_blocks} block "
                f"states [C, n, m, conv]; received {initial_state!r}."
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
            dtype = state_dtype(self.compute_dtype)
            x = ops.cast(
                standardize(ops.cast(x, dtype), NORM_EPSILON)
                * (1.0 + ops.cast(self.post_norm_weight, dtype)),
                self.compute_dtype,
            )
        if return_state:
            return [x, states]
        return x

    def compute_output_spec(
        self,
        inputs,
        initial_state=None,
        mask=None,
        training=None,
        return_state=None,
    ):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not (self.return_state if return_state is None else return_state):
            return outputs
        states = [
            block.compute_output_spec(inputs, return_state=True)[1:]
            for block in self.blocks
        ]
        return [outputs, states]

    def compute_mask(self, inputs, mask=None, return_state=None):
        if self.return_state if return_state is None else return_state:
            return [mask, [[None] * len(BLOCK_STATE_NAMES)] * self.num_blocks]
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(self.block_config)
        config.update(
            {
                "num_blocks": self.num_blocks,
                "post_norm": self.post_norm,
                "return_state": self.return_state,
                "seed": self.seed,
            }
        )
        return config
