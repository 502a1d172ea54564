"""The typed sweep configuration: what a sweep YAML may say, validated on load.

A sweep is methods × objectives × targets × seeds (× models) on one shared budget, plus what to do
after training (evaluation, diagnostics, interpolation). Every section is a dataclass built by
`arena.schema.build`, so types, allowed values and unknown keys are checked in one place and every
error names its field (`methods[4].rank: ...`); what is left here are the rules that tie fields
together (labels unique, seeds not repeated, restrictions naming methods/objectives of the sweep).

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
    ilp: {enabled: true, samples: 128}         # incomplete learning of SFT runs (`arena ilp`)
    lr_scan: {factors: [0.25, 4], seeds: [0]}  # each method also at lr x 0.25 and x 4 (labels lora-lrx0.25, ...)

The stage sections *are* the stage settings: `eval:` holds the fields of
`arena.evaluation.settings.EvalSettings`, `diagnostics:` those of
`arena.analysis.settings.DiagnosticsSettings`, `interpolation:` those of `InterpolationSettings`,
`ilp:` those of `arena.ilp.settings.IlpSettings`; each adds `enabled` (and interpolation adds which runs: `methods`, `seeds`, and `path: auto`, the
method's own path). So `arena eval --run`, `arena analyze` and a sweep stage cannot drift apart.

A method entry's keys other than `name`, `label`, `lr`, `train` and `objectives` are that method's
options. `lr` is a number or a mapping objective -> number; `train` overrides any train field for that
method; `objectives` restricts it to some of the sweep's objectives (the paper ran PiSSA and VeRA with
SFT only). An objective entry may carry `train` overrides too (RL wants other batch settings than SFT),
`services` (where its rollouts and teacher run: `{rollout: {mode: process, max_staleness: 1}}`, see
arena/services/config.py), and a `label` (two entries of one objective, e.g. OPD from two teachers, to be told apart): the label
stands for the objective in run ids, records (`sweep.objective_label`) and every report view.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional, Union

from arena.analysis.settings import DiagnosticsSettings, InterpolationSettings
from arena.components import METHODS
from arena.errors import ConfigError, suggest
from arena.evaluation.settings import SUITES, EvalSettings
from arena.ilp.settings import IlpSettings
from arena.schema import build, to_dict
from arena.sweeps.lr_scan import LrScanSpec, lr_scan_label

FOLDER_NAME = r"[A-Za-z0-9_.][A-Za-z0-9_.-]*"  # names that become folder names
LABEL = r"[A-Za-z0-9_.][A-Za-z0-9_.+-]*"
Component = Union[str, dict]  # a registered name, or a mapping with 'name' and that component's options


@dataclass
class BudgetConfig:
    """The shared budget: every run of the sweep trains on the same tokens (docs/design.md#shared-budget)."""

    steps: int = 40
    batch_size: int = 4
    grad_accum: int = 1
    seq_len: int = 256

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "seq_len"):
            v = getattr(self, name)
            if v <= 0:
                raise ConfigError(f"budget.{name}", v, "must be a positive integer")


class StageSpec:
    """What a stage section adds to its settings class: `enabled`, and the settings the plan holds.

    `plan()` is the dict a run's `RunSpec.stages` stores and `stage_fingerprint` hashes: the stage's
    settings as built by `build(SETTINGS, ...)`, so a worker rebuilding them gets the same object.
    """

    SETTINGS: ClassVar[type]
    SECTION: ClassVar[str]
    # Settings fields the plan holds only when set away from their default. They joined the settings
    # after sweeps had recorded stage fingerprints; leaving them out at their default keeps those
    # fingerprints, so a resumed sweep does not redo a finished stage whose settings did not change.
    PLAN_OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def settings(self, **resolved):
        """The stage's settings object (`resolved` replaces fields the sweep resolves per run)."""
        names = [f.name for f in dataclasses.fields(self.SETTINGS) if f.init]
        return build(self.SETTINGS, {**{n: getattr(self, n) for n in names}, **resolved}, self.SECTION)

    def plan(self, **resolved) -> dict:
        d = to_dict(self.settings(**resolved))
        defaults = to_dict(self.SETTINGS())
        for name in self.PLAN_OPTIONAL:
            if d[name] == defaults[name]:
                del d[name]
        return d


