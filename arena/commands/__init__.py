"""CLI command groups; see arena/cli.py."""
