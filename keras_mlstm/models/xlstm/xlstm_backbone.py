"""`XLSTMBackbone`: token ids to hidden states through a stack of mLSTM
blocks, as a KerasHub `Backbone`."""

import keras
import numpy as np
from keras_hub.models import Backbone

from keras_mlstm.layers.base import RENAMED
from keras_mlstm.layers.base import reject_renamed
from keras_mlstm.layers.base import small_init_std
from keras_mlstm.layers.base import upgrade_config
from keras_mlstm.models.stack import STACK_ARGUMENTS
from keras_mlstm.models.stack import MLSTMStack
from keras_mlstm.models.stack import split_stack_arguments
from keras_mlstm.models.xlstm.xlstm_presets import PresetLoading
from keras_mlstm.ops.common import static_shape

INPUT_NAMES = ("token_ids", "padding_mask")
# The stack's projections, by how a layout map splits them: by columns
# (output features) or by rows (input features).
COLUMN_PARALLEL = ("up", "q", "k", "v", "output_gate", "ffn_gate", "ffn_up")
ROW_PARALLEL = ("down", "out", "ffn_down")


def check_token_inputs(inputs):
    """Raise ValueError unless `inputs` is `{"token_ids", "padding_mask"}`
    of two `(batch, length)` tensors, the token ids of an integer dtype
    (a float id would be truncated) and the mask bool or integer.

    Only shapes and dtypes are read, so this runs on symbolic and traced
    tensors as well, before anything is computed.
    """
    if not isinstance(inputs, dict) or set(inputs) != set(INPUT_NAMES):
        raise ValueError(
            "`inputs` must be a dict with the keys 'token_ids' and "
            "'padding_mask', each (batch, length); received "
            + (
                f"a dict with the keys {sorted(inputs)}."
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
class XLSTMBackbone(PresetLoading, Backbone):
    """The xLSTM language-model core: a token embedding and an
    `MLSTMStack` (`num_layers` mLSTM blocks and a final norm).

    The default constructor gives a randomly initialised model of any size;
    `from_preset` loads a saved one: a KerasHub preset directory, the name
    of a preset in `xlstm_presets` (`"xlstm_7b"`), or a Hugging Face
    `transformers` xLSTM checkpoint (a local directory or
    `"hf://NX-AI/xLSTM-7b"`).

    The blocks are configured by `MLSTMStack`'s own arguments, passed on
    unchanged (`num_heads`, `block_variant`, `dropout`, `use_bias`, the
    variant-specific ones, `chunk_size`, ...): see `MLSTMStack` for each
    one and its default. `"large"` blocks are the xLSTM 7B's and the layout
    of `transformers`' `xLSTMForCausalLM`; `"mlstm"` ones the xLSTM
    paper's.

    Args:
        vocabulary_size: int. The size of the token vocabulary.
        num_layers: int. The number of blocks.
        hidden_dim: int. The embedding width, kept through the stack.
        tie_word_embeddings: bool. Compute the logits with the transposed
            embedding matrix instead of a separate output projection.
            Defaults to `False` (as the xLSTM 7B).
        logit_soft_cap: float or `None`. Soft cap of the logits,
            `cap * tanh(logits / cap)`. Defaults to `None`.
        dtype: string or `keras.DTypePolicy`. The dtype of computations and
            weights; the recurrent state stays float32. Defaults to `None`
            (Keras' global policy).
        **kwargs: `MLSTMStack` arguments (see above), then `keras.Model`
            ones (e.g. `name`).

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
        tie_word_embeddings=False,
        logit_soft_cap=None,
        dtype=None,
        **kwargs,
    ):
        reject_renamed("XLSTMBackbone", kwargs, RENAMED)
        stack_kwargs, model_kwargs = split_stack_arguments(kwargs)
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
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=small_init_std(hidden_dim),
                seed=stack_kwargs.get("seed"),
            ),
            dtype=embedding_dtype,
            name="token_embedding",
        )
        self.mlstm_stack = MLSTMStack(
            num_layers, dtype=dtype, name="mlstm_stack", **stack_kwargs
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
        x = self.token_embedding(token_ids)
        outputs = self.mlstm_stack(x, padding_mask=padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=outputs,
            dtype=dtype,
            **model_kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.tie_word_embeddings = tie_word_embeddings
        self.logit_soft_cap = logit_soft_cap
        # The stack's arguments (`num_layers`, `num_heads`, ...) read as
        # the backbone's own, as KerasHub's backbones expose theirs.
        stack_config = self.mlstm_stack.get_config()
        for name in STACK_ARGUMENTS:
            setattr(self, name, stack_config[name])

    def __call__(self, inputs, *args, **kwargs):
        check_host_tokens(inputs, self.vocabulary_size)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        check_token_inputs(inputs)
        return super().call(inputs, training=training, mask=mask)

    def default_lora_layer_names(self):
        """The projections `enable_lora(rank)` adapts by default: the query
        and value projections of `"large"` blocks, the up-projection of
        `"mlstm"` blocks."""
        if self.block_variant == "large":
            return ["q", "v"]
        return ["up"]

    @staticmethod
    def get_layout_map(
        device_mesh,
        model_parallel_dim_name="model",
        data_parallel_dim_name="batch",
    ):
        """A `keras.distribution.LayoutMap` that shards the backbone's
        weights over the `model` axis of `device_mesh`, as KerasHub's
        Gemma and Llama backbones offer.

        The projections that widen (the up-projection, q, k, v, the output
        gate, the feed-forward's gate and up) are split by columns, those
        that narrow (the down-projection, the output projection, the
        feed-forward's down) by rows, and the embedding table (and a
        separate output projection) by vocabulary; their other axis is
        split over the `batch` axis, as Gemma's. Gates, norms, the causal
        convolution and the block-diagonal q, k, v of `"mlstm"` blocks are
        small and stay replicated.

        Args:
            device_mesh: the `keras.distribution.DeviceMesh`.
            model_parallel_dim_name: the mesh axis the weights are split
                over. Defaults to `"model"`.
            data_parallel_dim_name: the mesh axis the data is split over.
                Defaults to `"batch"`.

        Returns:
            The `keras.distribution.LayoutMap`, for
            `keras.distribution.ModelParallel(layout_map=...)`.

        Example:

        >>> import keras
        >>> devices = keras.distribution.list_devices()[:1]
        >>> mesh = keras.distribution.DeviceMesh(
        ...     (1, 1), ["batch", "model"], devices)
        >>> layout_map = XLSTMBackbone.get_layout_map(mesh)
        >>> tuple(layout_map["mlstm_stack/block_0/up/kernel"].axes)
        ('batch', 'model')

        References:
            - Shoeybi et al., "Megatron-LM", 2019, arXiv:1909.08053 (the
              column and row splits).
        """
        if not isinstance(device_mesh, keras.distribution.DeviceMesh):
            raise ValueError(
                "`device_mesh` must be a keras.distribution.DeviceMesh; "
                f"received {type(device_mesh).__name__}."
            )
        for argument, axis in (
            ("model_parallel_dim_name", model_parallel_dim_name),
            ("data_parallel_dim_name", data_parallel_dim_name),
        ):
            if axis not in device_mesh.axis_names:
                raise ValueError(
                    f"`{argument}` ({axis!r}) must be an axis of "
                    f"`device_mesh`, {device_mesh.axis_names}."
                )
        model, data = model_parallel_dim_name, data_parallel_dim_name
        layout_map = keras.distribution.LayoutMap(device_mesh)
        layout_map["token_embedding/embeddings"] = (model, data)
        layout_map["token_embedding/reverse_embeddings"] = (data, model)
        blocks = r"mlstm_stack/block_\d+"
        columns, rows = "|".join(COLUMN_PARALLEL), "|".join(ROW_PARALLEL)
        layout_map[rf"{blocks}/({columns})/kernel"] = (data, model)
        layout_map[rf"{blocks}/({rows})/kernel"] = (model, data)
        return layout_map

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "tie_word_embeddings": self.tie_word_embeddings,
                "logit_soft_cap": self.logit_soft_cap,
                **{name: getattr(self, name) for name in STACK_ARGUMENTS},
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(upgrade_config(config, RENAMED))
