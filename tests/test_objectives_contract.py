"""Every registered objective, on the tiny model: deterministic batches, a finite loss that
backpropagates, and exactly resumable training.

Parametrized over `OBJECTIVES.names()`, so a newly registered objective is covered by registering
it. Options are derived from the objective's `Options` fields (`OPTION_VALUES`), not from its
name, so a new rollout or distillation objective needs no entry here unless it adds a field that
has no small default. Everything runs in fp32 on CPU with one thread: comparisons are bitwise.

Rollout objectives are scored with a dense test reward (the share of digits in the completion),
because the arith reward of a random 2-layer model is 0 on every sample: zero advantages would
make "the loss backpropagates" and "resume is exact" pass without a gradient. Distillation
objectives learn from a second tiny model (seed 1, same tokenizer).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from conftest import prepared_context
import torch
from doc_examples import import_doc_module
from safetensors.torch import load_file

from arena.experiment import run_training
from arena.components import OBJECTIVES
from arena.rewards import REWARDS

ALL_OBJECTIVES = OBJECTIVES.names()
QUIET = {"log": lambda msg: None}
DENSE_REWARD = "contract_digit_share"
# Fields of an objective's Options set to small values, whichever objective declares them.
OPTION_VALUES = {"n_samples": 4, "max_new_tokens": 6, "reward": DENSE_REWARD,
                 # cpt: raw documents (written by `cpt_documents`) mixed with samples of the base
                 "general": "base-samples", "general_docs": 4, "general_tokens": 8, "mix": 0.5}
# The run: LoRA keeps its dropout (0.05), so resume must restore the RNG too; two micro-batches
# per step, so GKD's per-micro-batch λ draw sees both branches.
RUN = dict(method="lora", train__steps=4, train__lr=1e-2, train__grad_accum=2, train__batch_size=2,
           train__save_every=2, probe__heldout=0)
TIMING = ("gen_s", "rollout_s", "seconds", "tokens_per_s")  # wall-clock metrics: never reproducible


def _digit_share(completion: str, answer: str) -> float:
    s = completion.replace(" ", "")
    return sum(c.isdigit() for c in s) / max(1, len(s))


@pytest.fixture(scope="module", autouse=True)
def dense_reward():
    """Registered for this module only, so no other test sees a non-binary reward."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(REWARDS._items, DENSE_REWARD, _digit_share)
        yield


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A fixed teacher: tiny model seed 1 with the student's tokenizer, saved as a model folder."""
    from arena.models.loader import load_tokenizer
    from arena.models.tiny import build_model

    d = tmp_path_factory.mktemp("teacher") / "tiny-seed1"
    tok = load_tokenizer("tiny")
    build_model(tok, seed=1).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def cpt_documents(tmp_path_factory) -> Path:
    """Raw text for the cpt objective: 24 short documents separated by blank lines."""
    p = tmp_path_factory.mktemp("cpt") / "documents.txt"
    p.write_text("\n\n".join(f"document {i}: " + " ".join(str(i * j % 97) for j in range(3 + i)) for i in range(24)))
    return p


@pytest.fixture
def objective_config(tiny_run_config, teacher_dir, cpt_documents):
    """Factory: the RunConfig of objective `name` with small options (plus keyword fields)."""
    def make(name: str, **fields):
        option_fields = {f.name for f in dataclasses.fields(OBJECTIVES.get(name).Options)}
        values = {**OPTION_VALUES, "teacher": str(teacher_dir), "documents": str(cpt_documents),
                  "teachers": f"{{arith: {teacher_dir}}}"}  # mopd: one domain, the target
        sets = [f"objective.{k}={v}" for k, v in values.items() if k in option_fields]
        return tiny_run_config(*sets, objective=name, **{**RUN, **fields})

    return make


