"""The public API: exported, registered for Keras serialization, documented
in the house style, and its docstring examples run."""

import doctest
import types

import keras
import pytest

import keras_mlstm

PUBLIC = [
    name
    for name in keras_mlstm.__all__
    if not isinstance(getattr(keras_mlstm, name), types.ModuleType)
]
SECTIONS = ("Args:", "Returns:", "Example:", "References:")


def test_ops_namespace_matches_top_level():
    for name in keras_mlstm.ops.__all__:
        assert getattr(keras_mlstm, name) is getattr(keras_mlstm.ops, name)


@pytest.mark.parametrize("name", PUBLIC)
def test_registered_for_serialization(name):
    obj = getattr(keras_mlstm, name)
    registered = keras.saving.get_registered_name(obj)
    assert registered == f"keras_mlstm>{name}"
    assert keras.saving.get_registered_object(registered) is obj


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_sections(name):
    doc = getattr(keras_mlstm, name).__doc__
    for section in SECTIONS:
        assert section in doc, f"{name} lacks {section}"


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name):
    obj = getattr(keras_mlstm, name)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(obj, name, globs={name: obj})
    assert tests and tests[0].examples, f"{name} has no example"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
