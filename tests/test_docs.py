"""The Python code blocks of the README and docs do what the docs say they
do: each one runs alone in a fresh namespace (a reader may paste any one of
them) and prints what the `text` block right after it shows, compared as
doctest compares (`...` stands for any text, runs of whitespace are one).
A block without such an output block fails: every snippet states its
result, so that one which silently does nothing fails here.

The blocks choose their backend as a reader's script does (JAX unless
`KERAS_BACKEND` names another). The default run runs them on PyTorch (the
backend that runs them fastest); JAX and TensorFlow run them in the slow
tier, their code paths being tested directly on every backend. The first
block of the README and of the docs' first pages runs in a fresh process
as in command 1's virtual environment: `KERAS_BACKEND` unset, and neither
TensorFlow nor PyTorch importable.
"""

import contextlib
import doctest
import io
import os
import re
import subprocess
import sys

import pytest
from utils import import_keras_hub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + [
    os.path.join("docs", name)
    for name in sorted(os.listdir(os.path.join(ROOT, "docs")))
    if name.endswith(".md")
]
# A Python block, and the `text` block of its output if one follows it.
BLOCK = re.compile(
    r"```python\n(.*?)```(?:[ \t]*\n(?:[ \t]*\n)*```text\n(.*?)```)?",
    re.DOTALL,
)
# The pages a new user reads first, in order (docs/getting-started.md).
FIRST_PAGES = ["README.md", "docs/index.md", "docs/getting-started.md"]
# Command 1 installs `.[jax,examples]`: these are not there.
ABSENT = ("tensorflow", "torch")
MATCH = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def blocks_of(name):
    """`(code, expected output or None)` of each Python block of `name`."""
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return [
            (code, output or None) for code, output in BLOCK.findall(f.read())
        ]


def check_output(name, index, expected, printed):
    assert expected is not None, (
        f"{name} block {index} has no ```text block of its output after it"
    )
    assert doctest.OutputChecker().check_output(expected, printed, MATCH), (
        f"{name} block {index} printed:\n{printed}\nThe docs show:\n{expected}"
    )


@pytest.mark.slow_on("jax", "tensorflow")
@pytest.mark.parametrize("name", [name for name in DOCS if blocks_of(name)])
def test_python_blocks_print_what_the_docs_show(name, tmp_path, monkeypatch):
    if name == "docs/hub.md":
        # KerasHub requires a newer Keras than the core's floor run has;
        # the hub extra's floor run tests this page.
        import_keras_hub()
    monkeypatch.chdir(tmp_path)  # files a block writes stay out of the repo
    for index, (code, expected) in enumerate(blocks_of(name)):
        namespace = {"__name__": "doc"}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{name} block {index}", "exec"), namespace)
        check_output(name, index, expected, printed.getvalue())


CHOOSES_BACKEND = 'os.environ.setdefault("KERAS_BACKEND", "jax")'
IMPORTS_KERAS = re.compile(r"^(?:import|from) (?:keras|keras_mlstm)\b", re.M)


@pytest.mark.slow_on("jax", "tensorflow")
@pytest.mark.parametrize("name", [name for name in DOCS if blocks_of(name)])
def test_every_block_chooses_its_backend_before_importing_keras(name):
    """A block pasted alone into command 1's environment (JAX, no
    TensorFlow) must not leave Keras on its default backend, TensorFlow;
    the first blocks of the first pages are run there below."""
    for index, (code, _) in enumerate(blocks_of(name)):
        first_import = IMPORTS_KERAS.search(code)
        if first_import is None:
            continue
        chosen = code.find(CHOOSES_BACKEND)
        assert 0 <= chosen < first_import.start(), (
            f"{name} block {index} imports Keras before choosing a backend "
            f"({CHOOSES_BACKEND})"
        )


# Run before the block: imports of the packages command 1 does not install
# fail as they would there.
HIDE = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")

sys.meta_path.insert(0, Absent())
"""


@pytest.mark.slow_on("jax", "tensorflow")
@pytest.mark.parametrize("name", FIRST_PAGES)
def test_first_block_runs_in_command_1s_environment(name, tmp_path):
    code, expected = blocks_of(name)[0]
    environment = {
        key: value
        for key, value in os.environ.items()
        if key != "KERAS_BACKEND"
    }
    result = subprocess.run(
        [sys.executable, "-c", HIDE + code],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_output(name, 0, expected, result.stdout)
