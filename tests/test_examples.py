"""The README's demo runs end to end (shortened), on every backend."""

import importlib.util
import os

import numpy as np
import pytest

pytestmark = pytest.mark.jax_slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_demo():
    path = os.path.join(ROOT, "examples", "demo.py")
    spec = importlib.util.spec_from_file_location("demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_trains_and_samples():
    demo = load_demo()
    history, sample = demo.main(epochs=2, sample_length=5, max_windows=256)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert sample.startswith("Day 331, winter. Wind") and len(sample) == 26


def test_shipped_data_is_regenerated_exactly(tmp_path):
    """``lighthouse.txt`` is what ``make_lighthouse.py`` writes."""
    data = os.path.join(ROOT, "examples", "data")
    spec = importlib.util.spec_from_file_location(
        "make_lighthouse", os.path.join(data, "make_lighthouse.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(str(tmp_path / "lighthouse.txt"))
    with open(tmp_path / "lighthouse.txt", encoding="utf-8") as f:
        regenerated = f.read()
    with open(os.path.join(data, "lighthouse.txt"), encoding="utf-8") as f:
        shipped = f.read()
    assert regenerated == shipped
