"""Shared fixtures for the foundation suite: data folder, tiny run configs, tiny tokenizer.

Everything here runs on the `tiny` model (random 2-layer Llama, BPE tokenizer trained in memory),
so the whole suite needs no download and no benchmark data except where a test says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The defaults of every tiny test run: fp32 so logit comparisons are exact, short rows and a small
# generated train pool so 10 steps take a fraction of a second, probes cut to a token amount.
TINY_DEFAULTS = [
    "model.name=tiny",
    "target.name=arith",
    "target.n_train=256",
    "train.steps=10",
    "train.batch_size=4",
    "train.seq_len=64",
    "train.warmup_steps=1",
    "train.precision=fp32",
    "train.device=cpu",
    "train.progress=false",
    "probe.heldout=8",
    "probe.greedy=0",
]


def pytest_configure(config):
    # Set before anything imports arena/transformers: offline, no tokenizer thread pools, and a
    # private cache folder so no test can write into the user's ~/.cache/arena.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import tempfile

    cache = Path(tempfile.mkdtemp(prefix="arena-test-cache-"))
    os.environ["ARENA_CACHE"] = str(cache)
    config._arena_cache = cache
    # The tiny model is far too small for intra-op threads: on 2 shared cores, 2 threads make a
    # 10-step run ~50x slower (spin-waiting), 1 thread keeps it under 0.2 s.
    import torch

    torch.set_num_threads(1)


def pytest_unconfigure(config):
    import shutil

    cache = getattr(config, "_arena_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data folder (ARENA_DATA_DIR, else ../shared/data beside the repo); skip if absent."""
    env = os.environ.get("ARENA_DATA_DIR")
    cand = Path(env) if env else REPO.parent / "shared" / "data"
    if not cand.is_dir():
        pytest.skip(f"benchmark data folder not found ({cand}); set ARENA_DATA_DIR")
    return cand.resolve()


def tiny_overrides(*sets: str, **fields) -> list[str]:
    """TINY_DEFAULTS + `--set` strings + keyword fields (`train__lr=1e-2` -> `train.lr=1e-2`).

    A bare component keyword (`method="lora"`) sets that component's name.
    """
    out = list(TINY_DEFAULTS)
    for key, value in fields.items():
        key = key.replace("__", ".")
        if key in ("method", "target", "objective", "model"):
            key += ".name"
        if isinstance(value, bool):
            value = str(value).lower()
        out.append(f"{key}={value}")
    out.extend(sets)
    return out


@pytest.fixture(scope="session")
def tiny_run_config():
    """Factory: `tiny_run_config("train.seed=3", method="oft", out=str(tmp_path / "run"))` -> RunConfig."""
    from arena.config import load_run_config

    def make(*sets: str, **fields):
        return load_run_config(None, tiny_overrides(*sets, **fields))

    return make


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny model's byte-level BPE tokenizer, trained in memory (arena.models.tiny.build_tokenizer)."""
    from arena.models.loader import load_tokenizer

    return load_tokenizer("tiny")


@pytest.fixture(scope="session")
def tiny_base():
    """(fp32 tiny base model in eval mode, tokenizer); callers must not modify the model."""
    from arena.models.loader import load_model

    model, tok, _ = load_model("tiny")
    return model.eval(), tok


@pytest.fixture
def tiny_lora(tiny_base):
    """A peft LoRA (r 4, all-linear) copy of the tiny base with B ~ N(0, 0.5²) (seed 0), so the
    adapter changes the outputs (a fresh LoRA's B = 0 would not); function-scoped: callers may modify it."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_base
    pm = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    return pm


def prepared_context(cfg):
    """What run_training builds before its loop, on the CPU in fp32: (ctx, method, objective) with
    the objective prepared. For tests that drive an objective's batches/loss by hand."""
    import torch

    from arena.components import build_components
    from arena.experiment import seed_everything
    from arena.objectives.base import TrainContext
    from arena.runs import load_and_wrap

    method, target, objective = build_components(cfg)
    seed_everything(cfg.train.seed)
    model, tok, _ = load_and_wrap(cfg, method, torch.device("cpu"))
    ctx = TrainContext(model=model, tokenizer=tok, target=target, train=cfg.train, device=torch.device("cpu"),
                       precision="fp32", seed=cfg.train.seed)
    objective.prepare(ctx)
    return ctx, method, objective


# -- teachers for the distillation objectives (OPD, GKD, MOPD) ------------------------------------

@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """A fixed teacher: tiny model seed 1 (same tokenizer as the student), logits sharpened 20x."""
    import torch

    from arena.models.loader import load_tokenizer
    from arena.models.tiny import build_model

    d = tmp_path_factory.mktemp("teacher") / "tiny-seed1"
    tok = load_tokenizer("tiny")
    model = build_model(tok, seed=1)
    with torch.no_grad():
        model.model.norm.weight.mul_(20.0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def other_tokenizer_teacher(tmp_path_factory) -> Path:
    from arena.models.tiny import build_model, build_tokenizer

    d = tmp_path_factory.mktemp("teacher") / "other-vocab"
    tok = build_tokenizer(vocab_size=512)
    build_model(tok, seed=0).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def interrupted_run(monkeypatch, cls, at_step: int, start):
    """Run `start()` (a run_training call) with `cls.batches` raising KeyboardInterrupt at step
    `at_step` (0-based), as a kill between checkpoints would; the real batches are restored after."""
    real = cls.batches

    def dying(self, ctx, step):
        if step == at_step:
            raise KeyboardInterrupt
        return real(self, ctx, step)

    monkeypatch.setattr(cls, "batches", dying)
    try:
        with pytest.raises(KeyboardInterrupt):
            start()
    finally:
        monkeypatch.setattr(cls, "batches", real)
