"""Test setup shared by every backend.

The suite runs once per backend, in separate processes (Keras fixes the
backend at import): see `tests/run_all_backends.py`.

Each backend runs in its default mode, as users run it. JAX's default is
32-bit: a float64 array becomes float32 unless 64-bit mode is on. Tests
that feed float64 into Keras carry the `float64` mark, and on JAX run with
64-bit mode on for their duration only (`jax.enable_x64`).
"""

import keras
import pytest

# Hypothesis profiles: "ci" (the default, a bounded number of examples per
# property so that the three-backend suite stays fast) and "thorough" (the
# documented longer run: `HYPOTHESIS_PROFILE=thorough`, see
# docs/reliability.md).
try:
    import os

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
        "jax_slow: compile-bound on JAX (its eager mode compiles every new "
        "shape): on JAX in the slow tier, on the other backends in the "
        "default run",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """On JAX, `jax_slow` tests join the slow tier (before `-m` selects).

    They repeat, through the docs, the benchmark CLI, real
    processes or ported suites, code paths that the JAX default run covers
    directly, or they are the slowest tests of the JAX default run
    (docs/reliability.md, "Test tiers"); TensorFlow and PyTorch run them
    by default.
    """
    if keras.backend.backend() != "jax":
        return
    for item in items:
        if item.get_closest_marker("jax_slow") is not None:
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
