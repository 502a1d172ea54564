"""The `planted` target: a seeded fact world whose samples carry the cause of incomplete learning
they were built to suffer from (arena/targets/planted.py). Counts below follow from the default
options by hand: 20 normal people x 4 facts, 12 I facts, 8 of the normal facts relabelled (II),
6 III pairs, 6 IV facts, 6 V people with 4 ledger samples each."""

from __future__ import annotations

import collections

import pytest

from arena.components import TARGETS
from arena.data.similarity import conflict_groups, prompt_similarity
from arena.errors import ConfigError
from arena.schema import build
from arena.targets.planted import PlantedTarget, twin_prompt


def make(**options) -> PlantedTarget:
    return PlantedTarget(build(PlantedTarget.Options, options, prefix="target"), None)


def distinct(examples):
    seen, out = set(), []
    for e in examples:
        if (e.prompt, e.response) not in seen:
            seen.add((e.prompt, e.response))
            out.append(e)
    return out


def test_registered_and_described():
    assert TARGETS.get("planted") is PlantedTarget
    t = make()
    d, o = t.describe(), t.options
    assert d["train"]["pool"]["plants"] == {"I": o.i_people, "II": o.ii_facts, "III": 2 * o.iii_pairs,
                                            "IV": o.iv_facts, "V": o.v_facts}
    assert d["eval_tasks"] == [] and PlantedTarget.ilp_probe == "mc"


def test_deterministic_and_seeded():
    a, b = make(), make()
    assert a.train_examples(0) == b.train_examples(0)
    assert a.cpt_documents() == b.cpt_documents()
    assert a.train_examples(0) != a.train_examples(1)  # the seed orders each pass ...
    assert sorted(e.prompt for e in a.train_examples(0)) == sorted(e.prompt for e in a.train_examples(1))  # ... only
    assert make(data_seed=1).train_examples(0) != a.train_examples(0)


def test_plant_counts_and_repeats():
    t = make()
    ex = t.train_examples(0)
    o = t.options
    uniq = collections.Counter(e.meta["plant"] for e in distinct(ex))
    known = o.people * 4 - o.ii_facts + (o.iii_pairs + o.iv_facts + o.v_facts) * 3  # 3 normal facts per planted person
    assert uniq == {None: known, "I": o.i_people, "II": o.ii_facts, "III": 2 * o.iii_pairs, "IV": o.iv_facts,
                    "V": o.v_facts}
    copies = collections.Counter((e.prompt, e.response) for e in ex)
    for e in distinct(ex):
        n = copies[(e.prompt, e.response)]
        if e.meta["plant"] in ("I", "II") or (e.meta["plant"] == "III" and e.prompt[0].islower()):
            assert n == 1  # once-only
        elif e.meta["plant"] == "IV":
            assert n == o.iv_repeats
        elif e.meta["plant"] == "V":
            assert n == o.v_repeats  # the planted record: only in the last pass
        elif e.meta["plant"] == "III":
            assert n == o.passes * o.iii_repeats  # the winner: iii_repeats a pass
        elif e.prompt.startswith("Ledger of"):
            assert n == o.passes * o.v_repeats  # V people's other records: v_repeats a pass
        else:
            assert n == o.passes


def test_order_iv_first_pass_once_only_in_the_third():
    t = make()
    o, ex = t.options, t.train_examples(0)
    n = len(ex)
    pos = collections.defaultdict(list)
    for i, e in enumerate(ex):
        pos[e.meta["plant"]].append(i / n)
    n_iv, n_once, n_late = len(pos["IV"]), o.i_people + o.ii_facts + o.iii_pairs, len(pos["V"])
    per_pass = (n - n_iv - n_once - n_late) / o.passes
    assert n_iv == o.iv_facts * o.iv_repeats and max(pos["IV"]) < (per_pass + n_iv) / n  # all in the first pass
    once = [i / n for i, e in enumerate(ex) if e.meta["plant"] in ("I", "II")]
    assert 0.5 < min(once) and max(once) < 0.75
    # the planted V records: after the first half of the last pass (and not in any earlier pass)
    assert min(pos["V"]) >= 1 - (0.5 * per_pass + n_late) / n - 1e-9


