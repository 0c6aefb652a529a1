"""Models built from stacked mLSTM layers and blocks."""

from keras_mlstm.models.builder import MaskedPooling
from keras_mlstm.models.builder import build_mlstm_model
from keras_mlstm.models.convert import from_xlstm
from keras_mlstm.models.convert import load_xlstm_weights
from keras_mlstm.models.convert import xlstm_state_dict
from keras_mlstm.models.generation import generate
from keras_mlstm.models.stack import MLSTMStack
from keras_mlstm.models.stacked import mLSTM

__all__ = [
    "MLSTMStack",
    "MaskedPooling",
    "build_mlstm_model",
    "from_xlstm",
    "generate",
    "load_xlstm_weights",
    "mLSTM",
    "xlstm_state_dict",
]
