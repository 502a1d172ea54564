"""The cpt objective (continued pre-training on raw documents) and `model.init_from` ("CPT then SFT").

Tiny model, fp32 on CPU. Documents are written per test into tmp_path; the loss and weight
comparisons are exact or at fp32 round-off.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import prepared_context

from arena.cli import main
from arena.errors import ArenaError, ConfigError, DataError
from arena.experiment import run_training
from arena.objectives.cpt import (
    chunk_document,
    domain_slots_before,
    pack_documents,
    read_documents,
    split_text_documents,
    stream_rows,
)
from arena.runs import check_init_from, load_run_model, load_start_model

QUIET = {"log": lambda msg: None}
WORDS = "the cat sat on a mat while dogs ran in the park and birds sang over green hills".split()


def _write_docs(path: Path, n: int, seed: int, max_words: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, max_words)))) for _ in range(n)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture
def docs(tmp_path) -> Path:
    return _write_docs(tmp_path / "domain.txt", 30, seed=0)


@pytest.fixture
def general(tmp_path) -> Path:
    p = tmp_path / "general.jsonl"
    p.write_text("\n".join(json.dumps({"text": f"number {i} squared is {i * i}."}) for i in range(40)) + "\n")
    return p


def cpt_config(tiny_run_config, documents, *sets, **fields):
    return tiny_run_config(*sets, objective="cpt", objective__documents=str(documents),
                           **{"probe__heldout": 0, **fields})


def _all_rows_loss(model, obj, ctx, upto: int | None = None) -> float:
    """Mean token loss over the objective's domain rows (fixed batch, no grad): the loss on the documents."""
    d = obj.data
    n = obj.n_domain_rows if upto is None else upto
    rows = torch.arange(n)
    batch = {"input_ids": d.input_ids[rows], "labels": d.labels[rows], "position_ids": d.position_ids[rows],
             "domain_rows": n}
    was = model.training
    model.eval()
    with torch.no_grad():
        out = obj.loss(ctx, batch)
    model.train(was)
    return float(out.loss_sum) / out.n_tokens


# -- documents, chunks, packing ---------------------------------------------------------------------

def test_text_documents_split_on_blank_lines():
    assert split_text_documents("a b\nc\n\n  \n\nd\r\n\r\ne\n\n") == ["a b\nc", "d", "e"]


def test_chunks_overlap_by_one_token_so_every_token_is_labelled_once():
    ids = list(range(10))
    assert chunk_document(ids, 4) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert chunk_document(list(range(11)), 4) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10]]
    assert chunk_document([5, 6, 7], 4) == [[5, 6, 7]]  # short documents stay whole
    assert chunk_document(list(range(4)), 4) == [[0, 1, 2, 3]]


def test_packing_labels_every_token_but_each_chunks_first():
    # a 10-token document at seq_len 4 -> 3 chunks of 4; two short ones (3 and 2 tokens) packed
    docs = [list(range(100, 110)), [7, 8, 9], [20, 21]]
    data, n_chunks = pack_documents(docs, seq_len=4, pad_id=0, seed=0)
    assert n_chunks == 5
    # best-fit bins of 4: the three 4-token chunks fill a row each; 3 + 2 > 4, so 5 rows
    assert data.rows == 5 and int(data.n_real.sum()) == 4 + 4 + 4 + 3 + 2
    labelled = []
    for r in range(data.rows):
        n = int(data.n_real[r])
        ids, lab, pos = data.input_ids[r, :n], data.labels[r, :n], data.position_ids[r, :n]
        assert pos.tolist() == list(range(n))  # one chunk per row here: positions restart at 0
        assert lab[0] == -100 and torch.equal(lab[1:], ids[1:])
        assert (data.labels[r, n:] == -100).all()
        labelled += lab[1:].tolist()
    # every token but a document's first is a label exactly once
    assert sorted(labelled) == sorted(list(range(101, 110)) + [8, 9, 21])

    # lengths 3, 2, 5 into rows of 8: [6..10] + [1, 2, 3] fill one row (inside a row in document order)
    data, _ = pack_documents([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], seq_len=8, pad_id=0, seed=0)
    row = next(r for r in range(data.rows) if int(data.n_real[r]) == 8)
    assert data.input_ids[row].tolist() == [1, 2, 3, 6, 7, 8, 9, 10]
    assert data.position_ids[row].tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
    assert data.labels[row].tolist() == [-100, 2, 3, -100, 7, 8, 9, 10]


