"""A SweepConfig -> its runs: resolved run configs, stable ids, and the settings of each stage.

Run ids are `<label>-<target>-<objective>-s<seed>-<hash8>`, where hash8 is the sha256 of the resolved
run config without presentation-only fields (output folder, data folder location, progress bars,
log/save cadence, thread count: `arena.runs.RESULT_NEUTRAL_TRAIN_KEYS`). The same config always maps
to the same id, so a re-run finds its runs; any change that alters training gives a new id.
Evaluation/diagnostics/interpolation/ilp settings are not in the id: changing them re-scores the
trained runs instead of retraining them (`stage_fingerprint` tells a worker which stages to redo).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Optional
from pathlib import Path

from arena.components import METHODS
from arena.config import run_config_from_dict
from arena.errors import ArenaError, ConfigError
from arena.runs import RESULT_NEUTRAL_TRAIN_KEYS
from arena.schema import to_dict
from arena.sweeps.spec import MethodEntry, SweepConfig, component_name, lr_scan_label


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
    stages: dict  # stage name -> settings (eval / diagnostics / interpolation / ilp), absent = not run
    # stage name -> why a stage the sweep enables is not run for this run (ilp on a non-SFT run);
    # in plan.json only when non-empty, so plans of sweeps without such stages do not change
    skipped: dict = field(default_factory=dict)
    # the objective entry's label, when it has one (in plan.json only then, like `skipped`)
    objective_label: Optional[str] = None
    # an lr_scan run: its lr is lr_of's lr x lr_factor (both in plan.json only then)
    lr_factor: Optional[float] = None
    lr_of: Optional[str] = None

    FIELDS = ("run_id", "config", "method", "label", "target", "objective", "seed", "model", "stages")

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.FIELDS}, **({"skipped": self.skipped} if self.skipped else {}),
                **({"objective_label": self.objective_label} if self.objective_label else {}), **self._scan()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**{k: d[k] for k in cls.FIELDS}, skipped=dict(d.get("skipped") or {}),
                   objective_label=d.get("objective_label"), lr_factor=d.get("lr_factor"), lr_of=d.get("lr_of"))

    def _scan(self) -> dict:
        return {"lr_factor": self.lr_factor, "lr_of": self.lr_of} if self.lr_factor is not None else {}

    def sweep_section(self) -> dict:
        """What a run's record says about its place in the sweep (the runner adds status and stages)."""
        return {"run_id": self.run_id, "label": self.label, "seed": self.seed,
                **({"objective_label": self.objective_label} if self.objective_label else {}), **self._scan()}


def identity(config: dict) -> dict:
    """The part of a resolved run config that determines the trained weights (hashed into the id)."""
    c = copy.deepcopy(config)
    c.pop("out", None)
    c.pop("data_dir", None)
    init = (c.get("model") or {}).get("init_from")
    if init:  # resolved to an absolute path on load: hash it relative to the working folder, so an id
        try:  # does not depend on where the checkout lives
            c["model"]["init_from"] = Path(init).relative_to(Path.cwd()).as_posix()
        except ValueError:
            pass
    for k in RESULT_NEUTRAL_TRAIN_KEYS:
        c.get("train", {}).pop(k, None)
    return c


def config_hash(config: dict) -> str:
    blob = json.dumps(identity(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def stage_fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(text)).strip("-") or "x"


def _component_dict(entry) -> dict:
    return {"name": entry} if isinstance(entry, str) else dict(entry)


def stages_for(cfg: SweepConfig, m: MethodEntry, seed: int, objective: Optional[str] = None,
               scan: bool = False) -> dict:
    """The stages one run gets, each as the settings dict its stage function rebuilds (`scan`: an
    lr_scan run, which is interpolated only when lr_scan.interpolate says so)."""
    stages = {}
    if cfg.eval.enabled:
        stages["eval"] = cfg.eval.plan()
    if cfg.diagnostics.enabled:
        stages["diagnostics"] = cfg.diagnostics.plan()
    if cfg.interpolation.selects(m.label, m.name, seed) and (not scan or cfg.lr_scan.interpolate):
        stages["interpolation"] = cfg.interpolation.plan(path=cfg.interpolation.path_for(m.name))
    if objective is not None and cfg.ilp.selects(objective):
        stages["ilp"] = cfg.ilp.plan()
    return stages


def skipped_for(cfg: SweepConfig, objective: str) -> dict:
    """Stages the sweep enables that this run does not get, with the reason (recorded, not silent)."""
    reason = cfg.ilp.skip_reason(objective)
    return {"ilp": reason} if reason else {}


def _run_config(raw: dict, where: str):
    try:
        return run_config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.field}", e.value, e.allowed) from None
    except ArenaError as e:
        raise ArenaError(f"{where}: {e}") from None


