"""keras_mlstm: the mLSTM of xLSTM (Beck et al. 2024) for Keras 3.

Runs on TensorFlow, JAX and PyTorch through `keras.ops`.
"""

from keras_mlstm import config
from keras_mlstm import layers
from keras_mlstm import models
from keras_mlstm import ops
from keras_mlstm.layers import MLSTM
from keras_mlstm.layers import MLSTMBlock
from keras_mlstm.layers import MLSTMCell
from keras_mlstm.layers import MLSTMLargeBlock
from keras_mlstm.models import MaskedPooling
from keras_mlstm.models import MLSTMStack
from keras_mlstm.models import build_mlstm_model
from keras_mlstm.models import from_xlstm
from keras_mlstm.models import load_xlstm_weights
from keras_mlstm.models import mLSTM
from keras_mlstm.models import xlstm_state_dict
from keras_mlstm.ops import mlstm
from keras_mlstm.ops import mlstm_step
from keras_mlstm.ops import resolve_chunk_size
from keras_mlstm.ops import resolve_form

__version__ = "0.1.0"

__all__ = [
    "MLSTM",
    "MLSTMBlock",
    "MLSTMCell",
    "MLSTMLargeBlock",
    "MLSTMStack",
    "MaskedPooling",
    "build_mlstm_model",
    "config",
    "from_xlstm",
    "layers",
    "load_xlstm_weights",
    "mLSTM",
    "mlstm",
    "mlstm_step",
    "models",
    "ops",
    "resolve_chunk_size",
    "resolve_form",
    "xlstm_state_dict",
]
