"""Time `arena sweep configs/quickstart.yaml` end to end and print where the time went.

    python benchmarks/bench_quickstart.py                      # fresh folder under /tmp, default cache
    python benchmarks/bench_quickstart.py --out results/qs --cold   # also empty the base caches first
    python benchmarks/bench_quickstart.py --set budget.steps=4      # any sweep override

The sweep runs as the user runs it (a subprocess of the `arena` CLI, one worker process per run),
then the records and the sweep's event log are read back: per run, model loading, data, training,
probes, each post-training stage (eval, diagnostics, interpolation) and the worker's own overhead
(process start, imports, record writes = wall time of the run minus everything measured inside).
The target is < 20 min on 2 quiet cores; the machine's load is printed and, above 1.5, the run is
refused unless --force (timings on a shared, busy machine say little).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart.yaml"


def load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--out", help="sweep folder (default: a new folder under /tmp)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--cold", action="store_true", help="empty ARENA_CACHE/eval and the activation cache first "
                                                        "(the model conversion is kept)")
    p.add_argument("--force", action="store_true", help="run even when the 1-minute load is >= 1.5")
    a = p.parse_args(argv)
    load = load1()
    print(f"load average (1 min): {load:.2f} on {os.cpu_count()} cores")
    if load >= 1.5 and not a.force:
        print("machine is busy (load >= 1.5): timings would not mean much; --force to run anyway")
        return 2
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    if a.cold:
        from arena.models.catalog import cache_root

        for sub in ("eval", "activations", "analysis"):
            shutil.rmtree(cache_root() / sub, ignore_errors=True)
    cmd = [sys.executable, "-m", "arena.cli", "sweep", a.config, "--out", str(out), "--no-progress"]
    for o in a.overrides:
        cmd += ["--set", o]
    print("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    report(out, wall, load, load1())
    return rc


def report(out: Path, wall: float, load_before: float, load_after: float) -> None:
    events = [json.loads(ln) for ln in (out / ".sweep" / "events.jsonl").read_text().splitlines() if ln.strip()] \
        if (out / ".sweep" / "events.jsonl").is_file() else []
    run_wall = {}
    for e in events:
        if "seconds" in e:
            run_wall[e["run_id"]] = run_wall.get(e["run_id"], 0.0) + e["seconds"]
    cols = ["load", "data", "train", "probe", "eval", "diag", "interp", "overhead", "run wall"]
    print(f"\n{'run':34s} " + " ".join(f"{c:>8s}" for c in cols) + "   tok/s  base-cache")
    totals = dict.fromkeys(cols, 0.0)
    for rec_path in sorted(out.glob("*/record.json")):
        rec = json.loads(rec_path.read_text())
        rid = rec_path.parent.name
        t = rec.get("timings") or {}
        st = (rec.get("sweep") or {}).get("stages") or {}
        row = {"load": t.get("load_s", 0.0), "data": t.get("data_s", 0.0), "train": t.get("train_s", 0.0),
               "probe": t.get("probe_s", 0.0), "eval": (st.get("eval") or {}).get("seconds", 0.0),
               "diag": (st.get("diagnostics") or {}).get("seconds", 0.0),
               "interp": (st.get("interpolation") or {}).get("seconds", 0.0)}
        rw = run_wall.get(rid, float("nan"))
        row["overhead"] = rw - sum(row.values()) if rw == rw else float("nan")
        row["run wall"] = rw
        for c in cols:
            totals[c] += row[c] if row[c] == row[c] else 0.0
        ev = st.get("eval") or {}
        cache = f"{ev.get('base_cache_hits', '-')} hit / {ev.get('base_cache_misses', '-')} miss" if ev else "-"
        print(f"{rid[:34]:34s} " + " ".join(f"{row[c]:8.1f}" for c in cols)
              + f"  {(rec.get('train') or {}).get('tokens_per_second', 0):6.0f}  {cache}  [{rec.get('status')}]")
    print(f"{'total':34s} " + " ".join(f"{totals[c]:8.1f}" for c in cols))
    driver = wall - totals["run wall"]
    print(f"\nsweep wall time {wall:.1f}s ({wall / 60:.1f} min); driver outside runs {driver:.1f}s; "
          f"load {load_before:.2f} before, {load_after:.2f} after")
    print("the first run's eval includes scoring the base model (cache miss); later runs hit the cache")


if __name__ == "__main__":
    sys.exit(main())
