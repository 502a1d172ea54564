"""CLI command groups; see arena/cli.py."""

from __future__ import annotations

from arena.errors import ConfigError


def from_flags(cls, section: str, **values):
    """cls(**values), with a ConfigError's field `section.name` reworded as the flag `--name`.

    The library names settings fields (`diagnostics.max_tokens`), which reads right from a sweep;
    from the command line the user typed `--max-tokens`, so that is what the error names.
    """
    try:
        return cls(**values)
    except ConfigError as e:
        prefix = section + "."
        if not e.field.startswith(prefix):
            raise
        flag = "--" + e.field[len(prefix):].split(".")[0].replace("_", "-")
        raise ConfigError(flag, e.value, e.allowed) from None
