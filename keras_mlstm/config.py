"""Global settings of keras_mlstm, as `keras.config` holds Keras's: whether
the fused mLSTM kernels are used, and which; and JAX's persistent
compilation cache (`enable_compilation_cache`).

The fused kernels are those of the official `mlstm_kernels` package (the
NXAI Community License; an optional extra, `pip install -e ".[cuda]"`),
named as its registries name them. The defaults are its Triton kernels
for NVIDIA GPUs (TFLA's `chunkwise--triton_xl_chunk` for sequences,
`triton` for single steps); its `native` kernels, written in PyTorch or
JAX, take the same arguments and run anywhere, which is how the glue
around the kernels is tested on a CPU.
"""

import os

import keras

_SETTINGS = {
    "enabled": True,
    "sequence_kernel": "chunkwise--triton_xl_chunk",
    "step_kernel": "triton",
}


def enable_fused_kernels(sequence_kernel=None, step_kernel=None):
    """Use the fused kernels wherever they can run (the default).

    `keras_mlstm.ops.mlstm(..., fused=None)` and the layers built on it then
    run the chosen `mlstm_kernels` kernel where the backend, device, dtype,
    shapes and installed packages allow, and `keras.ops` elsewhere.

    Args:
        sequence_kernel: str or `None`. The kernel for whole sequences, a
            name of `mlstm_kernels`' registry (`"chunkwise--triton_xl_chunk"`,
            `"chunkwise--native_custbw"`, ...). Defaults to `None` (keep the
            current one; initially `"chunkwise--triton_xl_chunk"`).
        step_kernel: str or `None`. The kernel for single steps
            (`"triton"`, `"native"`). Defaults to `None` (keep the current
            one; initially `"triton"`).

    Example:

    >>> from keras_mlstm import config
    >>> config.enable_fused_kernels()
    >>> config.is_fused_kernels_enabled()
    True

    References:
        - Beck et al., "Tiled Flash Linear Attention", 2025,
          arXiv:2503.14376 (the Triton kernels).
    """
    for name, value in (
        ("sequence_kernel", sequence_kernel),
        ("step_kernel", step_kernel),
    ):
        if value is not None and not isinstance(value, str):
            raise ValueError(
                f"`{name}` must be None or a kernel name (str); received "
                f"{value!r}."
            )
    _SETTINGS["enabled"] = True
    if sequence_kernel is not None:
        _SETTINGS["sequence_kernel"] = sequence_kernel
    if step_kernel is not None:
        _SETTINGS["step_kernel"] = step_kernel


def disable_fused_kernels():
    """Compute the mLSTM with `keras.ops` wherever `fused=None`.

    An explicit `fused=True` still asks for the fused kernel.

    Example:

    >>> from keras_mlstm import config
    >>> config.disable_fused_kernels()
    >>> config.is_fused_kernels_enabled()
    False
    >>> config.enable_fused_kernels()

    References:
        - `keras.config.disable_flash_attention`, the Keras counterpart.
    """
    _SETTINGS["enabled"] = False


def is_fused_kernels_enabled():
    """Whether `fused=None` may use the fused kernels.

    Returns:
        bool.

    Example:

    >>> from keras_mlstm import config
    >>> config.is_fused_kernels_enabled()
    True

    References:
        - `keras.config.is_flash_attention_enabled`, the Keras counterpart.
    """
    return _SETTINGS["enabled"]


def fused_kernel_names():
    """The names of the fused kernels in use.

    Returns:
        `(sequence_kernel, step_kernel)`, names of `mlstm_kernels`'
        registries.

    Example:

    >>> from keras_mlstm import config
    >>> config.fused_kernel_names()
    ('chunkwise--triton_xl_chunk', 'triton')

    References:
        - `mlstm_kernels.torch.get_available_mlstm_kernels`, the names.
    """
    return _SETTINGS["sequence_kernel"], _SETTINGS["step_kernel"]


def enable_compilation_cache(directory=None):
    """Keep the programs XLA compiles on disk, so that a rerun skips
    compiling them: JAX's persistent compilation cache.

    On JAX, Keras compiles the training, evaluation and prediction
    functions (and KerasHub's `generate`) with XLA at their first call,
    and again in every new process: a few seconds for a small xLSTM model
    on a CPU (docs/benchmarks.md, "Compile time"). With the cache on, a
    program whose compilation took at least JAX's
    `jax_persistent_cache_min_compile_time_secs` (1 s by default) is
    written to `directory`, and any later compilation of the same
    program (same JAX version, devices and compiler options), in this
    process or another, reads it back instead. Tracing the Python
    function into the program is not cached and is still paid.

    On TensorFlow, whose first step on a CPU is spent tracing Python
    into a graph (no XLA), and on PyTorch, which runs eagerly, there is no
    such cache: the call changes nothing and returns `None`.

    The cache holds executable code: keep it in a directory only you can
    write to, as JAX's documentation warns.

    Args:
        directory: str, path-like or `None`. Where to keep the cache; it
            is created if missing. Defaults to `None`: the directory in
            `JAX_COMPILATION_CACHE_DIR` if that is set, else
            `keras_mlstm/jax` under `XDG_CACHE_HOME` (`~/.cache` when
            unset).

    Returns:
        The cache directory, an absolute path, on JAX; `None` on the
        other backends.

    Example:

    >>> import os
    >>> import tempfile
    >>> from keras_mlstm import config
    >>> directory = os.path.join(tempfile.mkdtemp(), "xla")
    >>> used = config.enable_compilation_cache(directory)
    >>> used in (directory, None)  # None unless the backend is JAX
    True

    References:
        - JAX, "Persistent compilation cache",
          https://docs.jax.dev/en/latest/persistent_compilation_cache.html
    """
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise ValueError(
            "`directory` must be None or a path (str or os.PathLike); "
            f"received {directory!r}."
        )
    if keras.backend.backend() != "jax":
        return None
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if directory is None:
        directory = os.environ.get("JAX_COMPILATION_CACHE_DIR") or (
            os.path.join(
                os.environ.get("XDG_CACHE_HOME")
                or os.path.join(os.path.expanduser("~"), ".cache"),
                "keras_mlstm",
                "jax",
            )
        )
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    if jax.config.jax_compilation_cache_dir != directory:
        # A cache opened on another directory keeps it until reset.
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", directory)
    return directory
