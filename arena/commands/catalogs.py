"""`arena methods`, `arena targets`, `arena objectives`: what is registered, with options."""

from __future__ import annotations

import dataclasses
import json

from arena.components import registry_for
from arena.config import resolve_data_dir


def add_parser(sub) -> None:
    for kind in ("methods", "targets", "objectives"):
        p = sub.add_parser(kind, help=f"list registered {kind} with their options and defaults")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if kind == "targets":
            p.add_argument("--data-dir", help="benchmark data folder (default: ARENA_DATA_DIR or ../shared/data)")
        p.set_defaults(func=run, kind=kind)


def _defaults(options_cls) -> dict:
    """Each option's default; a list option's comes from its default_factory (`f.default` is MISSING)."""
    return {f.name: f.default_factory() if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING
            else f.default for f in dataclasses.fields(options_cls)}


def _opts(d: dict) -> str:
    # multi-line strings (a teacher-context template) are shown quoted, on one line
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) and "\n" in v else f"{k}={v}" for k, v in d.items()) or "-"


def run(args) -> int:
    reg = registry_for(args.kind[:-1])
    rows = []
    for name in reg.names():
        cls = reg.get(name)
        if args.kind == "targets":
            target = cls(cls.Options(), resolve_data_dir(getattr(args, "data_dir", None)))
            info = target.describe()
            info["options"] = _defaults(cls.Options)
            rows.append(info)
        else:
            rows.append(cls.describe())
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        print(f"{r['name']}: {r.get('description', '')}")
        if "default_lr" in r:
            print(f"    default lr: {r['default_lr']:g}")
        print(f"    options: {_opts(r.get('options', {}))}")
        for k in ("train", "heldout", "eval_tasks", "data_dir", "error"):
            if k in r:
                print(f"    {k}: {r[k]}")
    return 0
