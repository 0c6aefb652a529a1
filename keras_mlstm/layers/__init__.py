"""Keras layers built on the mLSTM ops."""

from keras_mlstm.layers import removed  # noqa: F401 (registers the names)
from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.large_block import MLSTMLargeBlock
from keras_mlstm.layers.mlstm import MLSTM
from keras_mlstm.layers.mlstm_cell import MLSTMCell

__all__ = [
    "MLSTM",
    "MLSTMBlock",
    "MLSTMCell",
    "MLSTMLargeBlock",
]
