"""A run config -> its per-device memory and time on given devices; a sweep -> one row per run.

Time is tokens at a stated throughput: training FLOPs per token (forward 2·P + 4·L·h·s for
attention; backward twice the forward for full fine-tuning, once for frozen weights with adapters,
which need input gradients but no weight gradients; one forward more with activation
checkpointing) over `tflops × mfu` per device, and sampled tokens (2·P + 4·L·h·s each) over
`tflops × gen_mfu` (decoding is bandwidth-bound: a far lower utilisation). Evaluation and the
analysis stages are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arena.planning.memory import GiB, Budget, MemoryPlan, plan_memory
from arena.planning.shapes import ModelShape, model_shape


@dataclass(frozen=True)
class Devices:
    count: int = 1  # devices available (GPUs, or this CPU)
    mem_gib: float = 80.0
    tflops: float = 989.0  # dense bf16 peak per device (H100 SXM: 989)
    mfu: float = 0.35
    gen_mfu: float = 0.05
    kind: str = "GPU"
    # share of each device kept free for what the plan does not count: the CUDA context, NCCL
    # buffers, allocator fragmentation (the plan itself is within -1% .. +16% of the measured CPU
    # peak on the default model, docs/distributed.md#planner)
    headroom: float = 0.2

    @property
    def usable(self) -> float:
        return self.mem_gib * (1 - self.headroom) * GiB


@dataclass
class RunPlan:
    name: str
    shape: ModelShape
    budget: Budget
    memory: MemoryPlan
    train_tokens: float
    gen_tokens: float
    hours: float
    world: int
    teacher_bytes: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def peak(self) -> float:
        return self.memory.peak + self.teacher_bytes

    def fits(self, dev: Devices) -> bool:
        return self.world <= dev.count and self.peak <= dev.usable

    def why_not(self, dev: Devices) -> str:
        m = self.memory
        if self.world > dev.count:
            return f"needs {self.world} devices per run, {dev.count} available"
        parts = [f"weights {m.weights / GiB:.1f}", f"gradients {m.gradients / GiB:.1f}",
                 f"optimizer {m.optimizer / GiB:.1f}", f"activations {m.activations / GiB:.1f}",
                 f"logits {m.logits / GiB:.1f}"]
        if m.gathered:
            parts.append(f"gathered units {m.gathered / GiB:.1f}")
        if m.rollout:
            parts.append(f"rollout copy + KV {m.rollout / GiB:.1f}")
        if self.teacher_bytes:
            parts.append(f"teacher {self.teacher_bytes / GiB:.1f}")
        hint = "raise runner.gpus_per_run" if m.weights + m.optimizer > m.activations else \
            "turn on train.activation_checkpointing or lower train.batch_size / train.seq_len"
        return (f"needs {self.peak / GiB:.1f} GiB per device on {self.world} ({', '.join(parts)} GiB), "
                f"has {dev.mem_gib:g} GiB ({dev.usable / GiB:.1f} usable with --headroom {dev.headroom:g}); {hint}")


def _option(cfg, name, default=None):
    return getattr(cfg.objective.options, name, default) if getattr(cfg.objective, "options", None) is not None \
        else default


def _dropout_bytes(cfg, cpu: bool) -> float:
    """m of arena/planning/memory.py: what the method's dropout keeps per adapted input element."""
    from arena.training.dropout import MAX_SKIP_P

    p = float(getattr(cfg.method.options, "dropout", 0.0) or 0.0)
    if p == 0:
        return 0.0
    sampler = cfg.train.dropout_sampler
    skip = (sampler == "skip" or (sampler == "auto" and cpu)) and p <= MAX_SKIP_P
    return 8.0 * p if skip else 1.0


