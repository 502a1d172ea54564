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
    and SFT never overcame it: no checkpoint of the run had MC pass@N >= `iv_learned` (learned and then
    lost is IV); no near-duplicate training sample contradicts it (then III, the data's own conflict,
    is the direct account); and the failure is not a guess (rule I does not hold: something near the sample was learned, so
    the region is known). `ii_jsd_max` optionally caps JSD(base, tuned answer distributions) in bits
    (default 1: no cap). The paper's table uses "D_JS > 0.3" as its conflict signal; on the planted
    world (tests/test_ilp_planted.py) SFT moved every answer distribution by ~0.37 bits through the
    chat format alone, learned or not, so a JSD threshold mostly measured that shift, and requiring the
    tuned model to keep the base's very answer missed planted conflicts where SFT moved it to another
    wrong one. A confident answer about something the model has never seen is a guess (the tiny model
    gave 0.5-0.98 to unseen people), which is why I takes precedence.
III conflict inside the SFT data: another training sample's prompt is a near-duplicate (TF-IDF
    cosine >= `iii_similarity`, arena/data/similarity.py) and its answer differs.
IV  left-side forgetting: trained on only in the first `iv_early` share of the run's steps (every copy,
    every epoch), learned at an earlier checkpoint (MC pass@N >= `iv_learned`), unlearned at the end; when the reversed-order
    control was trained, it must be learned there (pass >= `threshold`): seen late, it is kept.
V   insufficient optimisation: trained on in the last segment (from the latest checkpoint at least half
    a checkpoint interval before the end, to the end), and its reference NLL fell by >= `v_drop`
    (relative) over that segment; when the longer control was trained, it must
    be learned there. (A sample not trained on in the last segment whose loss drifts is not being
    optimised; without that condition a forgotten early sample that the longer control, replaying
    the data, relearns would read as V.)
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
    if top is None or jsd is None or "tuned_top" not in ev:
        return None
    confident_wrong = (not top["correct"]) and top["prob"] >= s.ii_confidence
    # the training data do not contradict the sample themselves (that is III, the more direct account) ...
    from_data = bool(ev.get("conflicts"))
    # ... and SFT never overcame it along the run (learned, then lost, is forgetting: IV)
    traj = ev.get("checkpoints") or []
    once_learned = any(p["mc_pass"] >= s.iv_learned for p in traj[:-1])
    return (confident_wrong and jsd <= s.ii_jsd_max and not from_data and not once_learned
            and cause_i(ev, s) is not True and cause_v(ev, s) is not True)


def cause_iii(ev: dict, s: IlpSettings) -> bool | None:
    if ev.get("conflicts") is None:
        return None
    return len(ev["conflicts"]) > 0


def cause_iv(ev: dict, s: IlpSettings) -> bool | None:
    traj, first = ev.get("checkpoints"), ev.get("first_seen")
    if not traj or len(traj) < 2 or ev.get("steps") is None or "first_seen" not in ev:
        return None
    if first is None:  # never in a batch (e.g. dropped as too long): not forgetting
        return False
    last = ev.get("last_seen", first)
    early = last <= s.iv_early * ev["steps"]  # every time it was trained on fell in the early part
    learned_before = max(p["mc_pass"] for p in traj[:-1]) >= s.iv_learned
    confirmed = ev.get("reversed_pass") is None or ev["reversed_pass"] >= s.threshold
    return early and learned_before and confirmed


def _segment_start(traj: list[dict]) -> dict:
    """The trajectory point V compares the end with: the latest checkpoint at least half a checkpoint
    interval before the final weights (a checkpoint two steps before the end measures nothing)."""
    steps = [p["step"] for p in traj]
    gaps = sorted(b - a for a, b in zip(steps, steps[1:-1])) or [steps[-1] - steps[0]]
    half = gaps[len(gaps) // 2] / 2
    before = [p for p in traj[:-1] if p["step"] <= steps[-1] - half]
    return before[-1] if before else traj[-2]


def cause_v(ev: dict, s: IlpSettings) -> bool | None:
    traj = ev.get("checkpoints")
    if not traj or len(traj) < 2:
        return None
    start = _segment_start(traj)
    prev, last = start["nll"], traj[-1]["nll"]
    if prev is None or last is None:
        return None
    # trained on in the last segment, when the data order is known (a last_seen of None: never trained on)
    in_last = "last_seen" not in ev or (ev["last_seen"] is not None and ev["last_seen"] > start["step"])
    falling = prev > 0 and (prev - last) / prev >= s.v_drop
    confirmed = ev.get("longer_pass") is None or ev["longer_pass"] >= s.threshold
    return in_last and falling and confirmed


RULES: dict[str, Rule] = {"I": cause_i, "II": cause_ii, "III": cause_iii, "IV": cause_iv, "V": cause_v}
assert tuple(RULES) == CAUSES


def rule_text(cause: str, s: IlpSettings) -> str:
    """The rule with this run's thresholds, as the report and dashboard show it."""
    return {
        "I": f"base MC pass@{s.n} <= {s.i_base_max} and no similar sample (prompt similarity >= {s.similarity}) learned",
        "II": f"base's top answer wrong with p >= {s.ii_confidence}, never learned along the run"
              + (f", JSD(base, tuned) <= {s.ii_jsd_max} bits" if s.ii_jsd_max < 1 else "")
              + ", no conflicting near-duplicate (III), and neither cause I nor V",
        "III": f"a near-duplicate training prompt (similarity >= {s.iii_similarity}) with a different answer",
        "IV": f"trained on only in the first {s.iv_early:.0%} of steps, MC pass@{s.n} >= {s.iv_learned} at an earlier "
              f"checkpoint, and learned in the reversed-order control when it ran",
        "V": f"trained on in the last checkpoint segment, reference NLL fell >= {s.v_drop:.0%} over it, and "
             f"learned in the longer control when it ran",
    }[cause]


def attribute(ev: dict, s: IlpSettings, causes: list[str]) -> tuple[list[str], dict]:
    """(the causes among `causes` whose rule holds, {cause: True/False/None}) for one unlearned sample."""
    verdicts = {c: RULES[c](ev, s) for c in causes}
    return [c for c in causes if verdicts[c]], verdicts
