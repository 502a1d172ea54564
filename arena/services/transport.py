"""What a teacher service ships per completion token, and how the losses read it back.

Forms (`services.teacher.transport`):

- logits: the teacher's logits z_T ∈ R^V at each completion position, fp32 — 4·V bytes/token. The
  losses run on them unchanged, so this equals the in-process teacher bit for bit.
- topk: LightScale's LogitsExpress form — the top-k log-probs log π_T(v), v ∈ K, their ids, the
  log of the remaining mass log π_T(V \\ K) = logsumexp_{v∉K} log π_T(v) and the sampled token's
  log-prob log π_T(y_t) (at the request's temperature) — 8·k + 8 bytes/token. The reverse KL is
  then OPD's top-k + tail-bucket form (a lower bound of the full KL, exact at k = V).
- hidden: KDFlow's form — the teacher's last hidden state h ∈ R^d (after the final norm), fp32 —
  4·d bytes/token; the logits z_T = W_head·h are recomputed here with the teacher's output head,
  fetched once, under the run's autocast: the same operation as in-process, so the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from arena.objectives.rl_losses import teacher_topk, token_logprobs


@dataclass
class TeacherScores:
    """One micro-batch's transported teacher output, [n] completion tokens in row-major order."""

    form: str
    logits: Optional[torch.Tensor] = None  # [n, V] (logits, or recomputed from hidden)
    topk_logp: Optional[torch.Tensor] = None  # [n, k]
    topk_idx: Optional[torch.Tensor] = None  # [n, k] int32 on the wire
    tail_logp: Optional[torch.Tensor] = None  # [n]
    sampled_logp: Optional[torch.Tensor] = None  # [n]
    hidden: Optional[torch.Tensor] = None  # [n, d]
    targets: Optional[torch.Tensor] = None  # [n] the completion tokens (set by the reader, not shipped)
    wire_bytes: int = 0  # what crossed the wire for these tokens

    @property
    def n_tokens(self) -> int:
        for t in (self.logits, self.topk_logp, self.hidden, self.sampled_logp):
            if t is not None:
                return int(t.shape[0])
        return 0


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def pack(form: str, logits: torch.Tensor | None, hidden: torch.Tensor | None, targets: torch.Tensor, k: int,
         temperature: float) -> TeacherScores:
    """The server side: the teacher's [n, V] logits (or [n, d] last hidden states) -> the wire form."""
    if form == "logits":
        out = TeacherScores(form, logits=logits.float().cpu())
        out.wire_bytes = nbytes(out.logits)
    elif form == "hidden":
        out = TeacherScores(form, hidden=hidden.float().cpu())
        out.wire_bytes = nbytes(out.hidden)
    elif form == "topk":
        val, idx, tail = teacher_topk(logits, k)
        out = TeacherScores(form, topk_logp=val.cpu(), topk_idx=idx.to(torch.int32).cpu(), tail_logp=tail.cpu(),
                            sampled_logp=token_logprobs(logits, targets, temperature).cpu())
        out.wire_bytes = nbytes(out.topk_logp, out.topk_idx, out.tail_logp, out.sampled_logp)
    else:
        raise ValueError(f"unknown transport {form!r}")
    return out


def bytes_per_token(form: str, vocab: int, hidden: int, k: int = 128) -> int:
    """Wire bytes per completion token of each form (fp32 values, int32 ids)."""
    return {"logits": 4 * vocab, "hidden": 4 * hidden, "topk": 8 * k + 8}[form]
