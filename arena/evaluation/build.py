"""Turn task definitions into the lm-eval config dicts an evaluation runs, and check their data.

Offline (a data folder is given) every task reads the files under it (see PROVENANCE.md): the
stock config is pointed at them with lm-eval's `json` loader, and the splits the stock config names
but the local data lacks are set to None so lm-eval never looks for them. With no folder and the
hub reachable the stock dataset is used unchanged. The same subtasks can be exported as YAML files
that `include:` the stock file (`export_yaml`), which is how the plain `lm_eval` CLI runs the
identical tasks in `benchmarks/bench_eval.py`.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arena.data.io import data_file, hub_offline, sha256_file
from arena.evaluation import convert
from arena.evaluation.settings import TaskOptions
from arena.evaluation.tasks import TASKS_VERSION, TaskDef, get_task


@dataclass
class BuildContext:
    data_dir: str | None
    options: TaskOptions
    target: Any = None  # the run's Target instance (options of generated documents) or None


@dataclass
class Subtask:
    """One lm-eval task: the stock YAML it overrides (None: defined by the arena) and the overrides."""

    name: str  # the lm-eval task name
    stock: str | None  # path relative to lm_eval/tasks, or None for arena-defined tasks
    overrides: dict

    def config(self) -> dict:
        """The full lm-eval config dict (what `simple_evaluate` / `TaskManager.load` take)."""
        cfg = stock_config(self.stock) if self.stock else {}
        cfg.update(copy.deepcopy(self.overrides))
        cfg["task"] = self.name
        return cfg


def stock_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@functools.cache
def _stock_config_cached(rel: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(stock_root() / rel, resolve_func=True)


def stock_config(rel: str) -> dict:
    """The stock lm-eval YAML `rel` (under lm_eval/tasks) with includes and functions resolved."""
    return copy.deepcopy(_stock_config_cached(rel))


def _local(stock: dict, splits: dict[str, Path], field_name: str | None = None) -> dict:
    """Overrides that point a stock config at local files: `json` loader, data_files per split."""
    kwargs: dict = {"data_files": {split: str(p) for split, p in splits.items()}}
    if field_name:
        kwargs["field"] = field_name
    out: dict = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": kwargs}
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if stock.get(key) is not None and stock[key] not in splits:
            out[key] = None
    return out


def _gen(cfg: dict, cap: int) -> dict:
    kw = dict(cfg.get("generation_kwargs") or {})
    kw["max_gen_toks"] = cap
    return {"generation_kwargs": kw}


def _online_files(td: TaskDef) -> list[str]:
    """The files named when the hub is offline and no data folder is given."""
    if td.convert is not None:
        return list(td.files)
    return [rel.format(subtask="<subtask>") for rel in td.data.values()]


def _online_or_fail(td: TaskDef, rels: list[str]) -> None:
    """No data folder: fine with the hub (stock datasets), a clear DataError without it."""
    if hub_offline():
        data_file(None, ", ".join(rels), needed_by=f"task {td.name!r} (the hub is offline: HF_HUB_OFFLINE=1)")


def _variant_and_shots(td: TaskDef, o: TaskOptions) -> tuple[str | None, int | None]:
    variant = getattr(o, td.options["variant"]) if "variant" in td.options else None
    shots = getattr(o, td.options["shots"]) if "shots" in td.options else None
    return variant, shots


def build_task(td: TaskDef, ctx: BuildContext) -> list[Subtask]:
    """The lm-eval subtasks of one benchmark (one, or one per subtask of a grouped one)."""
    variant, shots = _variant_and_shots(td, ctx.options)
    local = ctx.data_dir is not None
    source: Path | None = None  # a converted or generated JSONL, the same for every subtask
    if td.generated_by is not None:
        source = convert.generated_file(td.generated_by, ctx.target, ctx.options)
    elif not local:
        _online_or_fail(td, _online_files(td))
    elif td.convert is not None:
        source = convert.converted_file(td.convert.target, td.convert.conversion, ctx.data_dir,
                                        needed_by=f"task {td.name!r}")
    else:
        for rel in td.files:  # every missing file fails before any work
            data_file(ctx.data_dir, rel, needed_by=f"task {td.name!r}")
    out = []
    for sub in td.subtasks or [None]:
        rel = td.include.format(variant=variant, subtask=sub) if td.include else None
        stock = stock_config(rel) if rel else {}
        over: dict = copy.deepcopy(td.lm_eval)
        if td.generated_by is not None:
            over.update({"dataset_path": "json", "dataset_name": None,
                         "dataset_kwargs": {"data_files": {"test": str(source)}}})
        elif local and td.convert is not None:
            over.update(_local(stock, {td.convert.split: source}))
        elif local:
            root = Path(ctx.data_dir).expanduser()
            splits = {split: root / f.format(subtask=sub) for split, f in td.data.items()}
            over.update(_local(stock, splits, td.data_field))
        if td.generate:
            over.update(_gen(over if td.lm_eval else stock, td.gen_cap(ctx.options)))
        if shots is not None:
            over["num_fewshot"] = shots
        meta = over.get("metadata") if td.lm_eval else stock.get("metadata")
        over["metadata"] = {**(meta or {}), "arena_tasks_version": TASKS_VERSION}
        out.append(Subtask(stock.get("task", td.name), rel, over))
    return out


def build_subtasks(names: list[str], data_dir: str | None, options: TaskOptions,
                   target=None) -> dict[str, list[Subtask]]:
    ctx = BuildContext(data_dir=data_dir, options=options, target=target)
    return {n: build_task(get_task(n), ctx) for n in names}


def check_available(names: list[str], data_dir: str | None) -> None:
    """Fail fast (DataError naming the file) before any model work."""
    for n in names:
        td = get_task(n)
        if td.generated_by is not None:
            continue
        if data_dir is None:
            _online_or_fail(td, list(td.files))
            continue
        for rel in td.files:
            data_file(data_dir, rel, needed_by=f"task {n!r}")
    for n in names:
        get_task(n).prepare_data(data_dir)


def data_fingerprint(name: str, data_dir: str | None) -> dict:
    """{relpath: sha256} of the files a task reads (or the stock hub dataset when online)."""
    td = get_task(name)
    if td.generated_by is not None:
        return {"generated": f"{td.generated_by} target held-out stream"}
    if data_dir is None:
        return {"hub": "stock lm-eval dataset"}
    return {rel: sha256_file(data_file(data_dir, rel, needed_by=f"task {name!r}")) for rel in td.files}


def export_yaml(subtasks: list[Subtask], folder: Path) -> list[Path]:
    """Write each subtask as a YAML that `include:`s the stock file plus the overrides.

    The plain `lm_eval` CLI runs these with `--include_path folder --tasks <names>`.
    Arena-defined tasks (arith) are written in full.
    """
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for st in subtasks:
        doc = dict(st.overrides)
        if st.stock:
            doc = {"include": str(stock_root() / st.stock), **doc}
        doc["task"] = st.name
        doc.pop("metadata", None)  # the stock metadata (version) comes through the include
        p = folder / f"{st.name}.yaml"
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(p)
    return paths
