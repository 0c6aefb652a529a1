"""The public API: exported, registered for Keras serialization, documented
in the house style, and its docstring examples run."""

import ast
import doctest
import inspect
import re
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
def test_layers_and_models_alone_are_registered_for_serialization(name):
    """Keras serializes layers and models by their registered names; a
    function (`mlstm`, `from_xlstm`, ...) is never part of a saved model,
    so registering it would only put a name on Keras's list."""
    obj = getattr(keras_mlstm, name)
    registered = keras.saving.get_registered_name(obj)
    if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
        assert registered == f"keras_mlstm>{name}"
        assert keras.saving.get_registered_object(registered) is obj
    else:
        assert registered == name, f"{name} is registered"


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_sections(name):
    doc = getattr(keras_mlstm, name).__doc__
    for section in SECTIONS:
        assert section in doc, f"{name} lacks {section}"


@pytest.mark.parametrize("name", PUBLIC)
@pytest.mark.slow_on("jax")
def test_docstring_examples_run(name):
    obj = getattr(keras_mlstm, name)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(obj, name, globs={name: obj})
    assert tests and tests[0].examples, f"{name} has no example"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


def _arguments(doc):
    """`name -> description` of the `Args:` section of a docstring (one
    entry per argument, continuation lines indented deeper)."""
    lines = doc.split("Args:\n", 1)[1].splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    entries, name = {}, None
    for line in lines:
        if not line.strip():
            if entries:
                break
            continue
        depth = len(line) - len(line.lstrip())
        if depth < indent:
            break
        if depth == indent:
            name, _, text = line.strip().partition(":")
            entries[name] = text
        else:
            entries[name] += " " + line.strip()
    return entries


DEFAULT = re.compile(r"Defaults to `([^`]*)`")


def _documented():
    """`(name, object)` of every public name, the KerasHub classes
    included where KerasHub is installed."""
    objects = [(name, getattr(keras_mlstm, name)) for name in PUBLIC]
    try:
        from keras_mlstm.models import xlstm
    except ImportError:
        return objects
    return objects + [(name, getattr(xlstm, name)) for name in xlstm.__all__]


@pytest.mark.parametrize(("name", "obj"), _documented())
def test_every_argument_states_its_default(name, obj):
    """Keras's convention: each argument with a default says "Defaults to
    `value`." with the signature's own value."""
    if isinstance(obj, type) and "__init__" not in vars(obj):
        pytest.skip("the arguments are the parent class's (**kwargs)")
    function = obj.__init__ if isinstance(obj, type) else obj
    entries = _arguments(obj.__doc__)
    for parameter in inspect.signature(function).parameters.values():
        if parameter.default is inspect.Parameter.empty:
            continue
        assert parameter.name in entries, f"{name}: {parameter.name}"
        text = " ".join(entries[parameter.name].split())
        stated = DEFAULT.search(text)
        assert stated, f"{name}: {parameter.name}: {text!r}"
        value = ast.literal_eval(stated.group(1))
        assert value == parameter.default, f"{name}: {parameter.name}"


CONFIG_FUNCTIONS = [
    name
    for name, obj in vars(keras_mlstm.config).items()
    if inspect.isfunction(obj) and not name.startswith("_")
]


@pytest.mark.parametrize("name", CONFIG_FUNCTIONS)
def test_config_functions_are_documented_and_their_examples_run(
    name, restored_config
):
    obj = getattr(keras_mlstm.config, name)
    for section in ("Example:", "References:"):
        assert section in obj.__doc__, f"{name} lacks {section}"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(obj, name, globs={})
    assert tests and tests[0].examples, f"{name} has no example"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
