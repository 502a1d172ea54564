"""Interpolation between the base and a tuned model, and the target-vs-general curve it traces.

Paths (DESIGN.md "Diagnostics", Interpolation):
- "weights" (every method): θ(α) = θ0 + α·ΔW for every parameter, with ΔW = merged tuned − base
  (merged in fp32, so non-additive methods — OFT, BOFT, DoRA, VeRA, IA3 — are covered as well).
- "generator" (OFT, BOFT): scale the skew-symmetric generator Q (OFT's trainable parameters) by α
  before the Cayley transform, W(α) = W0 · R(αQ)ᵀ, which keeps every intermediate weight an exact
  rotation of W0 (PEFT-Arena reports it keeps more general ability at the same target level). BOFT:
  the butterfly generators are scaled the same way and its output scale s is interpolated linearly,
  s(α) = 1 + α(s − 1). Parameters outside the adapted modules (none for OFT/BOFT) follow the weights path.
α = 0 gives the base model's parameters bit for bit and α = 1 the merged tuned model's (to fp32 round-off).

`Interpolator` holds one model (modified in place), the base values of the parameters that change
and one delta (or the adapter generators); moving to another α rewrites only those parameters.

The curve (`interpolate_run`) scores each α on both axes through the evaluation API — the continuous
proxies (default; lower NLL is better) or lm-eval benchmark scores (higher is better) — with deltas
paired against α = 0, and marks two trade-off points:
(a) "constrained": the best target score among the α whose general score is no worse than the base's
    by more than δ (δ = 0.01 nats for the NLL proxies; 1 standard error of the base general score
    for accuracy-like scores). α = 0 always qualifies, so (a) always exists.
(b) "knee": the α farthest from the chord between α = 0 and α = 1 in the target-general plane
    (each axis min-max normalised over the curve, both oriented higher-is-better), on the side of
    the ideal corner (best target, best general); none when every point lies on or below the chord.

Record layout: record["interpolation"][path] = {"points": [{"alpha", "path", "seconds", "general":
{value, se, n, delta, delta_se, ...}, "target": {...}}], "best": {"constrained": {"alpha", "delta",
"rule"}, "knee": {"alpha", "distance", "rule"}}, "scorer": {"name", "orientation", ...}, "alphas",
"suites", "limit", "method", "seconds"}.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from arena.analysis.settings import InterpolationSettings
from arena.errors import ArenaError
from arena.models.loader import unwrap_peft

PATHS = ("weights", "generator")
SUITES = ("general", "target")
NLL_DELTA = 0.01  # nats: the general-NLL tolerance of rule (a) for the proxy scores


class Interpolator:
    """Writes θ(α) into `model` in place. `base`/`delta` cover only the parameters that differ;
    `generators` maps a parameter name to a function α -> its weight (generator path)."""

    def __init__(self, model: torch.nn.Module, base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor],
                 generators: dict[str, Callable[[float], torch.Tensor]] | None = None, path: str = "weights"):
        self.model, self.path = model, path
        self.generators = generators or {}
        self.params = dict(model.named_parameters())
        unknown = [n for n in [*delta, *self.generators] if n not in self.params or n not in base]
        if unknown:
            raise ArenaError(f"interpolation: parameters {unknown[:3]} are missing from the model or the base state")
        self.base = {n: base[n].to(self.params[n].device) for n in delta}
        self.delta = {n: d.to(self.params[n].device) for n, d in delta.items()}
        self.alpha = 0.0
        self.apply(0.0)

    @torch.no_grad()
    def apply(self, alpha: float) -> torch.nn.Module:
        alpha = float(alpha)
        for n, d in self.delta.items():
            p = self.params[n]
            torch.add(self.base[n], d, alpha=alpha, out=p.data)  # θ0 + α·Δ, no temporary
        for n, g in self.generators.items():
            self.params[n].data.copy_(g(alpha))
        self.alpha = alpha
        return self.model

    @contextlib.contextmanager
    def at(self, alpha: float):
        """`with interp.at(0.5) as model: ...` — θ(0.5) inside, the previous α restored after."""
        prev = self.alpha
        self.apply(alpha)
        try:
            yield self.model
        finally:
            self.apply(prev)

    def changed_parameters(self) -> int:
        return sum(self.params[n].numel() for n in [*self.delta, *self.generators])


# -- builders -----------------------------------------------------------------------------------------

def dense_delta(base_model: torch.nn.Module, tuned_model: torch.nn.Module) -> tuple[dict, dict]:
    """(base values, tuned − base) in fp32 for every parameter that differs (names as in base_model)."""
    tuned = dict(tuned_model.named_parameters())
    base_vals, delta = {}, {}
    for n, p in base_model.named_parameters():
        if n not in tuned:
            raise ArenaError(f"interpolation: tuned model has no parameter {n!r}; base and tuned architectures differ")
        t = tuned[n].detach().to(p.device, torch.float32)
        if t.shape != p.shape:
            raise ArenaError(f"interpolation: {n} has shape {tuple(p.shape)} in the base and {tuple(t.shape)} tuned")
        if torch.equal(t, p.detach().float()):
            continue
        base_vals[n] = p.detach().float().clone()
        delta[n] = t - base_vals[n]
    return base_vals, delta


def adapter_layers(wrapped: torch.nn.Module) -> list[tuple[str, object, str]]:
    """(module name, peft layer, adapter name) of every OFT/BOFT Linear adapter of an unmerged peft model."""
    from peft.tuners.boft.layer import BOFTLayer
    from peft.tuners.oft.layer import OFTLayer

    inner = unwrap_peft(wrapped)
    out = []
    for name, layer in inner.named_modules():
        if not isinstance(layer, (OFTLayer, BOFTLayer)):
            continue
        if not isinstance(layer.get_base_layer(), torch.nn.Linear):
            raise ArenaError(f"generator path: {name} is not a Linear layer (only Linear adapters are supported)")
        adapters = list(layer.active_adapters)
        if len(adapters) != 1:
            raise ArenaError(f"generator path: {name} has {len(adapters)} active adapters; expected 1")
        out.append((name, layer, adapters[0]))
    return out


def generator_functions(layers: list[tuple[str, object, str]], base_vals: dict[str, torch.Tensor]) -> dict[str, Callable]:
    """{'<module>.weight': α -> W(α)} for the given OFT/BOFT layers (see `adapter_layers`).

    The functions clone the adapters' parameters and read W0 from `base_vals`, so they stay valid
    after the peft model has been merged (merging rewrites only the base layer's weight). A weight
    missing from `base_vals` did not move (adapter still at its identity init) and is skipped.
    """
    from peft.tuners.oft.layer import OFTLayer

    out = {}
    for name, layer, adapter in layers:
        key = f"{name}.weight"
        if key in base_vals:
            make = _oft_fn if isinstance(layer, OFTLayer) else _boft_fn
            out[key] = make(layer, adapter, base_vals[key])
    return out


def _oft_fn(layer, adapter: str, w0: torch.Tensor) -> Callable[[float], torch.Tensor]:
    rot = layer.oft_R[adapter]
    q = rot.weight.detach().float().clone()
    eye = torch.eye(w0.shape[1], dtype=torch.float32)

    @torch.no_grad()
    def weight_at(alpha: float) -> torch.Tensor:
        saved = rot.weight.data
        rot.weight.data = q * alpha  # peft's own Cayley (Neumann or exact, COFT projection) on αQ
        try:
            # = layer.get_delta_weight(adapter) for fp32 weights; calling the rotation module itself
            # keeps the (merged, now unused) base layer out of this closure and so frees it
            r = rot.get_weight().detach().float()
        finally:
            rot.weight.data = saved
        # merge writes W0 Rᵀ; written as W0 + W0 (R − I)ᵀ so that α = 0 (R = I) is exactly W0
        return w0 + w0 @ (r - eye).T

    return weight_at


def _boft_fn(layer, adapter: str, w0: torch.Tensor) -> Callable[[float], torch.Tensor]:
    g = layer.boft_R[adapter]
    s = layer.boft_s[adapter]
    g0, s0 = g.detach().float().clone(), s.detach().float().clone()
    eye = torch.eye(w0.shape[1], dtype=torch.float32)

    @torch.no_grad()
    def weight_at(alpha: float) -> torch.Tensor:
        saved_g, saved_s = g.data, s.data
        g.data, s.data = g0 * alpha, 1.0 + alpha * (s0 - 1.0)
        try:
            m, scale = layer.get_delta_weight(adapter)
            # peft returns the boft_s Parameter itself: copy it before its data is restored
            m, scale = m.detach().float().clone(), scale.detach().float().clone()
        finally:
            g.data, s.data = saved_g, saved_s
        # merge writes (W0 Mᵀ) * s = W0 + W0 (M − I)ᵀ s + W0 (s − 1)
        return w0 + (w0 @ (m - eye).T) * scale + w0 * (scale - 1.0)

    return weight_at


def load_interpolator(run_dir, path: str = "weights", device="cpu"):
    """(Interpolator over a fresh base model, tokenizer, RunConfig, ModelInfo) for a finished run."""
    from arena.components import build_components
    from arena.runs import load_run_model, read_run_config
    from arena.models.loader import load_model

    if path not in PATHS:
        raise ArenaError(f"--path {path!r}: allowed: {', '.join(PATHS)}")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    base, tok, info = load_model(cfg.model.name, cfg.model.revision, cfg.model.trust_remote_code)
    base.eval()
    method, _, _ = build_components(cfg, check_data=False)
    wrapped, _, _ = load_run_model(run_dir, merged=False)
    layers = adapter_layers(wrapped) if path == "generator" else []
    if path == "generator" and not layers:
        raise ArenaError(f"--path generator needs an OFT or BOFT run (a Cayley generator to scale); this run's "
                         f"method is {cfg.method.name!r}: use --path weights")
    merged = method.merge(wrapped)
    base_vals, delta = dense_delta(base, merged)
    del merged, wrapped
    gens = generator_functions(layers, base_vals)
    for n in gens:
        delta.pop(n)
    interp = Interpolator(base.to(device), base_vals, delta, gens, path=path)
    return interp, tok, cfg, info


# -- the curve --------------------------------------------------------------------------------------------

def parse_alphas(text: str | Sequence[float]) -> list[float]:
    vals = text if not isinstance(text, str) else [t for t in text.split(",") if t.strip()]
    try:
        out = [float(v) for v in vals]
    except ValueError:
        raise ArenaError(f"--alphas {text!r}: expected comma-separated numbers such as 0,0.25,0.5,0.75,1") from None
    if not out or any(not math.isfinite(a) for a in out):
        raise ArenaError(f"--alphas {text!r}: expected finite numbers such as 0,0.25,0.5,0.75,1")
    # The rules compare against the base (α=0) and the chord to α=1, so both are always evaluated.
    return sorted(set(out) | {0.0, 1.0})


def parse_suites(text: str | Sequence[str]) -> list[str]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    bad = [s for s in items if s not in SUITES]
    if bad or not items:
        from arena.errors import suggest

        raise ArenaError(f"--suite {bad[0] if bad else text!r}: allowed: {', '.join(SUITES)}"
                         f"{suggest(bad[0], SUITES) if bad else ''}")
    return [s for s in SUITES if s in items]


def _oriented(point: dict, axis: str, kind: str) -> float:
    v = point[axis]["value"]
    return -v if kind == "nll" else v


def tradeoff(points: list[dict], kind: str = "nll", delta: float | None = None) -> dict:
    """The two marked α of a curve (rules (a) and (b) in the module docstring)."""
    if not points or any(a not in p for p in points for a in SUITES):
        return {}
    by_alpha = {p["alpha"]: p for p in points}
    base = by_alpha.get(0.0)
    if base is None:
        raise ArenaError("trade-off rules need the α = 0 point")
    if delta is None:
        delta = NLL_DELTA if kind == "nll" else float(base["general"].get("se") or 0.0)
    g0 = _oriented(base, "general", kind)
    ok = [p for p in points if _oriented(p, "general", kind) >= g0 - delta - 1e-12]
    best = max(ok, key=lambda p: (_oriented(p, "target", kind), -p["alpha"]))
    rule = (f"min target NLL subject to general NLL <= base + {delta:g} nats" if kind == "nll"
            else f"max target subject to general >= base - {delta:g} (1 SE of the base general score)")
    out = {"constrained": {"alpha": best["alpha"], "delta": delta, "rule": rule}}
    out["knee"] = _knee(points, by_alpha, kind)
    return out


def _knee(points, by_alpha, kind) -> dict:
    rule = "max distance from the alpha=0 -> alpha=1 chord, normalised target-general plane, ideal side"
    if 1.0 not in by_alpha:
        return {"alpha": None, "rule": rule, "reason": "no alpha = 1 point"}
    xs = [_oriented(p, "target", kind) for p in points]
    ys = [_oriented(p, "general", kind) for p in points]

    def norm(v, vs):
        lo, hi = min(vs), max(vs)
        return (v - lo) / (hi - lo) if hi > lo else 0.0

    pts = [(norm(x, xs), norm(y, ys)) for x, y in zip(xs, ys)]
    i0 = next(i for i, p in enumerate(points) if p["alpha"] == 0.0)
    i1 = next(i for i, p in enumerate(points) if p["alpha"] == 1.0)
    (x0, y0), (x1, y1) = pts[i0], pts[i1]
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy)
    if length == 0:
        return {"alpha": None, "rule": rule, "reason": "alpha = 0 and alpha = 1 score the same"}
    cross = lambda x, y: (dx * (y - y0) - dy * (x - x0)) / length
    side = 1.0 if cross(1.0, 1.0) >= 0 else -1.0
    dists = [side * cross(x, y) for x, y in pts]
    k = max(range(len(points)), key=lambda i: (dists[i], -points[i]["alpha"]))
    if dists[k] <= 1e-12:
        return {"alpha": None, "rule": rule, "reason": "no point lies above the chord"}
    return {"alpha": points[k]["alpha"], "distance": dists[k], "rule": rule}


SCORERS = {
    "proxy": "general = per-token NLL of the base model's greedy responses (<= 96 tokens) to IFEval + NQ-open "
             "prompts (its rise is general dCE); target = per-token NLL of held-out target answers",
    "lm-eval": "general and target axes of arena.evaluation.evaluate_model (lm-eval benchmark scores)",
}


class _Scorer:
    """Scores one model on the chosen axes through the evaluation API (arena.evaluation).

    "proxy": general = per-token NLL of the base model's greedy responses (≤ 96 tokens) to IFEval +
    NQ-open prompts (its rise is general ΔCE), target = per-token NLL of held-out target answers;
    lower is better. "lm-eval": the general and target axes of `evaluate_model` (accuracies,
    higher is better), with the proxies alongside. Deltas are paired against α = 0.
    """

    def __init__(self, kind, tok, target, suites, limit, data_dir, seed, device, precision, model_fp):
        from arena.evaluation.proxies import ProxySettings

        self.kind, self.tok, self.target, self.suites = kind, tok, target, suites
        self.limit, self.data_dir, self.seed, self.device, self.precision = limit, data_dir, seed, device, precision
        self.model_fp = model_fp
        self.ps = ProxySettings(n_ifeval=limit, n_nq=limit, target_examples=limit, seed=seed)
        self.reference = None
        self.ref_result = None

    @property
    def orientation(self) -> str:
        return "nll" if self.kind == "proxy" else "accuracy"

    def prepare(self, base_model, log) -> None:
        """The base model's general-prompt responses (cached per base model by the evaluation layer)."""
        from arena.evaluation.proxies import reference_responses

        if "general" in self.suites:
            self.reference = reference_responses(base_model, self.tok, self.data_dir, self.ps, self.device,
                                                 self.precision, self.model_fp, log)

    def score(self, model) -> dict:
        if self.kind == "proxy":
            from arena.evaluation import proxies as px

            res = {"proxies": {}}
            if "general" in self.suites:
                res["proxies"]["general_nll"] = px.general_nll(model, self.tok, self.reference, self.device,
                                                               self.precision, self.ps)
            if "target" in self.suites:
                res["proxies"]["target_nll"] = px.target_nll(model, self.tok, self.target, self.device,
                                                             self.precision, self.ps)
            return res
        from arena.evaluation import evaluate_model
        from arena.evaluation.settings import RunSettings

        return evaluate_model(model, self.tok, list(self.suites), self.target, self.limit, self.data_dir, self.seed,
                              self.device, settings=RunSettings(precision=self.precision), proxies=self.ps,
                              reference=self.reference, model_id=self.model_fp)

    def point(self, res: dict) -> dict:
        """{axis: {value, se, n, delta, delta_se, metric}} of one result, deltas against the α = 0 result."""
        from arena.evaluation import compare

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


def interpolate_run(run_dir, settings: InterpolationSettings, *, device: str = "cpu", write: bool = True,
                    log: Callable[[str], None] = print) -> dict:
    """Score θ(α) for each α on the chosen axes; stored under record["interpolation"][settings.path].

    limit: examples per benchmark (proxy: `limit` IFEval + `limit` NQ-open prompts and `limit`
    held-out target examples; lm-eval: its per-benchmark limit).
    """
    from arena.components import build_components
    from arena.config import resolve_data_dir
    from arena.evaluation.cache import model_fingerprint
    from arena.runs import read_run_config, set_record_key
    from arena.training.device import pick_device, resolve_precision

    t0 = time.perf_counter()
    s = settings
    alpha_list, suite_list, limit, path, scorer = s.alphas, [x for x in SUITES if x in s.suites], s.limit, s.path, s.scorer
    delta, precision, data_dir = s.delta, s.precision, s.data_dir
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    dev = pick_device(device)
    prec = resolve_precision(precision or cfg.train.precision, dev)
    prec = "bf16-autocast" if prec in ("bf16", "bf16-autocast") else "fp32"
    data_dir = data_dir or cfg.data_dir or resolve_data_dir(None)
    _, target, _ = build_components(cfg, check_data=False)
    sc = _Scorer(scorer, None, target, suite_list, limit, data_dir, cfg.probe.seed, dev, prec,
                 model_fingerprint(cfg.model.name, cfg.model.revision))
    if "general" in suite_list:  # bad data folder: fail before loading any model
        from arena.evaluation.proxies import general_prompts

        general_prompts(data_dir, sc.ps)
    interp, tok, cfg, _ = load_interpolator(run_dir, path, dev)
    sc.tok = tok
    log(f"{cfg.method.name}: {path} path, {interp.changed_parameters():,} parameters move with alpha; "
        f"load {time.perf_counter() - t0:.1f}s")
    with interp.at(0.0) as base_model:
        sc.prepare(base_model, log)
    points = []
    for a in [0.0] + [a for a in alpha_list if a != 0.0]:  # α = 0 first: the reference of the deltas
        t1 = time.perf_counter()
        with interp.at(a) as model:
            point = {"alpha": a, "path": path, **sc.point(sc.score(model))}
        point["seconds"] = round(time.perf_counter() - t1, 2)
        points.append(point)
        log(f"alpha {a:g}: " + ", ".join(f"{ax} {point[ax]['value']:.4f}" for ax in suite_list)
            + f" ({point['seconds']:.1f}s)")
    points.sort(key=lambda p: p["alpha"])
    result = {"path": path, "method": cfg.method.name, "alphas": alpha_list, "suites": suite_list, "limit": limit,
              "scorer": {"name": scorer, "orientation": sc.orientation, "description": SCORERS[scorer], "precision": prec, "seed": cfg.probe.seed},
              "points": points, "best": tradeoff(points, sc.orientation, delta),
              "seconds": round(time.perf_counter() - t0, 2)}
    if write:
        set_record_key(run_dir, "interpolation", result, subkey=path)
    return result


def format_curve(result: dict) -> str:
    suites = result["suites"]
    unit = "NLL" if result["scorer"]["orientation"] == "nll" else "score"
    head = f"{'alpha':>6} {'path':9}"
    for ax in suites:
        head += f" {ax + ' ' + unit:>14} {'± se':>7} {'Δ vs α=0':>9} {'± se':>7}"
    lines = [head, "-" * len(head)]
    best = result.get("best") or {}
    marks: dict = {}
    for rule, tag in (("constrained", "a"), ("knee", "b")):
        a = (best.get(rule) or {}).get("alpha")
        if a is not None:
            marks.setdefault(a, []).append(tag)

    def num(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) and not math.isnan(x) else "-"

    for p in result["points"]:
        row = f"{p['alpha']:>6g} {p['path']:9}"
        for ax in suites:
            s = p[ax]
            row += (f" {num(s['value'], '>14.4f')} {num(s['se'], '>7.4f')} {num(s.get('delta'), '>+9.4f')}"
                    f" {num(s.get('delta_se'), '>7.4f'):>7}")
        if p["alpha"] in marks:
            row += "  <- " + ",".join(f"({m})" for m in marks[p["alpha"]])
        lines.append(row)
    if best:
        c, k = best["constrained"], best["knee"]
        lines.append(f"(a) constrained: alpha={c['alpha']:g} ({c['rule']})")
        lines.append("(b) knee: " + (f"alpha={k['alpha']:g} (distance {k['distance']:.3f})"
                                     if k.get("alpha") is not None else f"none ({k.get('reason')})"))
    sc = result["scorer"]
    lines.append(f"scorer {sc['name']}: {sc['description']} ({'lower' if sc['orientation'] == 'nll' else 'higher'} "
                 f"is better on both axes)")
    return "\n".join(lines)
