"""The worked examples of docs/extending.md, read from the page, so the tests run what it shows.

A block is found by its first line, which names the file a contributor would create
(`# arena/targets/letters.py`). A test writes it to a temporary folder and imports (or loads) it
from there, into a copy of the registry it registers in, so the example cannot go stale and the
real registries are untouched.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def doc_block(first_line: str, lang: str = "python") -> str:
    """The fenced ```lang block of docs/extending.md whose first line is `first_line`."""
    blocks = re.findall(rf"```{lang}\n(.*?)```", EXTENDING.read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"docs/extending.md has {len(found)} {lang} blocks starting with {first_line!r}"
    return found[0]


def write_doc_file(first_line: str, path: Path, lang: str = "python") -> Path:
    """Write the block starting with `first_line` to `path` (a throw-away copy of the new file)."""
    path.write_text(doc_block(first_line, lang), encoding="utf-8")
    return path


def import_doc_module(first_line: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the python block starting with `first_line` as a temporary module, so its
    registration runs (into whatever registry copy the caller has swapped in). The module is in
    `sys.modules` until the test ends, as an imported file is (dataclasses look their module up)."""
    stem = "arena_doc_example_" + Path(first_line.lstrip("# ").strip()).stem
    path = write_doc_file(first_line, folder / f"{stem}.py")
    spec = importlib.util.spec_from_file_location(stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, stem, module)
    spec.loader.exec_module(module)
    return module
