"""SFT on a teacher's samples (`objective.responses_from`, the off-policy cold start of OPD):
what the student trains on is the teacher's text, unfinished samples are dropped and counted, and
a teacher that finishes nothing is a clear error before anything is written."""

from __future__ import annotations

import torch
from conftest import prepared_context
import pytest

from arena.cli import main
from arena.errors import DataError
import arena.objectives.teacher_samples as TS
from arena.rollouts import Rollouts


def test_sft_trains_on_the_teachers_finished_samples(tiny_run_config, teacher_dir, monkeypatch):
    """The engine is replaced by a fake teacher whose every third sample is unfinished (a random
    tiny teacher never emits EOS); the next test runs the real engine."""
    calls = {}

    def fake_sample(model, tok, prompts, params, seed, device, precision, backend="auto", max_batch=64):
        calls.update(n=len(prompts), temperature=params.temperature, top_p=params.top_p, seed=seed,
                     max_new_tokens=params.max_new_tokens)
        texts = [f"teacher says {i}" if i % 3 else f"unfinished {i}" for i in range(len(prompts))]
        fin = torch.tensor([bool(i % 3) for i in range(len(prompts))])
        z = torch.zeros((len(prompts), 1))
        return Rollouts(prompt_ids=list(prompts), completion_ids=z.long(), completion_mask=z.bool(), logprobs=z,
                        texts=texts, group=torch.arange(len(prompts)), finished=fin)

    monkeypatch.setattr(TS.R, "sample", fake_sample)
    cfg = tiny_run_config(f"objective.responses_from={teacher_dir}", "objective.responses_temperature=0.5",
                          "target.n_train=30", objective="sft", method="lora")
    ctx, _, obj = prepared_context(cfg)
    assert calls["n"] == 30 and calls["temperature"] == 0.5 and calls["top_p"] == 0.95
    texts = ctx.tokenizer.batch_decode([r[r != ctx.tokenizer.pad_token_id] for r in obj.data.input_ids])
    blob = " ".join(texts)
    assert "teacher says 1" in blob and "teacher says 29" in blob and "unfinished" not in blob
    # every packed document maps back to its example of train_examples(seed): none with i % 3 == 0
    assert obj.example_index.size == 20 and all(i % 3 for i in obj.example_index.tolist())


def test_a_teacher_that_finishes_nothing_is_a_data_error(tiny_run_config, teacher_dir):
    cfg = tiny_run_config(f"objective.responses_from={teacher_dir}", "objective.responses_max_new_tokens=3",
                          "target.n_train=12", objective="sft", method="lora")
    # the real engine: the sharpened random teacher never ends within 3 tokens -> nothing to train on
    with pytest.raises(DataError, match=r"objective\.responses_from.*finished none of 12"):
        prepared_context(cfg)


def test_cli_teacher_that_finishes_nothing_exits_2_and_writes_nothing(capsys, tmp_path, teacher_dir):
    out = tmp_path / "run"
    code = main(["train", "--model", "tiny", "--target", "arith", "--objective", "sft", "--steps", "2",
                 "--set", "target.n_train=12", "--set", f"objective.responses_from={teacher_dir}",
                 "--set", "objective.responses_max_new_tokens=3", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and "objective.responses_from" in err and "Traceback" not in err
    assert not out.exists()
