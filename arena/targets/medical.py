"""The "medical" target: SFT on MedMCQA dev + the non-test PubMedQA items; held-out MedQA test.

Two pitfalls of the raw files are handled here rather than left to callers: MedMCQA's `cop` is
1-based (1 -> A; the HF copy is 0-based), and PubMedQA's labelled set contains the official test
items, which must be removed by PMID before training.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena.components import TARGETS
from arena.data.io import (
    count_lines,
    file_summary,
    iter_jsonl,
    read_json,
    stable_shuffle,
    stratified_subset,
)
from arena.errors import DataError
from arena.targets.base import CappedOptions, Conversion, Example, FileTarget

MEDMCQA = "medmcqa/dev.json"  # JSON Lines despite the name
PUBMEDQA_ALL = "pubmedqa/ori_pqal.json"
PUBMEDQA_TEST = "pubmedqa/test_ground_truth.json"
MEDQA_TEST = "medqa/phrases_no_exclude_test.jsonl"

LETTERS = "ABCD"
PUBMEDQA_LABELS = ("yes", "no", "maybe")


def format_mcq(question: str, options: list[str]) -> str:
    """Question followed by lettered options; one format for MedMCQA train and MedQA held-out."""
    lines = [question.strip(), ""] + [f"{LETTERS[i]}. {str(opt).strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def cop_to_letter(cop: object) -> str:
    """MedMCQA's 1-based correct option (1..4) -> 'A'..'D'. Raises ValueError outside 1..4."""
    if isinstance(cop, bool) or not isinstance(cop, int) or not 1 <= cop <= 4:
        raise ValueError(f"cop must be an integer 1..4 (1-based), got {cop!r}")
    return LETTERS[cop - 1]


def medmcqa_example(rec: dict, lineno: int, path) -> Example:
    try:
        letter = cop_to_letter(rec["cop"])
    except ValueError as e:
        raise DataError(f"{path}: line {lineno}: field 'cop': {e}") from None
    exp = (rec.get("exp") or "").strip()
    response = f"{exp}\nThe answer is {letter}." if exp else f"The answer is {letter}."
    prompt = format_mcq(rec["question"], [rec["opa"], rec["opb"], rec["opc"], rec["opd"]])
    return Example(prompt=prompt, response=response, answer=letter,
                   meta={"source": "medmcqa_dev", "line": lineno, "id": rec.get("id")})


def pubmedqa_example(pmid: str, rec: dict, path) -> Example:
    for name in ("QUESTION", "CONTEXTS", "final_decision", "LONG_ANSWER"):
        if name not in rec:
            raise DataError(f"{path}: PMID {pmid}: missing field {name!r}")
    label = rec["final_decision"]
    if label not in PUBMEDQA_LABELS:
        raise DataError(f"{path}: PMID {pmid}: field 'final_decision' is {label!r}; expected yes, no or maybe")
    contexts = rec["CONTEXTS"] if isinstance(rec["CONTEXTS"], list) else [rec["CONTEXTS"]]
    context = "\n".join(str(c).strip() for c in contexts)
    prompt = f"Context: {context}\n\nQuestion: {rec['QUESTION'].strip()}\nAnswer yes, no or maybe."
    response = f"{rec['LONG_ANSWER'].strip()}\nThe answer is {label}."
    return Example(prompt=prompt, response=response, answer=label, meta={"source": "pubmedqa_train", "pmid": pmid})


def iter_medqa(path):
    """Validated MedQA (4-option) records: (1-based line, record) with options A–D and a letter answer.

    Shared by the held-out probe and the lm-eval conversion (`medqa_records`).
    """
    for lineno, rec in iter_jsonl(path, ("question", "options", "answer_idx")):
        opts = rec["options"]
        if not isinstance(opts, dict) or sorted(opts) != list(LETTERS):
            raise DataError(f"{path}: line {lineno}: field 'options' must have keys A, B, C, D; "
                            f"got {sorted(opts) if isinstance(opts, dict) else opts!r}")
        if rec["answer_idx"] not in opts:
            raise DataError(f"{path}: line {lineno}: field 'answer_idx' is {rec['answer_idx']!r}; "
                            "expected one of A, B, C, D")
        yield lineno, rec


# -- conversions for lm-eval: raw files -> the fields the stock tasks read (checked against
# hand-read records in tests/test_eval_tasks.py)

def medqa_records(path) -> list[dict]:
    """MedQA (jind11 raw): question, options{A..D}, answer_idx (letter) -> sent1, ending0..3, label (0..3)."""
    out = []
    for lineno, rec in iter_medqa(path):
        opts = rec["options"]
        out.append({"id": lineno, "sent1": rec["question"], **{f"ending{i}": str(opts[k]) for i, k in enumerate(LETTERS)},
                    "label": LETTERS.index(rec["answer_idx"])})
    return out


def medmcqa_records(path) -> list[dict]:
    """MedMCQA (raw dev): cop is 1-based (1..4) -> 0-based cop, as lm-eval's HF copy has it."""
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


