"""The base-model score cache: every run of a sweep compares against the same base numbers.

One JSON file per (base model, benchmark, settings) under `<cache_root>/eval/base/`. The key is the
sha256 of everything that can change the score:

    model fingerprint (catalog: GGUF sha256; local folder: config + weight files' size/mtime;
                       tiny: its seed; hub: id + revision)
    benchmark name, arena TASKS_VERSION and the task's own version, lm-eval version
    sha256 of every data file the task reads (or "hub" when online)
    limit, subset seed
    generation settings: max_gen_toks, BBH variant/shots, chat template, batch size, precision,
                         device type (bf16 padding effects make batch size matter)
    arith target options (for the arith task)

so any change gives a new key and the old entry is simply not found (invalidation by construction).
Entries are written atomically; a corrupt entry is treated as a miss.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from arena.models import catalog
from arena.records import atomic_write_text

CACHE_VERSION = 1


def cache_dir() -> Path:
    return catalog.cache_root() / "eval" / "base"


def model_fingerprint(name: str, revision: str | None = None) -> dict:
    """What identifies a base model's weights without hashing gigabytes every time."""
    if name == "tiny":
        return {"name": "tiny", "source": "random-init:seed0"}
    if name in catalog.CATALOG:
        d = catalog.model_dir(name)
        src_file = d / catalog.SOURCE_FILE
        src = json.loads(src_file.read_text()) if src_file.is_file() else {}
        return {"name": name, "source": src.get("source"), "gguf_sha256": src.get("gguf_sha256")}
    p = Path(name).expanduser()
    if p.is_dir():
        files = {}
        for f in sorted(p.iterdir()):
            if f.suffix in (".safetensors", ".bin", ".json", ".model", ".txt"):
                st = f.stat()
                files[f.name] = [st.st_size, st.st_mtime_ns] if f.suffix in (".safetensors", ".bin") else _sha(f)
        return {"name": str(p.resolve()), "source": "local", "files": files}
    return {"name": name, "source": "hub", "revision": revision}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps({"cache_version": CACHE_VERSION, **fields}, sort_keys=True,
                                     default=str).encode()).hexdigest()[:32]


def _slug(model: dict) -> str:
    name = str(model.get("name", "model"))
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name)[:60] or "model"


class BaseCache:
    """get/put of JSON entries by key fields; `hits`/`misses` record what happened."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = Path(root) if root else cache_dir()
        self.enabled = enabled
        self.hits: list[str] = []
        self.misses: list[str] = []

    def path(self, label: str, fields: dict) -> Path:
        return self.root / _slug(fields.get("model", {})) / f"{label.replace(':', '_')}-{make_key(fields)}.json"

    def get(self, label: str, fields: dict) -> dict | None:
        if not self.enabled:
            self.misses.append(label)
            return None
        p = self.path(label, fields)
        if p.is_file():
            try:
                data = json.loads(p.read_text())
                if data.get("fields") == json.loads(json.dumps(fields, default=str)):
                    self.hits.append(label)
                    return data["result"]
            except (json.JSONDecodeError, KeyError):
                pass
        self.misses.append(label)
        return None

    def put(self, label: str, fields: dict, result: dict) -> Path | None:
        if not self.enabled:
            return None
        p = self.path(label, fields)
        atomic_write_text(p, json.dumps({"fields": fields, "result": result}, default=str))
        return p
