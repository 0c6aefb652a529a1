"""The Python code blocks of the README and docs run as written, each one
alone in a fresh namespace (a reader may paste any one of them), so the
docs stay true to the code. The blocks name no backend: the default run
runs them on PyTorch (the backend that runs them fastest); JAX and
TensorFlow run them in the slow tier, their code paths being tested
directly on every backend."""

import os
import re

import pytest

pytestmark = pytest.mark.slow_on("jax", "tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + [
    os.path.join("docs", name)
    for name in sorted(os.listdir(os.path.join(ROOT, "docs")))
    if name.endswith(".md")
]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def blocks_of(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return BLOCK.findall(f.read())


@pytest.mark.parametrize("name", [name for name in DOCS if blocks_of(name)])
def test_python_blocks_run_alone(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a block writes stay out of the repo
    for index, code in enumerate(blocks_of(name)):
        namespace = {"__name__": "doc"}
        exec(compile(code, f"{name} block {index}", "exec"), namespace)