def test_prepared_rows_use_raw_text_without_chat_template(tiny_run_config, docs, tokenizer):
    ctx, _, obj = prepared_context(cpt_config(tiny_run_config, docs, "objective.mix=1.0"))
    text = obj.data.input_ids[obj.data.n_real > 0]
    first_doc = read_documents(str(docs), None, "objective.documents")[0]
    want = (tokenizer(first_doc)["input_ids"] + [tokenizer.eos_token_id])[: ctx.train.seq_len]  # its first chunk
    flat = obj.data.input_ids.flatten().tolist()
    assert any(flat[i : i + len(want)] == want for i in range(len(flat) - len(want) + 1)), "document not found verbatim"
    chat_ids = set(tokenizer.convert_tokens_to_ids(["<|im_start|>"]))
    assert not chat_ids & set(text.flatten().tolist())
    b = obj.batches(ctx, 0)[0]
    assert b["n_loss_tokens"] == int((b["labels"] != -100).sum())


# -- the row stream -----------------------------------------------------------------------------------

def test_mix_is_honoured_exactly_over_any_window():
    mix = Fraction(1, 5)
    i = np.arange(0, 1000)
    is_domain = domain_slots_before(i + 1, mix) > domain_slots_before(i, mix)
    for w in (5, 7, 50, 333):
        counts = np.convolve(is_domain, np.ones(w, dtype=int), "valid")
        assert counts.min() >= int(w * 0.2) and counts.max() <= -(-w // 5)
    rows = stream_rows(3, 0, 1000, mix, n_domain=7, n_general=11)
    assert ((rows < 7) == is_domain).all()
    # each sub-stream walks whole epochs of its own rows
    assert sorted(rows[rows < 7][:7].tolist()) == list(range(7))
    assert sorted(rows[rows >= 7][:11].tolist()) == list(range(7, 18))


def test_mix_ratio_over_training_steps(tiny_run_config, docs, general):
    cfg = cpt_config(tiny_run_config, docs, f"objective.general={general}", "objective.mix=0.25",
                     train__batch_size=3, train__grad_accum=2)
    ctx, _, obj = prepared_context(cfg)
    domain = total = 0
    for step in range(40):
        for b in obj.batches(ctx, step):
            domain += b["domain_rows"]
            total += cfg.train.batch_size
    assert total == 240 and domain == 60
    # rows by origin, from the indices themselves
    idx = np.concatenate([obj._row_indices(ctx, s, m) for s in range(40) for m in range(2)])
    assert (idx < obj.n_domain_rows).sum() == 60 and obj.n_general_rows > 0
    assert ((idx >= 0) & (idx < obj.data.rows)).all()


def test_batches_are_deterministic_in_seed_and_step(tiny_run_config, docs, general):
    sets = (f"objective.general={general}", "objective.mix=0.5")
    ctx_a, _, a = prepared_context(cpt_config(tiny_run_config, docs, *sets))
    ctx_b, _, b = prepared_context(cpt_config(tiny_run_config, docs, *sets))
    later = a.batches(ctx_a, 5)
    for step in (0, 5):
        for x, y in zip(a.batches(ctx_a, step), b.batches(ctx_b, step)):
            assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(later, a.batches(ctx_a, 5)))
    ctx_c, _, c = prepared_context(cpt_config(tiny_run_config, docs, *sets, "train.seed=1"))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a.batches(ctx_a, 0), c.batches(ctx_c, 0)))


# -- training -----------------------------------------------------------------------------------------

def test_training_lowers_the_loss_on_the_documents(tiny_run_config, docs):
    cfg = cpt_config(tiny_run_config, docs, "objective.mix=1.0", method="lora", train__lr=1e-2, train__steps=20)
    ctx, _, obj = prepared_context(cfg)
    before = _all_rows_loss(ctx.model, obj, ctx)
    rec = run_training(cfg, **QUIET)
    ctx.model = rec["_model"]
    after = _all_rows_loss(ctx.model, obj, ctx)
    assert rec["data"]["documents"] == 30 and rec["data"]["general_documents"] == 0
    assert after < before - 0.3, (before, after)


