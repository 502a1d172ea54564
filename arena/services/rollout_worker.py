"""Asynchronous rollouts with bounded staleness: a worker samples while the trainer trains.

The schedule is fixed, not timing-dependent: step s trains on rollouts sampled by the weights after
step v(s) = max(start, s − k), k = `services.rollout.max_staleness`. So the run is reproducible
(same seed, same samples, whatever the machines' speeds), a restarted worker redraws exactly what
the dead one would have, and k = 0 is the synchronous loop: every sample drawn from the weights the
step starts with, by the same engine from the same seeds (bitwise the same on CPU with the same
thread count). With k ≥ 1, sampling step s + k overlaps training step s (the worker runs at most
k + 1 steps ahead). The staleness is corrected where the objective has importance ratios against
the recorded behaviour log-probs (GRPO's and the self-distillation objectives' clipped ratio, MOPD's
masked IS weights, OPD's sampled-token estimator): the behaviour log-probs are the worker's.

Only the trainable tensors travel (`Method.trainable_state_dict`, as in a checkpoint: an adapter's
few MB, not the model): the worker rebuilds the same wrapped model from the run config and loads
each version into it. The trainer keeps the versions a pending request may still need, so after a
death it replays them into a fresh worker; `services.max_restarts` deaths fail the run with the
reason (the sweep records it and goes on).

A run resumed from a checkpoint at step r samples steps r .. r + k − 1 from the resumed weights
(it has no older ones), so with k ≥ 1 those steps differ from the uninterrupted run's.
"""

from __future__ import annotations

import time

import torch

from arena.errors import TrainingFailed
from arena.services.channel import ServiceDied, ServiceError, open_channel

HANDLER = "arena.services.rollout_worker:RolloutWorker"


def pack_weights(state: dict) -> bytes:
    """Trainable tensors -> safetensors bytes (bit-exact; one buffer, whatever the tensor count)."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()})


class RolloutWorker:
    """The service side: the run's wrapped model, its weights at one version, and `sample`."""

    def __init__(self, run_config: dict, device: str, precision: str):
        from arena.components import build_components
        from arena.config import run_config_from_dict
        from arena.runs import load_and_wrap

        cfg = run_config_from_dict(run_config)
        self.method, _, _ = build_components(cfg, check_data=False)
        self.device, self.precision = torch.device(device), precision
        self.model, self.tokenizer, _ = load_and_wrap(cfg, self.method, self.device)
        self.model.eval()
        self.version = None

    def load_weights(self, version: int, blob: bytes) -> int:
        from safetensors.torch import load

        self.method.load_trainable_state_dict(self.model, load(blob))
        self.version = version
        return version

    def sample(self, step: int, version: int, jobs: list) -> list:
        from arena.rollouts import sample

        if version != self.version:  # the schedule guarantees it; a mismatch is a bug, not noise
            raise RuntimeError(f"step {step} needs weights v{version}, the worker holds v{self.version}")
        out = []
        for job in jobs:
            ro = sample(self.model, self.tokenizer, job.prompt_ids, job.params, job.seed, self.device,
                        self.precision, job.backend)
            ro.meta.update(policy_version=version, staleness=step - version)
            out.append((job.m, ro))
        return out


class AsyncRollouts:
    """The trainer's side, installed as ctx.extras['rollout_source'] (see arena.rollouts.run_jobs)."""

    def __init__(self, run_config: dict, services, model, method, total_steps: int, device, precision: str,
                 threads: int = 0, log=print):
        self.cfg, self.services, self.model, self.method = run_config, services, model, method
        self.k, self.total = services.rollout.max_staleness, total_steps
        self.device, self.precision, self.log = str(device), precision, log
        self.threads = services.rollout.threads or threads
        self.start = None  # the first step asked for (a resumed run's start)
        self.pushed = None  # newest weights version sent
        self.planned = None  # newest step whose jobs were sent
        self.ops: list[tuple] = []  # ("weights", v, blob) / ("sample", t, v, jobs) a restart replays
        self.tickets: dict[int, int] = {}  # step -> ticket of its pending sample request
        self.restarts, self.wait_s = 0, 0.0
        self.channel = self._open()

    def _open(self):
        r = self.services.rollout
        return open_channel(r.mode, HANDLER, {"run_config": self.cfg, "device": self.device, "precision": self.precision},
                            threads=self.threads, cpus=r.cpus, timeout_s=self.services.timeout_s,
                            name="rollout worker", ray_address=self.services.ray_address)

    def version_for(self, t: int) -> int:
        return max(self.start, t - self.k)

    def _send(self, op: tuple) -> None:
        if op[0] == "weights":
            self.channel.submit("load_weights", op[1], op[2])
        else:
            self.tickets[op[1]] = self.channel.submit("sample", op[1], op[2], op[3])

    def rollouts(self, step: int, plan) -> list:
        if self.start is None:
            self.start = step
        if self.pushed != step:  # the weights this step starts with: version `step`
            op = ("weights", step, pack_weights(self.method.trainable_state_dict(self.model)))
            self.ops.append(op)
            self._send(op)
            self.pushed = step
        first = step if self.planned is None else self.planned + 1
        for t in range(first, min(step + self.k, self.total - 1) + 1):  # every step whose weights exist now
            op = ("sample", t, self.version_for(t), plan(t))
            self.ops.append(op)
            self._send(op)
            self.planned = t
        t0 = time.perf_counter()
        out = self._result(step)
        self.wait_s += time.perf_counter() - t0
        self._prune(step)
        return out

    def _result(self, step: int) -> list:
        while True:
            try:
                return self.channel.result(self.tickets.pop(step))
            except ServiceError as e:
                raise TrainingFailed(f"rollout worker failed at step {step}: {e}") from None
            except ServiceDied as e:
                self._restart(step, e)

    def _restart(self, step: int, why: Exception) -> None:
        self.restarts += 1
        limit = self.services.max_restarts
        if self.restarts > limit:
            raise TrainingFailed(f"rollout worker lost at step {step}: {why}; restarted {limit} time(s) "
                                 "(services.max_restarts), giving up") from None
        self.log(f"rollout worker: {why}; restarting ({self.restarts}/{limit}) and replaying from step {step}")
        self.channel.close()
        self.channel = self._open()
        for op in self.ops:  # the weights and jobs still needed, in their order
            self._send(op)

    def _prune(self, done: int) -> None:
        """Forget what no pending request needs: ops before the last weights at or before the
        earliest pending step's version."""
        self.ops = [op for op in self.ops if not (op[0] == "sample" and op[1] <= done)]
        pending = [op[2] for op in self.ops if op[0] == "sample"]
        need = min(pending) if pending else self.pushed
        keep = max((i for i, op in enumerate(self.ops) if op[0] == "weights" and op[1] <= need), default=0)
        self.ops = self.ops[keep:]

    def stats(self) -> dict:
        return {"mode": self.services.rollout.mode, "max_staleness": self.k, "restarts": self.restarts,
                "wait_s": round(self.wait_s, 3), "threads": self.threads}

    def close(self) -> None:
        self.channel.close()
