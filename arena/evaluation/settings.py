"""How an evaluation runs: which task options and run settings (every field that can change a score
is part of the base-cache key, `arena.evaluation.api.task_key_fields`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from arena.errors import ConfigError, suggest
from arena.evaluation.proxies import ProxySettings
from arena.generation.names import check_engine_name

BBH_VARIANTS = ("fewshot", "zeroshot", "cot_fewshot", "cot_zeroshot")


@dataclass
class TaskOptions:
    """Knobs that change what a task computes (all of them are part of the cache key)."""

    bbh_variant: str = "fewshot"  # one of BBH_VARIANTS (lm_eval/tasks/bbh/<variant>)
    bbh_shots: int | None = None  # None: the variant's stock count (3 for fewshot, 0 for zeroshot)
    max_gen_toks: dict = field(default_factory=dict)  # task -> cap; missing tasks use their file's `max_gen_toks`
    generated_n: int = 500  # documents of a generated task (arith: held-out problems)
    generated_seed: int = 0  # which held-out stream (separate from training by construction)

    def __post_init__(self):
        if self.bbh_variant not in BBH_VARIANTS:
            raise ConfigError("bbh_variant", self.bbh_variant,
                              f"allowed: {', '.join(BBH_VARIANTS)}{suggest(self.bbh_variant, BBH_VARIANTS)}")
        if self.bbh_shots is not None:
            if self.bbh_shots < 0 or self.bbh_shots > 3:
                raise ConfigError("bbh_shots", self.bbh_shots, "must be 0..3 (BBH ships 3 exemplars per subtask)")
            if "zeroshot" in self.bbh_variant and self.bbh_shots:
                raise ConfigError("bbh_shots", self.bbh_shots, f"variant {self.bbh_variant!r} is zero-shot; use 0")
        for name, cap in self.max_gen_toks.items():
            if not isinstance(cap, int) or cap <= 0:
                raise ConfigError(f"max_gen_toks.{name}", cap, "must be a positive integer")
        if self.generated_n <= 0:
            raise ConfigError("generated_n", self.generated_n, "must be a positive integer")


Limit = Union[int, dict, None]  # documents per benchmark: n, {task: n, default: n}, or None (all)


def check_limit(limit, where: str) -> None:
    """A limit is a positive integer, null, or a mapping benchmark -> positive integer (`default` for
    the rest): cheap benchmarks can be scored on more documents than expensive ones."""
    from arena.evaluation.tasks import TASKS

    items = limit.items() if isinstance(limit, dict) else [(None, limit)]
    for k, v in items:
        field_ = where if k is None else f"{where}.{k}"
        if k is not None and k != "default" and k not in TASKS:
            known = ["default", *TASKS.names()]
            raise ConfigError(field_, v, f"unknown benchmark {k!r}; known: {', '.join(known)}{suggest(str(k), known)}")
        if v is None and k is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(field_, v, "must be a positive integer" + (" or null (all documents)" if k is None else
                                                                         " (a benchmark's documents)"))


def limit_for(limit: Limit, name: str) -> Optional[int]:
    """The documents of benchmark `name` under `limit` (a mapping: its entry, else `default`, else all)."""
    if isinstance(limit, dict):
        return limit.get(name, limit.get("default"))
    return limit


@dataclass
class RunSettings:
    """How tasks are run; every field that can change a score is part of the base-cache key."""

    limit: Limit = None  # documents per benchmark (BBH: split evenly over its subtasks); a mapping per benchmark
    seed: int = 0  # subset seed
    batch_size: int = 16
    chat_template: bool | None = None  # None: on when the tokenizer has one (instruct models)
    precision: str = "auto"  # auto | fp32 | bf16-autocast | bf16 (bf16 runs as autocast here)
    options: TaskOptions = field(default_factory=TaskOptions)
    engine: str = "auto"  # generation engine for generate_until (arena/generation/engine.py)

    def __post_init__(self):
        check_limit(self.limit, "limit")
        if self.batch_size <= 0:
            raise ConfigError("batch_size", self.batch_size, "must be a positive integer")
        if self.precision not in ("auto", "fp32", "bf16-autocast", "bf16"):
            raise ConfigError("precision", self.precision, "allowed: auto, fp32, bf16-autocast, bf16")
        check_engine_name(self.engine, "engine")


SUITES = ("general", "target")
CHAT_TEMPLATE = {"auto": None, "on": True, "off": False}
PROXY_FIELDS = ("n_ifeval", "n_nq", "max_new_tokens", "target_examples", "seed", "seq_len", "batch_size")


@dataclass
class EvalSettings:
    """Everything `evaluate_run` needs besides the run folder; built by `arena eval --run` from its
    flags and by a sweep from its `eval:` section (which adds only `enabled`)."""

    suites: list[str] = field(default_factory=lambda: ["general", "target"])
    tasks: Optional[list[str]] = None  # keep a subset of the suites' benchmarks (names outside are added)
    # documents per benchmark, a seeded stratified subset (BBH: over its 27 subtasks); or a mapping
    # {ifeval: 100, bbh: 54, default: 200}: cheap benchmarks can be scored on more documents
    limit: Limit = 50
    seed: int = 0  # subset seed
    batch_size: int = 16
    max_gen_toks: dict = field(default_factory=dict)  # task -> generation cap (defaults: each task's file)
    bbh_variant: str = "fewshot"
    bbh_shots: Optional[int] = None
    chat_template: Literal["auto", "on", "off"] = "auto"
    precision: str = "auto"
    engine: str = "auto"  # auto | hf | generate | native | vllm: who decodes (arena/generation/engine.py)
    proxies: bool = True  # continuous NLL proxies (general ΔCE, target NLL) next to the accuracies
    proxy: dict = field(default_factory=dict)  # ProxySettings fields
    data_dir: Optional[str] = None  # None: the run's data folder, else ARENA_DATA_DIR / ../shared/data
    use_cache: bool = True  # read/write the base model's scores in the base cache

    def __post_init__(self):
        check_limit(self.limit, "eval.limit")
        if not self.suites:
            raise ConfigError("eval.suites", self.suites, "give at least one of: general, target")
        if self.batch_size <= 0:
            raise ConfigError("eval.batch_size", self.batch_size, "must be a positive integer")
        for k, v in self.proxy.items():
            if k not in PROXY_FIELDS:
                raise ConfigError(f"eval.proxy.{k}", v, f"unknown field; known: {', '.join(PROXY_FIELDS)}{suggest(k, PROXY_FIELDS)}")
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"eval.proxy.{k}", v, "must be a non-negative integer")
        for k, v in self.max_gen_toks.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"eval.max_gen_toks.{k}", v, "must be a positive integer")
        check_engine_name(self.engine, "eval.engine")
        self.run_settings()  # bbh_variant / bbh_shots / precision are checked where they are defined

    def run_settings(self) -> "RunSettings":
        opts = TaskOptions(bbh_variant=self.bbh_variant, bbh_shots=self.bbh_shots, max_gen_toks=dict(self.max_gen_toks))
        return RunSettings(limit=self.limit, seed=self.seed, batch_size=self.batch_size,
                           chat_template=CHAT_TEMPLATE[self.chat_template], precision=self.precision, options=opts,
                           engine=self.engine)

    def proxy_settings(self):
        """ProxySettings, or False when the proxies are off."""
        return ProxySettings(**self.proxy) if self.proxies else False
