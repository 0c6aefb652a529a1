"""The Python code blocks of the README and docs run as written (the blocks
of one document in order, in one namespace, as a reader would paste them),
on every backend, so the docs stay true to the code."""

import os
import re

import pytest

pytestmark = pytest.mark.jax_slow

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
def test_python_blocks_run(name):
    namespace = {"__name__": "doc"}
    for index, code in enumerate(blocks_of(name)):
        exec(compile(code, f"{name} block {index}", "exec"), namespace)
