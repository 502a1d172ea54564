"""A teacher in its own process or Ray actor, answering token sequences with transported scores.

The server loads the teacher once (any reference `load_teacher` accepts: a model or an arena run
folder), and `score(batch, form, k, temperature)` runs it over a micro-batch's right-padded rows
and returns the completion positions' `TeacherScores` (arena/services/transport.py). The client,
`RemoteTeacher`, stands where the in-process teacher model stood (`ctx.extras['teacher']`); the
objectives call `arena.objectives.teacher.teacher_scores`, which accepts either. The tokenizer is
checked in the trainer before any service starts, so a teacher with another vocabulary loads no
weights anywhere. A dead or silent teacher is restarted (it holds no state) up to
services.max_restarts times; then the run fails with the reason.
"""

from __future__ import annotations

import torch

from arena.errors import TrainingFailed
from arena.services.channel import ServiceDied, ServiceError, open_channel
from arena.services.transport import TeacherScores, pack

HANDLER = "arena.services.teacher_service:TeacherServer"


class TeacherServer:
    def __init__(self, ref: str, device: str, precision: str):
        from arena.objectives.teacher import load_teacher

        self.device, self.precision = torch.device(device), precision
        self.model, _, self.info = load_teacher(ref, self.device)

    def describe(self) -> dict:
        return self.info

    def head(self) -> torch.Tensor:
        """The output head's weight [V, d] (hidden transport recomputes logits with it)."""
        from arena.models.loader import unwrap_peft

        return unwrap_peft(self.model).get_output_embeddings().weight.detach().cpu().clone()

    @torch.no_grad()
    def score(self, batch: dict, form: str, k: int, temperature: float) -> TeacherScores:
        from arena.objectives.losses import label_hidden, label_logits
        from arena.training.device import autocast

        ids, labels = batch["input_ids"].to(self.device), batch["labels"].to(self.device)
        with autocast(self.device, self.precision):
            if form == "hidden":
                hidden, targets = label_hidden(self.model, ids, labels)
                return pack(form, None, hidden, targets, k, temperature)
            logits, targets = label_logits(self.model, ids, labels)
        return pack(form, logits.float(), None, targets, k, temperature)


class RemoteTeacher:
    """The trainer's handle on a teacher service (what `teacher_scores` dispatches on)."""

    def __init__(self, ref: str, services, device, precision: str, threads: int = 0, log=print):
        self.ref, self.services, self.log = ref, services, log
        self.form, self.k = services.teacher.transport, services.teacher.top_k
        self.device, self.precision = torch.device(device), precision
        self.threads = services.teacher.threads or threads
        self.restarts, self.wire_bytes, self.tokens = 0, 0, 0
        self._head = None
        self.channel = self._open()
        self.info = {**self._call("describe"), "service": services.teacher.mode, "transport": self.form}

    def _open(self):
        t = self.services.teacher
        return open_channel(t.mode, HANDLER, {"ref": self.ref, "device": str(self.device), "precision": self.precision},
                            threads=self.threads, cpus=t.cpus, timeout_s=self.services.timeout_s,
                            name=f"teacher service ({self.ref})", ray_address=self.services.ray_address)

    def _call(self, method: str, *args):
        while True:
            try:
                return self.channel.result(self.channel.submit(method, *args))
            except ServiceError as e:
                raise TrainingFailed(f"teacher service failed: {e}") from None
            except ServiceDied as e:
                self.restarts += 1
                if self.restarts > self.services.max_restarts:
                    raise TrainingFailed(f"teacher service lost: {e}; restarted {self.services.max_restarts} "
                                         "time(s) (services.max_restarts), giving up") from None
                self.log(f"teacher service: {e}; restarting ({self.restarts}/{self.services.max_restarts})")
                self.channel.close()
                self.channel = self._open()

    def head_weight(self) -> torch.Tensor:
        if self._head is None:
            self._head = self._call("head").to(self.device)
        return self._head

    def score(self, batch: dict, temperature: float = 1.0) -> TeacherScores:
        sub = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
        out = self._call("score", sub, self.form, self.k, temperature)
        self.wire_bytes += out.wire_bytes
        self.tokens += out.n_tokens
        return out

    def stats(self) -> dict:
        return {"mode": self.services.teacher.mode, "transport": self.form, "restarts": self.restarts,
                "tokens": self.tokens, "bytes_per_token": round(self.wire_bytes / max(1, self.tokens), 1)}

    def close(self) -> None:
        self.channel.close()
