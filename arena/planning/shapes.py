"""What the planner needs of a model and a method: shapes and exact parameter counts, no weights.

The architecture comes from the model's config.json (a catalog model, a local folder, the tiny
model) or, for hub ids this offline machine cannot read, from `KNOWN` (the published config.json
values of the paper presets' models). Parameter counts are exact: the model is built on the meta
device (no memory), the method wraps it as in training, and the trainable tensors are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena.errors import ArenaError

# config.json fields of models named by configs/peft-arena-*.yaml (Hugging Face model cards)
KNOWN = {
    "Qwen/Qwen2.5-7B-Instruct": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                     vocab_size=152064, tie_word_embeddings=False, max_position_embeddings=32768),
    "meta-llama/Llama-3.2-3B-Instruct": dict(model_type="llama", hidden_size=3072, intermediate_size=8192,
                                             num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                                             vocab_size=128256, tie_word_embeddings=True, head_dim=128,
                                             max_position_embeddings=131072),
}


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    params: int  # total parameters of the plain model (tied weights once)
    trainable: int  # parameters the method trains
    adapter_params: int  # parameters the method adds (0 for full fine-tuning)
    embed_params: int  # embeddings + untied head (the FSDP root unit)
    adapted_inputs: int  # Σ in_features over the linears the method adapts (its saved inputs)

    @property
    def layer_params(self) -> int:
        return (self.params - self.embed_params) // self.layers


def hf_config(name: str):
    """The transformers config of model `name` without loading weights (ArenaError if unknown)."""
    from transformers import AutoConfig

    if name == "tiny":
        from arena.models.loader import load_tokenizer
        from arena.models.tiny import build_model
        import torch

        with torch.device("meta"):
            return build_model(load_tokenizer("tiny")).config
    if name in KNOWN:
        from transformers import CONFIG_MAPPING

        spec = dict(KNOWN[name])
        return CONFIG_MAPPING[spec.pop("model_type")](**spec)
    from arena.models.loader import _resolve

    try:
        path, _ = _resolve(name, prepare_missing=False)
        return AutoConfig.from_pretrained(path)
    except (OSError, ArenaError) as e:
        raise ArenaError(f"model {name!r}: no config.json here to plan from ({str(e).splitlines()[0][:160]}); "
                         f"use a catalog model, a local folder, or one of {', '.join(KNOWN)}") from None
    except ValueError as e:  # an unreadable config.json
        raise ArenaError(f"model {name!r}: {e}") from None


_SHAPES: dict = {}


def model_shape(cfg) -> ModelShape:
    """Shapes and exact counts for RunConfig `cfg` (its model wrapped by its method, on meta); the
    runs of a sweep that share model and method (objectives, seeds) share one build."""
    import json

    d = cfg.to_dict()
    key = json.dumps([d["model"], d["method"], cfg.train.steps], sort_keys=True, default=str)
    if key not in _SHAPES:
        _SHAPES[key] = _build_shape(cfg)
    return _SHAPES[key]


def _build_shape(cfg) -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM

    from arena.components import METHODS, build_components

    hc = hf_config(cfg.model.name)
    method, _, _ = build_components(cfg, check_data=False)
    plan_as = getattr(type(method), "plan_as", None)
    if plan_as:  # a method whose init needs real weights (PiSSA's SVD) counts as the one of its shapes
        method = METHODS.get(plan_as)(method.options)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hc)
        total = sum(p.numel() for p in model.parameters())
        emb = model.get_input_embeddings().weight.numel()
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            emb += head.weight.numel()
        before = {id(m) for m in model.modules() if isinstance(m, torch.nn.Linear)}
        in_features = {id(m): m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear)}
        method.check_model(model)
        wrapped = method.wrap(model, total_steps=cfg.train.steps)
        trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        after_total = sum(p.numel() for p in wrapped.parameters())
        adapted = 0
        for m in wrapped.modules():  # a PEFT layer keeps its base linear as `base_layer`
            base = getattr(m, "base_layer", None)
            if base is not None and id(base) in before:
                adapted += in_features[id(base)]
    heads = hc.num_attention_heads
    return ModelShape(
        name=cfg.model.name, hidden=hc.hidden_size, intermediate=hc.intermediate_size, layers=hc.num_hidden_layers,
        heads=heads, kv_heads=getattr(hc, "num_key_value_heads", None) or heads,
        head_dim=getattr(hc, "head_dim", None) or hc.hidden_size // heads, vocab=hc.vocab_size,
        tied=bool(getattr(hc, "tie_word_embeddings", False)), params=total, trainable=trainable,
        adapter_params=max(0, after_total - total), embed_params=emb, adapted_inputs=adapted)
