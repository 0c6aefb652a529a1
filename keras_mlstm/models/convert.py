"""Weight import from the official PyTorch `xlstm` package (PyPI
`xlstm`, Apache-2.0): `mLSTMBlock` and `xLSTMBlockStack` made of
mLSTM blocks, and the xLSTM 7B (`xlstm.xlstm_large`) block and block
stack. Its language models load into KerasHub
(`keras_mlstm.models.hub.xlstm_converter`), which reuses the helpers
here.

Only the state dict and the config's plain attributes are read, so this
module imports neither `torch` nor `xlstm`.
"""

import keras
import numpy as np

from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.large_block import MLSTMLargeBlock
from keras_mlstm.models.stack import MLSTMStack

# Our block weight -> (official key under the block's prefix, transform).
_BLOCK_WEIGHTS = {
    "norm_weight": ("xlstm_norm.weight", None),
    "up.kernel": ("xlstm.proj_up.weight", "transpose"),
    "up.bias": ("xlstm.proj_up.bias", None),
    "conv_kernel": ("xlstm.conv1d.conv.weight", "conv"),
    "conv_bias": ("xlstm.conv1d.conv.bias", None),
    "q_kernel": ("xlstm.q_proj.weight", None),
    "k_kernel": ("xlstm.k_proj.weight", None),
    "v_kernel": ("xlstm.v_proj.weight", None),
    "q_bias": ("xlstm.q_proj.bias", None),
    "k_bias": ("xlstm.k_proj.bias", None),
    "v_bias": ("xlstm.v_proj.bias", None),
    "input_gate_kernel": ("xlstm.mlstm_cell.igate.weight", "transpose"),
    "input_gate_bias": ("xlstm.mlstm_cell.igate.bias", None),
    "forget_gate_kernel": ("xlstm.mlstm_cell.fgate.weight", "transpose"),
    "forget_gate_bias": ("xlstm.mlstm_cell.fgate.bias", None),
    "head_norm_weight": ("xlstm.mlstm_cell.outnorm.weight", None),
    "skip": ("xlstm.learnable_skip", None),
    "down.kernel": ("xlstm.proj_down.weight", "transpose"),
    "down.bias": ("xlstm.proj_down.bias", None),
}


# The same for MLSTMLargeBlock (xlstm_large's mLSTMBlock).
_LARGE_BLOCK_WEIGHTS = {
    "norm_mlstm_weight": ("norm_mlstm.weight", None),
    "q.kernel": ("mlstm_layer.q.weight", "transpose"),
    "q.bias": ("mlstm_layer.q.bias", None),
    "k.kernel": ("mlstm_layer.k.weight", "transpose"),
    "k.bias": ("mlstm_layer.k.bias", None),
    "v.kernel": ("mlstm_layer.v.weight", "transpose"),
    "v.bias": ("mlstm_layer.v.bias", None),
    "output_gate.kernel": ("mlstm_layer.ogate_preact.weight", "transpose"),
    "output_gate.bias": ("mlstm_layer.ogate_preact.bias", None),
    "input_gate_kernel": ("mlstm_layer.igate_preact.weight", "transpose"),
    "input_gate_bias": ("mlstm_layer.igate_preact.bias", None),
    "forget_gate_kernel": ("mlstm_layer.fgate_preact.weight", "transpose"),
    "forget_gate_bias": ("mlstm_layer.fgate_preact.bias", None),
    "head_norm_weight": ("mlstm_layer.multihead_norm.weight", None),
    "out.kernel": ("mlstm_layer.out_proj.weight", "transpose"),
    "out.bias": ("mlstm_layer.out_proj.bias", None),
    "norm_ffn_weight": ("norm_ffn.weight", None),
    "ffn_gate.kernel": ("ffn.proj_up_gate.weight", "transpose"),
    "ffn_gate.bias": ("ffn.proj_up_gate.bias", None),
    "ffn_up.kernel": ("ffn.proj_up.weight", "transpose"),
    "ffn_up.bias": ("ffn.proj_up.bias", None),
    "ffn_down.kernel": ("ffn.proj_down.weight", "transpose"),
    "ffn_down.bias": ("ffn.proj_down.bias", None),
}
# The norms' biases (`MLSTMLargeBlock.biases`, with `use_bias`).
_LARGE_BLOCK_BIASES = {
    "norm_mlstm": "norm_mlstm.bias",
    "head_norm": "mlstm_layer.multihead_norm.bias",
    "norm_ffn": "norm_ffn.bias",
}


