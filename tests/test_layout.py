"""Layout rules a newcomer relies on: small modules, no machine paths, no references to missing files.

- no module of `arena`, `runners` or `dashboard` is over MAX_LINES lines;
- no absolute path of one machine (/work/, /home/, /root/, /tmp/) in the docs, configs or the
  packages' comments and strings: a reader's machine has none of them;
- `../shared/` appears only as the documented default data folder (`../shared/data`);
- every `docs/<file>.md` and `<path>.py` a docstring, comment or document (outside its code
  blocks, which may show a file still to be written) cites exists here, every
  relative link of a document resolves, and every `#section` anchor of such a citation or link is a
  heading of the cited document (GitHub's anchor rules);
- the design notes are cited as `docs/design.md` (the old top-level design file is not in the
  repository, so no file outside docs/ may cite it).

Python files are scanned through `tokenize` (comments and string literals only), so code such as
`self.py = ...` is not mistaken for a file name.
"""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("arena", "runners", "dashboard")
MAX_LINES = 400
SCANNED = ("arena", "runners", "dashboard", "docs", "configs", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt"}

MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root|tmp)/[^\s\"'`)]*")
SHARED = re.compile(r"\.\./shared/[^\s\"'`)]*")
ALLOWED_SHARED = re.compile(r"\.\./shared/data(?![\w-])")
DOCS_MD = re.compile(r"(?<![\w/.-])(docs/[\w.-]+\.md)(?:#([\w-]+))?")
PY_PATH = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[A-Za-z_]\w*\.py)\b")
MD_LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")
OLD_DESIGN = "DESIGN" + ".md"  # spelled apart so this file does not cite it
# Top-level folders of this repository: a cited path starting elsewhere (lm_eval/…, trl/…) is
# another project's file, not checked here.
TOP_LEVEL = ("arena", "runners", "dashboard", "tests", "docs", "configs", "benchmarks", "scripts")


def _tracked_files() -> list[Path]:
    """The repository's files (git when available, else a walk that skips hidden and cache folders)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        files = [REPO / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in REPO.rglob("*") if p.is_file()
                 and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(REPO).parts)]
    return sorted(p for p in files if p.is_file())


FILES = _tracked_files()
BASENAMES = {p.name for p in FILES}


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _in(path: Path, tops: tuple[str, ...]) -> bool:
    return _rel(path).split("/")[0] in tops


def prose(path: Path, code_blocks: bool = True) -> list[tuple[int, str]]:
    """(line, text) of what a reader reads: a .py file's comments and string literals, any other
    text file whole (a Markdown file without its fenced code blocks when `code_blocks` is false)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        lines, fenced = [], False
        for no, line in enumerate(text.splitlines(), 1):
            fence = path.suffix == ".md" and line.lstrip().startswith("```")
            fenced ^= fence
            if code_blocks or not (fenced or fence):
                lines.append((no, line))
        return lines
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            for i, line in enumerate(tok.string.splitlines()):
                out.append((tok.start[0] + i, line))
    return out


def scanned_files() -> list[Path]:
    return [p for p in FILES if _in(p, SCANNED) and p.suffix in TEXT_SUFFIXES]


def find_offenders(files: list[Path], check, code_blocks: bool = True) -> list[str]:
    """`path:line: what` for every hit of `check(path, line_text) -> list[str]`."""
    out = []
    for path in files:
        for no, line in prose(path, code_blocks):
            for what in dict.fromkeys(check(path, line)):  # each distinct hit once per line
                out.append(f"{_rel(path)}:{no}: {what}")
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def heading_anchors(doc: Path) -> set[str]:
    """Every anchor a Markdown file's headings define (outside code fences; repeats get -1, -2, …)."""
    seen: dict[str, int] = {}
    fenced = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*)", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
    return {f"{base}-{i}" if i else base for base, n in seen.items() for i in range(n)}


def _check_target(target: Path, anchor: str | None, ref: str) -> list[str]:
    if not target.exists():
        return [ref]
    if anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
        return [f"{ref} (no such section)"]
    return []


def missing_references(path: Path, line: str) -> list[str]:
    """Cited docs/*.md (with their #anchors) and *.py paths, and a document's relative links, that
    do not exist in the repository."""
    bad = []
    for ref, anchor in DOCS_MD.findall(line):
        bad += _check_target(REPO / ref, anchor, ref + (f"#{anchor}" if anchor else ""))
    for ref in PY_PATH.findall(line):
        if "/" in ref:
            if ref.split("/")[0] in TOP_LEVEL and not (REPO / ref).is_file():
                bad.append(ref)
        elif ref not in BASENAMES:  # a bare module file name: some file of the repository has it
            bad.append(ref)
    if path.suffix == ".md":
        for ref, anchor in MD_LINK.findall(line):
            if "://" in ref or ref.startswith("mailto:"):
                continue
            target = path.parent / ref if ref else path
            bad += _check_target(target, anchor, f"{ref}#{anchor}" if anchor else ref)
    return bad


# -- the checks on the repository ------------------------------------------------------------------

