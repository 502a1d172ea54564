"""`arena report DIR`: a method-selection report (HTML or Markdown) from the run records under DIR.

    arena report results/quickstart                          # results/quickstart/report.html
    arena report results/quickstart --format md --out -      # Markdown to stdout
    arena report results/peft-arena-math --paper peft-arena  # the paper's table beside its numbers
"""

from __future__ import annotations

import sys
from pathlib import Path

from arena.errors import ArenaError
from arena.records import atomic_write_text


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="method-selection report (Pareto, leaderboard, recommendations) as HTML/Markdown")
    p.add_argument("results", metavar="DIR", help="folder of run records (a sweep or a folder of sweeps)")
    p.add_argument("--format", choices=["html", "md"], default="html", help="html (self-contained, default) or md")
    p.add_argument("--out", help="output file ('-' for stdout; default DIR/report.html or DIR/report.md)")
    p.add_argument("--paper", choices=["peft-arena"], help="lay results out like the paper's table beside its numbers")
    p.add_argument("--scale", choices=["auto", "accuracy", "proxy"], default="auto",
                   help="axes: accuracy (lm-eval) or proxy (NLL); auto: accuracy unless it is at the floor")
    p.add_argument("--forgetting-budget", type=float,
                   help="budget for the 'max target under a forgetting budget' scenario "
                        "(default 0.02 accuracy = 2 points, or 0.05 nats on the proxy scale)")
    p.set_defaults(func=run)


def run(args) -> int:
    from arena.reports.render import render  # pandas: only when a report is asked for

    root = Path(args.results)
    if not root.is_dir():
        raise ArenaError(f"{root}: no such folder")
    text = render(root, args.format, scale=args.scale, paper=args.paper, budget=args.forgetting_budget)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out) if args.out else root / f"report.{args.format}"
    atomic_write_text(out, text)
    print(f"report: {out} ({len(text) / 1e6:.1f} MB)" if len(text) > 1e5 else f"report: {out}")
    return 0
