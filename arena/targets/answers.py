"""How the held-out greedy probe reads the final answer of a reply, by answer format.

A target names its format (`Target.answer_format`); these are deliberately plain readers (the
probe's accuracy is a cheap signal), separate from the RLVR rewards in `arena.rewards`.

- `number`: the last number in the reply, separators dropped ("1,080." -> "1080");
- `letter`: the option letter after the last "answer is", else a bare final letter (A-E);
- `yes_no_maybe`: the last of yes / no / maybe in the reply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from arena.registry import Registry

AnswerReader = Callable[[str], str | None]
ANSWER_FORMATS: Registry[AnswerReader] = Registry("answer format")

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LETTER = re.compile(r"answer is:?\s*\(?([A-E])\b|\b([A-E])[.)]?\s*$")


@ANSWER_FORMATS.register("number")
def read_number(text: str) -> str | None:
    nums = _NUM.findall(text.strip())
    return nums[-1].replace(",", "").rstrip(".") if nums else None


@ANSWER_FORMATS.register("letter")
def read_letter(text: str) -> str | None:
    m = None
    for m in _LETTER.finditer(text.strip()):
        pass
    return (m.group(1) or m.group(2)) if m else None


@ANSWER_FORMATS.register("yes_no_maybe")
def read_yes_no_maybe(text: str) -> str | None:
    words = re.findall(r"\b(yes|no|maybe)\b", text.strip().lower())
    return words[-1] if words else None


def answers_match(pred: str | None, ref: str) -> bool:
    """Numbers compare as numbers (|Δ| <= 1e-6), anything else case-insensitively."""
    if pred is None:
        return False
    try:
        return math.isclose(float(pred), float(ref.replace(",", "")), rel_tol=0, abs_tol=1e-6)
    except ValueError:
        return pred.strip().lower() == ref.strip().lower()