def budget_for(cfg, world: int, label_fraction: float = 1.0, cpu: bool = False) -> tuple[Budget, float, float]:
    """(Budget of one rank's micro-batch, global train tokens, global sampled tokens) of RunConfig cfg;
    `cpu`: the run trains on a CPU (train.device cpu, or auto planned for a CPU), where the loop's
    CPU fast paths apply (skip-sampled dropout; the bf16 cast cache of frozen weights under autocast)."""
    from arena.components import OBJECTIVES

    t = cfg.train
    obj = OBJECTIVES.get(cfg.objective.name)
    cast_cache = world == 1 and cpu and t.cast_cache != "off" and t.precision in ("auto", "bf16-autocast")
    common = dict(world=world, weight_bytes=2 if t.precision == "bf16" else 4, checkpointing=t.activation_checkpointing,
                  dropout_bytes=_dropout_bytes(cfg, cpu), cast_cache=cast_cache)
    if getattr(obj, "needs_rollouts", False):
        n = int(_option(cfg, "n_samples", 1) or 1)
        max_new = int(_option(cfg, "max_new_tokens", 0) or 0)
        per_step = _option(cfg, "prompts_per_step") or t.batch_size * t.grad_accum
        seqs = max(1, per_step // t.grad_accum) * n
        b = Budget(tokens=seqs * t.seq_len, label_tokens=seqs * max_new, rollout_seqs=seqs, rollout_len=t.seq_len,
                   **common)
        return b, float(t.steps * per_step * n * t.seq_len), float(t.steps * per_step * n * max_new)
    tokens = t.batch_size * t.seq_len
    fused = t.fused_ce and world == 1 and cfg.objective.name in ("sft", "cpt")  # sharded runs keep the logits
    b = Budget(tokens=tokens, label_tokens=int(tokens * label_fraction), fused_ce=fused, **common)
    return b, float(t.steps * t.grad_accum * tokens), 0.0


def _flops_per_token(s: ModelShape, seq: int) -> float:
    return 2.0 * s.params + 4.0 * s.layers * s.hidden * seq


def _teacher_bytes(cfg) -> tuple[float, str | None]:
    teacher = _option(cfg, "teacher")
    if not teacher or not isinstance(teacher, str):
        return 0.0, None
    from arena.runs import has_config, read_run_config

    try:
        name = read_run_config(teacher).model.name if has_config(teacher) else teacher
        from arena.planning.shapes import hf_config

        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            n = sum(p.numel() for p in AutoModelForCausalLM.from_config(hf_config(name)).parameters())
        return 4.0 * n, None
    except Exception as e:  # noqa: BLE001 — a teacher we cannot size is a note, not a refusal
        return 0.0, f"teacher {teacher!r} not counted ({type(e).__name__})"


def plan_run(cfg, dev: Devices, world: int = 1, name: str | None = None, label_fraction: float = 1.0) -> RunPlan:
    s = model_shape(cfg)
    cpu = cfg.train.device == "cpu" or (cfg.train.device == "auto" and dev.kind.startswith("CPU"))
    b, train_tokens, gen_tokens = budget_for(cfg, world, label_fraction, cpu)
    mem = plan_memory(s, b)
    full = s.adapter_params == 0 and s.trainable == s.params
    fwd = _flops_per_token(s, cfg.train.seq_len)
    train_flops = train_tokens * fwd * ((3 if full else 2) + (1 if cfg.train.activation_checkpointing else 0))
    gen_flops = gen_tokens * fwd
    per = dev.tflops * 1e12
    seconds = train_flops / (world * per * dev.mfu) + gen_flops / (world * per * dev.gen_mfu)
    teacher, note = _teacher_bytes(cfg)
    return RunPlan(name=name or cfg.model.name, shape=s, budget=b, memory=mem, train_tokens=train_tokens,
                   gen_tokens=gen_tokens, hours=seconds / 3600, world=world, teacher_bytes=teacher,
                   notes=[note] if note else [])


def plan_sweep(sweep_cfg, dev: Devices, gpus_per_run: int | None = None, label_fraction: float = 1.0) -> list[RunPlan]:
    """One RunPlan per run of a sweep (the same shape is computed once per model and method)."""
    from arena.config import run_config_from_dict
    from arena.sweeps.expand import expand

    out = []
    for spec in expand(sweep_cfg):
        cfg = run_config_from_dict(spec.config)
        world = gpus_per_run or sweep_cfg.runner.gpus_for(spec.model)
        out.append(plan_run(cfg, dev, world, name=spec.run_id, label_fraction=label_fraction))
    return out
