"""The README's test examples run as a user copies them: each ```python block that defines a
``test_`` function is written to a file of its own in an empty directory (outside this repo,
so none of our pytest settings apply: no ``asyncio_mode=auto``, no ``pythonpath``) and run by
pytest in a subprocess. Two new-user trials found copy-paste failures here (a missing
``@pytest.mark.asyncio``, a missing ``import pytest``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _test_blocks() -> list[str]:
    return [b for b in BLOCK.findall(README.read_text()) if re.search(r"^\s*(async )?def test_",
                                                                       b, re.M)]


def test_the_readme_has_test_examples() -> None:
    assert len(_test_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_test_blocks())))
def test_readme_test_example_runs_as_copied(index: int, tmp_path: Path) -> None:
    source = _test_blocks()[index]
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a user's project: default settings
    (tmp_path / f"test_readme_{index}.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:randomly", f"test_readme_{index}.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\b[1-9]\d* passed", done.stdout), done.stdout[-2000:]
    assert "failed" not in done.stdout and "error" not in done.stdout.lower(), done.stdout
