"""Keras layers built on the mLSTM ops."""

from keras_mlstm.layers.block import MLSTMBlock
from keras_mlstm.layers.embedding import ReversibleEmbedding
from keras_mlstm.layers.mlstm import MLSTM

__all__ = ["MLSTM", "MLSTMBlock", "ReversibleEmbedding"]