def test_no_module_over_the_line_limit():
    long = sorted((n, _rel(p)) for p in FILES if _in(p, PACKAGES) and p.suffix == ".py"
                  and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split them by job):\n  " + "\n  ".join(
        f"{path} ({n})" for n, path in reversed(long))


def test_no_machine_paths():
    bad = find_offenders(scanned_files(), lambda p, line: MACHINE_PATH.findall(line))
    assert not bad, "absolute paths of one machine (use a relative or a user-chosen path):\n  " + "\n  ".join(bad)


def test_shared_folder_only_as_the_default_data_folder():
    def check(path, line):
        return [m.group(0) for m in SHARED.finditer(line) if not ALLOWED_SHARED.match(line, m.start())]

    bad = find_offenders(scanned_files(), check)
    assert not bad, "`../shared/` outside the default data folder `../shared/data`:\n  " + "\n  ".join(bad)


def test_cited_files_exist():
    files = [p for p in scanned_files() if p.suffix in (".py", ".md", ".yaml", ".yml")]
    # A document's code blocks may show a file a contributor is about to create (docs/extending.md).
    bad = find_offenders(files, missing_references, code_blocks=False)
    assert not bad, "cited files that are not in the repository:\n  " + "\n  ".join(bad)


def test_design_notes_are_cited_inside_the_repository():
    files = [p for p in FILES if p.suffix in TEXT_SUFFIXES and not _in(p, ("docs",))
             and p != Path(__file__).resolve()]
    bad = find_offenders(files, lambda p, line: [OLD_DESIGN] if OLD_DESIGN in line else [])
    assert not bad, (f"citations of {OLD_DESIGN}, which is not in the repository (cite docs/design.md#<section>):\n  "
                     + "\n  ".join(bad))


# -- the scanners themselves -------------------------------------------------------------------------

def test_prose_of_python_is_comments_and_strings(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Doc: see arena/nope.py."""\nself.py = 1  # why: /tmp/x\nx = "a\\nb"\n')
    assert prose(f) == [(1, '"""Doc: see arena/nope.py."""'), (2, "# why: /tmp/x"), (3, '"a\\nb"')]


def test_prose_of_markdown_can_skip_code_blocks(tmp_path):
    f = tmp_path / "d.md"
    f.write_text("see arena/a.py\n```python\n# arena/new.py\n```\nafter\n")
    assert prose(f) == [(1, "see arena/a.py"), (2, "```python"), (3, "# arena/new.py"), (4, "```"), (5, "after")]
    assert prose(f, code_blocks=False) == [(1, "see arena/a.py"), (5, "after")]


@pytest.mark.parametrize("line,hits", [
    ("data in /work/shared/data", ["/work/shared/data"]),
    ("python -m dashboard.synthetic /tmp/demo", ["/tmp/demo"]),
    ("cache under /home/u/.cache or /root/x", ["/home/u/.cache", "/root/x"]),
    ("a tmp_path / 'x', ~/.cache/arena, results/tmp/x, ../work/y", []),
])
def test_machine_path_pattern(line, hits):
    assert MACHINE_PATH.findall(line) == hits


@pytest.mark.parametrize("line,ok", [
    ("default: ARENA_DATA_DIR or ../shared/data", True),
    ("`../shared/data`); without", True),
    ("see ../shared/data/PROVENANCE.md", True),
    ("see ../shared/DESIGN.md", False),
    ("../shared/database", False),
])
def test_shared_pattern(line, ok):
    m = SHARED.search(line)
    assert m is not None and bool(ALLOWED_SHARED.match(line, m.start())) is ok


def test_missing_reference_detection(tmp_path):
    doc = REPO / "docs" / "x.md"  # resolved against the repository, not written
    assert missing_references(doc, "see docs/training.md and arena/runs.py and runs.py") == []
    assert missing_references(doc, "see docs/nope.md, arena/nope.py and nope_module.py") == [
        "docs/nope.md", "arena/nope.py", "nope_module.py"]
    assert missing_references(doc, "another project's lm_eval/api/task.py is not checked") == []
    assert missing_references(doc, "[ok](training.md) [bad](nothing.md) [web](https://x.org/a.md)") == [
        "nothing.md"]


def test_anchor_detection(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("# Title\n## Scores: the two axes\n### IFEval needs `punkt_tab`\n## Repeat\n## Repeat\n"
                   "```\n# not a heading\n```\n[in](#repeat-1) [out](#not-a-heading)\n")
    assert heading_anchors(doc) == {"title", "scores-the-two-axes", "ifeval-needs-punkt_tab", "repeat", "repeat-1"}
    assert missing_references(doc, "[in](#repeat-1) [out](#not-a-heading) [x](d.md#title)") == [
        "#not-a-heading (no such section)"]
    real = REPO / "docs" / "training.md"
    first = sorted(heading_anchors(real))[0]
    assert missing_references(doc, f"docs/training.md#{first} and docs/training.md#nope") == [
        "docs/training.md#nope (no such section)"]