def test_general_base_samples(tiny_run_config, docs, tokenizer):
    sets = ("objective.general=base-samples", "objective.general_docs=12", "objective.general_tokens=20",
            "objective.mix=0.5")
    ctx, _, obj = prepared_context(cpt_config(tiny_run_config, docs, *sets))
    stats = obj.prepare(ctx)  # again: the same samples (seeded)
    assert 0 < stats["general_documents"] <= 12 and obj.n_general_rows > 0
    g = obj.data.input_ids[obj.n_domain_rows:]
    start = tokenizer.eos_token_id  # the tiny tokenizer has no BOS
    assert (g[:, 0] == start).all()  # rows begin with a sampled document's start token
    _, _, obj2 = prepared_context(cpt_config(tiny_run_config, docs, *sets))
    assert torch.equal(obj.data.input_ids, obj2.data.input_ids)
    rec = run_training(cpt_config(tiny_run_config, docs, *sets, train__steps=2), **QUIET)
    assert rec["status"] == "done" and rec["data"]["general"] == "base-samples"


# -- model.init_from ------------------------------------------------------------------------------

@pytest.fixture
def cpt_run(tiny_run_config, docs, tmp_path) -> Path:
    out = tmp_path / "cpt"
    cfg = cpt_config(tiny_run_config, docs, "objective.mix=1.0", method="lora", train__lr=1e-2, train__steps=6,
                     probe__heldout=8, out=str(out))
    run_training(cfg, **QUIET)
    return out


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sft_from_init_from_starts_at_the_cpt_weights(tiny_run_config, cpt_run, tmp_path, tiny_base):
    cpt_model, _, _ = load_run_model(cpt_run, merged=True)
    want = _params(cpt_model)
    base = _params(tiny_base[0])
    moved = [k for k in want if not torch.equal(want[k], base[k])]
    assert moved  # the cpt run did move the weights

    out = tmp_path / "sft"
    cfg = tiny_run_config(method="lora", model__init_from=str(cpt_run), train__steps=3, probe__heldout=8, out=str(out))
    start, _ = load_start_model(cfg)
    got = _params(start)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    rec = run_training(cfg, **QUIET)
    cpt_rec = json.loads((cpt_run / "record.json").read_text())
    # the held-out loss before SFT is the cpt run's loss after training
    assert rec["probes"]["base"]["target_nll"]["nll"] == pytest.approx(cpt_rec["probes"]["tuned"]["target_nll"]["nll"],
                                                                       abs=1e-5)
    assert rec["model"]["init_from"] == str(cpt_run.resolve())
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["init_from"] == str(cpt_run.resolve())

    # chained: a run from the SFT run starts at its weights, which rebuild through the cpt run
    sft_model, _, _ = load_run_model(out, merged=True)
    cfg2 = tiny_run_config(method="full", model__init_from=str(out), train__steps=1, probe__heldout=0,
                           out=str(tmp_path / "third"))
    assert [p.name for p in check_init_from(cfg2)] == ["sft", "cpt"]
    start2, _ = load_start_model(cfg2)
    w2, ws = _params(start2), _params(sft_model)
    assert all(torch.equal(w2[k], ws[k]) for k in ws)
    assert any(not torch.equal(ws[k], want[k]) for k in moved)  # the SFT run moved them again
    rec3 = run_training(cfg2, **QUIET)
    assert rec3["model"]["init_chain"] == [str(out.resolve()), str(cpt_run.resolve())]


def _fake_run(src: Path, dst: Path, **model_fields) -> Path:
    """A copy of run `src` (config + final weights) with its config's model fields changed."""
    (dst / "final").mkdir(parents=True)
    (dst / "final" / "trainable.safetensors").write_bytes((src / "final" / "trainable.safetensors").read_bytes())
    raw = yaml.safe_load((src / "config.yaml").read_text())
    raw["model"].update(model_fields)
    (dst / "config.yaml").write_text(yaml.safe_dump(raw))
    return dst


