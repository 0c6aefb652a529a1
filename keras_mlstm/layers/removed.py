"""Layers removed by issue #20, still registered under their names so that
a file saved with one fails to load with an error that says what to use
instead (docs/migration.md). Nothing in keras_mlstm used them."""

import keras

REMOVED = {
    "ReversibleEmbedding": (
        "keras.layers.ReversibleEmbedding (Keras >= 3.12; tie_weights=True "
        "is the removed layer; its config and weights load unchanged) or "
        "keras_hub.layers.ReversibleEmbedding"
    ),
    "SoftCap": (
        "a keras.layers.Lambda of cap * keras.ops.tanh(x / cap), or "
        "keras.layers.ReversibleEmbedding(logit_soft_cap=cap) for logits"
    ),
}


def _removed_layer(name, instead):
    def refuse(*args, **kwargs):
        raise TypeError(
            f"keras_mlstm.{name} was removed (issue #20, docs/migration.md): "
            f"use {instead}."
        )

    layer = type(
        name,
        (keras.layers.Layer,),
        {
            "__init__": refuse,
            "from_config": classmethod(refuse),
            "__doc__": f"Removed: use {instead}.",
        },
    )
    return keras.saving.register_keras_serializable(
        package="keras_mlstm", name=name
    )(layer)


for _name, _instead in REMOVED.items():
    _removed_layer(_name, _instead)