@dataclass
class EvalSpec(EvalSettings, StageSpec):
    """The sweep's `eval:` section: `EvalSettings` + `enabled` (lm-eval scoring after training)."""

    SETTINGS: ClassVar[type] = EvalSettings
    SECTION: ClassVar[str] = "eval"
    PLAN_OPTIONAL: ClassVar[tuple[str, ...]] = ("data_dir", "use_cache")

    enabled: bool = True

    def __post_init__(self):
        super().__post_init__()
        for s in self.suites:  # a sweep scores each run on the general suite and/or its own target
            if s not in SUITES:
                raise ConfigError("eval.suites", s, f"allowed: {', '.join(SUITES)}{suggest(s, SUITES)}")


@dataclass
class DiagnosticsSpec(DiagnosticsSettings, StageSpec):
    """The sweep's `diagnostics:` section: `DiagnosticsSettings` + `enabled` (`arena analyze`)."""

    SETTINGS: ClassVar[type] = DiagnosticsSettings
    SECTION: ClassVar[str] = "diagnostics"
    PLAN_OPTIONAL: ClassVar[tuple[str, ...]] = ("shared_prefix", "data_dir", "use_cache")

    enabled: bool = True


@dataclass
class InterpolationSpec(InterpolationSettings, StageSpec):
    """The sweep's `interpolation:` section: `InterpolationSettings` + which runs (`arena interpolate`)."""

    SETTINGS: ClassVar[type] = InterpolationSettings
    SECTION: ClassVar[str] = "interpolation"
    PLAN_OPTIONAL: ClassVar[tuple[str, ...]] = ("delta", "precision", "data_dir")

    path: Literal["auto", "weights", "generator"] = "auto"  # auto: the method's own (Method.interpolation_path)
    enabled: bool = False
    methods: Optional[list[str]] = None  # labels (or method names) to interpolate; null: every run
    seeds: Optional[list[int]] = None  # seeds to interpolate; null: every seed

    def path_for(self, method: str) -> str:
        return METHODS.get(method).interpolation_path if self.path == "auto" else self.path

    def selects(self, label: str, method: str, seed: int) -> bool:
        return self.enabled and (not self.methods or label in self.methods or method in self.methods) \
            and (self.seeds is None or seed in self.seeds)


@dataclass
class IlpSpec(IlpSettings, StageSpec):
    """The sweep's `ilp:` section: `IlpSettings` + `enabled` (`arena ilp --run`, after training).

    Off by default, and only SFT runs get the stage: incomplete learning is measured against the
    run's own training samples, which only SFT trains on (`skip_reason` says why a run has none).
    """

    SETTINGS: ClassVar[type] = IlpSettings
    SECTION: ClassVar[str] = "ilp"
    OBJECTIVES: ClassVar[tuple[str, ...]] = ("sft",)

    enabled: bool = False

    def selects(self, objective: str) -> bool:
        return self.enabled and objective in self.OBJECTIVES

    def skip_reason(self, objective: str) -> Optional[str]:
        """Why an enabled ilp stage is left out of this run's plan (None: it is in, or ilp is off)."""
        if self.enabled and objective not in self.OBJECTIVES:
            return f"SFT runs only (this run's objective is {objective}: it has no supervised training samples)"
        return None


@dataclass
class RunnerSpec:
    """How runs are executed (the CLI flags override these)."""

    jobs: int = 1  # concurrent runs on the local executor
    timeout_s: Optional[float] = None  # per run (all stages); a run past it is killed and recorded failed
    # torch threads per worker: null = the run's train.threads; "auto" = time a matmul with 1 thread and
    # with every core at worker start and take the faster (on shared, busy cores 2 threads spin-wait
    # and were measured 2-20x slower than 1); threads never change a run's id or result
    threads: Optional[str] = None
    # processes (GPUs) per run: each run trains FSDP2-sharded over this many ranks (torchrun), and the
    # Ray executor reserves as many GPUs for it; a mapping gives it per model ({default: 1, <model>: 8})
    gpus_per_run: Union[int, dict[str, int]] = 1

    def __post_init__(self):
        per = self.gpus_per_run if isinstance(self.gpus_per_run, dict) else {"default": self.gpus_per_run}
        for k, v in per.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"runner.gpus_per_run.{k}" if isinstance(self.gpus_per_run, dict) else
                                  "runner.gpus_per_run", v, "must be a positive integer (or a mapping model -> one)")
        self._check()

    def gpus_for(self, model: str) -> int:
        """The ranks a run of `model` trains on."""
        if isinstance(self.gpus_per_run, dict):
            return self.gpus_per_run.get(model, self.gpus_per_run.get("default", 1))
        return self.gpus_per_run

    def _check(self):
        if self.jobs <= 0:
            raise ConfigError("runner.jobs", self.jobs, "must be a positive integer")
        if self.threads is not None and self.threads != "auto" and not (self.threads.isdigit() and int(self.threads) > 0):
            raise ConfigError("runner.threads", self.threads, "allowed: null, auto, or a positive integer")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError("runner.timeout_s", self.timeout_s, "must be > 0 or null")


