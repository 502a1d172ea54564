"""Load (model, tokenizer) for any model reference: catalog name, `tiny`, local folder, hub id.

Weights are always loaded in fp32: training keeps fp32 master weights and uses bf16 autocast
(pure-bf16 AdamW loses most small updates, docs/design.md#precision), and PiSSA init and adapter merges need
fp32 to be exact.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena.errors import ArenaError
from arena.models import catalog
from arena.models.tiny import build_model, build_tokenizer


def unwrap_peft(model):
    """The transformers model inside a peft wrapper (the model itself when it is not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class ModelInfo:
    """Provenance of the loaded model; copied into every run record."""

    name: str
    source: str
    path: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "path": self.path, **self.extra}


@functools.lru_cache(maxsize=4)
def _tiny_tokenizer(seed: int):
    return build_tokenizer(seed=seed)


def load_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False):
    if name == "tiny":
        import copy

        return copy.deepcopy(_tiny_tokenizer(0))
    path, _ = _resolve(name, prepare_missing=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _resolve(name: str, prepare_missing: bool) -> tuple[str, ModelInfo]:
    if name in catalog.CATALOG:
        if not catalog.is_prepared(name):
            if not prepare_missing:
                raise ArenaError(f"model {name!r} is not prepared; run `arena models prepare {name}`")
            catalog.prepare(name)
        d = catalog.model_dir(name)
        src = json.loads((d / catalog.SOURCE_FILE).read_text())
        return str(d), ModelInfo(name=name, source=src["source"], path=str(d), extra={k: v for k, v in src.items() if k not in ("name", "source")})
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ArenaError(f"model: folder {p} has no config.json (expected a transformers model folder)")
        return str(p.resolve()), ModelInfo(name=name, source="local", path=str(p.resolve()))
    if name.startswith((".", "/", "~")):
        raise ArenaError(f"model: folder not found: {name}")
    return name, ModelInfo(name=name, source="hub")


def load_model(name: str, revision: str | None = None, trust_remote_code: bool = False) -> tuple[Any, Any, ModelInfo]:
    """Return (fp32 model on CPU, tokenizer, ModelInfo). The caller moves it to its device."""
    import torch

    if name == "tiny":
        tok = load_tokenizer("tiny")
        return build_model(tok, seed=0), tok, ModelInfo(name="tiny", source="random-init:seed0")
    path, info = _resolve(name, prepare_missing=True)
    from transformers import AutoModelForCausalLM

    try:
        tok = load_tokenizer(name, revision, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, revision=revision, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        known = ", ".join(["tiny", *catalog.CATALOG])
        raise ArenaError(
            f"model: could not load {name!r} ({str(e).splitlines()[0]}). Use a catalog model ({known}), "
            "a local folder, or a hub id while the hub is reachable."
        ) from None
    return model, tok, info
