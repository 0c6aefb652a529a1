"""`XLSTMBackbone`: token ids to hidden states through a stack of mLSTM
blocks, as a KerasHub `Backbone`."""

import math

import keras
from keras import ops
from keras.src.backend.common.masking import set_keras_mask
from keras_hub.models import Backbone

from keras_mlstm.models.stack import MLSTMStack


@keras.saving.register_keras_serializable(package="keras_mlstm")
class XLSTMBackbone(Backbone):
    """The xLSTM language-model core: an embedding, `num_layers` mLSTM
    blocks and a final norm (`MLSTMStack`).

    The default constructor gives a randomly initialised model of any size;
    `from_preset` loads a saved one: a KerasHub preset directory, or a
    Hugging Face `transformers` xLSTM checkpoint (a local directory or
    `"hf://NX-AI/xLSTM-7b"`).

    Two block variants: `"large"`, the xLSTM 7B block (`MLSTMLargeBlock`,
    the layout of `transformers`' `xLSTMForCausalLM`), and `"mlstm"`, the
    xLSTM paper's block (`MLSTMBlock`, with its causal convolution). The
    arguments under each variant apply to that variant only.

    Args:
        vocabulary_size: int. The size of the token vocabulary.
        num_layers: int. The number of blocks.
        hidden_dim: int. The embedding width, kept through the stack.
        num_heads: int. mLSTM heads per block. Defaults to `4`.
        block_variant: `"large"` or `"mlstm"`. Defaults to `"large"`.
        qk_dim_factor: `"large"`: query/key width over `hidden_dim`.
            Defaults to `0.5`.
        v_dim_factor: `"large"`: value width over `hidden_dim`. Defaults to
            `1.0`.
        ffn_proj_factor: `"large"`: feed-forward width over `hidden_dim`
            (rounded up to a multiple of 64). Defaults to `2.6667`.
        gate_soft_cap: `"large"`: soft cap of the gate pre-activations.
            Defaults to `15.0`.
        proj_factor: `"mlstm"`: the up-projection factor. Defaults to `2.0`.
        conv_kernel_size: `"mlstm"`: the causal convolution width.
            Defaults to `4`.
        qkv_proj_blocksize: `"mlstm"`: block size of the q, k, v
            projections. Defaults to `4`.
        dropout: `"mlstm"`: dropout rate at the end of every block.
            Defaults to `0.0`.
        use_bias: bool. Biases on the blocks' projections and norms.
            Defaults to `False`.
        tie_word_embeddings: bool. Compute the logits with the transposed
            embedding matrix instead of a separate output projection.
            Defaults to `False` (as the xLSTM 7B).
        logit_soft_cap: float or `None`. Soft cap of the logits,
            `cap * tanh(logits / cap)`. Defaults to `None`.
        chunk_size: int or `"auto"`. Chunk length of the chunkwise form
            used for training and prompt processing; `"auto"` is the size
            measured fastest for the backend and head size (see
            `keras_mlstm.ops.resolve_chunk_size`). Defaults to `"auto"`.
        dtype: string or `keras.DTypePolicy`. The dtype of computations and
            weights; the recurrent state stays float32. Defaults to `None`
            (Keras' global policy).
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Example:

    >>> import numpy as np
    >>> backbone = XLSTMBackbone(vocabulary_size=100, num_layers=2,
    ...                          hidden_dim=64, num_heads=2)
    >>> hidden = backbone({"token_ids": np.ones((1, 12), "int32"),
    ...                    "padding_mask": np.ones((1, 12), "int32")})
    >>> tuple(hidden.shape)
    (1, 12, 64)

    References:
        - Beck et al., "xLSTM: Extended Long Short-Term Memory", 2024,
          arXiv:2405.04517.
        - Beck et al., "xLSTM 7B: A Recurrent LLM for Fast and Efficient
          Inference", 2025, arXiv:2503.13427.
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        hidden_dim,
        num_heads=4,
        block_variant="large",
        qk_dim_factor=0.5,
        v_dim_factor=1.0,
        ffn_proj_factor=2.6667,
        gate_soft_cap=15.0,
        proj_factor=2.0,
        conv_kernel_size=4,
        qkv_proj_blocksize=4,
        dropout=0.0,
        use_bias=False,
        tie_word_embeddings=False,
        logit_soft_cap=None,
        chunk_size="auto",
        dtype=None,
        **kwargs,
    ):
        # === Layers ===
        # Keras' own class (KerasHub's subclass of it is skipped by
        # `quantize`'s type check).
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            tie_weights=tie_word_embeddings,
            logit_soft_cap=logit_soft_cap,
            # The official small init, normal(0, sqrt(2 / (5 D))).
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=math.sqrt(2.0 / (5.0 * hidden_dim))
            ),
            dtype=dtype,
            name="token_embedding",
        )
        self.mlstm_stack = MLSTMStack(
            num_layers,
            num_heads=num_heads,
            block_variant=block_variant,
            qk_dim_factor=qk_dim_factor,
            v_dim_factor=v_dim_factor,
            ffn_proj_factor=ffn_proj_factor,
            gate_soft_cap=gate_soft_cap,
            proj_factor=proj_factor,
            conv_kernel_size=conv_kernel_size,
            qkv_proj_blocksize=qkv_proj_blocksize,
            dropout=dropout,
            use_bias=use_bias,
            chunk_size=chunk_size,
            dtype=dtype,
            name="mlstm_stack",
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
        x = self.token_embedding(token_ids)
        outputs = self.mlstm_stack(x, mask=ops.cast(padding_mask, "bool"))
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=outputs,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.block_variant = block_variant
        self.qk_dim_factor = qk_dim_factor
        self.v_dim_factor = v_dim_factor
        self.ffn_proj_factor = ffn_proj_factor
        self.gate_soft_cap = gate_soft_cap
        self.proj_factor = proj_factor
        self.conv_kernel_size = conv_kernel_size
        self.qkv_proj_blocksize = qkv_proj_blocksize
        self.dropout = dropout
        self.use_bias = use_bias
        self.tie_word_embeddings = tie_word_embeddings
        self.logit_soft_cap = logit_soft_cap
        self.chunk_size = chunk_size

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Load a backbone from a KerasHub preset, or from a `transformers`
        xLSTM checkpoint (directory or `"hf://..."`); see
        `keras_hub.models.Backbone.from_preset` for the arguments."""
        from keras_mlstm.models.hub.transformers_loader import xlstm_loader

        loader = xlstm_loader(preset)
        if loader is None:
            return super().from_preset(
                preset, load_weights=load_weights, **kwargs
            )
        return loader.load_backbone(cls, load_weights, **kwargs)

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training, mask=mask)
        # The padding mask is an input of its own (as in KerasHub's other
        # backbones): the hidden states carry no Keras mask onwards, which
        # the output embedding would drop with a warning on every call.
        set_keras_mask(outputs, None)
        return outputs

    def compute_mask(self, inputs, mask=None):
        return None

    def default_lora_layer_names(self):
        """The projections `enable_lora(rank)` adapts by default: the query
        and value projections of `"large"` blocks, the up-projection of
        `"mlstm"` blocks."""
        if self.block_variant == "large":
            return ["q", "v"]
        return ["up"]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "block_variant": self.block_variant,
                "qk_dim_factor": self.qk_dim_factor,
                "v_dim_factor": self.v_dim_factor,
                "ffn_proj_factor": self.ffn_proj_factor,
                "gate_soft_cap": self.gate_soft_cap,
                "proj_factor": self.proj_factor,
                "conv_kernel_size": self.conv_kernel_size,
                "qkv_proj_blocksize": self.qkv_proj_blocksize,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "tie_word_embeddings": self.tie_word_embeddings,
                "logit_soft_cap": self.logit_soft_cap,
                "chunk_size": self.chunk_size,
            }
        )
        return config
