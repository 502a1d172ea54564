"""What a fine-tuning method is, and the shared PEFT plumbing.

A `Method` turns a plain causal LM into a trainable one (`wrap`), says which tensors are trained
(`trainable_state_dict`, what a checkpoint stores), and turns the trained model back into a plain
model (`merge`) so that evaluation, diagnostics and interpolation see one kind of object whatever
the method. PEFT methods differ only in the `peft` config they build, so a new PEFT method is a
subclass with an `Options` dataclass and a `peft_config()`. A method whose update is a function of
its own generator (OFT, BOFT) also gives `generators`, which the interpolation's "generator" path
scales; nothing outside the method's module knows about its layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from arena.components import METHODS
from arena.errors import ArenaError, ConfigError
from arena.models.loader import unwrap_peft

WeightAt = Callable[[float], torch.Tensor]  # α -> the weight of one parameter at α
"""A parameter's path θ(α): called with α, returns the weight (fp32) to write into the model."""


def parse_target_modules(value: str) -> str | list[str]:
    """'all-linear' stays a string (peft expands it); 'q_proj,v_proj' becomes a list."""
    value = value.strip()
    if value == "all-linear":
        return value
    mods = [m.strip() for m in value.split(",") if m.strip()]
    if not mods:
        raise ConfigError("target_modules", value, "use 'all-linear' or a comma-separated list such as 'q_proj,v_proj'")
    return mods


def targeted_linears(model: torch.nn.Module, target_modules: str | list[str]) -> dict[str, torch.nn.Linear]:
    """The Linear layers a PEFT config would adapt (all-linear excludes the output head)."""
    out = {}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or mod is head:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if target_modules == "all-linear" or leaf in target_modules or name in target_modules:
            out[name] = mod
    return out


class Method:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    default_lr: ClassVar[float] = 2e-4
    additive: ClassVar[bool] = True  # is the merged update W0 + ΔW with ΔW from the method's own params?
    # The interpolation path θ(α) a sweep walks by default: "weights" (θ0 + α·ΔW, every method) or
    # "generator" (scale the method's own generator, for methods whose update is not additive).
    interpolation_path: ClassVar[str] = "weights"

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any):
        self.options = options

    # -- lifecycle ---------------------------------------------------------------------------
    def check_model(self, model: torch.nn.Module) -> None:
        """Model-dependent validation (shapes, module names); raise ConfigError before training."""

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        raise NotImplementedError

    def on_step(self, model: torch.nn.Module, step: int) -> None:
        """Called after each optimizer step (AdaLoRA reallocates rank here)."""

    def regularizer(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A penalty on the trainable weights added once per optimizer step to the objective's loss
        (AdaLoRA's orthogonality term), or None. The loop backpropagates it after the step's
        micro-batches and logs it as `regularizer`."""
        return None

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return a plain transformers model with the update folded into its weights."""
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------------
    def trainable_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state]
        unknown = [n for n in state if n not in params]
        if missing or unknown:
            raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unknown {unknown[:5]}")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))

    @staticmethod
    def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
        """(trainable, total) parameter counts; tied weights counted once."""
        seen, trainable, total = set(), 0, 0
        for p in model.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        return trainable, total

    # -- interpolation -------------------------------------------------------------------
    def generators(self, model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor], WeightAt]]:
        """The "generator" interpolation path: {parameter name: W0 -> (α -> W(α))} of an unmerged model.

        Names are those of the plain (unwrapped) model's parameters. Each factory is called after the
        model has been merged, with the parameter's base value W0 (fp32), and must return a function
        with W(0) = W0 exactly and W(1) = the merged weight; parameters not listed follow the weights
        path θ0 + α·ΔW. A method without a generator of its own refuses the path.
        """
        having = sorted(n for n in METHODS.names() if METHODS.get(n).generators is not Method.generators)
        raise ConfigError("interpolation.path", "generator",
                          f"needs a method with a generator to scale ({', '.join(having)}); this run's method "
                          f"is {self.name!r}: use weights")

    @classmethod
    def describe(cls) -> dict:
        return {
            "name": cls.name,
            "description": cls.description,
            "default_lr": cls.default_lr,
            "options": {f.name: f.default for f in dataclasses.fields(cls.Options)},
        }


class PeftMethod(Method):
    """A method implemented by a `peft` tuner; subclasses only build the config."""

    def peft_config(self, model: torch.nn.Module, total_steps: int):
        raise NotImplementedError

    def check_model(self, model: torch.nn.Module) -> None:
        tm = getattr(self.options, "target_modules", None)
        if tm is None:
            return
        found = targeted_linears(model, parse_target_modules(tm))
        if not found:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise ConfigError("method.target_modules", tm, f"matches no Linear layer; available: {', '.join(leaves)}, or all-linear")

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        from peft import get_peft_model

        self.check_model(model)
        try:
            return get_peft_model(model, self.peft_config(model, total_steps))
        except ValueError as e:  # peft's own shape checks (e.g. BOFT block layouts)
            raise ConfigError(f"method ({self.name})", str(self.options), f"peft refused it: {e}") from None

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.merge_and_unload()


def adapter_layers(model: torch.nn.Module, layer_type: type) -> list[tuple[str, Any, str]]:
    """(module name, peft layer, adapter name) of every `layer_type` adapter of an unmerged peft model.

    Module names are those of the plain model inside the wrapper. The generator paths rewrite a
    Linear weight from one adapter, so other base layers or several active adapters are refused.
    """
    out = []
    for name, layer in unwrap_peft(model).named_modules():
        if not isinstance(layer, layer_type):
            continue
        if not isinstance(layer.get_base_layer(), torch.nn.Linear):
            raise ArenaError(f"generator path: {name} is not a Linear layer (only Linear adapters are supported)")
        adapters = list(layer.active_adapters)
        if len(adapters) != 1:
            raise ArenaError(f"generator path: {name} has {len(adapters)} active adapters; expected 1")
        out.append((name, layer, adapters[0]))
    return out