def test_init_from_needs_a_run_of_the_same_model(tiny_run_config, cpt_run, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_start_model(tiny_run_config(model__init_from=str(tmp_path)))
    assert e.value.field == "model.init_from" and "config.yaml" in str(e.value)
    other = _fake_run(cpt_run, tmp_path / "other", name="smollm2-135m-instruct")
    with pytest.raises(ConfigError) as e:
        load_start_model(tiny_run_config(model__init_from=str(other)))
    assert e.value.field == "model.init_from" and "was trained from model 'smollm2-135m-instruct'" in str(e.value)
    assert "this run uses 'tiny'" in str(e.value)
    # a hand-edited chain that loops is refused before anything loads
    a, b = tmp_path / "a", tmp_path / "b"
    _fake_run(cpt_run, a, init_from=str(b))
    _fake_run(cpt_run, b, init_from=str(a))
    with pytest.raises(ConfigError, match="loops back"):
        load_start_model(tiny_run_config(model__init_from=str(a)))


def test_init_from_is_serialised_only_when_set(tiny_run_config, tmp_path):
    # earlier run folders (and sweep run ids) have no model.init_from: a run without one must not
    # gain the key, or their configs would no longer match and resume would refuse them
    assert "init_from" not in tiny_run_config().to_dict()["model"]
    cfg = tiny_run_config(model__init_from="some/run")
    assert cfg.to_dict()["model"]["init_from"] == str((Path.cwd() / "some" / "run").resolve())
    with pytest.raises(ConfigError, match="model.init_from"):
        tiny_run_config('model.init_from=""')


# -- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case,field", [
    ("missing", "objective.documents"), ("empty", "objective.documents"), ("no_text", "objective.documents"),
    ("mix_without_general", "objective.mix"), ("mix_zero", "objective.mix"), ("no_documents", "objective.documents"),
    ("bad_suffix", "objective.documents"), ("target_without_corpus", "objective.documents"),
    ("general_missing", "objective.general"),
])
def test_bad_cpt_input_names_the_field(case, field, tiny_run_config, tmp_path, docs):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "no_text.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    sets = {
        "missing": ["objective.documents=nope.txt", "objective.mix=1"],
        "empty": [f"objective.documents={tmp_path / 'empty.txt'}", "objective.mix=1"],
        "no_text": [f"objective.documents={tmp_path / 'no_text.jsonl'}", "objective.mix=1"],
        "mix_without_general": [f"objective.documents={docs}"],
        "mix_zero": [f"objective.documents={docs}", "objective.mix=0", "objective.general=base-samples"],
        "no_documents": ["objective.mix=1"],
        "bad_suffix": [f"objective.documents={tmp_path / 'x.csv'}", "objective.mix=1"],
        "target_without_corpus": ["objective.documents=target", "objective.mix=1"],
        "general_missing": [f"objective.documents={docs}", f"objective.general={tmp_path / 'g.jsonl'}"],
    }[case]
    with pytest.raises(ArenaError) as e:
        prepared_context(tiny_run_config(*sets, objective="cpt"))
    assert field in str(e.value), str(e.value)
    if isinstance(e.value, ConfigError):
        assert e.value.field == field
    else:
        assert isinstance(e.value, DataError)


def _cli(capsys, out_dir: Path, *sets: str) -> tuple[int, str]:
    argv = ["train", "--model", "tiny", "--target", "arith", "--steps", "2", "--out", str(out_dir),
            "--set", "train.progress=false", "--set", "probe.heldout=0", "--set", "probe.greedy=0", "--set", "target.n_train=32",
            "--set", "train.seq_len=64"]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing_file", "mix_without_general", "init_not_a_run", "init_other_model"])
def test_cli_exits_2_and_writes_nothing(case, capsys, tmp_path, docs, request):
    other = tmp_path / "other"
    if case == "init_other_model":
        _fake_run(request.getfixturevalue("cpt_run"), other, name="smollm2-135m-instruct")
    sets, needle = {
        "missing_file": (["objective.name=cpt", f"objective.documents={tmp_path / 'none.txt'}", "objective.mix=1"],
                         "objective.documents"),
        "mix_without_general": (["objective.name=cpt", f"objective.documents={docs}"], "objective.mix"),
        "init_not_a_run": ([f"model.init_from={tmp_path}"], "model.init_from"),
        "init_other_model": ([f"model.init_from={other}"], "model.init_from"),
    }[case]
    out_dir = tmp_path / "run"
    code, err = _cli(capsys, out_dir, *sets)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("arena train: error: ") and needle in lines[0], err
    assert not out_dir.exists()


def test_objectives_listing_shows_cpt(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    assert "cpt: continued pre-training" in out and "general_docs=256" in out and "mix=0.2" in out
