"""The test runner's own rules: `slow_on` tiers per backend
(`tests/conftest.py`), and the Keras floor read from `pyproject.toml`
(`tests/run_all_backends.py`)."""

import re

import conftest
import keras
import pytest
import run_all_backends
from utils import import_keras_hub


class Item:
    """The two parts of a pytest item that the tier hook uses."""

    def __init__(self, *marks):
        self.marks = list(marks)

    def iter_markers(self, name):
        return (mark for mark in self.marks if mark.name == name)

    def add_marker(self, mark):
        self.marks.append(getattr(mark, "mark", mark))


def is_slow(item):
    return any(mark.name == "slow" for mark in item.marks)


def test_slow_on_tiers_only_the_backends_named():
    backend = keras.backend.backend()
    others = [b for b in ("jax", "tensorflow", "torch") if b != backend]
    here = Item(pytest.mark.slow_on(backend, others[0]).mark)
    elsewhere = Item(pytest.mark.slow_on(*others).mark)
    plain = Item()
    conftest.pytest_collection_modifyitems(None, [here, elsewhere, plain])
    assert is_slow(here)
    assert not is_slow(elsewhere) and not is_slow(plain)


def test_keras_floor_is_the_pyproject_requirement():
    with open(f"{run_all_backends.ROOT}/pyproject.toml") as f:
        text = f.read()
    floor = re.search(r'"keras>=([\d.]+)"', text).group(1)
    assert run_all_backends.keras_floor() == f"{floor}.0"


def test_hub_keras_floor_is_keras_hubs_requirement():
    """The `hub` floor run uses the Keras that pip pairs with the lowest
    `keras-hub` (0.32: "keras>=3.15")."""
    import_keras_hub()
    import importlib.metadata

    requirements = importlib.metadata.requires("keras-hub")
    floor = next(r for r in requirements if r.startswith("keras>="))
    assert run_all_backends.hub_keras_floor() == floor[7:] + ".0"
