"""The "math" target: SFT on GSM8K train (optionally + MATH problems outside MATH-500).

Held-out examples come from GSM8K test, a different split from training, and the evaluation layer
scores GSM8K and MATH-500. The optional MATH extra set is the 4,500 MATH test problems PRM800K moved
into its train split; the 500 left are MATH-500, so every one of them must be found and excluded or
training would leak the eval set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from arena.data.io import (
    count_lines,
    file_summary,
    iter_jsonl,
    normalize_text,
    stable_shuffle,
)
from arena.components import TARGETS
from arena.errors import DataError
from arena.targets.base import CappedOptions, Example, FileTarget

GSM8K_TRAIN = "gsm8k/train.jsonl"
GSM8K_TEST = "gsm8k/test.jsonl"
MATH_FULL = "math/full/test.jsonl"
MATH_500 = "math/math500/test.jsonl"

_CALC = re.compile(r"<<.*?>>")  # GSM8K calculator annotations, e.g. "48/2 = <<48/2=24>>24"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_gsm8k_answer(text: str) -> tuple[str, str]:
    """Split a GSM8K answer "steps ... #### 1,080" into (steps without annotations, "1080").

    Raises ValueError when there is no '####' or the final answer is not a number.
    """
    if "####" not in text:
        raise ValueError("no '####' final-answer marker")
    steps, final = text.rsplit("####", 1)
    number = final.strip().replace(",", "")
    if not _NUMBER.fullmatch(number):
        raise ValueError(f"final answer {final.strip()!r} is not a number")
    return _CALC.sub("", steps).strip(), number


def gsm8k_response(steps: str, number: str) -> str:
    """The SFT response: the worked steps, then the phrase lm-eval's GSM8K extractors look for."""
    return f"{steps}\nThe answer is {number}." if steps else f"The answer is {number}."


def last_boxed(text: str) -> Optional[str]:
    r"""Content of the last \boxed{...} (or \fbox{...}) in `text`, or None.

    Braces are matched by depth, so `\boxed{\frac{1}{2}}` gives `\frac{1}{2}`; escaped braces
    (`\{`, `\}`) do not count. The brace-less form `\boxed 5` gives the next token. A box whose
    braces never close gives None rather than a truncated answer.
    """
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text)]
    if not starts:
        return None
    i = starts[-1]
    if i < len(text) and text[i] == "{":
        depth, j = 0, i
        while j < len(text):
            ch = text[j]
            if ch == "\\":
                j += 2  # skip the escaped character, so "\}" is not a closing brace
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:j]
            j += 1
        return None
    m = re.match(r"\s+([^\s$]+)", text[i:])
    if not m:
        return None
    return m.group(1).rstrip(".,;")


@TARGETS.register("math")
class MathTarget(FileTarget):
    name = "math"
    description = "GSM8K train (+ optional MATH non-MATH-500 problems); held-out GSM8K test; eval GSM8K, MATH-500"
    default_reward = "math"
    answer_format = "number"
    ilp_probe = "verify"

    @dataclass
    class Options(CappedOptions):
        include_math_extra: bool = False

    def _files(self) -> list[str]:
        files = [GSM8K_TRAIN, GSM8K_TEST]
        if self.options.include_math_extra:
            files += [MATH_FULL, MATH_500]
        return files

    def _gsm8k(self, rel: str, source: str) -> list[Example]:
        path = self._path(rel)
        out = []
        for lineno, rec in iter_jsonl(path, ("question", "answer")):
            try:
                steps, number = parse_gsm8k_answer(rec["answer"])
            except ValueError as e:
                raise DataError(f"{path}: line {lineno}: field 'answer': {e}") from None
            out.append(Example(prompt=rec["question"].strip(), response=gsm8k_response(steps, number),
                               answer=number, meta={"source": source, "line": lineno}))
        return out

    def _math_extra(self) -> list[Example]:
        full, m500 = self._path(MATH_FULL), self._path(MATH_500)
        held = {normalize_text(r["problem"]) for _, r in iter_jsonl(m500, ("problem",))}
        out, found = [], set()
        for lineno, rec in iter_jsonl(full, ("problem", "solution")):
            key = normalize_text(rec["problem"])
            if key in held:
                found.add(key)
                continue
            answer = last_boxed(rec["solution"])
            if answer is None:
                raise DataError(f"{full}: line {lineno}: field 'solution' has no complete \\boxed{{...}} answer")
            out.append(Example(prompt=rec["problem"].strip(), response=rec["solution"].strip(), answer=answer.strip(),
                               meta={"source": "math_extra", "line": lineno}))
        if len(found) != len(held):
            # An unmatched MATH-500 problem would stay in the training set and leak into the eval.
            raise DataError(f"{len(held) - len(found)} of the {len(held)} MATH-500 problems in {m500} were not found "
                            f"in {full}; refusing to train on it (MATH-500 would leak). Use the files described "
                            f"in PROVENANCE.md or set include_math_extra: false")
        return out

    def train_examples(self, seed: int) -> list[Example]:
        """GSM8K train (+ MATH extra), shuffled by `seed`, then capped at max_train_examples."""
        items = self._gsm8k(GSM8K_TRAIN, "gsm8k_train")
        if self.options.include_math_extra:
            items += self._math_extra()
        items = stable_shuffle(items, seed)
        cap = self.options.max_train_examples
        return items if cap is None else items[:cap]

    def heldout_examples(self, n: int, seed: int) -> list[Example]:
        """`n` GSM8K test examples (all if fewer), a seeded random subset: disjoint from training."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return stable_shuffle(self._gsm8k(GSM8K_TEST, "gsm8k_test"), f"heldout/{seed}")[:n]

    def eval_tasks(self) -> list[str]:
        return ["gsm8k", "math500"]

    def describe_data(self) -> dict:
        counts = {rel: count_lines(self._path(rel)) for rel in self._files()}
        pool = {"gsm8k_train": counts[GSM8K_TRAIN]}
        if self.options.include_math_extra:
            # PROVENANCE.md: every MATH-500 problem is in the full test set, so the extra is the difference.
            pool["math_extra"] = counts[MATH_FULL] - counts[MATH_500]
        files = file_summary(self.data_dir, self._files())
        for rel in files:
            files[rel]["records"] = counts[rel]
        return {"files": files, "train": self.train_size(pool),
                "heldout": {"source": GSM8K_TEST, "pool": counts[GSM8K_TEST]}}
