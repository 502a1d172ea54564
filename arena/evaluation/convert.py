"""Field mappings from the raw benchmark files to what the stock lm-eval tasks read.

Why JSONL files in the cache rather than `process_docs` functions: the stock prompts and targets then
apply unchanged, PubMedQA's PMID-keyed dicts (which `load_dataset("json")` cannot read) become
loadable, and the plain `lm_eval` CLI can run the very same files (benchmarks/bench_eval.py).
A converted file is named by the sha256 of its sources and the converter version, so a changed
source or mapping makes a new file and a stale one is never read. Writes are atomic.

Mappings (each checked against hand-read records in tests/test_eval_tasks.py):
- MedQA (jind11 raw): question, options{A..D}, answer_idx (letter) -> sent1, ending0..3, label (0..3).
- MedMCQA (raw dev): cop is 1-based (1..4) -> 0-based cop, as lm-eval's HF copy has it.
- PubMedQA: {pmid: record} for the PMIDs of test_ground_truth.json (500, in that file's order,
  which is sorted by label) -> one JSON line per item with pubid, QUESTION, CONTEXTS, final_decision.
- arith: the arith target's held-out problems -> question, answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from arena.data.io import data_file, iter_jsonl, read_json, sha256_file
from arena.errors import DataError

CONVERTER_VERSION = {"medqa": 1, "medmcqa": 1, "pubmedqa": 1, "arith": 1}
LETTERS = "ABCD"


def cache_dir() -> Path:
    from arena.models.catalog import cache_root

    return cache_root() / "data"


def medqa_records(path: Path) -> list[dict]:
    from arena.targets.medical import iter_medqa

    out = []
    for lineno, rec in iter_medqa(path):
        opts = rec["options"]
        out.append({"id": lineno, "sent1": rec["question"], **{f"ending{i}": str(opts[k]) for i, k in enumerate(LETTERS)},
                    "label": LETTERS.index(rec["answer_idx"])})
    return out


def medmcqa_records(path: Path) -> list[dict]:
    from arena.targets.medical import cop_to_letter

    out = []
    for lineno, rec in iter_jsonl(path, ("question", "opa", "opb", "opc", "opd", "cop")):
        try:
            letter = cop_to_letter(rec["cop"])  # validates the 1-based range
        except ValueError as e:
            raise DataError(f"{path}: line {lineno}: field 'cop': {e}") from None
        out.append({"id": str(rec.get("id", lineno)), "question": rec["question"],
                    **{k: str(rec[k]) for k in ("opa", "opb", "opc", "opd")},
                    "cop": LETTERS.index(letter), "subject_name": str(rec.get("subject_name") or "")})
    return out


def pubmedqa_records(all_path: Path, test_path: Path) -> list[dict]:
    labelled, test = read_json(all_path), read_json(test_path)
    for p, obj in ((all_path, labelled), (test_path, test)):
        if not isinstance(obj, dict):
            raise DataError(f"{p}: expected a JSON object keyed by PMID, got {type(obj).__name__}")
    out = []
    for pmid, label in test.items():
        rec = labelled.get(pmid)
        if rec is None:
            raise DataError(f"{test_path}: PMID {pmid} is not in {all_path}")
        for name in ("QUESTION", "CONTEXTS", "final_decision"):
            if name not in rec:
                raise DataError(f"{all_path}: PMID {pmid}: missing field {name!r}")
        if rec["final_decision"] != label:
            raise DataError(f"{test_path}: PMID {pmid} is labelled {label!r} but {all_path} says {rec['final_decision']!r}")
        ctx = rec["CONTEXTS"] if isinstance(rec["CONTEXTS"], list) else [rec["CONTEXTS"]]
        out.append({"pubid": str(pmid), "QUESTION": rec["QUESTION"], "CONTEXTS": [str(c) for c in ctx],
                    "LONG_ANSWER": str(rec.get("LONG_ANSWER", "")), "final_decision": rec["final_decision"]})
    return out


def arith_records(target, n: int, seed: int) -> list[dict]:
    return [{"question": ex.prompt, "answer": ex.answer} for ex in target.heldout_examples(n, seed)]


def _write(kind: str, key_parts: dict, make: Callable[[], list[dict]]) -> Path:
    from arena.records import atomic_write_text

    key = hashlib.sha256(json.dumps({"kind": kind, "version": CONVERTER_VERSION[kind], **key_parts},
                                    sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{kind}-{key}.jsonl"
    if not path.is_file():
        rows = make()
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def converted(kind: str, ctx) -> Path:
    """Path of the converted JSONL for `kind` under the cache, written on first use."""
    if kind == "medqa":
        src = data_file(ctx.data_dir, "medqa/phrases_no_exclude_test.jsonl", needed_by="task 'medqa_4options'")
        return _write(kind, {"src": sha256_file(src)}, lambda: medqa_records(src))
    if kind == "medmcqa":
        src = data_file(ctx.data_dir, "medmcqa/dev.json", needed_by="task 'medmcqa'")
        return _write(kind, {"src": sha256_file(src)}, lambda: medmcqa_records(src))
    if kind == "pubmedqa":
        a = data_file(ctx.data_dir, "pubmedqa/ori_pqal.json", needed_by="task 'pubmedqa'")
        t = data_file(ctx.data_dir, "pubmedqa/test_ground_truth.json", needed_by="task 'pubmedqa'")
        return _write(kind, {"all": sha256_file(a), "test": sha256_file(t)}, lambda: pubmedqa_records(a, t))
    if kind == "arith":
        target = arith_target(ctx.target)
        from arena.schema import to_dict

        o = ctx.options
        return _write(kind, {"options": to_dict(target.options), "n": o.arith_n, "seed": o.arith_seed},
                      lambda: arith_records(target, o.arith_n, o.arith_seed))
    raise ValueError(f"unknown conversion {kind!r}")


def arith_target(target):
    """The run's arith target, or one with default options when the run's target is another one."""
    if target is not None and getattr(target, "name", None) == "arith":
        return target
    from arena.components import TARGETS

    cls = TARGETS.get("arith")
    return cls(cls.Options(), None)
