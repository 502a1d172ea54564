"""`ilp_run`: detect the training samples a finished SFT run did not learn, and attribute them.

Order of work (every check before anything is written or trained):
  1. check the run (an SFT run folder), the probe (a verifier or MC-convertible answers), the causes
     asked for against the evidence the run has (checkpoints for IV and V), the seed runs;
  2. train the control runs the asked causes use (`longer` for V, `reversed` for IV) into
     <run>/ilp/controls/, or reuse them when already there;
  3. re-test a seeded subset of the training samples: the primary probe (verify: pass@N of sampled
     replies with the target's reward, and greedy; mc: pass@N of log-likelihood MC trials) on the
     tuned model and on every seed run, MC scores of the starting model, checkpoints, controls;
  4. unlearned = pass@N < threshold in every seed run; apply the cause rules to each unlearned sample;
  5. write <run>/ilp/samples.jsonl and <run>/ilp/summary.json, and record["ilp"] (atomically).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

from arena.errors import ArenaError
from arena.ilp import causes as rules
from arena.ilp import evidence, mc
from arena.ilp.settings import CAUSES, IlpSettings
from arena.ilp.stats import jsd_bits
from arena.ilp.summary import ILP_DIR, _atomic, summarise
from arena.ilp.verify import verify



def sample_key(ex) -> str:
    """A sample's identity across runs (seed orders, mitigations): its prompt and response."""
    return hashlib.sha1(f"{ex.prompt}\x00{ex.response}".encode()).hexdigest()


def pick_tested(examples, keys: list[str], n: int | None, seed: int, eligible: list[bool]) -> list[int]:
    """Indices of the tested samples: the first n by a seeded hash of their key, so the subset does not
    depend on the run's data order (every seed and mitigation run re-tests the same samples)."""
    seen, idx = set(), []
    for i, k in enumerate(keys):
        if eligible[i] and k not in seen:  # a sample repeated verbatim in the data is tested once
            seen.add(k)
            idx.append(i)
    idx.sort(key=lambda i: hashlib.sha1(f"{seed}/{keys[i]}".encode()).hexdigest())
    return sorted(idx[:n] if n is not None else idx)


def _strip(d: dict) -> dict:
    from arena.runs import RESULT_NEUTRAL_TRAIN_KEYS

    return {**d, "out": None, "train": {k: v for k, v in d["train"].items()
                                        if k not in RESULT_NEUTRAL_TRAIN_KEYS and k != "seed"}}


def _check_seed_runs(cfg, seed_runs: list[str]) -> list:
    from arena.runs import read_run_config

    out = []
    for r in seed_runs:
        other = read_run_config(r)
        if _strip(other.to_dict()) != _strip(cfg.to_dict()):
            raise ArenaError(f"ilp.seed_runs: run {r} differs from the analysed run in more than train.seed; "
                             "seed runs must share every other setting")
        out.append((r, other))
    return out


def _control_config(cfg, run_dir: Path, name: str, factor: float):
    from arena.config import run_config_from_dict

    d = cfg.to_dict()
    d["out"] = str(run_dir / ILP_DIR / "controls" / name)
    d["train"] = {**d["train"], "save_every": 0, "progress": False, "eval_every": 0}
    if name == "longer":
        d["train"]["steps"] = int(math.ceil(cfg.train.steps * factor))
    else:
        d["objective"] = {**d["objective"], "reverse": True}
    return run_config_from_dict(d)


def _load(run_dir, device):
    from arena.runs import load_run_model

    model, tok, _ = load_run_model(run_dir, merged=True, device=device)
    return model.eval(), tok


def _start_model(cfg, device):
    """The weights the run started from: the base model, or its init_from run (CPT then SFT)."""
    from arena.runs import load_start_model

    model, tok = load_start_model(cfg, device)
    return model.to(device).eval(), tok


