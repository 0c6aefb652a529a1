"""The mLSTM computation as pure functions of tensors, through `keras.ops`.

`mlstm` runs a whole sequence in one of three equivalent forms (parallel,
chunkwise, recurrent) picked by `resolve_form`; `mlstm_step` runs one
time step. See `docs/math.md` for the equations.
"""

from keras_mlstm.ops.resolver import mlstm
from keras_mlstm.ops.resolver import mlstm_step
from keras_mlstm.ops.resolver import resolve_chunk_size
from keras_mlstm.ops.resolver import resolve_form

__all__ = ["mlstm", "mlstm_step", "resolve_chunk_size", "resolve_form"]
