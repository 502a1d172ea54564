"""What the cause rules read, measured once per tested sample: the models' MC scores, the reference
NLL along the run's checkpoints, when each sample was first trained on, and its similar prompts.

Each function returns plain per-sample lists in the tested samples' order; `arena.ilp.run` zips
them into the evidence dicts that `arena.ilp.causes` reads and samples.jsonl stores.
"""

from __future__ import annotations

import copy
from pathlib import Path

from arena.ilp import mc


def reference_nll(model, tokenizer, examples, device, precision: str, batch_size: int) -> list[float | None]:
    """Mean per-token NLL of each sample's reference response given its prompt (teacher forced)."""
    from arena.evaluation.model_io import per_example_nll

    out = per_example_nll(model, tokenizer, examples, device, precision, 4096, batch_size)
    return [None if x is None else x[0] / max(1, x[1]) for x in out]


def checkpoint_trajectory(run_dir: Path, cfg, checkpoints: list[Path], items, examples, tokenizer, device,
                          precision: str, batch_size: int, log) -> list[dict]:
    """Per checkpoint (in step order): {"step", "mc_pass": [per sample], "nll": [per sample]}.

    The run's wrapped model is rebuilt once; each checkpoint's trainable weights are loaded into it and
    a merged copy is scored (merging makes the forwards those of a plain model)."""
    import torch
    from safetensors.torch import load_file

    from arena.components import build_components
    from arena.runs import load_run_model

    method, _, _ = build_components(cfg, check_data=False)
    wrapped, _, _ = load_run_model(run_dir, merged=False, device="cpu")
    out = []
    for ck in checkpoints:
        step = int(ck.name.split("-")[1])
        method.load_trainable_state_dict(wrapped, load_file(str(ck / "trainable.safetensors")))
        model = method.merge(copy.deepcopy(wrapped)).to(device).eval()
        with torch.no_grad():
            ll = mc.score_items(model, tokenizer, items, device, precision, batch_size)
            nll = reference_nll(model, tokenizer, examples, device, precision, batch_size)
        out.append({"step": step, "mc_pass": [mc.mc_pass(it, x) for it, x in zip(items, ll)], "nll": nll})
        log(f"ilp: checkpoint step {step} scored")
        del model
    return out


def similar_prompts(tested, all_examples, tested_idx: list[int], similarity: float, conflict_similarity: float):
    """(neighbours, conflicts) per tested sample: tested samples with a prompt similarity >=
    `similarity` (cause I's "similar samples"), and training samples with similarity >=
    `conflict_similarity` whose answer differs (cause III). Similarity: arena/data/similarity.py."""
    from arena.data.similarity import near_duplicates

    prompts = [e.prompt for e in tested]
    neighbours: list[list[tuple[int, float]]] = [[] for _ in tested]
    for i, j, sim in near_duplicates(prompts, similarity):  # pairs i < j: each is a neighbour of the other
        neighbours[i].append((j, sim))
        neighbours[j].append((i, sim))
    conflicts: list[list[dict]] = [[] for _ in tested]
    pairs = near_duplicates(prompts, conflict_similarity, others=[e.prompt for e in all_examples])
    for i, j, sim in pairs:
        if j == tested_idx[i]:
            continue
        other = all_examples[j]
        if mc.answer_of(other) != mc.answer_of(tested[i]):
            conflicts[i].append({"index": j, "similarity": round(float(sim), 4), "answer": mc.answer_of(other)[:200]})
    for lst in neighbours:
        lst.sort(key=lambda t: -t[1])
    for lst in conflicts:
        lst.sort(key=lambda d: -d["similarity"])
    return neighbours, conflicts


def seen_range(objective, ctx, until: int | None = None):
    """Per training example, (first, last) optimizer step that trained on it ((None, None): never), from
    the SFT objective's planned row stream up to step `until` (a progressive run that stopped early);
    (None, why) when the objective cannot say."""
    if not hasattr(objective, "seen_steps"):
        return None, "the sft objective does not expose its data order (seen_steps)"
    seen = objective.seen_steps(ctx, until=until)
    return [(min(x), max(x)) if x else (None, None) for x in seen], None
