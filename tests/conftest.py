"""Test setup shared by every backend.

The suite runs once per backend, in separate processes (Keras fixes the
backend at import): see ``tests/run_all_backends.py``.
"""

import keras

if keras.backend.backend() == "jax":
    import jax

    # The float64 checks need JAX's 64-bit mode; the float32 ones pass
    # float32 arrays explicitly and are unaffected.
    jax.config.update("jax_enable_x64", True)
