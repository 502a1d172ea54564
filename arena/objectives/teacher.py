"""Teachers for distillation (OPD, GKD): load once, check the tokenizer, score token positions.

A teacher is any model reference `load_model` understands (catalog name, `tiny`, a transformers
folder, a hub id) or an arena run folder (config.yaml + final/), rebuilt as a merged model with
`load_run_model` — on CPU the natural teacher is a checkpoint the arena itself produced
(docs/design.md#teachers-for-distillation). Distillation compares distributions token by token, so teacher and student must share
the tokenizer: a different vocabulary is refused with an error naming both models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from arena.errors import ArenaError
from arena.models.loader import load_model, load_tokenizer, unwrap_peft
from arena.objectives.losses import IGNORE
from arena.rollouts import completion_logits
from arena.runs import has_config, is_run_folder, load_run_model, read_run_config, weights_path


def vocab_fingerprint(tokenizer) -> str:
    """sha256 of the token -> id map plus the EOS/pad ids (what scoring and stopping depend on)."""
    data = {"vocab": sorted(tokenizer.get_vocab().items()), "eos": tokenizer.eos_token_id}
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()


def model_label(tokenizer, model=None, fallback: str = "the student") -> str:
    """A printable name for a loaded model: its folder / hub id, else `fallback`."""
    name = getattr(tokenizer, "name_or_path", "") or ""
    if not name and model is not None:
        base = unwrap_peft(model)
        name = getattr(getattr(base, "config", None), "_name_or_path", "") or ""
    return name or fallback


def open_teacher(ctx, ref: str) -> tuple[object, object, dict]:
    """(teacher, its tokenizer or None, provenance) for `ref`, its tokenizer checked against the student's before any
    weights load: the model itself, or — with services.teacher.mode process/ray — a handle on a
    teacher service (arena/services/teacher_service.py) that `teacher_scores` reads."""
    start_service = ctx.extras.get("start_teacher")  # installed by the experiment for services.teacher
    if start_service is None:
        return load_teacher(ref, ctx.device, ctx.tokenizer, model_label(ctx.tokenizer, ctx.model))
    check_teacher_tokenizer(ref, ctx.tokenizer, model_label(ctx.tokenizer, ctx.model))
    remote = start_service(ref)
    return remote, None, remote.info


def prepare_teacher(ctx, ref: str) -> dict:
    """Load the teacher once into ctx.extras['teacher'] (reused when already there) and check its
    tokenizer against the student's; returns provenance for the run record."""
    if ctx.extras.get("teacher") is None:
        teacher, tok, info = open_teacher(ctx, ref)
        ctx.extras.update(teacher=teacher, teacher_tokenizer=tok, teacher_info=info)
    elif ctx.extras.get("teacher_tokenizer") is not None:
        check_same_tokenizer(ctx.extras["teacher_tokenizer"], ctx.tokenizer, ref, model_label(ctx.tokenizer, ctx.model))
    return dict(ctx.extras.get("teacher_info") or {"ref": ref, "kind": "preloaded"})


def check_same_tokenizer(teacher_tok, student_tok, teacher_name: str, student_name: str) -> None:
    """ArenaError naming both models unless the two tokenizers map the same tokens to the same ids."""
    if vocab_fingerprint(teacher_tok) == vocab_fingerprint(student_tok):
        return
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    diff = sum(1 for t, i in tv.items() if sv.get(t) != i)
    raise ArenaError(
        f"teacher {teacher_name!r} and student {student_name!r} use different tokenizers "
        f"(vocab sizes {len(tv)} vs {len(sv)}, {diff} teacher tokens differ or are missing, "
        f"EOS ids {teacher_tok.eos_token_id} vs {student_tok.eos_token_id}); distillation compares "
        "token distributions and needs one shared tokenizer: use a teacher trained from the student's base model")


