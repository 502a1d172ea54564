"""Verifiable rewards for RLVR: pure functions (completion text, reference answer) -> float.

Registered by name in REWARDS. Every target class names its default reward (`Target.default_reward`:
arith -> arith, math -> math, medical -> choice); a run overrides it with `objective.reward=<name>`.
Rewards are binary (1.0 correct, 0.0 otherwise) so "pass rate" is the share of samples at 1.0.

- `arith`: the integer result of the completion (after the last '=', else its last number) equals
  the reference exactly.
- `math`: GSM8K final numbers ("The answer is 1,234." -> 1234; '####'; a trailing period or a
  thousands separator never matters) and MATH boxed answers. Non-numeric answers are compared with
  math-verify (`\\boxed{\\frac{1}{2}}` = `0.5`) with its signal.alarm timeouts disabled (they
  fail outside the main thread, docs/design.md "Ecosystem notes"); without math-verify installed, a
  normalised string comparison (plus simple fractions) is the fallback.
- `choice`: multiple choice letters A-E ("The answer is B.", "answer: (B)", a bare final "B")
  and PubMedQA's yes / no / maybe.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional

from arena.errors import ConfigError, suggest
from arena.registry import Registry
from arena.components import TARGETS
from arena.targets.math import last_boxed

RewardFn = Callable[[str, str], float]
REWARDS: Registry[RewardFn] = Registry("reward")

_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})  # unicode minus / en dash written as minus
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)
_MAX_VERIFY_CHARS = 300  # math-verify runs without a timeout: never hand sympy an unbounded string


def resolve_reward(name: str, target: str | None) -> tuple[str, RewardFn]:
    """(name, function) for `objective.reward`; 'auto' picks the target's `default_reward`."""
    if name == "auto":
        default = TARGETS.get(target).default_reward if target in TARGETS else None
        if default is None:
            raise ConfigError("objective.reward", name,
                              f"target {target!r} has no default reward; set one of: {', '.join(REWARDS.names())}")
        name = default
    return name, REWARDS.get(name, field="objective.reward")


def check_reward_name(name: str, field: str = "objective.reward") -> None:
    """ConfigError (with a suggestion) unless `name` is 'auto' or a registered reward."""
    if name != "auto" and name not in REWARDS:
        allowed = ["auto", *REWARDS.names()]
        raise ConfigError(field, name, f"allowed: {', '.join(allowed)}{suggest(name, allowed)}")


# -- number extraction -----------------------------------------------------------------------------

def _to_float(s: str) -> Optional[float]:
    try:
        v = float(s.replace(",", "").rstrip("."))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _clean(text: str) -> str:
    return text.translate(_MINUS).replace("$", "").replace("\\!", "")


def last_number(text: str) -> Optional[str]:
    """The last number in `text` without separators: 'is 1,234.' -> '1234', 'is -3.' -> '-3'."""
    nums = _NUM.findall(_clean(text))
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def final_number(text: str) -> Optional[str]:
    """A GSM8K-style final answer: after the last '####' or 'answer is', else the last number."""
    text = _clean(text)
    for marker in (re.compile(r"####\s*"), _ANSWER_IS):
        hits = list(marker.finditer(text))
        if hits:
            m = _NUM.match(text[hits[-1].end():].lstrip("( "))
            if m:
                return m.group(0).replace(",", "").rstrip(".")
    return last_number(text)


def _numbers_equal(a: str, b: str) -> bool:
    x, y = _to_float(a), _to_float(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6)


# -- arith ---------------------------------------------------------------------------------------

@REWARDS.register("arith")
def arith_reward(completion: str, answer: str) -> float:
    """1.0 when the completion's result equals the integer reference exactly.

    The result is the first number after the last '=' ("12 + 5 = 17"), else the last number in the
    completion; "17.0" counts, "17.5" does not.
    """
    text = _clean(completion)
    if "=" in text:
        m = _NUM.search(text[text.rindex("=") + 1:])
        pred = m.group(0).replace(",", "").rstrip(".") if m else None
    else:
        pred = last_number(text)
    return 1.0 if pred is not None and _numbers_equal(pred, answer) else 0.0


# -- math -----------------------------------------------------------------------------------------

_LATEX_NOISE = re.compile(r"\\left|\\right|\\,|\\;|\\ |\^\{?\\circ\}?|\\%|%")


