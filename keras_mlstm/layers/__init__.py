"""Keras layers built on the mLSTM ops."""

from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.embedding import ReversibleEmbedding
from keras_mlstm.layers.large_block import MLSTMLargeBlock
from keras_mlstm.layers.mlstm import MLSTM
from keras_mlstm.layers.mlstm_cell import MLSTMCell
from keras_mlstm.layers.soft_cap import SoftCap

__all__ = [
    "MLSTM",
    "MLSTMBlock",
    "MLSTMCell",
    "MLSTMLargeBlock",
    "ReversibleEmbedding",
    "SoftCap",
]
