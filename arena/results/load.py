"""Loading a results tree: every record.json under a folder as one DataFrame, and a run's log.

A folder is a sweep (run folders inside) or a folder of sweeps, or one run folder. Unreadable or
malformed records are skipped and listed in `Results.warnings`; they never stop the load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from arena.records import RECORD
from arena.results.flatten import flatten
from arena.results.run_record import SCHEMA_VERSION, RunRecord


@dataclass
class Results:
    """`df`: one row per run folder (every state); `records`: key -> record; `warnings`: what was skipped.

    A key is the run folder relative to `root` (POSIX), the `key` column of `df`.
    """

    root: Path
    df: pd.DataFrame
    records: dict[str, RunRecord] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _logs: dict = field(default_factory=dict, repr=False)

    def train_log(self, key: str) -> pd.DataFrame:
        """The train log of run `key`, read once however many views ask for it."""
        if key not in self._logs:
            self._logs[key] = train_log(self.root / key)
        return self._logs[key]

    @property
    def done(self) -> pd.DataFrame:
        return self.df[self.df["state"] == "done"] if len(self.df) else self.df


def load_results(root, skip_hidden: bool = True) -> Results:
    """Every record.json under `root` (hidden folders skipped unless skip_hidden=False), sorted by
    sweep, target, objective, label, seed."""
    root = Path(root)
    records, rows, warns = {}, [], []
    if not root.exists():
        return Results(root, pd.DataFrame(), {}, [f"{root}: no such folder"])
    paths = [root / RECORD] if (root / RECORD).is_file() else sorted(root.rglob(RECORD))
    for p in paths:
        rel = p.parent.relative_to(root) if p.parent != root else Path(p.parent.name)
        if skip_hidden and any(part.startswith(".") for part in rel.parts):
            continue
        key = rel.as_posix()
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            warns.append(f"{p}: unreadable record skipped ({type(e).__name__}: {e})")
            continue
        if not isinstance(data, dict):
            warns.append(f"{p}: record is not a JSON object; skipped")
            continue
        rec = RunRecord.from_dict(data)
        if (rec.schema_version or 0) > SCHEMA_VERSION:
            warns.append(f"{p}: schema_version {rec.schema_version} is newer than this reader "
                         f"({SCHEMA_VERSION}); shown as far as understood")
        try:
            rows.append(flatten(rec, key))
        except Exception as e:  # noqa: BLE001 — a malformed record must not take the dashboard down
            warns.append(f"{p}: malformed record skipped ({type(e).__name__}: {e})")
            continue
        records[key] = rec
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["sweep", "target", "objective", "label", "seed"], na_position="last", kind="stable")
        df = df.reset_index(drop=True)
    return Results(root, df, records, warns)


def train_log(run_dir) -> pd.DataFrame:
    """train_log.jsonl as a DataFrame (a line cut by a crash is skipped)."""
    p = Path(run_dir) / "train_log.jsonl"
    rows = []
    if p.is_file():
        for ln in p.read_text().splitlines():
            try:
                rows.append(json.loads(ln))
            except json.JSONDecodeError:
                continue
    return pd.DataFrame(rows)
