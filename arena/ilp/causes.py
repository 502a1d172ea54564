"""The five causes of an unlearned sample (ILP, arXiv 2604.10079, Table 10), each a stated rule.

Every rule is a pure function of one sample's evidence (what `arena.ilp.evidence` measured, stored
per sample in <run>/ilp/samples.jsonl) and the thresholds in `IlpSettings`; it answers True, False,
or None when its evidence was not measured (then the cause is reported as not tested, never as
absent). Rules are applied to unlearned samples only; a sample may match several (the overlaps are
reported) or none ("unexplained").

I   missing pre-training knowledge: the starting model cannot answer it either (its MC pass@N is at
    most `i_base_max`) and no similar training sample (prompt similarity >= `similarity`) was learned.
II  conflict with the base model's knowledge: the starting model is confidently wrong (its most
    likely answer is a wrong one, with probability >= `ii_confidence` over the sample's MC candidates)
    and SFT moved it little: JSD(base, tuned answer distributions) <= `ii_jsd_max` bits. The paper's
    table uses a JSD above 0.3 as its conflict signal; we follow the issue's reading (the prior won:
    the tuned model still answers like the base), which is what "unlearned because of the base"
    means for a sample SFT failed on. Both are one option away (ii_jsd_max = 1 drops the condition).
III conflict inside the SFT data: another training sample's prompt is a near-duplicate (TF-IDF
    cosine >= `iii_similarity`, arena/data/similarity.py) and its answer differs.
IV  left-side forgetting: first seen in the first `iv_early` share of the run's steps, learned at an
    earlier checkpoint (MC pass@N >= `iv_learned`), unlearned at the end; when the reversed-order
    control was trained, it must be learned there (pass >= `threshold`): seen late, it is kept.
V   insufficient optimisation: its reference NLL still fell by >= `v_drop` (relative) between the
    last two checkpoints; when the longer control was trained, it must be learned there.
"""

from __future__ import annotations

from collections.abc import Callable

from arena.ilp.settings import CAUSES, IlpSettings

Rule = Callable[[dict, IlpSettings], "bool | None"]


def cause_i(ev: dict, s: IlpSettings) -> bool | None:
    if ev.get("base_mc_pass") is None or ev.get("learned_neighbours") is None:
        return None
    return ev["base_mc_pass"] <= s.i_base_max and not ev["learned_neighbours"]


def cause_ii(ev: dict, s: IlpSettings) -> bool | None:
    top, jsd = ev.get("base_top"), ev.get("jsd")
    if top is None or jsd is None:
        return None
    return (not top["correct"]) and top["prob"] >= s.ii_confidence and jsd <= s.ii_jsd_max


def cause_iii(ev: dict, s: IlpSettings) -> bool | None:
    if ev.get("conflicts") is None:
        return None
    return len(ev["conflicts"]) > 0


def cause_iv(ev: dict, s: IlpSettings) -> bool | None:
    traj, first = ev.get("checkpoints"), ev.get("first_seen")
    if not traj or len(traj) < 2 or ev.get("steps") is None:
        return None
    if first is None:  # never in a batch (e.g. dropped as too long): not forgetting
        return False
    early = first <= s.iv_early * ev["steps"]
    learned_before = max(p["mc_pass"] for p in traj[:-1]) >= s.iv_learned
    confirmed = ev.get("reversed_pass") is None or ev["reversed_pass"] >= s.threshold
    return early and learned_before and confirmed


def cause_v(ev: dict, s: IlpSettings) -> bool | None:
    traj = ev.get("checkpoints")
    if not traj or len(traj) < 2:
        return None
    prev, last = traj[-2]["nll"], traj[-1]["nll"]
    falling = prev > 0 and (prev - last) / prev >= s.v_drop
    confirmed = ev.get("longer_pass") is None or ev["longer_pass"] >= s.threshold
    return falling and confirmed


RULES: dict[str, Rule] = {"I": cause_i, "II": cause_ii, "III": cause_iii, "IV": cause_iv, "V": cause_v}
assert tuple(RULES) == CAUSES


def rule_text(cause: str, s: IlpSettings) -> str:
    """The rule with this run's thresholds, as the report and dashboard show it."""
    return {
        "I": f"base MC pass@{s.n} <= {s.i_base_max} and no similar sample (prompt similarity >= {s.similarity}) learned",
        "II": f"base's top answer wrong with p >= {s.ii_confidence} and JSD(base, tuned) <= {s.ii_jsd_max} bits",
        "III": f"a near-duplicate training prompt (similarity >= {s.iii_similarity}) with a different answer",
        "IV": f"first seen in the first {s.iv_early:.0%} of steps, MC pass@{s.n} >= {s.iv_learned} at an earlier "
              f"checkpoint, and learned in the reversed-order control when it ran",
        "V": f"reference NLL fell >= {s.v_drop:.0%} between the last two checkpoints, and learned in the longer "
             f"control when it ran",
    }[cause]


def attribute(ev: dict, s: IlpSettings, causes: list[str]) -> tuple[list[str], dict]:
    """(the causes among `causes` whose rule holds, {cause: True/False/None}) for one unlearned sample."""
    verdicts = {c: RULES[c](ev, s) for c in causes}
    return [c for c in causes if verdicts[c]], verdicts
