"""JSONL files in the cache for tasks whose documents are not the raw files the stock task reads.

Two kinds: raw files mapped field by field by a conversion their target declares
(`Target.conversions`: MedQA, MedMCQA and PubMedQA in `arena.targets.medical`), and documents a
target generates (its held-out examples as {"question", "answer"}: the arith task).

Why files rather than `process_docs` functions: the stock prompts and targets then apply unchanged,
PubMedQA's PMID-keyed dicts (which `load_dataset("json")` cannot read) become loadable, and the
plain `lm_eval` CLI can run the very same files (benchmarks/bench_eval.py). A file is named by the
sha256 of its sources (or the generating target's options) and the mapping's version, so a changed
source or mapping makes a new file and a stale one is never read. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from arena.components import TARGETS
from arena.data.io import data_file, sha256_file
from arena.models.catalog import cache_root
from arena.records import atomic_write_text
from arena.schema import to_dict

GENERATED_VERSION = 1  # version of the {"question", "answer"} rows of generated documents


def cache_dir() -> Path:
    return cache_root() / "data"


def _write(kind: str, version: int, key_parts: dict, make: Callable[[], list[dict]]) -> Path:
    key = hashlib.sha256(json.dumps({"kind": kind, "version": version, **key_parts},
                                    sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{kind}-{key}.jsonl"
    if not path.is_file():
        rows = make()
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def converted_file(target: str, conversion: str, data_dir: str | None, needed_by: str | None = None) -> Path:
    """Path of the JSONL of `target`'s conversion `conversion` of the files in `data_dir`, written on first use."""
    conv = TARGETS.get(target, field="convert.target").conversions[conversion]
    paths = {key: data_file(data_dir, rel, needed_by=needed_by) for key, rel in conv.sources.items()}
    return _write(conversion, conv.version, {key: sha256_file(p) for key, p in paths.items()},
                  lambda: conv.records(*paths.values()))


def generating_target(name: str, run_target):
    """The run's target when it is `name` (its options), else target `name` with default options."""
    if run_target is not None and getattr(run_target, "name", None) == name:
        return run_target
    cls = TARGETS.get(name, field="generated_by")
    return cls(cls.Options(), None)


def generated_key(target, options) -> dict:
    """What the generated documents depend on: the target's options, how many, which stream."""
    return {"options": to_dict(target.options), "n": options.generated_n, "seed": options.generated_seed}


def generated_file(name: str, run_target, options) -> Path:
    """Path of the JSONL of target `name`'s held-out examples (TaskOptions generated_n / generated_seed)."""
    target = generating_target(name, run_target)
    return _write(name, GENERATED_VERSION, generated_key(target, options),
                  lambda: [{"question": ex.prompt, "answer": ex.answer}
                           for ex in target.heldout_examples(options.generated_n, options.generated_seed)])
