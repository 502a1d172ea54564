"""Continuous forgetting/plasticity proxies for models whose accuracies sit at the floor.

- general NLL (docs/design.md "Pilot"): the per-token NLL of the **base model's own greedy responses**
  (<= 96 tokens) to held-out general prompts (48 IFEval + 48 NQ-open by default). The base responses
  are generated once per (base model, prompts, settings) and cached; ΔCE = tuned − base NLL on
  exactly these texts, paired by prompt.
- target NLL: the per-token NLL of held-out reference answers of the target
  (`Target.heldout_examples`, as the held-out probe `heldout.heldout_nll` uses).

Both are ratio estimators, per-token NLL = Σ_i NLL_i / Σ_i T_i over prompts i with T_i response
tokens, and get the cluster SE of `arena.evaluation.stats` (prompts are the sampling units).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from arena.data.io import data_file, iter_jsonl, sha256_file, stable_shuffle
from arena.models.catalog import cache_root
from arena.records import atomic_write_text
from arena.results.stats import ratio_mean_se
from arena.targets.base import Example

IFEVAL = "ifeval/input_data.jsonl"
NQ = "nq_open/NQ-open.dev.jsonl"
PROXY_VERSION = 1


@dataclass
class ProxySettings:
    n_ifeval: int = 48
    n_nq: int = 48
    max_new_tokens: int = 96
    target_examples: int = 64
    seed: int = 1234  # prompt/held-out selection; the probe default, fixed across a sweep
    seq_len: int = 512
    batch_size: int = 16


def general_orders(data_dir: str | None, seed: int, needed_by: str = "the general NLL proxy",
                   sources: tuple[str, ...] = ("ifeval", "nq_open")) -> dict[str, list[str]]:
    """Every IFEval prompt and NQ-open question, each source in its seeded order. The proxy takes
    the head of each order; the diagnostics take the tail (arena/analysis/prompts.py), so the two
    prompt sets are disjoint while their sizes fit in the pool (541 IFEval prompts, 3,610 questions)."""
    out = {}
    if "ifeval" in sources:
        ife = [r["prompt"] for _, r in iter_jsonl(data_file(data_dir, IFEVAL, needed_by=needed_by), ("prompt",))]
        out["ifeval"] = stable_shuffle(ife, f"proxy/ifeval/{seed}")
    if "nq_open" in sources:
        nq = [r["question"].strip() for _, r in iter_jsonl(data_file(data_dir, NQ, needed_by=needed_by), ("question",))]
        out["nq_open"] = [q[:1].upper() + q[1:] + "?" for q in stable_shuffle(nq, f"proxy/nq/{seed}")]
    return out


def general_prompts(data_dir: str | None, s: ProxySettings) -> list[tuple[str, str]]:
    """[(source, prompt)]: the heads of the seeded IFEval and NQ-open orders (`general_orders`)."""
    orders = general_orders(data_dir, s.seed, sources=tuple(src for src, n in (("ifeval", s.n_ifeval), ("nq_open", s.n_nq)) if n))
    return ([("ifeval", p) for p in orders.get("ifeval", [])[: s.n_ifeval]]
            + [("nq_open", q) for q in orders.get("nq_open", [])[: s.n_nq]])


def _ref_path(key: dict) -> Path:
    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_root() / "eval" / "reference" / f"{h}.json"


def reference_key(data_dir: str | None, s: ProxySettings, precision: str, model_id: dict | None, engine: str = "auto",
                  device_type: str = "cpu") -> dict:
    """What the base model's greedy reference responses depend on. The device type is part of it:
    bf16 kernels differ between CPU and CUDA, so greedy decoding can part ways."""
    files = {rel: sha256_file(Path(data_dir) / rel) for rel in (IFEVAL, NQ)} if data_dir else {}
    return {"version": PROXY_VERSION, "model": model_id, "files": files, "precision": precision, "engine": engine,
            "device": device_type,
            "settings": {k: v for k, v in asdict(s).items() if k in ("n_ifeval", "n_nq", "max_new_tokens", "seed")}}


def device_kind(device, model=None) -> str:
    """'cpu' / 'cuda' / ... of `device` (a torch.device or a string), else of the model's weights."""
    if device is None and model is not None:
        device = next(model.parameters()).device
    return str(getattr(device, "type", device) or "cpu").split(":")[0]


