"""The run config's `services:` section: where rollouts and the teacher run (docs/services.md).

    services:
      rollout: {mode: process, max_staleness: 1, threads: 1, cpus: [1]}
      teacher: {mode: process, transport: topk, top_k: 128}
      max_restarts: 2       # a dead worker / teacher is restarted this many times, then the run fails
      timeout_s: 600        # a request unanswered this long counts as a death

`mode: inline` (the default) is the synchronous, in-process path every run took before this
section existed; `process` spawns a local process (talking over a pipe), `ray` a Ray actor (on
the cluster at `ray_address`, or a local Ray). The same section works for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from arena.errors import ConfigError

Mode = Literal["inline", "process", "ray"]


def _check_placement(threads: int, cpus: Optional[list[int]]) -> None:
    if threads < 0:
        raise ConfigError("threads", threads, "must be >= 0 (0: torch's default)")
    if cpus is not None and (not cpus or any(c < 0 for c in cpus)):
        raise ConfigError("cpus", cpus, "a non-empty list of CPU ids (>= 0), or null")


@dataclass
class RolloutServiceConfig:
    mode: Mode = "inline"
    # step s trains on rollouts sampled by the weights after step max(start, s - max_staleness);
    # 0 is the synchronous loop (same samples, same weights); the objectives' importance ratios
    # against the recorded behaviour log-probs correct the lag
    max_staleness: int = 0
    threads: int = 0  # torch threads of the worker (0: the trainer's train.threads, else torch's default)
    cpus: Optional[list[int]] = None  # process mode: pin the worker to these CPU ids (Linux)

    def __post_init__(self):
        if self.max_staleness < 0:
            raise ConfigError("max_staleness", self.max_staleness, "must be >= 0 (0: synchronous)")
        if self.mode == "inline" and self.max_staleness > 0:
            raise ConfigError("max_staleness", self.max_staleness,
                              "needs services.rollout.mode process or ray (inline sampling is synchronous)")
        _check_placement(self.threads, self.cpus)


@dataclass
class TeacherServiceConfig:
    mode: Mode = "inline"
    # what crosses the wire per completion token: logits (V floats, exact), topk (top_k log-probs
    # and ids, the log of the remaining mass and the sampled token's log-prob; LightScale's
    # LogitsExpress form), hidden (the last hidden state, d floats; logits recomputed here with the
    # teacher's head, exact; KDFlow's form)
    transport: Literal["logits", "topk", "hidden"] = "logits"
    top_k: int = 128
    threads: int = 0
    cpus: Optional[list[int]] = None

    def __post_init__(self):
        if self.top_k <= 0:
            raise ConfigError("top_k", self.top_k, "must be a positive integer")
        if self.mode == "inline" and self.transport != "logits":
            raise ConfigError("transport", self.transport, "needs services.teacher.mode process or ray "
                              "(an in-process teacher hands over its logits)")
        _check_placement(self.threads, self.cpus)


@dataclass
class ServicesConfig:
    rollout: RolloutServiceConfig = field(default_factory=RolloutServiceConfig)
    teacher: TeacherServiceConfig = field(default_factory=TeacherServiceConfig)
    max_restarts: int = 2
    timeout_s: float = 600.0
    ray_address: Optional[str] = None  # null: RAY_ADDRESS, else a local Ray started for the run

    def __post_init__(self):
        if self.max_restarts < 0:
            raise ConfigError("max_restarts", self.max_restarts, "must be >= 0")
        if not self.timeout_s > 0:
            raise ConfigError("timeout_s", self.timeout_s, "must be > 0 (seconds)")

    @property
    def active(self) -> bool:
        return self.rollout.mode != "inline" or self.teacher.mode != "inline"


TEACHER_OBJECTIVES = ("opd", "gkd", "mopd")


def check_services(services: ServicesConfig, objective_name: str, objective_options, needs_rollouts: bool) -> None:
    """Cross-section rules, checked when the run config loads (before anything is written)."""
    if services.rollout.mode != "inline" and not needs_rollouts:
        raise ConfigError("services.rollout.mode", services.rollout.mode,
                          f"objective {objective_name!r} samples no rollouts; use inline (or a rollout objective: grpo, opd, ...)")
    t = services.teacher
    if t.mode != "inline" and objective_name not in TEACHER_OBJECTIVES:
        raise ConfigError("services.teacher.mode", t.mode,
                          f"objective {objective_name!r} has no external teacher; a teacher service serves {', '.join(TEACHER_OBJECTIVES)}")
    if t.transport == "topk":
        if objective_name == "gkd":
            raise ConfigError("services.teacher.transport", t.transport,
                              "GKD's generalized JSD needs the teacher's whole distribution: use logits or hidden")
        k = getattr(objective_options, "top_k", None)
        if k is not None and k != t.top_k:
            raise ConfigError("objective.top_k", k, f"must be null or equal services.teacher.top_k ({t.top_k}): "
                              "the loss can only use the top-k the teacher ships")