def expand(cfg: SweepConfig) -> list[RunSpec]:
    """Every run of the sweep, in the order they run: seed, then target, objective, method, model.

    Seeds are the outer loop so that an interrupted sweep has complete method comparisons for the
    first seeds rather than every seed of the first methods; lr_scan runs come after every main run,
    for the same reason.
    """
    runs: list[RunSpec] = []
    scans: list[RunSpec] = []
    seen: dict[str, str] = {}
    for seed in cfg.seeds:
        for target in cfg.targets:
            for objective in cfg.objectives:
                obj_name = component_name(objective, "objectives")
                objective = _component_dict(objective)
                obj_train = objective.pop("train", None) or {}
                obj_label = objective.pop("label", None)
                obj_services = objective.pop("services", None)
                for mi, m in enumerate(cfg.methods):
                    if m.objectives is not None and obj_name not in m.objectives and obj_label not in m.objectives:
                        continue
                    for model in cfg.models:
                        train = {**cfg.train, **to_dict(cfg.budget), **obj_train, "seed": seed, **m.train}
                        lr = m.lr_for(obj_name, obj_label)
                        if lr is not None:
                            train["lr"] = lr
                        raw = {"model": model, "method": {"name": m.name, **m.options},
                               "target": _component_dict(target), "objective": objective,
                               "train": train, "probe": cfg.probe, "data_dir": cfg.data_dir,
                               **({"services": obj_services} if obj_services else {})}
                        where = (f"methods[{mi}] ({m.label}) x target {component_name(target, 'targets')} "
                                 f"x objective {obj_name} x seed {seed}")
                        rc = _run_config(raw, where)
                        variants = [(None, m.label, rc)]
                        if cfg.lr_scan.selects(m.label, m.name, seed):
                            own = rc.train.lr or METHODS.get(m.name).default_lr  # as arena.experiment resolves it
                            for f in cfg.lr_scan.factors:
                                sraw = {**raw, "train": {**train, "lr": own * f}}
                                variants.append((f, lr_scan_label(m.label, f),
                                                 _run_config(sraw, f"{where} x lr_scan factor {f:g}")))
                        for factor, label, vrc in variants:
                            (runs if factor is None else scans).append(
                                _spec(cfg, m, mi, seed, obj_label, vrc, label, factor, seen))
    return runs + scans


def _spec(cfg: SweepConfig, m: MethodEntry, mi: int, seed: int, obj_label, rc, label: str, factor, seen: dict) -> RunSpec:
    d = rc.to_dict()
    d["out"] = None
    rid = (f"{_slug(label)}-{_slug(rc.target.name)}-{_slug(obj_label or rc.objective.name)}"
           f"-s{seed}-{config_hash(d)}")
    if len(cfg.models) > 1:
        rid = f"{_slug(Path(rc.model.name).name)}-{rid}"
    if rid in seen:
        raise ConfigError(f"methods[{mi}]", m.label, f"resolves to the same run as {seen[rid]} ({rid}); "
                                                     "two entries train the identical config")
    seen[rid] = f"methods[{mi}]"
    return RunSpec(run_id=rid, config=d, method=m.name, label=label, target=rc.target.name,
                   objective=rc.objective.name, seed=seed, model=rc.model.name,
                   stages=stages_for(cfg, m, seed, rc.objective.name, scan=factor is not None),
                   skipped=skipped_for(cfg, rc.objective.name), objective_label=obj_label,
                   lr_factor=factor, lr_of=m.label if factor is not None else None)