def load_teacher(ref: str, device: torch.device | str = "cpu", student_tokenizer=None, student_name: str | None = None):
    """(teacher model in fp32, eval mode, frozen, on `device`; its tokenizer; provenance dict).

    `ref` is an arena run folder or anything `load_model` accepts. With `student_tokenizer`, a
    different vocabulary raises ArenaError before anything else happens.
    """
    if not ref:
        raise ArenaError("objective.teacher: no teacher given; set it to a model name/folder or an arena run folder")
    p = Path(ref).expanduser()
    if p.is_dir() and has_config(p) and not is_run_folder(p):
        raise ArenaError(f"teacher {ref!r}: an arena run folder without final weights (no {weights_path(p)}); did it finish?")
    run_cfg = read_run_config(p) if is_run_folder(p) else None
    # The tokenizer check comes first: it is cheap, and a refused teacher loads no weights.
    if student_tokenizer is not None:
        check_teacher_tokenizer(ref, student_tokenizer, student_name)
    if run_cfg is not None:
        model, tok, cfg = load_run_model(ref, merged=True, device="cpu")
        info = {"ref": ref, "kind": "run", "base": cfg.model.name, "method": cfg.method.name,
                "objective": cfg.objective.name, "target": cfg.target.name}
    else:
        model, tok, minfo = load_model(ref)
        info = {"ref": ref, "kind": "model", **minfo.to_dict()}
    model = model.float().to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    info["vocab_sha256"] = vocab_fingerprint(tok)[:16]
    return model, tok, info


def check_teacher_tokenizer(ref: str, student_tokenizer, student_name: str | None = None) -> None:
    """ArenaError unless teacher `ref` (run folder or model) has the student's tokenizer; loads
    the tokenizer only, so several teachers can all be checked before any weights load."""
    p = Path(ref).expanduser()
    m = read_run_config(p).model if is_run_folder(p) else None
    try:
        tok = load_tokenizer(m.name, m.revision, m.trust_remote_code) if m else load_tokenizer(ref)
    except OSError as e:
        raise ArenaError(f"teacher {ref!r}: could not load its tokenizer ({str(e).splitlines()[0]})") from None
    check_same_tokenizer(tok, student_tokenizer, ref, student_name or model_label(student_tokenizer))


def load_student(ref: str, device: torch.device | str = "cpu"):
    """A student for diagnostics (`arena opd-check`): like a teacher, but any run folder or model."""
    return load_teacher(ref, device)


def align_vocab(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut both [n, V] to the common width: heads padded past the tokenizer (e.g. to a multiple of
    64) carry rows no token id reaches; the shared tokenizer makes the first columns the same tokens."""
    v = min(student_logits.shape[-1], teacher_logits.shape[-1])
    return student_logits[..., :v], teacher_logits[..., :v]


@torch.no_grad()
def teacher_completion_logits(teacher, batch: dict, device, precision: str) -> torch.Tensor:
    """The teacher's logits [n, V] at the batch's completion positions (order of `completion_logits`);
    `teacher` is a model or a teacher service shipping logits or hidden states."""
    scores = teacher_scores(teacher, batch, device, precision)
    if scores.logits is None:
        raise ValueError(f"the teacher ships the {scores.form!r} form; this loss needs its logits (transport logits or hidden)")
    return scores.logits


@torch.no_grad()
def teacher_scores(teacher, batch: dict, device, precision: str, temperature: float = 1.0):
    """The teacher's `TeacherScores` at the batch's completion positions: from an in-process model
    its logits; from a teacher service what its transport ships, with hidden states projected here
    by the teacher's head under the same autocast (the same operation as in-process: same bits)."""
    from arena.services.transport import TeacherScores

    if not hasattr(teacher, "score"):
        logits, targets = completion_logits(teacher, batch, device, precision)
        return TeacherScores("logits", logits=logits.float(), targets=targets)
    scores = teacher.score(batch, temperature)
    shifted = batch["labels"][:, 1:]
    scores.targets = shifted[shifted != IGNORE].to(device)
    if scores.form == "hidden":
        from arena.training.device import autocast

        with autocast(device, precision):
            scores.logits = torch.nn.functional.linear(scores.hidden.to(device), teacher.head_weight()).float()
    elif scores.logits is not None:
        scores.logits = scores.logits.to(device)
    return scores
