"""Test setup shared by every backend.

The suite runs once per backend, in separate processes (Keras fixes the
backend at import): see `tests/run_all_backends.py`.

Each backend runs in its default mode, as users run it. JAX's default is
32-bit: a float64 array becomes float32 unless 64-bit mode is on. Tests
that feed float64 into Keras carry the `float64` mark, and on JAX run with
64-bit mode on for their duration only (`jax.enable_x64`).
"""

import os

# Under pytest-xdist each worker takes its share of the cores for its
# backend's thread pools: two workers of two threads each on two cores
# oversubscribe them (measured on 2 cores: the TensorFlow run 301 -> 282 s,
# the PyTorch run 236 -> 190 s). Set before Keras imports its backend;
# an explicit setting in the environment wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _NAME in (
        "OMP_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        os.environ.setdefault(_NAME, _THREADS)

import keras  # noqa: E402
import pytest  # noqa: E402

# Hypothesis profiles: "ci" (the default, a bounded number of examples per
# property so that the three-backend suite stays fast) and "thorough" (the
# documented longer run: `HYPOTHESIS_PROFILE=thorough`, see
# docs/reliability.md).
try:
    from hypothesis import HealthCheck
    from hypothesis import settings

    _common = dict(
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )
    # CI draws the same examples every run (derandomize); the thorough run
    # draws new ones each time. JAX compiles every new shape (seconds
    # each), so its CI run draws fewer.
    settings.register_profile(
        "ci",
        max_examples=3 if keras.backend.backend() == "jax" else 12,
        derandomize=True,
        **_common,
    )
    settings.register_profile("thorough", max_examples=300, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is in the `test` extra
    pass


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "float64: feeds float64 into Keras; on JAX, runs with 64-bit mode on",
    )
    config.addinivalue_line(
        "markers",
        "slow: minutes per backend; left out of the default run, see "
        "docs/reliability.md for the command that runs them",
    )
    config.addinivalue_line(
        "markers",
        "slow_on(*backends): in the slow tier on the backends named, in the "
        "default run on the others (repeats of covered code paths, or the "
        "slowest tests of a backend's default run)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """`slow_on(...)` tests join the slow tier on the backends they name
    (before `-m` selects).

    They repeat code paths that the backend's default run covers directly
    (through the docs, the benchmark command line, real processes or
    ported suites), or they are the slowest tests of that backend's
    default run (docs/reliability.md, "Test tiers"); the other backends
    run them by default.
    """
    backend = keras.backend.backend()
    for item in items:
        names = {
            name
            for marker in item.iter_markers("slow_on")
            for name in marker.args
        }
        if backend in names:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _jax_64_bit_mode(request):
    if (
        keras.backend.backend() == "jax"
        and request.node.get_closest_marker("float64") is not None
    ):
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


@pytest.fixture
def restored_config():
    """keras_mlstm's global settings, and JAX's compilation cache
    directory, as they were before the test."""
    from keras_mlstm import config

    fused = config.is_fused_kernels_enabled()
    cache = None
    if keras.backend.backend() == "jax":
        import jax

        cache = jax.config.jax_compilation_cache_dir
    yield
    if fused:
        config.enable_fused_kernels()
    else:
        config.disable_fused_kernels()
    if keras.backend.backend() == "jax":
        import jax
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", cache)
