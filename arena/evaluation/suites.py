"""Which benchmarks an evaluation scores: the general suite, a target's suite, a subset of them."""

from __future__ import annotations

from arena.errors import ConfigError, suggest
from arena.evaluation.tasks import get_task
from arena.components import TARGETS

GENERAL = ("ifeval", "bbh", "nq_open")


def target_tasks(target) -> list[str]:
    """A target's benchmarks (`Target.eval_tasks()`), checked against the task registry."""
    names = list(target.eval_tasks())
    if not names:  # e.g. the synthetic `planted` target: probes and `arena ilp` score it, no benchmark does
        raise ConfigError("suites", "target", f"target {target.name!r} has no benchmarks of its own; "
                          "use the general suite (its held-out probes and `arena ilp` score it)")
    for n in names:
        get_task(n)
    return names


def resolve_tasks(suites: list[str], target=None, tasks: list[str] | None = None) -> dict[str, list[str]]:
    """{axis: [task, ...]} for suites ('general', 'target', or a target name) and an optional subset.

    `tasks` keeps only the named benchmarks of the chosen suites; a name in `tasks` that no suite
    holds is added on its own (axis 'extra'), so `tasks: [medmcqa]` works with any suite.
    """
    if not suites:
        raise ConfigError("suites", suites, "give at least one of: general, target, " + ", ".join(TARGETS.names()))
    out: dict[str, list[str]] = {}
    for s in suites:
        if s == "general":
            out["general"] = list(GENERAL)
        elif s == "target":
            if target is None:
                raise ConfigError("suites", s, "suite 'target' needs a target (a run's, or target: NAME)")
            out["target"] = target_tasks(target)
        elif s in TARGETS:
            t = TARGETS.get(s)
            out["target"] = target_tasks(t(t.Options(), None))
        else:
            allowed = ["general", "target", *TARGETS.names()]
            raise ConfigError("suites", s, f"allowed: {', '.join(allowed)}{suggest(s, allowed)}")
    if tasks:
        for n in tasks:
            get_task(n)
        kept = {axis: [n for n in names if n in tasks] for axis, names in out.items()}
        extra = [n for n in tasks if not any(n in names for names in out.values())]
        out = {axis: names for axis, names in kept.items() if names}
        if extra:
            out["extra"] = extra
    return out
