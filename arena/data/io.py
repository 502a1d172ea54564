"""Validated readers for the benchmark files under a data folder, plus seeded subset helpers.

Every target reads its files through these functions so that a missing or malformed file always
fails the same way: a `DataError` that names the file (and the 1-based line for JSONL) and says how
to provide the data. Shuffles are built on `random.Random.random()`, the one part of Python's
`random` module whose sequence is guaranteed across Python versions, so a seed picks the same
examples on every machine and interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar, Union

from arena.errors import DataError

T = TypeVar("T")
PathLike = Union[str, os.PathLike]

# The field is data_dir (run config, eval settings); the flag is named too, for the command line.
HOW_TO_PROVIDE = ("set ARENA_DATA_DIR or data_dir (on the command line: --data-dir) to a folder laid out like "
                  "shared/data (see PROVENANCE.md)")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE says the Hugging Face hub must not be contacted."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _missing(path: Path, needed_by: Optional[str] = None) -> DataError:
    who = f" (needed by {needed_by})" if needed_by else ""
    return DataError(f"data file not found: {path}{who}; {HOW_TO_PROVIDE}")


def data_file(data_dir: Optional[PathLike], relpath: str, needed_by: Optional[str] = None) -> Path:
    """Resolve `relpath` inside the data folder; raise DataError if there is no folder or no file."""
    if data_dir is None or str(data_dir) == "":
        who = f"{needed_by} needs " if needed_by else "needs "
        raise DataError(f"no data folder: set ARENA_DATA_DIR or data_dir (on the command line: --data-dir) to a "
                        f"folder laid out like shared/data "
                        f"(see PROVENANCE.md); {who}{relpath}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; {HOW_TO_PROVIDE}")
    path = root / relpath
    if not path.is_file():
        raise _missing(path, needed_by)
    return path


def check_files(data_dir: Optional[PathLike], relpaths: Iterable[str], needed_by: Optional[str] = None) -> list[Path]:
    """`data_file` for each path: the cheap existence check behind every `Target.check_data`."""
    return [data_file(data_dir, rel, needed_by) for rel in relpaths]


def file_summary(data_dir: PathLike, relpaths: Iterable[str]) -> dict[str, dict]:
    """{relpath: {"bytes", "sha256"}} for a run record: which exact files a target read."""
    out = {}
    for rel in relpaths:
        p = Path(data_dir) / rel
        out[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def iter_jsonl(path: PathLike, required_fields: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, record) for each non-blank line, validating JSON and fields.

    Line numbers travel with the records so that targets can report semantic errors (a `cop` of 7,
    an answer without '####') at the exact line too.
    """
    p = Path(path)
    if not p.is_file():
        raise _missing(p)
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue  # a trailing blank line is common and harmless
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: line {lineno} is not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{p}: line {lineno}: expected a JSON object, got {type(rec).__name__}")
            for name in required_fields:
                if name not in rec:
                    raise DataError(f"{p}: line {lineno}: missing field {name!r} "
                                    f"(present: {', '.join(sorted(rec)) or 'none'})")
            yield lineno, rec


def read_jsonl(path: PathLike, required_fields: Sequence[str] = ()) -> list[dict]:
    """Read a JSON Lines file into a list of dicts; see `iter_jsonl` for the checks."""
    return [rec for _, rec in iter_jsonl(path, required_fields)]


def read_json(path: PathLike) -> Any:
    """Read a whole-file JSON document (PubMedQA's PMID dicts, BBH's {"examples": [...]})."""
    p = Path(path)
    if not p.is_file():
        raise _missing(p)
    try:
        with p.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def count_lines(path: PathLike) -> int:
    """Number of non-blank lines: the record count of a JSONL file without parsing it."""
    n = 0
    with Path(path).open("rb") as fh:
        for line in fh:
            if line.strip():
                n += 1
    return n


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, cached by (path, mtime, size) so run records can cite data cheaply."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def normalize_text(text: str) -> str:
    """Collapse whitespace; used to match the same problem across differently formatted files."""
    return " ".join(str(text).split())


def _randbelow(rng: random.Random, n: int) -> int:
    # int(random() * n) instead of randrange: randrange's algorithm may change between Python
    # versions, random() may not. The bias (< n / 2**53) is irrelevant for data shuffles.
    return min(int(rng.random() * n), n - 1)


def rand_int(rng: random.Random, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi], stable across Python versions (see `_randbelow`)."""
    return lo + _randbelow(rng, hi - lo + 1)


def stable_shuffle(items: Iterable[T], seed: Union[int, str]) -> list[T]:
    """Return a new list with `items` in a seeded Fisher-Yates order; the input is not modified."""
    out = list(items)
    rng = random.Random(seed)
    for i in range(len(out) - 1, 0, -1):
        j = _randbelow(rng, i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def stratified_subset(items: Sequence[T], key: Union[str, Callable[[T], Any]], n: int,
                      seed: Union[int, str]) -> list[T]:
    """A seeded subset of `n` items whose label counts are proportional to the full set's.

    Used wherever a file is ordered by label (PubMedQA's test set: all "yes" first), where the first
    N would be one label only. Quotas use largest remainders; the result is in shuffled order.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    get = key if callable(key) else (lambda item: item[key])  # type: ignore[index]
    shuffled = stable_shuffle(items, seed)
    if n >= len(shuffled):
        return shuffled
    groups: dict[Any, int] = {}
    for item in shuffled:
        label = get(item)
        groups[label] = groups.get(label, 0) + 1
    total = len(shuffled)
    quota = {label: n * size // total for label, size in groups.items()}
    left = n - sum(quota.values())
    # Largest fractional part first; ties go to the bigger group, then the label's text, so the
    # allocation never depends on dict order.
    order = sorted(groups, key=lambda lb: (-(n * groups[lb] % total), -groups[lb], str(lb)))
    for label in order[:left]:
        quota[label] += 1
    out = []
    for item in shuffled:
        label = get(item)
        if quota[label] > 0:
            quota[label] -= 1
            out.append(item)
    return out
