"""The effective (adapter-merged) weights of an in-memory model, for engines with their own kernels.

An engine that runs its own forward (the native decoder, vLLM) needs plain weight matrices, while a
run's model is often a peft wrapper whose linear layers compute W·x + adapter(x). `effective_linear`
returns the weight and bias the layer applies: for a peft tuner layer it merges a *copy* of the
layer (peft's own `merge`, so every method — LoRA, PiSSA, DoRA, VeRA, OFT, BOFT, IA3, LoHa, LoKr,
AdaLoRA — merges exactly as peft defines it) and reads the copy's base weight; the training model is
never touched, so merge/unmerge round-off never reaches the master weights.
"""

from __future__ import annotations

import copy

import torch

from arena.models.loader import unwrap_peft


def _is_tuner_layer(module) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft absent: nothing can be wrapped
        return False
    return isinstance(module, BaseTunerLayer)


@torch.no_grad()
def _merged(module):
    """The plain module `module` computes: for a peft tuner layer, the base layer of a merged copy."""
    if not _is_tuner_layer(module):
        return module
    merged = copy.deepcopy(module)
    if merged.active_adapters and not merged.merged:
        merged.merge(safe_merge=False)
    return merged.get_base_layer()


@torch.no_grad()
def _plain_lora_merge(module) -> torch.Tensor | None:
    """W + Σ_a ΔW_a for a plain peft LoRA linear (PiSSA's too), or None where peft's merge does more.

    peft's unsafe merge of a vanilla LoRA adapter is `base.weight.data += get_delta_weight(a)` per
    active adapter; doing exactly that on a clone gives the same bits as merging a deep copy, without
    the copy (a deepcopy of every tuner layer was ~0.45 s of a 135M model's ~1 s engine build, which
    GRPO pays every step). Variants (DoRA, ...), LoRA biases, other tuners and merged layers go
    through `_merged` (peft's own merge on a copy).
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return None
    if type(module) is not LoraLinear or module.merged or not module.active_adapters:
        return None
    names = [a for a in module.active_adapters if a in module.lora_A]
    if any(a in getattr(module, "lora_variant", {}) or module.lora_bias.get(a, False) for a in names):
        return None
    w = module.get_base_layer().weight.detach().clone()
    for a in names:
        w += module.get_delta_weight(a)
    return w


def effective_linear(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [out, in], bias [out] or None) that `module` applies, adapters merged in."""
    w = _plain_lora_merge(module)
    base = module.get_base_layer() if w is not None else _merged(module)  # the plain merge keeps the bias
    bias = getattr(base, "bias", None)
    return (w if w is not None else base.weight.detach()), (bias.detach() if bias is not None else None)


def effective_embedding(module) -> torch.Tensor:
    return _merged(module).weight.detach()


def base_transformer(model):
    """The decoder-only transformers model under any peft wrapper (what holds `.model.layers`)."""
    return unwrap_peft(model)


@torch.no_grad()
def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The plain transformers state dict of `model` with every adapter merged (for engines that
    load weights by name, e.g. vLLM's `load_weights`). Keys are the unwrapped model's own names."""
    base = base_transformer(model)
    out: dict[str, torch.Tensor] = {}
    for name, mod in base.named_modules():
        if _is_tuner_layer(mod):
            w, b = effective_linear(mod) if hasattr(mod.get_base_layer(), "in_features") else (effective_embedding(mod), None)
            out[f"{name}.weight"] = w
            if b is not None:
                out[f"{name}.bias"] = b
    for name, p in base.state_dict().items():
        # peft keeps the wrapped layer's weight under `<name>.base_layer.weight` and its own tensors
        # under lora_*/oft_*/...: only plain (unwrapped) parameters are copied through.
        if ".base_layer." in name or any(part.startswith(_ADAPTER_PREFIXES) for part in name.split(".")):
            continue
        out.setdefault(name, p)
    return out


_ADAPTER_PREFIXES = ("lora_", "oft_", "boft_", "vera_", "ia3_", "hada_", "lokr_", "ranknum", "magnitude")
