"""The documentation site builds with `mkdocs build --strict`: a broken
link, a missing page or image, or a docstring mkdocstrings cannot parse
fails it. The site does not depend on the Keras backend; it is built once
per backend run like the rest (a few seconds)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"]
        + ["--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "layers" / "index.html").read_text()
    assert "MLSTMCell" in api and "Defaults to" in api


def test_every_page_is_in_the_navigation():
    """A page left out of `nav` would be built but unreachable."""
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        config = f.read()
    docs = os.path.join(ROOT, "docs")
    for folder, _, files in os.walk(docs):
        for name in files:
            if name.endswith(".md"):
                page = os.path.relpath(os.path.join(folder, name), docs)
                assert f": {page}" in config, page