def normalize_math(s: str) -> str:
    """Conservative string normal form for the fallback: '\\dfrac{1}{2}.' -> '\\frac{1}{2}'."""
    s = _clean(s).strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:d|t)frac", r"\\frac", s)
    s = _LATEX_NOISE.sub("", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s.lower()


_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$|^(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)$")


def simple_value(s: str) -> Optional[float]:
    """A number, '\\frac{a}{b}' or 'a/b' as a float; None for anything else."""
    s = normalize_math(s)
    v = _to_float(s) if _NUM.fullmatch(s) else None
    if v is not None:
        return v
    m = _FRAC.match(s)
    if not m:
        return None
    if m.group(2) is not None:
        num, den, sign = float(m.group(2)), float(m.group(3)), -1.0 if m.group(1) else 1.0
    else:
        num, den, sign = float(m.group(4)), float(m.group(5)), 1.0
    return sign * num / den if den != 0 else None


def _math_verify(gold: str, pred: str) -> Optional[bool]:
    """math-verify's verdict on two bare answers; None when it is not installed or cannot parse."""
    try:
        import logging

        from math_verify import parse, verify
    except ImportError:
        return None
    for name in ("math_verify.parser", "math_verify.grader"):  # the "timeout disabled" notice is ours
        logging.getLogger(name).setLevel(logging.ERROR)
    g = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    p = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if not g or not p:
        return None
    return bool(verify(g, p, timeout_seconds=None))


def math_answer(completion: str) -> Optional[str]:
    """The answer a math completion commits to: last \\boxed{}, else 'answer is X', else last number."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed.strip()
    text = _clean(completion)
    hits = list(_ANSWER_IS.finditer(text))
    if hits:
        tail = text[hits[-1].end():].strip()
        m = _NUM.match(tail)
        if m:
            return m.group(0).replace(",", "").rstrip(".")
        sentence = re.split(r"(?<!\d)\.(?!\d)|\n", tail, maxsplit=1)[0].strip()
        if sentence:
            return sentence
    return final_number(text)


@REWARDS.register("math")
def math_reward(completion: str, answer: str) -> float:
    """1.0 when the committed answer equals the reference (GSM8K numbers or MATH boxed answers)."""
    pred = math_answer(completion)
    if pred is None or not answer.strip():
        return 0.0
    gold = answer.strip()
    gv, pv = simple_value(gold), simple_value(pred)
    if gv is not None and pv is not None:
        return 1.0 if math.isclose(gv, pv, rel_tol=1e-9, abs_tol=1e-6) else 0.0
    if len(pred) <= _MAX_VERIFY_CHARS and len(gold) <= _MAX_VERIFY_CHARS:
        verdict = _math_verify(gold, pred)
        if verdict is not None:
            return 1.0 if verdict else 0.0
    return 1.0 if normalize_math(pred) == normalize_math(gold) else 0.0


# -- multiple choice ------------------------------------------------------------------------------

# The phrase is case-insensitive, the letter is not: "the answer is a fever" picks no option.
_LETTER_AFTER = re.compile(r"(?i:answer\s*(?:is|:)?\s*:?\s*(?:option\s*)?)\(?([A-E])\b(?![a-z'])")
_LETTER_END = re.compile(r"(?:^|[\s(])\(?([A-E])\)?[.)]?\s*$")
_YNM = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def choice_answer(completion: str, like: str) -> Optional[str]:
    """The option the completion picks, shaped like the reference (a letter, or yes/no/maybe)."""
    text = completion.strip()
    if like.strip().lower() in ("yes", "no", "maybe"):
        hits = list(re.finditer(r"answer\s*(?:is|:)\s*:?\s*(yes|no|maybe)\b", text, re.IGNORECASE))
        if hits:
            return hits[-1].group(1).lower()
        words = _YNM.findall(text)
        return words[-1].lower() if words else None
    hits = list(_LETTER_AFTER.finditer(text))
    if hits:
        return hits[-1].group(1).upper()
    m = _LETTER_END.search(text)
    return m.group(1) if m else None


@REWARDS.register("choice")
def choice_reward(completion: str, answer: str) -> float:
    """1.0 when the chosen option letter (or yes/no/maybe) equals the reference."""
    pred = choice_answer(completion, answer)
    return 1.0 if pred is not None and pred.lower() == answer.strip().lower() else 0.0
