"""The docs stay true: the README's Python examples run, and every relative link resolves."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

DOCS = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "CHANGELOG.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "export" / "README.md",
    REPO / "export" / "android" / "README.md",
    REPO / "converters" / "README.md",
]
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def readme_examples() -> list[str]:
    return PYTHON_BLOCK.findall((REPO / "README.md").read_text())


def test_the_readme_has_python_examples():
    assert len(readme_examples()) >= 3


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_readme_python_example_runs(index):
    code = readme_examples()[index]
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_resolve(doc):
    missing = [
        target
        for target in LINK.findall(doc.read_text())
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert not missing, f"{doc.relative_to(REPO)} links to missing {missing}"
