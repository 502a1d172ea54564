"""The `native` engine: arena's Llama-family decoder (`arena/generation/native.py`) under
continuous batching (`arena/generation/scheduler.py`). Built from the model's current weights."""

from __future__ import annotations

import torch

from arena.generation.engine import ENGINES, EngineOptions, stop_token_ids
from arena.generation.native import NativeDecoder
from arena.generation.requests import Completion, GenRequest, Sampling, StopChecker
from arena.generation.scheduler import Scheduler, SchedulerOptions


class NativeEngine:
    name = "native"

    def __init__(self, model, tokenizer, device, precision: str, options: EngineOptions):
        self.tokenizer = tokenizer
        self.decoder = NativeDecoder(model, precision=precision, device=device, prepack=options.prepack)
        self.scheduler = Scheduler(self.decoder, SchedulerOptions(max_slots=options.max_slots, cache_mb=options.cache_mb))
        self.stop_ids = stop_token_ids(tokenizer, model)

    def generate(self, requests: list[GenRequest], sampling: Sampling, seed: int) -> list[Completion]:
        if not requests:
            return []
        stop = StopChecker(self.tokenizer, self.stop_ids, tuple(sorted({s for r in requests for s in r.stop_strings})))
        gen = torch.Generator(device=self.decoder.device)
        gen.manual_seed(int(seed))
        return self.scheduler.run(requests, sampling, stop, gen)


@ENGINES.register("native")
def native_engine(model, tokenizer, *, device, precision, options, field="engine"):
    return NativeEngine(model, tokenizer, device, precision, options)  # support checked by engine.check_available
