"""`arena analyze`: why a run forgets — per-module CSD, spectra and representation geometry."""

from __future__ import annotations

import json
import sys

from arena.analysis.settings import DiagnosticsSettings
from arena.analysis.tables import format_summary, format_table
from arena.commands import from_flags


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="forgetting diagnostics of a finished run (CSD, geometry, spectra)")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder (written by `arena train --out DIR`)")
    p.add_argument("--modules", nargs="+", action="extend", metavar="NAME",
                   help="Linear modules: names, suffixes ('layers.10.mlp.down_proj'), globs ('*.layers.1?.*.q_proj') "
                        "or 're:<regex>', space- or comma-separated (default: layers ~n/3 and ~2n/3 x q,k,v,down_proj)")
    p.add_argument("--max-prompts", type=int, default=300, help="prompts per distribution (default 300)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per distribution (default 4096)")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per prompt (default 1024)")
    p.add_argument("--prompt-format", default="raw", choices=["raw", "chat"],
                   help="raw: the prompts' own tokens (default, as PEFT-Arena); chat: inside the chat template")
    p.add_argument("--shared-prefix", default="keep", choices=["keep", "once"],
                   help="tokens every prompt starts with (the chat template's system header): store them for every "
                        "prompt (keep, default) or for the first only (once)")
    p.add_argument("--precision", default="bf16-autocast", choices=["bf16-autocast", "fp32"],
                   help="forward precision of the captures (metrics are always float64)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--data-dir", help="benchmark data folder for the general prompts (default: the run's)")
    p.add_argument("--no-cache", action="store_true", help="recompute the base activations instead of reading the cache")
    p.add_argument("--no-write", action="store_true", help="print only; do not store the result in record.json")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of tables")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from arena.analysis.diagnostics import analyze_run  # loads torch and transformers

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = from_flags(DiagnosticsSettings, "diagnostics", modules=args.modules, max_prompts=args.max_prompts,
                          max_tokens=args.max_tokens,
                          max_length=args.max_length, shared_prefix=args.shared_prefix, prompt_format=args.prompt_format, precision=args.precision,
                          data_dir=args.data_dir, use_cache=not args.no_cache)
    # As for the settings: a field error raised once the run is known is reworded as the flag.
    diag = from_flags(lambda **kw: analyze_run(args.run, settings, **kw), "diagnostics", device=args.device,
                      write=not args.no_write, log=log)
    if args.json:
        print(json.dumps(diag, indent=2))
        return 0
    print(format_table(diag))
    print(format_summary(diag))
    if not args.no_write:
        print(f"stored under 'diagnostics' in {args.run}/record.json")
    return 0