def ilp_run(run_dir, settings: IlpSettings, device: str = "auto", log=print, write: bool = True) -> dict:
    """Detect + attribute for one finished SFT run; returns record["ilp"] (see the module docstring)."""
    import torch

    from arena.components import build_components
    from arena.objectives.base import TrainContext
    from arena.rewards import resolve_reward
    from arena.runs import check_run_folder, read_run_config, set_record_key
    from arena.training.checkpoint import list_checkpoints
    from arena.training.device import pick_device, resolve_precision

    t0 = time.perf_counter()
    s = settings
    run_dir = check_run_folder(run_dir)
    cfg = read_run_config(run_dir)
    if cfg.objective.name != "sft":
        raise ArenaError(f"run {run_dir}: trained with objective {cfg.objective.name!r}; arena ilp analyses SFT runs "
                         "(incomplete learning is measured on the samples SFT trained on)")
    method, target, objective = build_components(cfg)
    probe = s.probe if s.probe != "auto" else getattr(target, "ilp_probe", "mc")
    reward_fn = None
    if probe == "verify":
        if target.default_reward is None:
            raise ArenaError(f"ilp.probe: 'verify' needs a verifier, and target {target.name!r} has no reward; "
                             "use probe: mc (multiple choice by log-likelihood)")
        _, reward_fn = resolve_reward("auto", target.name)
    dev = pick_device(device)
    precision = resolve_precision(s.precision, dev)

    checkpoints = list_checkpoints(run_dir / "checkpoints")
    asked = list(CAUSES) if s.causes == ["auto"] else list(s.causes)
    missing: dict[str, str] = {}
    if not checkpoints:
        why = (f"run {run_dir} kept no checkpoints (train it with train.save_every > 0 and train.keep_checkpoints 0)")
        for c in ("IV", "V"):
            if c in asked:
                if s.causes != ["auto"]:
                    raise ArenaError(f"ilp.causes: cause {c} needs the run's checkpoints, and {why}")
                missing[c] = why
    elif len(checkpoints) < 2 and "IV" in asked:
        # one checkpoint + the final weights is a trajectory of two points: enough for V, and for IV
        pass
    seed_runs = _check_seed_runs(cfg, s.seed_runs)

    examples = target.train_examples(cfg.train.seed)
    if not examples:
        raise ArenaError(f"run {run_dir}: target {target.name!r} gives no training examples")
    if probe == "verify" and any(e.answer is None for e in examples):
        raise ArenaError(f"ilp.probe: 'verify' needs a reference answer on every sample; target {target.name!r} "
                         "has samples without one; use probe: mc")
    keys = [sample_key(e) for e in examples]
    pools = mc.distractor_pools(examples)
    if all(len(p) < 2 for p in pools.values()):
        raise ArenaError(f"target {target.name!r}: no subset has two different answers, so no sample can be turned "
                         "into multiple choice" + ("" if reward_fn else ", and the target has no verifier"))

    # The data order the run trained in (cause IV): the SFT objective re-prepared on the run's config.
    base, tok = _start_model(cfg, dev)  # also the "base" of causes I and II, scored below
    ctx = TrainContext(model=base, tokenizer=tok, target=target, train=cfg.train, device=torch.device("cpu"),
                       precision="fp32", seed=cfg.train.seed)
    objective.prepare(ctx)
    from arena.records import read_record

    trained = (read_record(run_dir) or {}).get("train") or {}
    steps_run = int(trained.get("stopped_early_at") or trained.get("steps") or cfg.train.steps)
    seen, order_missing = evidence.seen_range(objective, ctx, until=steps_run)
    if order_missing and "IV" in asked and "IV" not in missing:
        if s.causes != ["auto"]:
            raise ArenaError(f"ilp.causes: cause IV needs the run's data order: {order_missing}")
        missing["IV"] = order_missing
    if seen is not None:
        # a sample repeated verbatim in the data (several indices, one key) was trained on at every copy's steps
        span: dict[str, tuple] = {}
        for k, (f, l) in zip(keys, seen):
            if f is not None:
                old = span.get(k)
                span[k] = (f, l) if old is None else (min(old[0], f), max(old[1], l))
        seen = [span.get(k, (None, None)) for k in keys]
    eligible = [True] * len(examples) if seen is None else [f is not None for f, _ in seen]
    idx = pick_tested(examples, keys, s.samples, s.seed, eligible)
    tested = [examples[i] for i in idx]
    items = mc.build_items(tested, pools, s.candidates, s.options, s.n, s.seed, [keys[i] for i in idx])

    # Controls (trained now: every check above has passed)
    from arena.experiment import run_training

    control_runs: dict[str, Path] = {}
    wanted = [c for c in s.controls if (c == "longer" and "V" in asked and "V" not in missing)
              or (c == "reversed" and "IV" in asked and "IV" not in missing)]
    if "reversed" in wanted and not hasattr(cfg.objective.options, "reverse"):
        wanted.remove("reversed")
    from arena.runs import is_run_folder

    for name in wanted:
        ccfg = _control_config(cfg, run_dir, name, s.longer_factor)
        if not write:  # write=False writes nothing: only a control trained earlier is used
            if is_run_folder(ccfg.out):
                control_runs[name] = Path(ccfg.out)
            continue
        log(f"ilp: control run '{name}' -> {ccfg.out}")
        rec = run_training(ccfg, log=log)
        rec.pop("_model", None)
        control_runs[name] = Path(ccfg.out)

    # the verify probe's reply cap, once for every model scored (the tokenizer is the run's for all of them)
    cap = s.max_new_tokens or 8 + max(len(tok(e.response, add_special_tokens=False)["input_ids"]) for e in tested)

    def primary(model, tok_) -> tuple[list[float], list[dict] | None, list[list[float]]]:
        """(pass@N per tested sample, verify details or None, MC log-likelihoods)."""
        with torch.no_grad():
            ll = mc.score_items(model, tok_, items, dev, precision, s.batch_size)
        if probe == "mc":
            return [mc.mc_pass(it, x) for it, x in zip(items, ll)], None, ll
        ver = verify(model, tok_, tested, reward_fn, s.n, s.temperature, cap, s.seed, dev, precision, s.engine)
        return [v["pass"] for v in ver], ver, ll

    # the tuned model
    tuned, tok = _load(run_dir, dev)
    log(f"ilp: re-testing {len(tested)} of {len(examples)} training samples ({probe}, pass@{s.n} < {s.threshold})")
    passes, ver, tuned_ll = primary(tuned, tok)
    tuned_mc = [mc.mc_pass(it, x) for it, x in zip(items, tuned_ll)]
    tuned_nll = evidence.reference_nll(tuned, tok, tested, dev, precision, s.batch_size)
    del tuned
    per_seed = [{"run": run_dir.name, "k": sum(p < s.threshold for p in passes), "n": len(passes)}]
    unlearned = [p < s.threshold for p in passes]
    for r, _ in seed_runs:
        m, t = _load(r, dev)
        p_other, _, _ = primary(m, t)
        del m
        per_seed.append({"run": Path(r).name, "k": sum(p < s.threshold for p in p_other), "n": len(p_other)})
        unlearned = [u and p < s.threshold for u, p in zip(unlearned, p_other)]
    for row in per_seed:
        row["fraction"] = round(row["k"] / row["n"], 6)

    # the starting model
    with torch.no_grad():
        base_ll = mc.score_items(base, tok, items, dev, precision, s.batch_size)
    del base
    base_mc = [mc.mc_pass(it, x) for it, x in zip(items, base_ll)]

    # checkpoints and controls
    traj = None
    if checkpoints and ("IV" in asked or "V" in asked):
        traj = evidence.checkpoint_trajectory(run_dir, cfg, checkpoints, items, tested, tok, dev, precision,
                                              s.batch_size, log)
    control_pass: dict[str, list[float]] = {}
    for name, path in control_runs.items():
        m, t = _load(path, dev)
        control_pass[name], _, _ = primary(m, t)
        del m

    neighbours, conflicts = evidence.similar_prompts(tested, examples, idx, s.similarity, s.iii_similarity)

    # evidence per sample, then the rules
    rows = []
    for i, (ex, it) in enumerate(zip(tested, items)):
        p_base, p_tuned = mc.softmax(base_ll[i]), mc.softmax(tuned_ll[i])
        top = max(range(len(p_base)), key=lambda j: p_base[j])
        ev = {
            "base_mc_pass": base_mc[i], "tuned_mc_pass": tuned_mc[i],
            "base_top": {"answer": it.answers[top][:200], "prob": round(p_base[top], 6), "correct": top == 0},
            "tuned_top": it.answers[max(range(len(p_tuned)), key=lambda j: p_tuned[j])][:200],
            "jsd": round(jsd_bits(p_base, p_tuned), 6),
            "neighbours": [[j, round(float(sim), 4)] for j, sim in neighbours[i][:5]],
            "learned_neighbours": [j for j, _ in neighbours[i] if not unlearned[j]][:5],
            "conflicts": conflicts[i][:5],
            "steps": steps_run,
            "first_seen": None if seen is None else seen[idx[i]][0],
            "last_seen": None if seen is None else seen[idx[i]][1],
            "reversed_pass": control_pass["reversed"][i] if "reversed" in control_pass else None,
            "longer_pass": control_pass["longer"][i] if "longer" in control_pass else None,
            "checkpoints": None if traj is None else
            [{"step": c["step"], "mc_pass": c["mc_pass"][i], "nll": c["nll"][i]} for c in traj]
            + [{"step": steps_run, "mc_pass": tuned_mc[i], "nll": tuned_nll[i]}],
        }
        if seen is None:
            ev.pop("first_seen")
            ev.pop("last_seen")
        found, verdicts = rules.attribute(ev, s, [c for c in asked if c not in missing]) if unlearned[i] else ([], {})
        pred = it.answers[max(range(len(p_tuned)), key=lambda j: p_tuned[j])]
        rows.append({"index": idx[i], "key": keys[idx[i]], "source": str(ex.meta.get("source", "")),
                     "plant": ex.meta.get("plant"), "prompt": ex.prompt, "reference": mc.answer_of(ex),
                     "pass": passes[i], "greedy": None if ver is None else ver[i]["greedy"],
                     "reply": None if ver is None else ver[i]["reply"], "prediction": pred,
                     "mc_pass": tuned_mc[i], "base_mc_pass": base_mc[i], "unlearned": unlearned[i],
                     "causes": found, "verdicts": verdicts, "evidence": ev})

    summary = summarise(rows, s, asked, missing, probe, len(examples), per_seed, seed_runs, cfg, control_runs,
                        run_dir)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if write:
        out = run_dir / ILP_DIR
        out.mkdir(parents=True, exist_ok=True)
        _atomic(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        _atomic(out / "summary.json", json.dumps(summary, indent=1))
        set_record_key(run_dir, "ilp", summary)
    log(f"ilp: {summary['unlearned']['k']}/{summary['unlearned']['n']} unlearned "
        f"({summary['unlearned']['fraction']:.1%}, 95% CI {summary['unlearned']['ci95']}); causes "
        + ", ".join(f"{c} {v['k']}" for c, v in summary["causes"].items() if v.get("tested", True)))
    return summary
