"""Language models of the official PyTorch `xlstm` package
(`xLSTMLMModel` of mLSTM blocks; the xLSTM 7B `xLSTMLarge`) as
`XLSTMBackbone` arguments and weights. Only the module's config and
state dict are read, so nothing here imports `torch` or `xlstm`."""

import numpy as np

from keras_mlstm.models.convert import StateDictLoader
from keras_mlstm.models.convert import large_kwargs
from keras_mlstm.models.convert import load_stack_weights
from keras_mlstm.models.convert import stack_kwargs
from keras_mlstm.models.convert import to_float32


def backbone_kwargs_from_xlstm(module):
    """`(XLSTMBackbone kwargs, embedding key, stack prefix)` for an
    official `xLSTMLMModel` or `xLSTMLarge`; ValueError naming the
    setting for configurations the Keras blocks do not have."""
    kind = type(module).__name__
    if kind not in ("xLSTMLarge", "xLSTMLMModel"):
        raise ValueError(
            "`module` must be an official xlstm xLSTMLMModel or xLSTMLarge; "
            f"received {kind}. Blocks and stacks convert with "
            "keras_mlstm.from_xlstm."
        )
    config = module.config
    if kind == "xLSTMLarge":
        return large_backbone_kwargs(config), "embedding.weight", "backbone."
    kwargs = stack_kwargs(config)
    if not kwargs.pop("post_norm"):
        raise ValueError(
            "xLSTMLMModel models without the post-blocks norm are not "
            "supported (add_post_blocks_norm=False)."
        )
    if kwargs["use_bias"]:
        raise ValueError(
            "xLSTMLMModel models with biases (bias=True) are not supported: "
            "their post-blocks norm has a bias the Keras stack lacks. "
            "Convert the xLSTMBlockStack instead."
        )
    kwargs = dict(
        kwargs,
        vocabulary_size=config.vocab_size,
        num_layers=kwargs.pop("num_blocks"),
        hidden_dim=config.embedding_dim,
        block_variant="mlstm",
        tie_word_embeddings=bool(config.tie_weights),
    )
    return kwargs, "token_embedding.weight", "xlstm_block_stack."


def large_backbone_kwargs(config):
    """`XLSTMBackbone` arguments for an xLSTM 7B configuration: the
    official `xLSTMLargeConfig` or anything with its fields (the
    `transformers` `xLSTMConfig` has them under the same names)."""
    if not config.add_out_norm:
        raise ValueError(
            "xLSTM 7B models without the output norm are not supported "
            "(add_out_norm=False)."
        )
    return dict(
        large_kwargs(config),
        vocabulary_size=config.vocab_size,
        num_layers=config.num_blocks,
        hidden_dim=config.embedding_dim,
        block_variant="large",
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        logit_soft_cap=config.output_logit_soft_cap,
    )


def load_language_model_weights(backbone, state_dict, embedding_key, prefix):
    """Assign a language model's state dict to a built `XLSTMBackbone`:
    the embedding at `embedding_key`, the blocks and final norm under
    `prefix`, and `lm_head.weight` (which must equal the embedding
    when the backbone ties them). Every entry must be used."""
    loader = StateDictLoader(state_dict)
    embedding = backbone.token_embedding
    loader.assign(embedding.embeddings, embedding_key)
    load_stack_weights(loader, backbone.mlstm_stack, prefix)
    if not backbone.tie_word_embeddings:
        loader.assign(
            embedding.reverse_embeddings, "lm_head.weight", "transpose"
        )
    elif "lm_head.weight" in loader.entries:
        head = to_float32(loader.entries["lm_head.weight"])
        if not np.array_equal(head, to_float32(loader.entries[embedding_key])):
            raise ValueError(
                "The backbone ties its output projection to the embedding, "
                "but the state dict's 'lm_head.weight' differs from "
                f"{embedding_key!r}: use tie_word_embeddings=False."
            )
        loader.used.add("lm_head.weight")
    loader.finish()
