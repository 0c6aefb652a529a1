"""`XLSTMBackbone`: token ids to hidden states through a stack of mLSTM
blocks, as a KerasHub `Backbone`."""

import math

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.masking import set_keras_mask
from keras_hub.models import Backbone

from keras_mlstm.models.stack import MLSTMStack
from keras_mlstm.ops.common import static_shape

INPUT_NAMES = ("token_ids", "padding_mask")


def check_token_inputs(inputs):
    """Raise ValueError unless `inputs` is `{"token_ids", "padding_mask"}`
    of two `(batch, length)` tensors, the token ids of an integer dtype
    (a float id would be truncated) and the mask bool or integer.

    Only shapes and dtypes are read, so this runs on symbolic and traced
    tensors as well, before anything is computed.
    """
    if not isinstance(inputs, dict) or set(inputs) != set(INPUT_NAMES):
        keys = sorted(inputs) if isinstance(inputs, dict) else None
        raise ValueError(
            "`inputs` must be a dict with the keys 'token_ids' and "
            "'padding_mask', each (batch, length); received "
            + (
                f"a dict with the keys {keys}."
                if isinstance(inputs, dict)
                else f"a {type(inputs).__name__}."
            )
        )
    shapes = {name: static_shape(inputs[name]) for name in INPUT_NAMES}
    for name, shape in shapes.items():
        if len(shape) != 2:
            raise ValueError(
                f"`{name}` must be 2-D, (batch, length); received shape "
                f"{shape}."
            )
    if any(
        a is not None and b is not None and a != b
        for a, b in zip(*shapes.values(), strict=True)
    ):
        raise ValueError(
            "`padding_mask` must have the shape of `token_ids`, "
            f"{shapes['token_ids']}; received shape {shapes['padding_mask']}."
        )
    for name, kinds, description in (
        ("token_ids", ("int", "uint"), "an integer"),
        ("padding_mask", ("int", "uint", "bool"), "a bool or integer"),
    ):
        dtype = keras.backend.standardize_dtype(inputs[name].dtype)
        if not dtype.startswith(kinds):
            raise ValueError(
                f"`{name}` must have {description} dtype; received dtype "
                f"{dtype}."
            )


def check_token_range(token_ids, vocabulary_size, where=None):
    """Raise ValueError unless the NumPy `token_ids` lie in
    `[0, vocabulary_size)` (where `where` is True, if given)."""
    outside = (token_ids < 0) | (token_ids >= vocabulary_size)
    if where is not None:
        outside &= where
    if outside.any():
        row, position = np.argwhere(outside)[0]
        raise ValueError(
            f"`token_ids` must lie in [0, {vocabulary_size}) (the backbone's "
            f"`vocabulary_size`); received {token_ids[row, position]} at "
            f"row {row}, position {position}."
        )


def check_host_tokens(inputs, vocabulary_size):
    """`check_token_inputs` and `check_token_range` for inputs whose token
    ids are a NumPy array (free to read: they are on the host). Tensors
    are left to `call`'s shape and dtype checks: reading them back to the
    host on every call would stall an accelerator, and an id outside the
    vocabulary gives NaN on JAX and an error on PyTorch."""
    if isinstance(inputs, dict) and isinstance(
        inputs.get("token_ids"), np.ndarray
    ):
        check_token_inputs(inputs)
        check_token_range(inputs["token_ids"], vocabulary_size)


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

    Call arguments:
        inputs: a dict with `"token_ids"`, int `(batch, length)`, and
            `"padding_mask"`, bool or int `(batch, length)` (padded steps,
            mask 0, leave the state alone). A `ValueError` names any other
            structure, rank or dtype (float ids are not rounded), and ids
            outside `[0, vocabulary_size)` given as NumPy arrays.
        training: enables the blocks' dropout (`dropout > 0`).

    Returns:
        The hidden states, `(batch, length, hidden_dim)`.

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
        # A reloaded quantized backbone gets a map of policies (see
        # `keras_mlstm.layers.base.SublayerPolicies`); the embedding takes
        # its own from it, since Keras's `Embedding` saves an int8 table's
        # scale only when its own policy says int8 (Keras 3.15; KerasHub's
        # GPT-2, which hands the map over, fails to save once reloaded).
        embedding_dtype = dtype
        if isinstance(dtype, keras.dtype_policies.DTypePolicyMap):
            embedding_dtype = dtype["token_embedding"]
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
            dtype=embedding_dtype,
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

    def __call__(self, inputs, *args, **kwargs):
        check_host_tokens(inputs, self.vocabulary_size)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        check_token_inputs(inputs)
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