def cached_reference(key: dict) -> dict | None:
    """The cached reference responses for `key`, or None (never generates)."""
    path = _ref_path(key)
    if not path.is_file():
        return None
    try:
        items = json.loads(path.read_text())["items"]
    except (json.JSONDecodeError, KeyError):
        return None
    return {"key": key, "items": items, "cached": True, "path": str(path)}


def reference_responses(model, tokenizer, data_dir: str | None, s: ProxySettings, device, precision: str,
                        model_id: dict | None = None, log=print, engine: str = "auto") -> dict:
    """The base model's greedy responses to the general prompts, cached when `model_id` is given.

    Returns {"key", "items": [{"source", "prompt", "response"}], "cached": bool, "path"}.
    """
    # model_io imports torch; users of ProxySettings and general_prompts need not
    from arena.evaluation.model_io import greedy_generate

    key = reference_key(data_dir, s, precision, model_id, engine, device_kind(device, model))
    if model_id:
        hit = cached_reference(key)
        if hit is not None:
            return hit
    prompts = general_prompts(data_dir, s)
    log(f"general NLL proxy: generating the reference responses ({len(prompts)} prompts, <= {s.max_new_tokens} tokens)")
    texts = greedy_generate(model, tokenizer, [p for _, p in prompts], device, precision, s.max_new_tokens,
                            batch_size=s.batch_size, engine=engine)
    items = [{"source": src, "prompt": p, "response": t} for (src, p), t in zip(prompts, texts)]
    path = None
    if model_id:
        path = _ref_path(key)
        atomic_write_text(path, json.dumps({"key": key, "items": items}, indent=1))
    return {"key": key, "items": items, "cached": False, "path": str(path) if path else None}


def nll_entry(model, tokenizer, examples: list[Example], device, precision: str, s: ProxySettings) -> dict:
    """Per-token NLL of the examples' responses: score, SE over examples, n, tokens, and the
    per-example (nll sum, tokens) units for paired comparisons."""
    from arena.evaluation.model_io import per_example_nll  # model_io imports torch

    vals = per_example_nll(model, tokenizer, examples, device, precision, s.seq_len)
    keep = [(i, v) for i, v in enumerate(vals) if v is not None]
    units = {"doc_ids": [i for i, _ in keep], "y": [v[0] for _, v in keep], "k": [v[1] for _, v in keep]}
    score, se = ratio_mean_se(units["y"], units["k"])
    return {"score": score, "se": se, "n": len(keep), "tokens": int(sum(units["k"])),
            "dropped": len(vals) - len(keep), "units": units}


def general_nll(model, tokenizer, reference: dict, device, precision: str, s: ProxySettings) -> dict:
    ex = [Example(prompt=it["prompt"], response=it["response"]) for it in reference["items"]]
    out = nll_entry(model, tokenizer, ex, device, precision, s)
    out["metric"] = "per-token NLL of the base model's greedy responses to general prompts"
    out["reference"] = {"prompts": len(ex), "max_new_tokens": s.max_new_tokens,
                        "sources": sorted({it["source"] for it in reference["items"]})}
    return out


def target_nll(model, tokenizer, target, device, precision: str, s: ProxySettings) -> dict:
    ex = target.heldout_examples(s.target_examples, s.seed)
    out = nll_entry(model, tokenizer, ex, device, precision, s)
    out["metric"] = f"per-token NLL of {target.name} held-out reference answers"
    return out
