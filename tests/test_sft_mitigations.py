"""SFT's mitigations of incomplete learning (docs/training.md, "Mitigations of incomplete learning").

Everything runs on the tiny model in fp32 on CPU. Stock runs are pinned by hashes of their batches
taken before the options existed, so "all defaults = today's behaviour" is checked against the old
code path, not against itself. Scorers (dev NLL, val loss) are scripted where a test needs a loss to
rise; the scripts are keyed on the objective's own saved state, so they replay the same on resume.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import prepared_context
from safetensors.torch import load_file

from arena.data import similarity
from arena.data.similarity import conflict_groups, near_duplicates, prompt_similarity
from arena.errors import ConfigError
from arena.experiment import run_training
from arena.objectives.sft import SFT
from arena.targets.arith import ArithTarget as Arith
from arena.targets.base import Example

QUIET = {"log": lambda msg: None}
SMALL = dict(method="lora", target__n_train=64, train__lr=1e-2, probe__heldout=0)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


def _examples_of(obj: SFT, rows) -> list[int]:
    return [int(obj.example_index[i]) for r in rows for i in obj.data.row_examples[int(r)]]


# -- similarity -----------------------------------------------------------------------------------

def test_tfidf_cosines_of_hand_made_texts():
    # "x y" vs "x z": x is in both documents (idf 1), y, z, "x y", "x z" in one (idf ln(3/2) + 1);
    # the dot product is x's weight squared: cos = 1 / (1 + 2 (ln 1.5 + 1)^2).
    s = prompt_similarity(["x y", "x z"])
    assert sp.issparse(s)
    w = math.log(1.5) + 1
    assert s[0, 1] == pytest.approx(1 / (1 + 2 * w * w), rel=1e-9)
    assert s[0, 0] == pytest.approx(1.0)
    # single digits and letters are words: "3 + 4" and "3 + 5" are not the same text
    t = prompt_similarity(["What is 3 + 4?"], ["What is 3 + 5?", "What is 3 + 4?", "nothing shared"])
    assert t.shape == (1, 3)
    assert 0 < t[0, 0] < 1 and t[0, 1] == pytest.approx(1.0) and t[0, 2] == 0
    # operators are tokens: a sum and a difference of the same operands are not near-duplicates
    assert prompt_similarity(["What is 12 + 5?"], ["What is 12 - 5?"])[0, 0] < 0.9


def test_near_duplicates_chunked_equals_dense(monkeypatch):
    texts = ["What is 3 + 4?", "What is 3 + 4 ?", "what is 3 + 5?", "Name a colour.", "Name a color.",
             "What is 3 + 4?"]
    dense = prompt_similarity(texts).toarray()
    want = [(i, j, dense[i, j]) for i in range(6) for j in range(i + 1, 6) if dense[i, j] >= 0.5 - 1e-9]
    monkeypatch.setattr(similarity, "CHUNK", 2)  # several chunks, one straddling pairs
    got = near_duplicates(texts, 0.5)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
    assert np.allclose([v for *_, v in got], [v for *_, v in want])
    assert (0, 5, pytest.approx(1.0)) in [(i, j, pytest.approx(v)) for i, j, v in got]
    # against another set: every (i in texts, j in others) pair, not only i < j
    cross = near_duplicates(["What is 3 + 4?"], 0.99, others=["Name a colour.", "What is 3 + 4?"])
    assert [(i, j) for i, j, _ in cross] == [(0, 1)]


def test_conflict_groups_join_differing_answers_only():
    ex = [Example("What is 2 + 2?", "4", "4"), Example("What is 2 + 2?", "5", "5"),  # conflict
          Example("Name a prime.", "7", "7"), Example("Name a prime.", "7", "7"),  # same answer: none
          Example("What is 2 + 2 ?", "4", "4"),  # same text as 0 (punctuation), answer of 0: joins via 1
          Example("Capital of France?", "Paris"), Example("Capital of France?", "Lyon")]  # no answer: response
    assert conflict_groups(ex, threshold=0.9) == [[0, 1, 4], [5, 6]]
    assert conflict_groups(ex[2:4]) == []


# -- defaults: the stock batches ------------------------------------------------------------------

# sha256 (first 16 hex) of the batches of 40 steps, batch_size 3, of the stock code before the
# mitigation options existed (arith n_train 256, seq_len 64: 128 rows, so the stream crosses epochs).
STOCK = {("rows", 1): "aaa274d920a6f997", ("rows", 2): "b808992410a724ee",
         ("padding_free", 1): "4d9af4429688b40d", ("padding_free", 2): "d60eb0efd32b7093"}


@pytest.mark.parametrize("layout,ga", sorted(STOCK))
def test_defaults_leave_batches_bit_identical(tiny_run_config, layout, ga):
    cfg = tiny_run_config(method="lora", train__packing=layout, train__grad_accum=ga, train__batch_size=3,
                          train__steps=40)
    assert cfg.to_dict()["objective"] == {"name": "sft"}  # options off are not in the config: run ids stay
    ctx, _, obj = prepared_context(cfg)
    d = hashlib.sha256()
    for s in range(cfg.train.steps):
        for b in obj.batches(ctx, s):
            for k in ("input_ids", "labels", "position_ids"):
                d.update(b[k].numpy().tobytes())
            d.update(str(b["n_real"]).encode())
            d.update(str(b["n_loss_tokens"]).encode())
    assert d.hexdigest()[:16] == STOCK[(layout, ga)]
    # and the stock row formula: perm_e[i % N] with perm_e = default_rng([seed, e]).permutation(N)
    N, B = obj.data.rows, 3
    for s in (0, 21, 39):
        for m in range(ga):
            idx = np.arange((s * ga + m) * B, (s * ga + m + 1) * B)
            want = [np.random.default_rng([0, int(i // N)]).permutation(N)[i % N] for i in idx]
            assert obj.stream.rows(s, m).tolist() == want


# -- order and reverse ----------------------------------------------------------------------------

def test_given_order_keeps_the_example_order(tiny_run_config):
    cfg = tiny_run_config("objective.order=given", **{**SMALL, "train__steps": 30})
    ctx, _, obj = prepared_context(cfg)
    flat = [i for r in obj.data.row_examples for i in r]
    assert flat == list(range(obj.data.n_examples))  # next-fit: rows hold consecutive documents
    N, B = obj.data.rows, cfg.train.batch_size
    stream = [int(r) for s in range(cfg.train.steps) for r in obj.stream.rows(s, 0)]
    assert stream == [i % N for i in range(cfg.train.steps * B)]  # every epoch in order, no permutation
    first = [s[0] for s in obj.seen_steps(ctx)]
    assert first == sorted(first) and first[0] == 1


def test_reverse_maps_step_s_to_steps_minus_1_minus_s(tiny_run_config):
    sets = {**SMALL, "train__steps": 23, "train__grad_accum": 2, "train__batch_size": 3, "train__packing": "rows"}
    ctx, _, fwd = prepared_context(tiny_run_config(**sets))
    ctx_r, _, rev = prepared_context(tiny_run_config("objective.reverse=true", **sets))
    T, A = 23, 2
    for s in range(T):
        f, r = fwd.batch_rows(ctx, T - 1 - s), rev.batch_rows(ctx_r, s)
        for m in range(A):
            assert r[m].tolist() == f[A - 1 - m][::-1].tolist()
        fb, rb = fwd.batches(ctx, T - 1 - s), rev.batches(ctx_r, s)
        assert torch.equal(rb[0]["input_ids"], fb[A - 1]["input_ids"].flip(0))
    assert fwd.batch_rows(ctx, 0)[0].tolist() != rev.batch_rows(ctx_r, 0)[0].tolist()


# -- bucketing ------------------------------------------------------------------------------------

def _planted(monkeypatch, copies: int = 6):
    """Arith's pool plus conflicting duplicates: problem k's prompt `copies` times with wrong answers."""
    real = Arith.train_examples

    def planted(self, seed):
        ex = real(self, seed)
        extra = [Example(ex[k].prompt, f"{ex[k].answer}{c}", f"{ex[k].answer}{c}", {"source": "planted"})
                 for k in (0, 1) for c in range(1, copies)]
        return ex + extra

    monkeypatch.setattr(Arith, "train_examples", planted)


def _shared_group_batches(obj: SFT, cfg, groups) -> int:
    member = {i: g for g, ms in enumerate(groups) for i in ms}
    bad = 0
    for s in range(cfg.train.steps):
        for rows in obj.batch_rows(_ctx_stub(cfg), s):
            gs = [member[i] for r in rows for i in obj.data.row_examples[int(r)] if i in member]
            bad += len(gs) != len(set(gs))
    return bad


class _ctx_stub:  # batch_rows reads only train.grad_accum, seed and this rank's micro-batches
    def __init__(self, cfg):
        self.train, self.seed = cfg.train, cfg.train.seed

    def micro_range(self) -> range:
        return range(self.train.grad_accum)  # one process: every micro-batch


def test_bucketing_keeps_conflicting_duplicates_apart(tiny_run_config, monkeypatch):
    _planted(monkeypatch)
    sets = {**SMALL, "train__steps": 40, "train__batch_size": 4, "train__grad_accum": 2}
    ctx0, _, off = prepared_context(tiny_run_config(**sets))
    cfg = tiny_run_config("objective.bucketing=conflicts", **sets)
    ctx, _, on = prepared_context(cfg)
    kept = [ctx.target.train_examples(0)[i] for i in on.example_index]
    groups = conflict_groups(kept, 0.9)
    assert any(len(g) >= 6 for g in groups)  # the planted ones (plus what arith has of its own)
    N = on.data.rows
    assert cfg.train.steps * 2 * 4 >= 3 * N  # several epochs
    assert _shared_group_batches(off, cfg, groups) > 0  # the test can fail: stock batches do share
    assert _shared_group_batches(on, cfg, groups) == 0
    for r in on.data.row_examples:  # never two members of a group in one row
        gs = [g for g, ms in enumerate(groups) for i in r if i in ms]
        assert len(gs) == len(set(gs))
    # otherwise the same data: every example packed once, every epoch a permutation of the rows
    assert sorted(i for r in on.data.row_examples for i in r) == list(range(on.data.n_examples))
    assert sorted(off.example_index.tolist()) == sorted(on.example_index.tolist())
    for e in range(3):
        assert sorted(on.stream.epoch_perm(e).tolist()) == list(range(N))
    stats = on.prepare(ctx)["bucketing"]
    assert stats["conflict_groups"] == len(groups) and stats["examples_in_groups"] == sum(map(len, groups))
    assert stats["repairs"] > 0 and stats["unresolved"] == 0


# -- dynamic resampling ---------------------------------------------------------------------------

def _two_subsets(monkeypatch):
    real = Arith.train_examples

    def split(self, seed):
        ex = real(self, seed)
        for k, e in enumerate(ex):
            e.meta = {**e.meta, "source": "a" if k % 2 else "b"}
        return ex

    monkeypatch.setattr(Arith, "train_examples", split)


def _scripted_dev(curve):
    """subset_dev_nll returning curve[number of checks so far] (the saved state, so resume replays it)."""
    def dev(self, ctx):
        return curve[min(len(self.resampler.checks), len(curve) - 1)]
    return dev


def test_resampling_replaces_rows_with_the_dropping_subset(tiny_run_config, monkeypatch):
    _two_subsets(monkeypatch)
    cfg = tiny_run_config("objective.resample_every=2", "objective.resample_share=0.5", "objective.resample_dev=4",
                          **{**SMALL, "train__steps": 4, "train__batch_size": 4})
    ctx, _, obj = prepared_context(cfg)
    assert set(obj.dev) == {"a", "b"} and all(len(v) == 4 for v in obj.dev.values())
    train = ctx.target.train_examples(0)
    assert all(e.meta["source"] == s for s, exs in obj.dev.items() for e in exs)
    assert obj.after_step(ctx, 0) == {}
    monkeypatch.setattr(SFT, "subset_dev_nll", _scripted_dev([{"a": 1.0, "b": 1.0}, {"a": 1.2, "b": 0.9}]))
    assert obj.after_step(ctx, 1)["resampled"] == []
    out = obj.after_step(ctx, 3)  # a rose 20% over its best: dropping
    assert out["resampled"] == ["a"] and out["dev_nll"] == {"a": 1.2, "b": 0.9}
    replaced = 0
    for step in range(4, 12):
        got, planned = obj.batch_rows(ctx, step), [obj.stream.rows(step, 0)]
        diff = np.flatnonzero(got[0] != planned[0])
        replaced += len(diff)
        assert len(diff) <= 2  # share 0.5 of 4 rows
        for r in got[0][diff]:
            assert any(train[i].meta["source"] == "a" for i in _examples_of(obj, [r]))
    assert replaced > 0
    assert obj.batch_rows(ctx, 5)[0].tolist() == obj.batch_rows(ctx, 5)[0].tolist()  # seeded
    assert obj.after_step(ctx, 4)["resampled_rows"] == 2


def test_resampling_with_one_subset_says_so(tiny_run_config):
    ctx, _, obj = prepared_context(tiny_run_config("objective.resample_every=2", **SMALL))
    stats = obj.prepare(ctx)["resample"]
    assert list(stats["subsets"]) == ["arith_train"] and "one subset" in stats["note"]


# -- progressive epochs ---------------------------------------------------------------------------

def _scripted_val(curve):
    def val(self, ctx):
        return curve[len(self.progress.val_curve)]
    return val


def test_progressive_stops_when_val_loss_rises(tiny_run_config, monkeypatch, tmp_path):
    sets = {**SMALL, "train__steps": 200}
    ctx, _, obj = prepared_context(tiny_run_config("objective.progressive=true", **sets))
    ends = obj.progress.epoch_ends
    assert len(ends) == 4 and ends[-1] < 200
    val_idx = [i for i, s in enumerate(obj.seen_steps(ctx)) if not s]
    assert len(val_idx) == round(0.05 * 64) and len(val_idx) + obj.data.n_examples == 64  # held out, never trained

    monkeypatch.setattr(SFT, "val_nll", _scripted_val([3.0, 2.0, 2.5, 1.0]))
    rec = run_training(tiny_run_config("objective.progressive=true", out=str(tmp_path / "rise"), **sets), **QUIET)
    assert rec["train"]["stopped_early_at"] == ends[2] and rec["train"]["steps"] == ends[2]
    assert rec["train"]["objective_state"]["progressive"]["val_curve"] == [3.0, 2.0, 2.5]
    log = _log(tmp_path / "rise")
    assert log[-1]["step"] == ends[2] and log[-1]["stop_reason"] == "val_rose"
    assert [r["val_nll"] for r in log if "val_nll" in r] == [3.0, 2.0, 2.5]

    monkeypatch.setattr(SFT, "val_nll", _scripted_val([3.0, 2.0, 1.995, 1.0]))  # within δ = 0.01: keeps going
    rec = run_training(tiny_run_config("objective.progressive=true", out=str(tmp_path / "fall"), **sets), **QUIET)
    assert rec["train"]["stopped_early_at"] == ends[3]
    assert rec["train"]["objective_state"]["progressive"]["epochs"] == 4
    assert _log(tmp_path / "fall")[-1]["stop_reason"] == "max_epochs"


# -- resume ---------------------------------------------------------------------------------------

def test_mitigation_state_survives_a_checkpoint_resume(tiny_run_config, monkeypatch, tmp_path):
    _two_subsets(monkeypatch)
    monkeypatch.setattr(SFT, "subset_dev_nll", _scripted_dev(
        [{"a": 1.0, "b": 1.0}, {"a": 1.1, "b": 0.9}, {"a": 1.3, "b": 0.8}, {"a": 0.9, "b": 1.0}]))
    monkeypatch.setattr(SFT, "val_nll", _scripted_val([3.0, 2.0, 2.5, 2.0]))
    sets = ["objective.resample_every=2", "objective.progressive=true", "objective.resample_share=0.5"]
    kw = {**SMALL, "train__steps": 100, "train__save_every": 3}
    a, b = tmp_path / "a", tmp_path / "b"
    rec_a = run_training(tiny_run_config(*sets, out=str(a), **kw), **QUIET)
    assert rec_a["train"]["stopped_early_at"] is not None

    real = SFT.batches

    def dying(self, ctx, step):
        if step == 7:
            raise KeyboardInterrupt
        return real(self, ctx, step)

    monkeypatch.setattr(SFT, "batches", dying)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_run_config(*sets, out=str(b), **kw), **QUIET)
    monkeypatch.setattr(SFT, "batches", real)
    state = json.loads((b / "checkpoints" / "step-000006" / "state.json").read_text())
    assert state["objective"]["resample"]["dropping"] == ["a"]  # the state the next steps depend on
    rec_b = run_training(tiny_run_config(*sets, out=str(b), **kw), **QUIET)
    assert rec_b["train"]["resumed_from"] == 6
    strip = lambda log: [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s")} for r in log]  # noqa: E731
    assert strip(_log(b)) == strip(_log(a))
    assert any("resampled_rows" in r for r in _log(a))
    wa, wb = load_file(str(a / "final" / "trainable.safetensors")), load_file(str(b / "final" / "trainable.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert rec_b["train"]["objective_state"] == rec_a["train"]["objective_state"]


# -- seen_steps -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sets", [[], ["objective.order=given"], ["objective.reverse=true"],
                                  ["objective.bucketing=conflicts", "objective.bucketing_similarity=0.5"]])
def test_seen_steps_matches_the_batches_produced(tiny_run_config, monkeypatch, tmp_path, sets):
    produced = []
    real = SFT._batch

    def record(self, rows):
        produced.append((self, rows.tolist()))
        return real(self, rows)

    monkeypatch.setattr(SFT, "_batch", record)
    cfg = tiny_run_config(*sets, out=str(tmp_path / "r"), **{**SMALL, "train__steps": 20, "train__grad_accum": 2})
    run_training(cfg, **QUIET)
    obj = produced[0][0]
    seen_by_batches = [[] for _ in range(64)]
    for k, (_, rows) in enumerate(produced):
        step = k // 2 + 1
        for i in _examples_of(obj, rows):
            if not seen_by_batches[i] or seen_by_batches[i][-1] != step:
                seen_by_batches[i].append(step)
    ctx, _, fresh = prepared_context(tiny_run_config(*sets, **{**SMALL, "train__steps": 20, "train__grad_accum": 2}))
    assert fresh.seen_steps(ctx) == seen_by_batches
    assert sum(map(len, seen_by_batches)) > 64


# -- bad options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("setting,field", [
    ("objective.order=random", "objective.order"),
    ("objective.bucketing=on", "objective.bucketing"),
    ("objective.bucketing_similarity=0", "objective.bucketing_similarity"),
    ("objective.resample_every=-1", "objective.resample_every"),
    ("objective.resample_share=1.5", "objective.resample_share"),
    ("objective.resample_dev=0", "objective.resample_dev"),
    ("objective.resample_drop=-0.1", "objective.resample_drop"),
    ("objective.max_epochs=0", "objective.max_epochs"),
    ("objective.val_fraction=1", "objective.val_fraction"),
    ("objective.stop_delta=-1", "objective.stop_delta"),
])
def test_bad_options_name_the_field(tiny_run_config, setting, field):
    with pytest.raises(ConfigError) as e:
        tiny_run_config(setting)
    assert e.value.field == field


def test_progressive_with_reverse_is_refused(tiny_run_config):
    with pytest.raises(ConfigError) as e:
        tiny_run_config("objective.progressive=true", "objective.reverse=true")
    assert e.value.field == "objective.reverse"


def test_options_set_are_in_the_config(tiny_run_config):
    cfg = tiny_run_config("objective.bucketing=conflicts", "objective.resample_every=8")
    assert cfg.to_dict()["objective"] == {"name": "sft", "bucketing": "conflicts", "resample_every": 8}
