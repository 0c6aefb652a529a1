"""Models built from stacked mLSTM layers and blocks. The KerasHub
language models are `keras_mlstm.models.xlstm` (the `hub` extra), which
this package does not import."""

from keras_mlstm.models.builder import build_mlstm_model
from keras_mlstm.models.convert import from_xlstm
from keras_mlstm.models.convert import load_xlstm_weights
from keras_mlstm.models.convert import xlstm_state_dict
from keras_mlstm.models.masked_pooling import MaskedPooling
from keras_mlstm.models.pyxlstm import mLSTM
from keras_mlstm.models.stack import MLSTMStack

__all__ = [
    "MLSTMStack",
    "MaskedPooling",
    "build_mlstm_model",
    "from_xlstm",
    "load_xlstm_weights",
    "mLSTM",
    "xlstm_state_dict",
]
