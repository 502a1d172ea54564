"""Issue 14's recovery test: CPT on the planted world, SFT in the given order from the CPT run,
`arena ilp` on the SFT run, then precision and recall of every cause against the plants.

Per cause c, over the unlearned samples: precision = |predicted c ∩ planted c| / |predicted c|,
recall = |predicted c ∩ planted c| / |planted c|. The plan (sizes, lrs, steps) was found with the
tiny model on CPU (arena/targets/planted.py's docstring says why each plant fails); ~35 s.
"""

from __future__ import annotations

import json

import pytest

from arena.config import load_run_config
from arena.experiment import run_training

COMMON = ["model.name=tiny", "method.name=full", "target.name=planted", "train.precision=fp32", "train.device=cpu",
          "train.progress=false", "probe.heldout=0", "probe.greedy=0", "train.seq_len=128"]
CPT = ["objective.name=cpt", "objective.documents=target", "objective.mix=1.0", "train.steps=700",
       "train.batch_size=8", "train.lr=5e-3", "train.schedule=constant", "train.warmup_steps=10"]
SFT = ["objective.name=sft", "objective.order=given", "train.batch_size=4", "train.lr=3e-3",
       "train.schedule=constant", "train.warmup_steps=4"]
MIN_UNLEARNED = 2  # each plant must actually produce unlearned samples (IV and V give 2 at this size)


def _sft_steps(sets: list[str]) -> int:
    """One epoch of the given-order data: every planted position lands where the target put it."""
    import torch

    from arena.components import build_components
    from arena.models.loader import load_model
    from arena.objectives.base import TrainContext

    cfg = load_run_config(None, sets + ["train.steps=1"])
    _, target, objective = build_components(cfg)
    model, tok, _ = load_model("tiny")
    ctx = TrainContext(model=model, tokenizer=tok, target=target, train=cfg.train, device=torch.device("cpu"),
                       precision="fp32", seed=cfg.train.seed)
    # whole batches only: a last, partial batch would wrap into the next epoch and train the IV copies again
    return objective.prepare(ctx)["rows"] // cfg.train.batch_size


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    from arena.ilp.run import ilp_run
    from arena.ilp.settings import IlpSettings

    root = tmp_path_factory.mktemp("planted")
    run_training(load_run_config(None, COMMON + CPT + [f"out={root / 'cpt'}"]), log=lambda m: None)
    sets = COMMON + SFT + [f"model.init_from={root / 'cpt'}"]
    steps = _sft_steps(sets)
    # checkpoints every quarter: after the IV copies (first pass), before the once-only plants'
    # pass ends, and before the last pass (cause V reads the last quarter's NLL drop)
    run_training(load_run_config(None, sets + [f"train.steps={steps}", f"train.save_every={steps // 4}",
                                               "train.keep_checkpoints=0", f"out={root / 'sft'}"]), log=lambda m: None)
    # the longer control at 3x: the V records come only late, so 2x replays them too few times to learn
    summary = ilp_run(root / "sft", IlpSettings(samples=None, longer_factor=3.0), device="cpu", log=lambda m: None)
    rows = [json.loads(line) for line in (root / "sft" / "ilp" / "samples.jsonl").read_text().splitlines()]
    return summary, rows


def test_normal_samples_are_learned(attributed):
    _, rows = attributed
    normal = [r for r in rows if r["plant"] is None]
    assert normal and sum(r["unlearned"] for r in normal) <= 0.05 * len(normal)


# Measured on the 2-core CPU (fp32, one torch thread as in every test): per cause, unlearned plants / planted,
# precision / recall: I 6/8 1.00/1.00, II 8/12 1.00/1.00, III 4/12 1.00/1.00 (the losers of 6 pairs and
# their winners), IV 2/14 1.00/1.00, V 2/8 1.00/1.00; normal samples 0/120 unlearned. IV and V rest on two
# samples each: most IV copies are kept (12 copies learn them for good) and most V records are learned in
# time; fewer copies made more of them fail but for other reasons (never learned), which the rules then
# correctly refuse to call IV or V.


@pytest.mark.parametrize("cause", ["I", "II", "III", "IV", "V"])
def test_cause_recovered(attributed, cause):
    summary, rows = attributed
    assert summary["causes"][cause]["tested"], summary["causes"][cause]["missing"]
    unl = [r for r in rows if r["unlearned"]]
    planted = {r["index"] for r in unl if r["plant"] == cause}
    predicted = {r["index"] for r in unl if cause in r["causes"]}
    assert len(planted) >= MIN_UNLEARNED, f"plant {cause} produced {len(planted)} unlearned samples"
    hit = len(planted & predicted)
    precision, recall = hit / max(1, len(predicted)), hit / len(planted)
    assert precision >= 0.8 and recall >= 0.8, (cause, precision, recall, len(predicted), len(planted))