def _differences(a, b, where: str = "batch") -> list[str]:
    """Where two batch structures differ (tensors bitwise, with dtype and shape); timings ignored."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in a.keys() | b.keys() if k not in TIMING]
        out = [f"{where}[{k!r}] only on one side" for k in keys if (k in a) != (k in b)]
        for k in sorted(k for k in keys if k in a and k in b):
            out += _differences(a[k], b[k], f"{where}[{k!r}]")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    if torch.is_tensor(a) and torch.is_tensor(b):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [f"{where}: tensors differ ({a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)})"]
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r} vs {b!r}"]


def test_every_objective_is_registered_with_options():
    assert {"sft", "grpo", "opd", "gkd"} <= set(ALL_OBJECTIVES)
    for name in ALL_OBJECTIVES:
        cls = OBJECTIVES.get(name)
        assert cls.name == name and cls.description
        cls.Options()  # defaults must validate (a required teacher is checked later, by validate_options)
        described = cls.describe()
        assert described["name"] == name and set(described["options"]) == {
            f.name for f in dataclasses.fields(cls.Options)}


@pytest.mark.parametrize("name", ALL_OBJECTIVES)
def test_batches_are_deterministic_for_a_seed(name, objective_config):
    """batches(ctx, step) depends only on (seed, step) and the weights: two fresh contexts agree,
    in any call order (so a resumed run sees the same data), and another seed changes them."""
    cfg = objective_config(name)
    ctx_a, _, obj_a = prepared_context(cfg)
    ctx_b, _, obj_b = prepared_context(cfg)
    first = obj_a.batches(ctx_a, 0)
    later = obj_a.batches(ctx_a, 3)
    assert len(first) == cfg.train.grad_accum and all(isinstance(b, dict) for b in first)
    later_first = obj_b.batches(ctx_b, 3)  # context b goes straight to step 3
    assert _differences(later, later_first) == []
    assert _differences(first, obj_b.batches(ctx_b, 0)) == []
    assert _differences(first, later), f"{name}: steps 0 and 3 got the same batches"
    ctx_c, _, obj_c = prepared_context(objective_config(name, train__seed=1))
    assert _differences(first, obj_c.batches(ctx_c, 0)), f"{name}: seeds 0 and 1 got the same batches"


@pytest.mark.parametrize("name", ALL_OBJECTIVES)
def test_loss_is_finite_and_backpropagates(name, objective_config):
    ctx, _, obj = prepared_context(objective_config(name))
    params = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
    for batch in obj.batches(ctx, 0):
        out = obj.loss(ctx, batch)
        assert out.loss_sum.dim() == 0 and math.isfinite(float(out.loss_sum.detach())), f"{name}: loss {out.loss_sum}"
        assert isinstance(out.n_tokens, int) and out.n_tokens > 0
        assert out.loss_sum.requires_grad, f"{name}: the loss is detached from the model"
        assert all(math.isfinite(float(v)) for v in out.metrics.values()), out.metrics
        ctx.model.zero_grad(set_to_none=True)
        out.loss_sum.backward()
        grads = {n: p.grad for n, p in params.items() if p.grad is not None}
        assert grads, f"{name}: no trainable parameter received a gradient"
        assert all(torch.isfinite(g).all() for g in grads.values())
        assert any(float(g.abs().max()) > 0 for g in grads.values()), f"{name}: every gradient is zero"


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", ALL_OBJECTIVES)
def test_training_is_exactly_resumable(name, objective_config, tmp_path, monkeypatch):
    """4 steps straight == 2 steps, checkpoint, killed in step 3, resumed for steps 3-4: the same
    losses and bitwise the same weights (fp32 on CPU)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_training(objective_config(name, out=str(straight)), **QUIET)

    cls = OBJECTIVES.get(name)
    real = cls.batches

    def dying(self, ctx, step):
        if step == 2:  # 0-based: the third step, after the step-2 checkpoint
            raise KeyboardInterrupt
        return real(self, ctx, step)

    monkeypatch.setattr(cls, "batches", dying)
    with pytest.raises(KeyboardInterrupt):
        run_training(objective_config(name, out=str(resumed)), **QUIET)
    monkeypatch.setattr(cls, "batches", real)
    checkpoint = load_file(str(resumed / "checkpoints" / "step-000002" / "trainable.safetensors"))
    record = run_training(objective_config(name, out=str(resumed)), **QUIET)
    assert record["status"] == "done" and record["train"]["resumed_from"] == 2

    want, got = (load_file(str(r / "final" / "trainable.safetensors")) for r in (straight, resumed))
    assert want.keys() == got.keys() == checkpoint.keys()
    assert [k for k in want if not torch.equal(want[k], got[k])] == [], f"{name}: resumed weights differ"
    # the resumed steps moved the weights, so the equality above is not the checkpoint's alone
    assert any(not torch.equal(checkpoint[k], got[k]) for k in got), f"{name}: steps 3-4 changed nothing"
    strip = lambda log: [{k: v for k, v in r.items() if k not in TIMING} for r in log]  # noqa: E731
    log_a, log_b = strip(_log(straight)), strip(_log(resumed))
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert log_a == log_b


# -- the worked example of docs/extending.md -----------------------------------------------------

@pytest.fixture
def documented_objective(tmp_path, monkeypatch):
    """The DFT example of docs/extending.md, imported from a temporary module into a copy of the
    registry (restored after the test), as a contributor's new file would register it."""
    monkeypatch.setattr(OBJECTIVES, "_items", dict(OBJECTIVES._items))
    import_doc_module("# arena/objectives/dft.py", tmp_path, monkeypatch)
    assert "dft" in OBJECTIVES
    return "dft"


def test_the_documented_objective_passes_the_contract(documented_objective, objective_config, tmp_path,
                                                      monkeypatch):
    name = documented_objective
    test_batches_are_deterministic_for_a_seed(name, objective_config)
    test_loss_is_finite_and_backpropagates(name, objective_config)
    test_training_is_exactly_resumable(name, objective_config, tmp_path, monkeypatch)
    # and it is the documented loss: Σ_t sg(p_t)·(−log p_t) on SFT's forward
    ctx, _, dft = prepared_context(objective_config(name))
    batch = dft.batches(ctx, 0)[0]
    logits, targets = dft.scored_logits(ctx, batch)
    nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    got = dft.loss(ctx, batch)
    assert torch.allclose(got.loss_sum, (torch.exp(-nll) * nll).sum(), rtol=1e-5)
    assert 0 < float(got.loss_sum.detach()) < float(nll.detach().sum())  # weights p_t < 1: less than SFT's loss