def test_corpus_states_known_facts_and_never_the_planted_values():
    from arena.targets.planted import ATTRIBUTES

    t = make()
    text = "\n".join(t.cpt_documents())
    w = t.world()
    for f in w.facts:
        _, first, others = ATTRIBUTES[f.attr]
        if f.corpus_value is not None:  # normal and II facts: stated (II: the value SFT contradicts)
            assert any(p.format(name=f.person, v=f.corpus_value) in text for p in (first, *others))
        else:  # I, III, IV, V facts: only rumoured
            assert any(f"Some say {p.format(name=f.person, v=v)}" in text
                       for p in (first, *others) for v in w.values[f.attr][:t.options.common])
    # rare values (every planted answer of I, II, IV, V and the III losers) never appear in the corpus
    rare = {v for vals in w.values.values() for v in vals[t.options.common:]}
    assert all(f" {v}" not in text for v in rare)
    planted = [f for f in w.facts if f.plant in ("I", "II", "IV", "V")] + w.twins
    o = t.options
    assert len(planted) == o.i_people + o.ii_facts + o.iv_facts + o.v_facts + o.iii_pairs
    assert all(f.value in rare for f in planted)
    assert all(f.corpus_value != f.value for f in w.facts if f.plant == "II")


def test_iii_pairs_are_near_duplicates_with_other_answers_and_nothing_else_conflicts():
    ex = distinct(make().train_examples(0))
    groups = conflict_groups(ex, 0.9)
    assert len(groups) == 6
    for g in groups:
        assert len(g) == 2 and all(ex[i].meta["plant"] == "III" for i in g)
        a, b = (ex[i] for i in g)
        assert a.meta["person"] == b.meta["person"] and a.answer != b.answer
    S = prompt_similarity([ex[g[0]].prompt for g in groups], [ex[g[1]].prompt for g in groups]).toarray()
    assert all(S[k, k] >= 0.9 for k in range(len(groups)))
    assert all(twin_prompt(ex[g[0]].prompt) in (ex[g[0]].prompt, ex[g[1]].prompt) or
               twin_prompt(ex[g[1]].prompt) in (ex[g[0]].prompt, ex[g[1]].prompt) for g in groups)


def test_same_person_prompts_are_similar_other_people_not():
    ex = distinct(make().train_examples(0))
    S = prompt_similarity([e.prompt for e in ex]).toarray()
    for i, a in enumerate(ex):
        for j, b in enumerate(ex):
            if i < j and a.meta["attr"] != b.meta["attr"] or (i < j and a.meta["person"] != b.meta["person"]):
                if a.meta["person"] == b.meta["person"]:
                    assert 0.5 <= S[i, j] < 0.9, (a.prompt, b.prompt)
                else:
                    assert S[i, j] < 0.5, (a.prompt, b.prompt)


def test_mc_options_differ_only_in_the_answer():
    from arena.ilp import mc

    ex = make().train_examples(0)
    pools = mc.distractor_pools(ex)
    assert all(len(p) == 8 for p in pools.values())  # every value of an attribute is a candidate
    v = next(e for e in ex if e.meta["plant"] == "V")
    assert mc.continuation(v, "999") == v.response.replace(v.answer, "999")


def test_heldout_asks_known_facts_in_a_new_phrasing():
    t = make()
    held = t.heldout_examples(10, seed=0)
    assert len(held) == 10 and held == t.heldout_examples(10, seed=0)
    train_prompts = {e.prompt for e in t.train_examples(0)}
    assert all(e.prompt not in train_prompts and e.meta["plant"] is None for e in held)
    with pytest.raises(ValueError):
        t.heldout_examples(-1, seed=0)


@pytest.mark.parametrize("field,value", [("people", 0), ("common", 8), ("common", 1), ("passes", 2),
                                         ("ii_facts", 99), ("people", 40), ("values", 30), ("i_people", -1)])
def test_bad_options_name_the_field(field, value):
    with pytest.raises(ConfigError) as e:
        make(**{field: value})
    assert e.value.field.endswith(field)
