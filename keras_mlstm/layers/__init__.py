"""Keras layers built on the mLSTM ops."""

from keras_mlstm.layers.mlstm import MLSTM

__all__ = ["MLSTM"]