def to_float32(value):
    """A state-dict entry (torch tensor or array) as a float32 array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype="float32")


def _transform(value, how):
    if how == "transpose":
        return value.T
    if how == "conv":  # (I, 1, K) depthwise Conv1d -> (K, I)
        return value[:, 0, :].T
    return value


class StateDictLoader:
    """Assigns state-dict entries to variables, remembering what it used.

    Entries are converted to float32 one at a time, when assigned, so a
    lazy mapping (e.g. of a safetensors file) is read tensor by tensor.
    """

    def __init__(self, state_dict):
        self.entries = state_dict
        self.used = set()

    def assign(self, variable, key, how=None):
        if key not in self.entries:
            raise ValueError(
                f"The state dict has no entry {key!r} for the Keras weight "
                f"{variable.path!r}."
            )
        value = _transform(to_float32(self.entries[key]), how)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"State-dict entry {key!r} has shape {value.shape} (after "
                f"conversion); the Keras weight {variable.path!r} has shape "
                f"{tuple(variable.shape)}."
            )
        variable.assign(value)
        self.used.add(key)

    def finish(self):
        unused = sorted(set(self.entries) - self.used)
        if unused:
            raise ValueError(
                "These state-dict entries have no counterpart in the Keras "
                "model (unsupported parts such as sLSTM or feed-forward "
                f"blocks?): {unused}."
            )


def block_variable(block, name):
    """The variable at `name` ("up.kernel": the `kernel` of the block's
    `up` sublayer), or None where the block has none (a bias without
    `use_bias`)."""
    owner, _, attribute = name.rpartition(".")
    if owner:
        block = getattr(block, owner)
    return getattr(block, attribute)


def _load_block(loader, block, prefix):
    large = isinstance(block, MLSTMLargeBlock)
    table = _LARGE_BLOCK_WEIGHTS if large else _BLOCK_WEIGHTS
    for name, (key, how) in table.items():
        variable = block_variable(block, name)
        if variable is not None:
            loader.assign(variable, prefix + key, how)
    if large:
        for name, variable in block.biases.items():
            loader.assign(variable, prefix + _LARGE_BLOCK_BIASES[name])


def load_stack_weights(loader, stack, prefix):
    for index, block in enumerate(stack.blocks):
        _load_block(loader, block, f"{prefix}blocks.{index}.")
    if not stack.post_norm:
        return
    if stack.block_variant == "large":
        loader.assign(stack.post_norm_weight, prefix + "out_norm.weight")
        if stack.post_norm_bias is not None:
            loader.assign(stack.post_norm_bias, prefix + "out_norm.bias")
    else:
        loader.assign(
            stack.post_norm_weight, prefix + "post_blocks_norm.weight"
        )


def load_xlstm_weights(target, state_dict):
    """Load an official `xlstm` state dict into a built Keras object.

    Args:
        target: a built `MLSTMBlock` (from an official `mLSTMBlock`) or
            `MLSTMLargeBlock` (from `xlstm_large`'s `mLSTMBlock`), a
            built `MLSTMStack` (from an `xLSTMBlockStack` of mLSTM
            blocks, or an `xLSTMLargeBlockStack`). Language models load
            into KerasHub: `XLSTMCausalLM.from_xlstm`
            (`keras_mlstm.models.hub`).
        state_dict: the official module's `state_dict()` (torch tensors
            or NumPy arrays).

    Returns:
        `target`, with its weights replaced.

    Raises:
        ValueError: for an unbuilt `target`, a missing entry, a shape
            mismatch, or entries the Keras model has no place for (e.g.
            sLSTM blocks).

    Example:

    >>> import keras, numpy as np
    >>> from keras_mlstm import MLSTMBlock, xlstm_state_dict
    >>> source, target = MLSTMBlock(num_heads=2), MLSTMBlock(num_heads=2)
    >>> x = np.random.normal(size=(1, 3, 16)).astype("float32")
    >>> _ = source(x), target(x)
    >>> state = xlstm_state_dict(source)  # or torch_module.state_dict()
    >>> _ = load_xlstm_weights(target, state)
    >>> same = keras.ops.all(keras.ops.isclose(source(x), target(x)))
    >>> bool(keras.ops.convert_to_numpy(same))
    True

    References:
        - The official implementation, github.com/NX-AI/xlstm
          (`xlstm.xlstm_lm_model`, `xlstm.xlstm_block_stack`).
    """
    _check_built("target", target)
    loader = StateDictLoader(state_dict)
    if isinstance(target, (MLSTMBlock, MLSTMLargeBlock)):
        _load_block(loader, target, "")
    elif isinstance(target, MLSTMStack):
        load_stack_weights(loader, target, "")
    else:
        raise ValueError(
            "`target` must be a built MLSTMBlock, MLSTMLargeBlock or "
            f"MLSTMStack; received {type(target)}. Language models load "
            "with keras_mlstm.models.hub.XLSTMCausalLM.from_xlstm."
        )
    loader.finish()
    return target


def _export_block(block, prefix, out):
    def value_of(variable):
        return keras.ops.convert_to_numpy(variable.value).astype("float32")

    large = isinstance(block, MLSTMLargeBlock)
    table = _LARGE_BLOCK_WEIGHTS if large else _BLOCK_WEIGHTS
    for name, (key, how) in table.items():
        variable = block_variable(block, name)
        if variable is None:
            continue
        value = value_of(variable)
        if how == "transpose":
            value = value.T
        elif how == "conv":  # (K, I) -> (I, 1, K)
            value = value.T[:, None, :]
        out[prefix + key] = value
    if large:
        for name, variable in block.biases.items():
            out[prefix + _LARGE_BLOCK_BIASES[name]] = value_of(variable)


def _check_built(name, layer):
    """ValueError naming `name` unless `layer` (if a Keras layer) is built:
    an unbuilt layer has no weights to read or write yet."""
    if isinstance(layer, keras.layers.Layer) and not layer.built:
        raise ValueError(
            f"`{name}` ({type(layer).__name__} '{layer.name}') must be "
            "built first, so that its weights exist: call it once on inputs "
            "of the official model's width, e.g. `layer(np.zeros((1, 1, "
            "embedding_dim), 'float32'))`, or use "
            "`keras_mlstm.from_xlstm(module)`, which builds it."
        )


def xlstm_state_dict(source):
    """The weights of a built `MLSTMBlock`, `MLSTMLargeBlock` or
    `MLSTMStack` as an official `xlstm` state dict (NumPy arrays;
    `torch.from_numpy` each entry for `module.load_state_dict`): the
    inverse of `load_xlstm_weights`.

    Args:
        source: a built `MLSTMBlock`, `MLSTMLargeBlock` or
            `MLSTMStack`.

    Returns:
        A dict from official parameter names to float32 arrays.

    Raises:
        ValueError: for an unbuilt `source` or any other object.

    Example:

    >>> import numpy as np
    >>> from keras_mlstm import MLSTMBlock
    >>> block = MLSTMBlock(num_heads=2)
    >>> _ = block(np.zeros((1, 3, 16), "float32"))
    >>> xlstm_state_dict(block)["xlstm.proj_up.weight"].shape
    (128, 16)

    References:
        - The official implementation, github.com/NX-AI/xlstm.
    """
    _check_built("source", source)
    out = {}
    if isinstance(source, (MLSTMBlock, MLSTMLargeBlock)):
        _export_block(source, "", out)
    elif isinstance(source, MLSTMStack):
        for index, block in enumerate(source.blocks):
            _export_block(block, f"blocks.{index}.", out)
        if source.post_norm:
            name = "post_blocks_norm"
            if source.block_variant == "large":
                name = "out_norm"
            for part in ("weight", "bias"):
                variable = getattr(source, f"post_norm_{part}")
                if variable is not None:
                    out[f"{name}.{part}"] = keras.ops.convert_to_numpy(
                        variable.value
                    ).astype("float32")
    else:
        raise ValueError(
            "`source` must be a built MLSTMBlock, MLSTMLargeBlock or "
            "MLSTMStack; received "
            f"{type(source)}."
        )
    return out


def _layer_kwargs(layer_config):
    """MLSTMBlock arguments from an official `mLSTMLayerConfig`."""
    multiple = getattr(layer_config, "round_proj_up_to_multiple_of", 64)
    round_up = getattr(layer_config, "round_proj_up_dim_up", True)
    if multiple != 64 or not round_up:
        raise ValueError(
            "Only the official default rounding of the inner width (up to "
            "a multiple of 64) is supported; received "
            f"round_proj_up_to_multiple_of={multiple}, "
            f"round_proj_up_dim_up={round_up}."
        )
    if layer_config.conv1d_kernel_size < 1:
        raise ValueError(
            "conv1d_kernel_size=0 (no convolution) is not supported; "
            f"received {layer_config.conv1d_kernel_size}."
        )
    return {
        "num_heads": layer_config.num_heads,
        "proj_factor": layer_config.proj_factor,
        "conv_kernel_size": layer_config.conv1d_kernel_size,
        "qkv_proj_blocksize": layer_config.qkv_proj_blocksize,
        "use_bias": bool(layer_config.bias),
    }


def stack_kwargs(config):
    """MLSTMStack arguments from an official `xLSTMBlockStackConfig`."""
    slstm = list(config.slstm_at) if config.slstm_at else []
    if slstm or config.mlstm_block is None:
        raise ValueError(
            "Only stacks of mLSTM blocks are supported; this one has sLSTM "
            f"blocks at {slstm or 'every position'}."
        )
    kwargs = _layer_kwargs(config.mlstm_block.mlstm)
    kwargs.pop("use_bias")
    return dict(
        kwargs,
        num_layers=config.num_blocks,
        dropout=float(config.dropout),
        use_bias=bool(config.bias),
        post_norm=bool(config.add_post_blocks_norm),
    )


def from_xlstm(module):
    """Build the Keras counterpart of an official `xlstm` block or stack
    and load its weights.

    Args:
        module: an official PyTorch `mLSTMBlock` or `xLSTMBlockStack`
            (of mLSTM blocks), or an xLSTM 7B `xLSTMLargeBlockStack` or
            its `mLSTMBlock` (`xlstm.xlstm_large.model`). Language
            models (`xLSTMLMModel`, `xLSTMLarge`) load into KerasHub
            with `keras_mlstm.models.hub.XLSTMCausalLM.from_xlstm`.

    Returns:
        An `MLSTMBlock` / `MLSTMLargeBlock` or an `MLSTMStack`
        computing the same function in the current Keras backend, for any
        sequence length.

    Raises:
        ValueError: for unsupported modules or configurations (language
            models, sLSTM blocks, no convolution, other inner-width
            rounding, fused xLSTM 7B weights).

    Example:

    >>> import keras, numpy as np, torch
    >>> from xlstm.blocks.mlstm.block import mLSTMBlock, mLSTMBlockConfig
    >>> from xlstm.blocks.mlstm.layer import mLSTMLayerConfig
    >>> config = mLSTMBlockConfig(
    ...     mlstm=mLSTMLayerConfig(
    ...         embedding_dim=32, context_length=16, num_heads=2
    ...     ),
    ...     _num_blocks=1,
    ... )
    >>> config.__post_init__()
    >>> official = mLSTMBlock(config).eval()
    >>> block = from_xlstm(official)  # an MLSTMBlock with its weights
    >>> x = np.random.default_rng(0).normal(size=(2, 16, 32))
    >>> x = x.astype("float32")
    >>> with torch.no_grad():
    ...     expected = official(torch.from_numpy(x)).numpy()
    >>> ours = keras.ops.convert_to_numpy(block(x))
    >>> bool(np.allclose(ours, expected, atol=1e-5))
    True

    References:
        - The official implementation, github.com/NX-AI/xlstm.
    """
    kind = type(module).__name__
    if kind in ("xLSTMLMModel", "xLSTMLarge"):
        raise ValueError(
            f"`module` is a language model ({kind}): load it into KerasHub "
            "with keras_mlstm.models.hub.XLSTMCausalLM.from_xlstm(module) "
            '(pip install -e ".[hub]").'
        )
    if kind == "xLSTMLargeBlockStack" or (
        kind == "mLSTMBlock" and hasattr(module, "mlstm_layer")
    ):
        return _from_large(module, kind)
    if kind not in ("mLSTMBlock", "xLSTMBlockStack"):
        raise ValueError(
            "`module` must be an official xlstm mLSTMBlock or "
            f"xLSTMBlockStack; received {kind} (not supported)."
        )
    state_dict = module.state_dict()
    config = module.config
    if kind == "mLSTMBlock":
        layer_config = config.mlstm
        block = MLSTMBlock(
            num_layers=layer_config._num_blocks or 1,
            **_layer_kwargs(layer_config),
        )
        block.build((None, None, layer_config.embedding_dim))
        return load_xlstm_weights(block, state_dict)
    stack = MLSTMStack(**stack_kwargs(config))
    stack.build((None, None, config.embedding_dim))
    return load_xlstm_weights(stack, state_dict)


def large_kwargs(config):
    """MLSTMLargeBlock arguments from an official `xLSTMLargeConfig`."""
    if getattr(config, "weight_mode", "single") != "single":
        raise ValueError(
            "Only weight_mode='single' xLSTM 7B weights are supported; "
            f"received weight_mode={config.weight_mode!r}."
        )
    if getattr(config, "ffn_round_up_to_multiple_of", 64) != 64:
        raise ValueError(
            "Only ffn_round_up_to_multiple_of=64 is supported; received "
            f"{config.ffn_round_up_to_multiple_of}."
        )
    # The read-out's epsilon, which the Keras ops fix at 1e-6; the norms'
    # (`norm_eps`) is the blocks' `norm_epsilon`.
    if getattr(config, "eps", 1e-6) != 1e-6:
        raise ValueError(f"Only eps=1e-6 is supported; received {config.eps}.")
    return {
        "num_heads": config.num_heads,
        "qk_dim_factor": config.qk_dim_factor,
        "v_dim_factor": config.v_dim_factor,
        "ffn_proj_factor": config.ffn_proj_factor,
        "gate_soft_cap": config.gate_soft_cap,
        "norm_epsilon": float(getattr(config, "norm_eps", 1e-6)),
        "use_bias": bool(config.use_bias),
    }


def _from_large(module, kind):
    config = module.config
    kwargs = large_kwargs(config)
    state_dict = module.state_dict()
    if kind == "mLSTMBlock":
        block = MLSTMLargeBlock(num_layers=config.num_blocks, **kwargs)
        block.build((None, None, config.embedding_dim))
        return load_xlstm_weights(block, state_dict)
    stack = MLSTMStack(
        **kwargs,
        num_layers=config.num_blocks,
        block_variant="large",
        post_norm=bool(config.add_out_norm),
    )
    stack.build((None, None, config.embedding_dim))
    return load_xlstm_weights(stack, state_dict)
