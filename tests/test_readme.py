"""The README's examples run as written: every ```python block preceded by an
``<!-- example -->`` line is executed in a fresh interpreter in an empty
directory and must exit 0.  (The other blocks name paths such as
/mnt/pmem0 that a test machine does not have.)"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = re.compile(r"<!-- example -->\n```python\n(.*?)```", re.S)


def _examples() -> list[tuple[str, str]]:
    text = README.read_text()
    out = []
    for m in EXAMPLE.finditer(text):
        line = text.count("\n", 0, m.start()) + 2
        out.append((f"README.md:{line}", m.group(1)))
    return out


EXAMPLES = _examples()


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("where,code", EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_readme_example_runs(where, code, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"{where} failed:\n{r.stderr[-3000:]}"
