"""Verifiable rewards (arena/rewards.py): tricky strings, the registry, target defaults, fallbacks."""

from __future__ import annotations

import threading

import pytest

from arena.errors import ConfigError
from arena.rewards import (
    REWARDS,
    arith_reward,
    check_reward_name,
    choice_reward,
    final_number,
    math_answer,
    math_reward,
    resolve_reward,
)
from arena.components import TARGETS


@pytest.mark.parametrize(
    "completion,answer,want",
    [
        ("The answer is 1,234.", "1234", 1.0),  # thousands separator + trailing period
        ("The answer is 1,234.", "1,234", 1.0),
        ("She pays $18 a day.\nThe answer is 18.", "18", 1.0),  # currency sign
        ("#### 72", "72", 1.0),  # GSM8K's own marker
        ("The answer is -3.", "-3", 1.0),  # negative
        ("The answer is \u22123.", "-3", 1.0),  # unicode minus
        ("The answer is 3.", "-3", 0.0),  # sign matters
        ("So 5.00 dollars. The answer is 5.00", "5", 1.0),  # numeric equality
        ("The answer is 12, since 3 * 4 = 12 and 7 is odd", "12", 1.0),  # 'answer is' beats the last number
        ("3 + 4 = 7, then 7 * 2 = 14", "14", 1.0),  # no marker: the last number
        ("I do not know.", "5", 0.0),  # no answer at all
        ("", "5", 0.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),  # boxed fraction vs decimal reference
        ("so x = \\boxed{\\dfrac{1}{2}}.", "\\frac{1}{2}", 1.0),  # dfrac and trailing period
        ("\\boxed{0.5}", "\\frac12", 1.0),
        ("\\boxed{(3, -1)}", "(3,-1)", 1.0),  # tuple via math-verify
        ("First \\boxed{2}, no wait \\boxed{3}", "3", 1.0),  # the last box counts
        ("First \\boxed{2}, no wait \\boxed{3}", "2", 0.0),
        ("\\boxed{\\text{Monday}}", "\\text{Monday}", 1.0),
        ("\\boxed{\\frac{1}{3}}", "0.5", 0.0),
    ],
)
def test_math_reward_tricky_strings(completion, answer, want):
    assert math_reward(completion, answer) == want


@pytest.mark.parametrize(
    "completion,answer,want",
    [
        ("answer: (B)", "B", 1.0),
        ("The answer is B.", "B", 1.0),
        ("The answer is (C)", "C", 1.0),
        ("Pneumonia is likely.\nThe answer is D.", "D", 1.0),
        ("Option A looks wrong ... the answer is B", "B", 1.0),  # the committed answer, not the first letter
        ("B", "B", 1.0),  # a bare final letter
        ("The answer is a fever", "A", 0.0),  # lowercase article is not an option
        ("I am not sure.", "A", 0.0),
        ("The answer is B.", "C", 0.0),
        ("Context says so. The answer is maybe.", "maybe", 1.0),  # PubMedQA
        ("Yes, this is true. The answer is no.", "no", 1.0),
        ("No idea", "yes", 0.0),
    ],
)
def test_choice_reward(completion, answer, want):
    assert choice_reward(completion, answer) == want


@pytest.mark.parametrize(
    "completion,answer,want",
    [
        ("12 + 5 = 17", "17", 1.0),
        ("7 - 10 = -3", "-3", 1.0),
        ("5 - 3 = 2", "2", 1.0),
        ("5 - 3 = 2", "-2", 0.0),
        ("17.", "17", 1.0),  # trailing period
        ("17.5", "17", 0.0),  # exact value
        ("= 1,234", "1234", 1.0),
        ("12 + 5 = 17 = 18", "18", 1.0),  # after the last '='
        ("", "3", 0.0),
        ("no digits here", "3", 0.0),
    ],
)
def test_arith_reward(completion, answer, want):
    assert arith_reward(completion, answer) == want


def test_extractors():
    assert final_number("The answer is 1,234.") == "1234"
    assert final_number("no numbers") is None
    assert math_answer("We get \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert math_answer("The answer is Monday.") == "Monday"


def test_registry_and_target_defaults():
    assert {"arith", "math", "choice"} <= set(REWARDS.names())
    defaults = {t: TARGETS.get(t).default_reward for t in ("arith", "math", "medical")}
    assert defaults == {"arith": "arith", "math": "math", "medical": "choice"}
    for target in TARGETS:  # every target's default is a registered reward, and 'auto' picks it
        reward = TARGETS.get(target).default_reward
        name, fn = resolve_reward("auto", target)
        assert name == reward and fn is REWARDS.get(reward)
    assert resolve_reward("choice", "math")[0] == "choice"  # an explicit reward overrides the default


def test_unknown_reward_name_is_a_config_error_with_suggestion():
    with pytest.raises(ConfigError) as e:
        check_reward_name("arithh")
    assert "objective.reward" in str(e.value) and "did you mean 'arith'?" in str(e.value)
    with pytest.raises(ConfigError, match="no default reward"):
        resolve_reward("auto", "unknown-target")
    with pytest.raises(ConfigError, match="did you mean 'math'"):
        resolve_reward("maths", "math")


def test_math_fallback_without_math_verify(monkeypatch):
    import arena.rewards as rw

    monkeypatch.setattr(rw, "_math_verify", lambda gold, pred: None)  # as if math-verify were not installed
    assert math_reward("\\boxed{\\frac{1}{2}}", "0.5") == 1.0  # simple fractions still evaluate
    assert math_reward("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}") == 1.0
    assert math_reward("\\boxed{\\text{Monday}}", "Monday") == 1.0  # normalised strings
    assert math_reward("\\boxed{x^2 + 1}", "x^2+1") == 1.0
    assert math_reward("\\boxed{x^2 + 2}", "x^2+1") == 0.0


def test_math_reward_works_outside_the_main_thread():
    """math-verify's default timeouts use signal.alarm, which raises outside the main thread."""
    pytest.importorskip("math_verify")
    out = []
    th = threading.Thread(target=lambda: out.append(math_reward("\\boxed{(3, -1)}", "(3,-1)")))
    th.start()
    th.join()
    assert out == [1.0]