def pubmedqa_records(all_path, test_path) -> list[dict]:
    """PubMedQA: {pmid: record} for the PMIDs of test_ground_truth.json (500, in that file's order,
    which is sorted by label) -> one row per item with pubid, QUESTION, CONTEXTS, final_decision."""
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


@TARGETS.register("medical")
class MedicalTarget(FileTarget):
    name = "medical"
    description = "MedMCQA dev + 500 non-test PubMedQA items; held-out MedQA test; eval MedQA (4 options), PubMedQA"
    default_reward = "choice"
    answer_format = "letter"  # the held-out MedQA answers are option letters
    conversions = {
        "medqa": Conversion({"src": MEDQA_TEST}, medqa_records),
        "medmcqa": Conversion({"src": MEDMCQA}, medmcqa_records),
        "pubmedqa": Conversion({"all": PUBMEDQA_ALL, "test": PUBMEDQA_TEST}, pubmedqa_records),
    }

    @dataclass
    class Options(CappedOptions):
        include_pubmedqa: bool = True

    def _files(self) -> list[str]:
        files = [MEDMCQA, MEDQA_TEST]
        if self.options.include_pubmedqa:
            files += [PUBMEDQA_ALL, PUBMEDQA_TEST]
        return files

    def _medmcqa(self) -> list[Example]:
        path = self._path(MEDMCQA)
        return [medmcqa_example(rec, lineno, path)
                for lineno, rec in iter_jsonl(path, ("question", "opa", "opb", "opc", "opd", "cop"))]

    def _pubmedqa_dicts(self) -> tuple[dict, dict]:
        all_path, test_path = self._path(PUBMEDQA_ALL), self._path(PUBMEDQA_TEST)
        labelled, test = read_json(all_path), read_json(test_path)
        for path, obj in ((all_path, labelled), (test_path, test)):
            if not isinstance(obj, dict):
                raise DataError(f"{path}: expected a JSON object keyed by PMID, got {type(obj).__name__}")
        return labelled, test

    def _pubmedqa_train(self) -> list[Example]:
        labelled, test = self._pubmedqa_dicts()
        path = self._path(PUBMEDQA_ALL)
        # Sorted PMIDs: the file's order is an upstream accident; the seed alone decides the order.
        return [pubmedqa_example(pmid, labelled[pmid], path) for pmid in sorted(labelled) if pmid not in test]

    def train_examples(self, seed: int) -> list[Example]:
        """MedMCQA dev (+ PubMedQA train pool), shuffled by `seed`, then capped at max_train_examples."""
        items = self._medmcqa()
        if self.options.include_pubmedqa:
            items += self._pubmedqa_train()
        items = stable_shuffle(items, seed)
        cap = self.options.max_train_examples
        return items if cap is None else items[:cap]

    def cpt_documents(self) -> list[str]:
        """Raw domain text for continued pre-training (`objective: cpt`, `documents: target`): the
        abstracts (CONTEXTS) of the labelled PubMedQA items outside the official test set, one document
        each, in PMID order. Prompts of the PubMedQA training samples contain them, their answers never."""
        labelled, test = self._pubmedqa_dicts()
        docs = []
        for pmid in sorted(labelled):
            if pmid in test:
                continue
            ctx = labelled[pmid].get("CONTEXTS") or []
            ctx = ctx if isinstance(ctx, list) else [ctx]
            text = "\n".join(str(c).strip() for c in ctx if str(c).strip())
            if text:
                docs.append(text)
        return docs

    def _medqa(self) -> list[Example]:
        out = []
        for lineno, rec in iter_medqa(self._path(MEDQA_TEST)):
            opts, letter = rec["options"], rec["answer_idx"]
            out.append(Example(prompt=format_mcq(rec["question"], [opts[k] for k in LETTERS]),
                               response=f"The answer is {letter}.", answer=letter,
                               meta={"source": "medqa_test", "line": lineno}))
        return out

    def heldout_examples(self, n: int, seed: int) -> list[Example]:
        """`n` MedQA test questions, stratified by answer letter and seeded (all if fewer)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return stratified_subset(self._medqa(), lambda ex: ex.answer, n, f"heldout/{seed}")

    def eval_tasks(self) -> list[str]:
        return ["medqa_4options", "pubmedqa"]

    def describe_data(self) -> dict:
        files = file_summary(self.data_dir, self._files())
        for rel in (MEDMCQA, MEDQA_TEST):
            files[rel]["records"] = count_lines(self._path(rel))
        pool = {"medmcqa_dev": files[MEDMCQA]["records"]}
        if self.options.include_pubmedqa:
            # Dicts keyed by PMID: a record count needs the keys, and the pool needs the difference.
            labelled, test = self._pubmedqa_dicts()
            files[PUBMEDQA_ALL]["records"], files[PUBMEDQA_TEST]["records"] = len(labelled), len(test)
            pool["pubmedqa_train"] = len(set(labelled) - set(test))
        return {"files": files, "train": self.train_size(pool),
                "heldout": {"source": MEDQA_TEST, "pool": files[MEDQA_TEST]["records"]}}