@dataclass
class MethodEntry:
    """One entry of `methods:`; `options` are the method's own, validated through RunConfig."""

    name: str
    label: Optional[str] = None  # default: the name
    lr: Union[float, dict[str, float], None] = None  # one lr, or objective -> lr ("default" for the rest)
    train: dict = field(default_factory=dict)
    objectives: Optional[list[str]] = None  # restrict this method to these objectives (null: all)
    options: dict = field(default_factory=dict)

    RESERVED: ClassVar[tuple[str, ...]] = ("name", "label", "lr", "train", "objectives")

    def __post_init__(self):
        self.label = self.label or self.name
        if not re.fullmatch(LABEL, self.label):
            raise ConfigError("label", self.label, "letters, digits, '.', '_', '+' and '-' only (it becomes a folder name)")
        for k, v in (self.lr.items() if isinstance(self.lr, dict) else [(None, self.lr)]):
            if v is not None and not v > 0:
                raise ConfigError("lr" if k is None else f"lr.{k}", v, "must be > 0")

    @classmethod
    def parse(cls, raw, i: int) -> "MethodEntry":
        where = f"methods[{i}]"
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ConfigError(where, raw, "expected a method name or a mapping with 'name' (see `arena methods`)")
        own = {k: v for k, v in raw.items() if k in cls.RESERVED and v is not None}
        if isinstance(own.get("objectives"), str):
            own["objectives"] = [own["objectives"]]
        entry = build(cls, own, where)
        entry.options = {k: v for k, v in raw.items() if k not in cls.RESERVED}
        return entry

    def lr_for(self, objective: str, label: Optional[str] = None) -> Optional[float]:
        """The lr for an objective entry: keyed by its label first, then its name, then "default"."""
        if isinstance(self.lr, dict):
            if label is not None and label in self.lr:
                return self.lr[label]
            return self.lr.get(objective, self.lr.get("default"))
        return self.lr

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, **self.options, **({"lr": self.lr} if self.lr is not None else {}),
                **({"train": self.train} if self.train else {}), **({"objectives": self.objectives} if self.objectives else {})}


def objective_label(entry) -> Optional[str]:
    """An objective entry's `label` (two entries of one objective, e.g. OPD from two teachers), or None."""
    return entry.get("label") if isinstance(entry, dict) else None


def component_name(entry, field_name: str) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return entry["name"]
    raise ConfigError(field_name, entry, "expected a name or a mapping with 'name'")


