"""`arena dashboard`: the Streamlit results dashboard on localhost (read-only).

    arena dashboard --results results/              # every sweep under results/
    arena dashboard --results results/quickstart --port 8502
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from arena.errors import ArenaError


def add_parser(sub) -> None:
    p = sub.add_parser("dashboard", help="open the results dashboard (Streamlit, localhost, read-only)")
    p.add_argument("--results", default="results", help="folder of run records (a sweep or a folder of sweeps)")
    p.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (default 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; anything else exposes the results to the network)")
    p.add_argument("--print-command", action="store_true", help="print the streamlit command instead of running it")
    p.set_defaults(func=run)


def streamlit_command(results: str, port: int, address: str = "127.0.0.1") -> list[str]:
    # The app's file, found without importing the app package (arena never imports `dashboard`).
    spec = importlib.util.find_spec("dashboard")
    if spec is None or not spec.submodule_search_locations:
        raise ArenaError("the dashboard app package (dashboard/) is not installed beside arena")
    app = Path(next(iter(spec.submodule_search_locations))).resolve() / "app.py"
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", address, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "viewer",
            "--", "--results", str(Path(results).resolve())]


def run(args) -> int:
    if importlib.util.find_spec("streamlit") is None or importlib.util.find_spec("plotly") is None:
        raise ArenaError("the dashboard needs streamlit and plotly: pip install 'arena[dashboard]'")
    if not Path(args.results).is_dir():
        raise ArenaError(f"--results {args.results}: no such folder (run a sweep first: arena sweep configs/quickstart.yaml)")
    cmd = streamlit_command(args.results, args.port, args.address)
    if args.print_command:
        print(" ".join(cmd))
        return 0
    print(f"arena dashboard: http://{args.address}:{args.port}  (results: {Path(args.results).resolve()}; Ctrl-C stops)")
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
