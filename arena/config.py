"""Typed run configuration: YAML + `--set` overrides -> validated `RunConfig`.

Methods, targets and objectives are "components": a registered name plus that component's own
options dataclass. In YAML they are written flat (`method: {name: lora, rank: 16}`, or just
`method: lora`), and `--set method.rank=16` reaches the option directly. Options are validated
against the component's dataclass at load time, so a bad rank fails before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from arena.components import registry_for
from arena.errors import ArenaError, ConfigError, suggest
from arena.schema import apply_overrides, build, to_dict
from arena.services.config import ServicesConfig, check_services


@dataclass
class ComponentConfig:
    """A registered component (method / target / objective) and its validated options."""

    name: str
    options: Any = None  # the component's Options dataclass instance

    def to_dict(self) -> dict:
        return {"name": self.name, **to_dict(self.options)}


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # catalog name, HF hub id, or local folder
    revision: Optional[str] = None
    trust_remote_code: bool = False
    # A finished run folder trained from the same `name`: this run starts from its final (merged)
    # weights instead of the plain model ("CPT then SFT"). Stored absolute, so the saved config
    # rebuilds the model from any working directory; checked when the model is loaded
    # (arena/runs.py), before a run writes anything.
    init_from: Optional[str] = None

    def __post_init__(self):
        if self.init_from is not None:
            if not str(self.init_from).strip():
                raise ConfigError("model.init_from", self.init_from, "a finished run folder, or null")
            self.init_from = str(Path(self.init_from).expanduser().resolve())

    def to_dict(self) -> dict:
        """The fields, with init_from only when set: a run without one serialises as before the
        field existed, so earlier run folders still resume and sweep run ids stay the same."""
        d = to_dict(self)
        if d["init_from"] is None:
            del d["init_from"]
        return d


@dataclass
class TrainConfig:
    steps: int = 40
    batch_size: int = 4  # sequences per micro-batch
    grad_accum: int = 1
    seq_len: int = 256
    lr: Optional[float] = None  # None -> the method's default (full FT wants ~10x lower than adapters)
    weight_decay: float = 0.0
    warmup_steps: int = 4
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    precision: Literal["auto", "fp32", "bf16-autocast", "bf16"] = "auto"
    seed: int = 0
    save_every: int = 0  # checkpoint every N steps (0: only the final weights)
    # how many of those checkpoints stay on disk (0: all). Resume needs only the last; the
    # incomplete-learning analysis (`arena ilp`, causes IV and V) reads every kept one.
    keep_checkpoints: int = 2
    log_every: int = 1
    eval_every: int = 0  # run the in-training probe every N steps, logged to train_log.jsonl (0: off)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int = 0  # torch intra-op threads on CPU (0: leave torch's default)
    progress: bool = True
    # SFT layout. padding_free: each micro-batch's documents end to end in one row, attention run
    # per document (no compute on padding; models that do not dispatch attention through
    # transformers' AttentionInterface fall back to rows). rows: [batch, seq_len] rows with a
    # block-diagonal mask. Both pack the same documents into the same micro-batches.
    packing: Literal["padding_free", "rows"] = "padding_free"
    # Adapter dropout masks. skip: i.i.d. Bernoulli(p) drawn as geometric gaps (same law as
    # torch's, ~5x cheaper on CPU, different masks for the same seed); auto: skip on CPU only.
    dropout_sampler: Literal["auto", "skip", "torch"] = "auto"
    # Keep one autocast-dtype copy of each frozen linear weight instead of re-casting it every
    # forward (bit-identical results, +2 bytes per frozen parameter); auto: on CPU only.
    cast_cache: Literal["auto", "on", "off"] = "auto"
    # Fused element-wise forms of the Llama code (arena/training/fused_ops.py), training only.
    # fused_rope: rotary embedding without rotate_half's cat (bit-identical forward and backward);
    # fused_rmsnorm: stock forward, closed-form backward (gradient within fp32 rounding).
    fused_rope: bool = True
    fused_rmsnorm: bool = True
    # SFT/CPT loss: the head's projection and cross-entropy in row chunks, the hidden-state gradient
    # computed in the forward (arena/objectives/linear_ce.py); no [n, V] logits are ever allocated.
    # Per-token losses bit-identical, the gradient one bf16 rounding apart.
    fused_ce: bool = True
    # Plain LoRA layers' forward + backward as one function: one input cast shared by the layers that
    # read the same tensor, base + adapter in one addmm each way (arena/training/fused_lora.py; the
    # skip sampler's masks, bf16 roundings moved); auto: on CPU only.
    fused_lora: Literal["auto", "on", "off"] = "auto"
    # Recompute each decoder layer's activations in backward instead of keeping them: activation
    # memory falls from every layer's to one layer's plus each layer's input (arena plan shows the
    # numbers), for ~1/3 more compute. Same values: recomputation replays the same ops and RNG.
    activation_checkpointing: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "seq_len", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}", getattr(self, name), "must be a positive integer")
        for name in ("warmup_steps", "save_every", "keep_checkpoints", "threads", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}", getattr(self, name), "must be >= 0")
        if self.lr is not None and not (self.lr > 0):
            raise ConfigError("train.lr", self.lr, "must be > 0")
        if self.weight_decay < 0:
            raise ConfigError("train.weight_decay", self.weight_decay, "must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("train.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        if self.max_grad_norm < 0:
            raise ConfigError("train.max_grad_norm", self.max_grad_norm, "must be >= 0 (0 disables clipping)")
        if self.seq_len < 16:
            raise ConfigError("train.seq_len", self.seq_len, "must be >= 16")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError("train.device", self.device, "allowed: auto, cpu, cuda, cuda:N, mps")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len


@dataclass
class ProbeConfig:
    """Held-out target probes run before and after training (cheap, continuous)."""

    heldout: int = 64  # examples for target NLL (0 disables probes)
    greedy: int = 32  # of those, greedy-decoded for answer accuracy (0 disables)
    max_new_tokens: int = 48
    seed: int = 1234  # held-out selection seed; fixed across a sweep's runs

    def __post_init__(self):
        for name in ("heldout", "greedy"):
            if getattr(self, name) < 0:
                raise ConfigError(f"probe.{name}", getattr(self, name), "must be >= 0")
        if self.greedy > self.heldout:
            raise ConfigError("probe.greedy", self.greedy, f"must be <= probe.heldout ({self.heldout})")
        if self.max_new_tokens <= 0:
            raise ConfigError("probe.max_new_tokens", self.max_new_tokens, "must be a positive integer")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: ComponentConfig = None  # type: ignore[assignment]
    target: ComponentConfig = None  # type: ignore[assignment]
    objective: ComponentConfig = None  # type: ignore[assignment]
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    data_dir: Optional[str] = None
    out: Optional[str] = None
    # where rollouts and the teacher run (arena/services/config.py); left out of to_dict at its
    # default, so the run ids and config.yaml of runs without it are unchanged
    services: ServicesConfig = field(default_factory=ServicesConfig)

    def to_dict(self) -> dict:
        extra = {} if self.services == ServicesConfig() else {"services": to_dict(self.services)}
        return {
            "model": self.model.to_dict(),
            "method": self.method.to_dict(),
            "target": self.target.to_dict(),
            "objective": self.objective.to_dict(),
            "train": to_dict(self.train),
            "probe": to_dict(self.probe),
            "data_dir": self.data_dir,
            "out": self.out,
            **extra,
        }


DEFAULTS = {"method": "lora", "target": "math", "objective": "sft"}


def _component(kind: str, raw: Any) -> ComponentConfig:
    registry = registry_for(kind)
    if raw is None:
        raw = {"name": DEFAULTS[kind]}
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError(kind, raw, f"expected a {kind} name or a mapping with 'name'")
    raw = dict(raw)
    name = raw.pop("name", DEFAULTS[kind])
    cls = registry.get(str(name), field=f"{kind}.name")
    options = build(cls.Options, raw, prefix=kind)
    if hasattr(cls, "validate_options"):
        cls.validate_options(options)
    return ComponentConfig(name=str(name), options=options)


def resolve_data_dir(explicit: Optional[str]) -> Optional[str]:
    """An explicit folder (the `data_dir` field) beats ARENA_DATA_DIR; otherwise ../shared/data beside the checkout if present."""
    if explicit:
        return str(Path(explicit).expanduser().resolve())
    env = os.environ.get("ARENA_DATA_DIR")
    if env:
        return str(Path(env).expanduser().resolve())
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return str(cand.resolve())
    return None


def run_config_from_dict(data: dict) -> RunConfig:
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(RunConfig)}
    for key in data:
        if key not in known:
            raise ConfigError(key, data[key], f"unknown section; known: {', '.join(sorted(known))}{suggest(key, known)}")
    model = build(ModelConfig, data.get("model") if not isinstance(data.get("model"), str) else {"name": data["model"]}, "model")
    train = build(TrainConfig, data.get("train"), "train")
    probe = build(ProbeConfig, data.get("probe"), "probe")
    cfg = RunConfig(
        model=model,
        method=_component("method", data.get("method")),
        target=_component("target", data.get("target")),
        objective=_component("objective", data.get("objective")),
        train=train,
        probe=probe,
        data_dir=resolve_data_dir(data.get("data_dir")),
        out=data.get("out"),
        services=build(ServicesConfig, data.get("services"), "services"),
    )
    objective_cls = registry_for("objective").get(cfg.objective.name)
    check_services(cfg.services, cfg.objective.name, cfg.objective.options, objective_cls.needs_rollouts)
    return cfg


def load_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ArenaError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ArenaError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ArenaError(f"config file {p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_run_config(path: Optional[str] = None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    data = load_yaml(path) if path else {}
    if base:
        for k, v in base.items():
            if v is not None:
                data.setdefault(k, v)
    apply_overrides(data, overrides or [])
    return run_config_from_dict(data)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