@dataclass
class SweepConfig:
    name: str
    models: list[Component] = field(default_factory=lambda: ["smollm2-135m-instruct"])  # -> the run's `model`
    targets: list[Component] = field(default_factory=list)
    methods: list[MethodEntry] = field(default_factory=list)
    objectives: list[Component] = field(default_factory=lambda: ["sft"])
    seeds: list[int] = field(default_factory=lambda: [0])
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: dict = field(default_factory=dict)  # any TrainConfig field except the budget's and the seed
    probe: dict = field(default_factory=dict)
    eval: EvalSpec = field(default_factory=EvalSpec)
    diagnostics: DiagnosticsSpec = field(default_factory=DiagnosticsSpec)
    interpolation: InterpolationSpec = field(default_factory=InterpolationSpec)
    ilp: IlpSpec = field(default_factory=IlpSpec)
    lr_scan: LrScanSpec = field(default_factory=LrScanSpec)
    runner: RunnerSpec = field(default_factory=RunnerSpec)
    data_dir: Optional[str] = None
    out: Optional[str] = None
    description: str = ""
    paper: Optional[str] = None  # a published reference to lay results beside (`arena report --paper`)
    source: Optional[str] = field(default=None, init=False)  # the YAML file it came from

    def __post_init__(self):
        if not re.fullmatch(FOLDER_NAME, self.name):
            raise ConfigError("name", self.name, "letters, digits, '.', '_' and '-' only (it becomes a folder name)")
        if not self.methods:
            raise ConfigError("methods", self.methods, "give a non-empty list of methods, e.g. [lora, {name: oft, block_size: 32}]")
        if not self.targets:
            raise ConfigError("targets", self.targets, "give at least one target, e.g. [math] (see `arena targets`)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", self.seeds, "give a non-empty list of integers that does not repeat a seed")
        for what in ("targets", "objectives"):
            for i, e in enumerate(getattr(self, what)):
                component_name(e, f"{what}[{i}]")
        self._check_objective_labels()
        for k in ("steps", "batch_size", "grad_accum", "seq_len", "seed"):
            if k in self.train:
                raise ConfigError(f"train.{k}", self.train[k], "set it in 'budget' (steps, batch_size, grad_accum, "
                                                               "seq_len) or 'seeds', so every run shares it")
        self._check_methods()

    def _check_objective_labels(self) -> None:
        """A label names one entry: it may not repeat another entry's label or name. Unlabelled
        entries of one objective stay allowed (their ids differ by hash; reports pool them, as an
        SFT baseline and its mitigation variant are paired by the ILP views)."""
        labels: dict[str, int] = {}
        names = {component_name(o, f"objectives[{i}]"): i for i, o in enumerate(self.objectives)}
        for i, o in enumerate(self.objectives):
            lab = objective_label(o)
            if lab is None:
                continue
            if not isinstance(lab, str) or not re.fullmatch(LABEL, lab):
                raise ConfigError(f"objectives[{i}].label", lab, "letters, digits, '.', '_', '+' and '-' only "
                                                                 "(it becomes part of a folder name)")
            clash = labels.get(lab, names.get(lab) if names.get(lab) != i else None)
            if clash is not None:
                raise ConfigError(f"objectives[{i}].label", lab,
                                  f"already names objectives[{clash}]; give each labelled entry its own label "
                                  "(e.g. {name: opd, label: opd-rl-teacher, ...}): reports and run ids use it")
            labels[lab] = i

    def _check_methods(self) -> None:
        labels = [m.label for m in self.methods]
        obj_names = [component_name(o, "objectives") for o in self.objectives]
        obj_names += [lab for o in self.objectives if (lab := objective_label(o)) and lab not in obj_names]
        for i, m in enumerate(self.methods):
            for o in m.objectives or []:
                if o not in obj_names:
                    raise ConfigError(f"methods[{i}].objectives", o, f"not an objective of this sweep; known: "
                                                                     f"{', '.join(obj_names)}{suggest(o, obj_names)}")
            if m.label in labels[:i]:
                raise ConfigError(f"methods[{i}].label", m.label, f"already used by methods[{labels.index(m.label)}]; "
                                  "give each entry its own label (e.g. lora-r16), the leaderboard groups by it")
        known = set(labels) | {m.name for m in self.methods}
        for where, names in (("interpolation.methods", self.interpolation.methods),
                             ("lr_scan.methods", self.lr_scan.methods)):
            for m in names or []:
                if m not in known:
                    raise ConfigError(where, m, f"not a method of this sweep; known: {', '.join(labels)}"
                                                f"{suggest(m, known)}")
        scan = {lr_scan_label(m.label, f): m.label for m in self.methods for f in self.lr_scan.factors
                if self.lr_scan.methods is None or m.label in self.lr_scan.methods or m.name in self.lr_scan.methods}
        for i, m in enumerate(self.methods):
            if m.label in scan:
                raise ConfigError(f"methods[{i}].label", m.label, f"is the lr_scan label of {scan[m.label]}; "
                                                                  "rename the entry (the leaderboard groups by label)")

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("results") / self.name

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "paper": self.paper,
            "models": self.models, "targets": self.targets, "methods": [m.to_dict() for m in self.methods],
            "objectives": self.objectives, "seeds": self.seeds, "budget": to_dict(self.budget),
            "train": self.train, "probe": self.probe, "eval": to_dict(self.eval),
            "diagnostics": to_dict(self.diagnostics), "interpolation": to_dict(self.interpolation),
            # ilp only when set away from its defaults: plan.json and sweep.yaml of sweeps that do
            # not use it stay byte-identical to what they were before the section existed
            **({"ilp": to_dict(self.ilp)} if to_dict(self.ilp) != to_dict(IlpSpec()) else {}),
            **({"lr_scan": to_dict(self.lr_scan)} if to_dict(self.lr_scan) != to_dict(LrScanSpec()) else {}),
            "runner": to_dict(self.runner), "data_dir": self.data_dir, "out": self.out,
        }
