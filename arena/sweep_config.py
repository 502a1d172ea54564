"""Typed sweep configuration and its expansion into runs with stable ids.

A sweep is methods × objectives × targets × seeds (× models) on one shared budget, plus what to do
after training (evaluation, diagnostics, interpolation). Every field is a dataclass field validated
on load, and every expanded run is validated as a `RunConfig` before anything runs, so a typo in
the fifth method fails at once with the field named (`methods[4].rank: ...`).

    name: quickstart
    model: smollm2-135m-instruct
    targets: [math]
    methods:
      - {name: full, lr: 2.0e-5}                  # per-method lr (full FT wants ~10x lower)
      - {name: lora, rank: 8, alpha: 16, lr: 2.0e-4}
      - {name: oft, block_size: 32, label: oft-b32, lr: {sft: 2.0e-4, grpo: 1.0e-5}}
    objectives: [sft]
    seeds: [0]
    budget: {steps: 20, batch_size: 4, seq_len: 256}
    train: {precision: auto, warmup_steps: 2}     # any other TrainConfig field, shared
    eval: {suites: [general, target], limit: 8}
    diagnostics: {enabled: true}
    interpolation: {enabled: true, alphas: [0, 0.5, 1], methods: [lora]}

A method entry's keys other than `name`, `label`, `lr`, `train` and `objectives` are that method's
options. `lr` is a number or a mapping objective -> number; `train` overrides any train field for that
method; `objectives` restricts it to some of the sweep's objectives (the paper ran PiSSA and VeRA with
SFT only). An objective entry may carry `train` overrides too (RL wants other batch settings than SFT).

Run ids are `<label>-<target>-<objective>-s<seed>-<hash8>`, where hash8 is the sha256 of the resolved
run config without presentation-only fields (output folder, data folder location, progress bars,
log/save cadence, thread count). The same config always maps to the same id, so a re-run finds its
runs; any change that alters training gives a new id. Evaluation/diagnostics/interpolation settings
are not in the id: changing them re-scores the trained runs instead of retraining them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from arena.errors import ArenaError, ConfigError, suggest
from arena.runs import RESULT_NEUTRAL_TRAIN_KEYS
from arena.schema import apply_overrides, build, to_dict

METHOD_RESERVED = ("name", "label", "lr", "train", "objectives")
INTERP_PATHS = ("auto", "weights", "generator")


@dataclass
class BudgetConfig:
    """The shared budget: every run of the sweep trains on the same tokens (DESIGN.md "training core")."""

    steps: int = 40
    batch_size: int = 4
    grad_accum: int = 1
    seq_len: int = 256

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "seq_len"):
            v = getattr(self, name)
            if v <= 0:
                raise ConfigError(f"budget.{name}", v, "must be a positive integer")


@dataclass
class EvalSpec:
    """lm-eval scoring after training (arena.evaluation), base model scores shared through the cache."""

    enabled: bool = True
    suites: list[str] = field(default_factory=lambda: ["general", "target"])
    tasks: Optional[list[str]] = None  # keep a subset of the suites' benchmarks
    limit: Optional[int] = 50  # documents per benchmark (BBH splits it over its 27 subtasks)
    seed: int = 0
    batch_size: int = 16
    max_gen_toks: dict = field(default_factory=dict)  # task -> generation cap (defaults: arena.evaluation.tasks)
    bbh_variant: str = "fewshot"
    bbh_shots: Optional[int] = None
    chat_template: Literal["auto", "on", "off"] = "auto"
    precision: str = "auto"
    proxies: bool = True  # continuous NLL proxies (general ΔCE, target NLL) next to the accuracies
    proxy: dict = field(default_factory=dict)  # ProxySettings fields (n_ifeval, n_nq, max_new_tokens, target_examples)

    def __post_init__(self):
        if self.limit is not None and self.limit <= 0:
            raise ConfigError("eval.limit", self.limit, "must be a positive integer or null (all documents)")
        if not self.suites:
            raise ConfigError("eval.suites", self.suites, "give at least one of: general, target")
        for s in self.suites:
            if s not in ("general", "target"):
                raise ConfigError("eval.suites", s, f"allowed: general, target{suggest(s, ['general', 'target'])}")
        if self.batch_size <= 0:
            raise ConfigError("eval.batch_size", self.batch_size, "must be a positive integer")
        allowed = {"n_ifeval", "n_nq", "max_new_tokens", "target_examples", "seed", "seq_len", "batch_size"}
        for k, v in self.proxy.items():
            if k not in allowed:
                raise ConfigError(f"eval.proxy.{k}", v, f"unknown field; known: {', '.join(sorted(allowed))}{suggest(k, allowed)}")
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"eval.proxy.{k}", v, "must be a non-negative integer")
        for k, v in self.max_gen_toks.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"eval.max_gen_toks.{k}", v, "must be a positive integer")


@dataclass
class DiagnosticsSpec:
    """`arena analyze` after training: CSD, geometry and spectra (arena.analysis.diagnostics)."""

    enabled: bool = True
    modules: Optional[list[str]] = None  # default: layers ~n/3 and ~2n/3 x q,k,v,down_proj
    max_prompts: int = 300
    max_tokens: int = 4096
    max_length: int = 1024
    precision: Literal["bf16-autocast", "fp32"] = "bf16-autocast"

    def __post_init__(self):
        for name in ("max_prompts", "max_tokens", "max_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"diagnostics.{name}", getattr(self, name), "must be a positive integer")


@dataclass
class InterpolationSpec:
    """`arena interpolate` after training: the base -> tuned curve θ(α) (arena.analysis.interpolation)."""

    enabled: bool = False
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    limit: int = 50  # examples per axis
    suites: list[str] = field(default_factory=lambda: ["general", "target"])
    path: Literal["auto", "weights", "generator"] = "auto"  # auto: generator for OFT/BOFT, else weights
    scorer: Literal["proxy", "lm-eval"] = "proxy"  # proxy: NLL proxies (cheap); lm-eval: benchmark accuracies
    methods: Optional[list[str]] = None  # labels (or method names) to interpolate; null: every run
    seeds: Optional[list[int]] = None  # seeds to interpolate; null: every seed

    def __post_init__(self):
        if self.limit <= 0:
            raise ConfigError("interpolation.limit", self.limit, "must be a positive integer")
        if not self.alphas:
            raise ConfigError("interpolation.alphas", self.alphas, "give at least one alpha, e.g. [0, 0.5, 1]")

    def path_for(self, method: str) -> str:
        if self.path != "auto":
            return self.path
        from arena.components import registry_for

        return registry_for("method").get(method).interpolation_path


@dataclass
class RunnerSpec:
    """How runs are executed (the CLI flags override these)."""

    jobs: int = 1  # concurrent runs on the local executor
    timeout_s: Optional[float] = None  # per run (all stages); a run past it is killed and recorded failed
    # torch threads per worker: null = the run's train.threads; "auto" = time a matmul with 1 thread and
    # with every core at worker start and take the faster (on shared, busy cores 2 threads spin-wait
    # and were measured 2-20x slower than 1); threads never change a run's id or result
    threads: Optional[str] = None

    def __post_init__(self):
        if self.jobs <= 0:
            raise ConfigError("runner.jobs", self.jobs, "must be a positive integer")
        if self.threads is not None and self.threads != "auto" and not (str(self.threads).isdigit() and int(self.threads) > 0):
            raise ConfigError("runner.threads", self.threads, "allowed: null, auto, or a positive integer")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError("runner.timeout_s", self.timeout_s, "must be > 0 or null")


@dataclass
class MethodEntry:
    name: str
    label: str
    options: dict  # the method's own options, as written (validated through RunConfig)
    lr: Any = None  # float | {objective: float} | None (the method's default)
    train: dict = field(default_factory=dict)
    objectives: Optional[list[str]] = None  # restrict this method to these objectives (null: all)

    def lr_for(self, objective: str) -> Optional[float]:
        if isinstance(self.lr, dict):
            return self.lr.get(objective, self.lr.get("default"))
        return self.lr


@dataclass
class SweepConfig:
    name: str
    models: list  # [str | mapping] -> the run's `model` section
    targets: list  # [str | mapping] -> the run's `target` section
    methods: list[MethodEntry]
    objectives: list  # [str | mapping]
    seeds: list[int]
    budget: BudgetConfig
    train: dict
    probe: dict
    eval: EvalSpec
    diagnostics: DiagnosticsSpec
    interpolation: InterpolationSpec
    runner: RunnerSpec
    data_dir: Optional[str] = None
    out: Optional[str] = None
    description: str = ""
    paper: Optional[str] = None  # a published reference to lay results beside (`arena report --paper`)
    source: Optional[str] = None  # the YAML file it came from

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("results") / self.name

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "paper": self.paper,
            "models": self.models, "targets": self.targets,
            "methods": [{"name": m.name, "label": m.label, **m.options,
                         **({"lr": m.lr} if m.lr is not None else {}), **({"train": m.train} if m.train else {}),
                         **({"objectives": m.objectives} if m.objectives else {})}
                        for m in self.methods],
            "objectives": self.objectives, "seeds": self.seeds, "budget": to_dict(self.budget),
            "train": self.train, "probe": self.probe, "eval": to_dict(self.eval),
            "diagnostics": to_dict(self.diagnostics), "interpolation": to_dict(self.interpolation),
            "runner": to_dict(self.runner), "data_dir": self.data_dir, "out": self.out,
        }


TOP_LEVEL = ("name", "description", "paper", "model", "models", "targets", "target", "methods", "objectives",
             "objective", "seeds", "budget", "train", "probe", "eval", "diagnostics", "interpolation", "runner",
             "data_dir", "out")


def _as_list(value, field_name: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(field_name, value, "expected a name, a mapping, or a list of them")


def _component_name(entry, field_name: str) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return entry["name"]
    raise ConfigError(field_name, entry, "expected a name or a mapping with 'name'")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(text)).strip("-") or "x"


def _method_entry(raw, i: int) -> MethodEntry:
    where = f"methods[{i}]"
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError(where, raw, "expected a method name or a mapping with 'name' (see `arena methods`)")
    raw = dict(raw)
    name = raw.pop("name")
    label = raw.pop("label", None) or name
    if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.+-]*", label):
        raise ConfigError(f"{where}.label", label, "letters, digits, '.', '_', '+' and '-' only (it becomes a folder name)")
    lr = raw.pop("lr", None)
    if lr is not None:
        if isinstance(lr, dict):
            lr = {str(k): _positive_float(v, f"{where}.lr.{k}") for k, v in lr.items()}
        else:
            lr = _positive_float(lr, f"{where}.lr")
    train = raw.pop("train", None) or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{where}.train", train, "expected a mapping of train fields")
    only = raw.pop("objectives", None)
    if only is not None:
        only = [only] if isinstance(only, str) else only
        if not isinstance(only, list) or not all(isinstance(o, str) for o in only):
            raise ConfigError(f"{where}.objectives", only, "expected a list of objective names")
    return MethodEntry(name=name, label=label, options=raw, lr=lr, train=dict(train), objectives=only)


def _positive_float(v, where: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(where, v, "expected a number") from None
    if not f > 0:
        raise ConfigError(where, v, "must be > 0")
    return f


def sweep_config_from_dict(data: dict, source: Optional[str] = None) -> SweepConfig:
    """Validate a sweep mapping (YAML + overrides) into a SweepConfig, then every run it expands to."""
    data = copy.deepcopy(dict(data or {}))
    for key in data:
        if key not in TOP_LEVEL:
            raise ConfigError(key, data[key], f"unknown sweep field; known: {', '.join(TOP_LEVEL)}{suggest(key, TOP_LEVEL)}")
    for single, plural in (("model", "models"), ("target", "targets"), ("objective", "objectives")):
        if single in data:
            if plural in data:
                raise ConfigError(single, data[single], f"give either {single!r} or {plural!r}, not both")
            data[plural] = data.pop(single)
    name = data.get("name") or (Path(source).stem if source else None)
    if not name:
        raise ConfigError("name", None, "a sweep needs a name (it names the results folder)")
    name = str(name)
    if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", name):
        raise ConfigError("name", name, "letters, digits, '.', '_' and '-' only (it becomes a folder name)")
    models = _as_list(data.get("models", "smollm2-135m-instruct"), "models")
    targets = _as_list(data.get("targets"), "targets")
    objectives = _as_list(data.get("objectives", "sft"), "objectives")
    methods_raw = data.get("methods")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise ConfigError("methods", methods_raw, "give a non-empty list of methods, e.g. [lora, {name: oft, block_size: 32}]")
    if not targets:
        raise ConfigError("targets", data.get("targets"), "give at least one target, e.g. [math] (see `arena targets`)")
    for i, m in enumerate(models):
        if not isinstance(m, (str, dict)):
            raise ConfigError(f"models[{i}]", m, "expected a model name or a mapping of model fields")
    for what, items in (("targets", targets), ("objectives", objectives)):
        for i, e in enumerate(items):
            _component_name(e, f"{what}[{i}]")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError("seeds", seeds, "expected a non-empty list of integers, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", seeds, "must not repeat a seed")
    for section in ("train", "probe"):
        if not isinstance(data.get(section) or {}, dict):
            raise ConfigError(section, data.get(section), "expected a mapping")
    train = dict(data.get("train") or {})
    for k in ("steps", "batch_size", "grad_accum", "seq_len", "seed"):
        if k in train:
            raise ConfigError(f"train.{k}", train[k], "set it in 'budget' (steps, batch_size, grad_accum, seq_len) "
                                                      "or 'seeds', so every run shares it")
    cfg = SweepConfig(
        name=name, description=str(data.get("description") or ""), paper=data.get("paper"),
        models=models, targets=targets, objectives=objectives, seeds=seeds,
        methods=[_method_entry(m, i) for i, m in enumerate(methods_raw)],
        budget=build(BudgetConfig, data.get("budget"), "budget"),
        train=train, probe=dict(data.get("probe") or {}),
        eval=build(EvalSpec, data.get("eval"), "eval"),
        diagnostics=build(DiagnosticsSpec, data.get("diagnostics"), "diagnostics"),
        interpolation=build(InterpolationSpec, data.get("interpolation"), "interpolation"),
        runner=build(RunnerSpec, data.get("runner"), "runner"),
        data_dir=data.get("data_dir"), out=data.get("out"), source=source,
    )
    labels = [m.label for m in cfg.methods]
    obj_names = [_component_name(o, "objectives") for o in objectives]
    for i, m in enumerate(cfg.methods):
        for o in m.objectives or []:
            if o not in obj_names:
                raise ConfigError(f"methods[{i}].objectives", o, f"not an objective of this sweep; known: "
                                                                 f"{', '.join(obj_names)}{suggest(o, obj_names)}")
    for i, lab in enumerate(labels):
        if lab in labels[:i]:
            raise ConfigError(f"methods[{i}].label", lab, f"already used by methods[{labels.index(lab)}]; give each "
                                                          "entry its own label (e.g. lora-r16), the leaderboard groups by it")
    if cfg.interpolation.methods:
        known = set(labels) | {m.name for m in cfg.methods}
        for m in cfg.interpolation.methods:
            if m not in known:
                raise ConfigError("interpolation.methods", m, f"not a method of this sweep; known: {', '.join(labels)}"
                                                              f"{suggest(m, known)}")
    expand(cfg)  # validates every run config and the uniqueness of the ids
    return cfg


def load_sweep_config(path: str, overrides: Optional[list[str]] = None) -> SweepConfig:
    from arena.config import load_yaml

    data = load_yaml(path)
    apply_overrides(data, overrides or [])
    return sweep_config_from_dict(data, source=str(path))


# ------------------------------------------------------------------ expansion

@dataclass
class RunSpec:
    """One run of a sweep: its id, the resolved RunConfig (as a dict) and what to do after training."""

    run_id: str
    config: dict  # RunConfig.to_dict() with out = None (the runner sets it)
    method: str
    label: str
    target: str
    objective: str
    seed: int
    model: str
    stages: dict  # stage name -> settings (eval / diagnostics / interpolation), absent = not run

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "config": self.config, "method": self.method, "label": self.label,
                "target": self.target, "objective": self.objective, "seed": self.seed, "model": self.model,
                "stages": self.stages}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**{k: d[k] for k in ("run_id", "config", "method", "label", "target", "objective", "seed",
                                        "model", "stages")})


def identity(config: dict) -> dict:
    """The part of a resolved run config that determines the trained weights (hashed into the id)."""
    c = copy.deepcopy(config)
    c.pop("out", None)
    c.pop("data_dir", None)
    for k in RESULT_NEUTRAL_TRAIN_KEYS:
        c.get("train", {}).pop(k, None)
    return c


def config_hash(config: dict) -> str:
    blob = json.dumps(identity(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def stage_fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _component_dict(entry) -> dict:
    return {"name": entry} if isinstance(entry, str) else dict(entry)


def _run_error(where: str, e: ConfigError) -> ConfigError:
    f = e.field
    for section in ("method", "target", "objective", "model", "train", "probe"):
        if f == section or f.startswith(section + "."):
            break
    return ConfigError(f"{where}: {f}", e.value, e.allowed)


def _stages(cfg: SweepConfig, m: MethodEntry, seed: int) -> dict:
    stages = {}
    if cfg.eval.enabled:
        stages["eval"] = to_dict(cfg.eval)
    if cfg.diagnostics.enabled:
        stages["diagnostics"] = to_dict(cfg.diagnostics)
    ip = cfg.interpolation
    if ip.enabled and (not ip.methods or m.label in ip.methods or m.name in ip.methods) \
            and (ip.seeds is None or seed in ip.seeds):
        stages["interpolation"] = {"alphas": sorted({float(a) for a in ip.alphas} | {0.0, 1.0}), "limit": ip.limit,
                                   "suites": list(ip.suites), "path": ip.path_for(m.name), "scorer": ip.scorer}
    for s in stages.values():
        s.pop("enabled", None)
    return stages


def expand(cfg: SweepConfig) -> list[RunSpec]:
    """Every run of the sweep, in the order they run: seed, then target, objective, method, model.

    Seeds are the outer loop so that an interrupted sweep has complete method comparisons for the
    first seeds rather than every seed of the first methods.
    """
    from arena.config import run_config_from_dict

    runs: list[RunSpec] = []
    seen: dict[str, str] = {}
    for seed in cfg.seeds:
        for target in cfg.targets:
            for objective in cfg.objectives:
                obj_name = _component_name(objective, "objectives")
                objective = _component_dict(objective)
                obj_train = objective.pop("train", None) or {}
                for mi, m in enumerate(cfg.methods):
                    if m.objectives is not None and obj_name not in m.objectives:
                        continue
                    for model in cfg.models:
                        train = {**cfg.train, **to_dict(cfg.budget), **obj_train, "seed": seed, **m.train}
                        lr = m.lr_for(obj_name)
                        if lr is not None:
                            train["lr"] = lr
                        raw = {"model": model, "method": {"name": m.name, **m.options},
                               "target": _component_dict(target), "objective": objective,
                               "train": train, "probe": cfg.probe, "data_dir": cfg.data_dir}
                        where = f"methods[{mi}] ({m.label}) x target {_component_name(target, 'targets')} x " \
                                f"objective {obj_name} x seed {seed}"
                        try:
                            rc = run_config_from_dict(raw)
                        except ConfigError as e:
                            raise _run_error(where, e) from None
                        except ArenaError as e:
                            raise ArenaError(f"{where}: {e}") from None
                        d = rc.to_dict()
                        d["out"] = None
                        rid = f"{_slug(m.label)}-{_slug(rc.target.name)}-{_slug(rc.objective.name)}-s{seed}-{config_hash(d)}"
                        if len(cfg.models) > 1:
                            rid = f"{_slug(Path(rc.model.name).name)}-{rid}"
                        if rid in seen:
                            raise ConfigError(f"methods[{mi}]", m.label, f"resolves to the same run as {seen[rid]} ({rid}); "
                                                                         "two entries train the identical config")
                        seen[rid] = f"methods[{mi}]"
                        runs.append(RunSpec(run_id=rid, config=d, method=m.name, label=m.label, target=rc.target.name,
                                            objective=rc.objective.name, seed=seed, model=rc.model.name,
                                            stages=_stages(cfg, m, seed)))
    return runs
