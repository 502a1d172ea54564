"""The `arena` command. Each command group lives in arena/commands/<name>.py with `add_parser()`.

Errors a user can fix (ArenaError) print one clear line and exit 2; nothing else is printed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from arena.errors import ArenaError

# One line per command module; a new command is a new module plus one entry here.
COMMANDS = ["models", "catalogs", "train", "plan", "eval", "analyze", "interpolate", "opd_check", "ilp", "sweep", "dashboard", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Forgetting-analysis and benchmarking arena for LLM post-training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"arena.commands.{name}").add_parser(sub)
    return parser


def runtime_defaults() -> None:
    """Process defaults for the CLI and sweep workers, set before transformers is imported."""
    # Offline by default: these machines have no hub; a user with one can set HF_HUB_OFFLINE=0.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    # Library deprecation chatter (transformers/peft) is not actionable for arena users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    runtime_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ArenaError as e:
        print(f"arena {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `arena methods | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"arena {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
