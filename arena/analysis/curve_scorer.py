"""Scores each θ(α) of an interpolation curve on the general and target axes (arena.evaluation).

"proxy": general = per-token NLL of the base model's greedy responses (≤ 96 tokens) to IFEval +
NQ-open prompts (its rise is general ΔCE), target = per-token NLL of held-out target answers;
lower is better. "lm-eval": the general and target axes of `evaluate_model` (accuracies,
higher is better), with the proxies alongside. Deltas are paired against α = 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from arena.evaluation import compare, evaluate_model
from arena.evaluation import proxies as px
from arena.evaluation.cache import BaseCache
from arena.evaluation.settings import RunSettings

SCORERS = {
    "proxy": "general = per-token NLL of the base model's greedy responses (<= 96 tokens) to IFEval + NQ-open "
             "prompts (its rise is general dCE); target = per-token NLL of held-out target answers",
    "lm-eval": "general and target axes of arena.evaluation.evaluate_model (lm-eval benchmark scores)",
}


class CurveScorer:
    """Scores one model on the chosen axes; `prepare` once on the base model, then `score` + `point` per α."""

    def __init__(self, kind, tok, target, suites, limit, data_dir, seed, device, precision, model_fp, engine: str = "auto"):
        self.engine = engine
        self.kind, self.tok, self.target, self.suites = kind, tok, target, suites
        self.limit, self.data_dir, self.seed, self.device, self.precision = limit, data_dir, seed, device, precision
        self.model_fp = model_fp
        self.ps = px.ProxySettings(n_ifeval=limit, n_nq=limit, target_examples=limit, seed=seed)
        self.reference = None
        self.ref_result = None

    @property
    def orientation(self) -> str:
        return "nll" if self.kind == "proxy" else "accuracy"

    def check_data(self) -> None:
        """Fail on a bad data folder before any model is loaded."""
        if "general" in self.suites:
            px.general_prompts(self.data_dir, self.ps)

    def prepare(self, base_model, log) -> None:
        """The base model's general-prompt responses (cached per base model by the evaluation layer)."""
        if "general" in self.suites:
            self.reference = px.reference_responses(base_model, self.tok, self.data_dir, self.ps, self.device,
                                                    self.precision, self.model_fp, log, engine=self.engine)

    def base_key(self, path: str, method: dict | None) -> dict | None:
        """What the proxy scores of θ(0) depend on, or None where they are not cached (lm-eval scorer,
        no model fingerprint). θ(0) is the base model on every path, so one entry serves every run
        of a base model: the scored texts enter by their sha256 (general: the reference responses;
        target: the held-out examples), and a generator path keeps its method's config because its
        θ(0) runs through the method's modules (an identity rotation, equal to the base only to
        rounding) — the weights path's θ(0) is the base's own tensors."""
        if self.kind != "proxy" or not self.model_fp:
            return None
        texts: dict = {}
        if "general" in self.suites:
            texts["general"] = [[it["prompt"], it["response"]] for it in self.reference["items"]]
        if "target" in self.suites:
            texts["target"] = [[e.prompt, e.response] for e in self.target.heldout_examples(self.ps.target_examples,
                                                                                             self.ps.seed)]
        sha = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()
        return {"model": self.model_fp, "kind": "interpolation-alpha0", "suites": list(self.suites),
                "proxy": asdict(self.ps), "precision": self.precision, "device": px.device_kind(self.device),
                "texts_sha256": sha, "path": path, "method": method if path != "weights" else None}

    def score_base(self, model, path: str, method: dict | None = None, cache: BaseCache | None = None) -> dict:
        """The scores of θ(0) (`model`), read from the base cache when an earlier run of this base
        model scored them (base_key); the result's "cached" says which."""
        key = self.base_key(path, method)
        cache = cache or BaseCache()
        hit = cache.get("interpolation-alpha0", key) if key is not None else None
        if hit is not None:
            return {**hit, "cached": True}
        res = self.score(model)
        if key is not None:
            cache.put("interpolation-alpha0", key, res)
        return {**res, "cached": False}

    def score(self, model) -> dict:
        if self.kind == "proxy":
            res = {"proxies": {}}
            if "general" in self.suites:
                res["proxies"]["general_nll"] = px.general_nll(model, self.tok, self.reference, self.device,
                                                               self.precision, self.ps)
            if "target" in self.suites:
                res["proxies"]["target_nll"] = px.target_nll(model, self.tok, self.target, self.device,
                                                             self.precision, self.ps)
            return res
        return evaluate_model(model, self.tok, list(self.suites), self.target, self.limit, self.data_dir, self.seed,
                              self.device, settings=RunSettings(precision=self.precision, engine=self.engine), proxies=self.ps,
                              reference=self.reference, model_id=self.model_fp)

    def point(self, res: dict) -> dict:
        """{axis: {value, se, n, delta, delta_se, metric}} of one result, deltas against the α = 0 result."""
        if self.ref_result is None:
            self.ref_result = res
        cmp = compare(self.ref_result, res)
        out = {}
        for axis in self.suites:
            if self.kind == "proxy":
                p, d = res["proxies"][f"{axis}_nll"], cmp["proxies"].get(f"{axis}_nll", {})
                out[axis] = {"value": p["score"], "se": p["se"], "n": p["n"], "tokens": p["tokens"],
                             "delta": d.get("delta"), "delta_se": d.get("se"), "metric": p["metric"]}
            else:
                a, d = res["axes"][axis], cmp["axes"].get(axis, {})
                out[axis] = {"value": a["score"], "se": a["se"], "benchmarks": a["benchmarks"],
                             "complete": a["complete"], "delta": d.get("delta"), "delta_se": d.get("se"),
                             "scores": {b: res["tasks"][b]["score"] for b in a["benchmarks"]}}
        if self.kind != "proxy" and res.get("proxies"):
            out["proxies"] = {k: {"value": v["score"], "se": v["se"]} for k, v in res["proxies"].items()
                              if isinstance(v, dict) and "score" in v}
        return out
