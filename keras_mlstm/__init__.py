"""keras_mlstm: the mLSTM of xLSTM (Beck et al. 2024) for Keras 3.

Runs on TensorFlow, JAX and PyTorch through ``keras.ops``.
"""

from keras_mlstm import layers
from keras_mlstm import ops
from keras_mlstm.layers import MLSTM
from keras_mlstm.ops import mlstm
from keras_mlstm.ops import mlstm_step
from keras_mlstm.ops import resolve_form

__version__ = "0.1.0"

__all__ = [
    "MLSTM",
    "layers",
    "mlstm",
    "mlstm_step",
    "ops",
    "resolve_form",
]
