"""The lm-eval model wrapper and the quieting of lm-eval's output around an evaluation.

`HFLM(pretrained=<model object>)` wraps the in-memory model as it is (also a peft-wrapped one
mid-training; nothing is written to disk). The subclass here counts tokens and seconds and, unless
the engine is `hf`, answers lm-eval's `generate_until` requests with an arena generation engine
(`arena/generation/engine.py`): the prompts, their encoding and left truncation, the stop sequences
(`until` plus the EOS text), the generation cap and the post-processing of the text are lm-eval's
own calls, so only the decoding changes hands. Loglikelihood requests stay with HFLM. The patches of
lm-eval's module-level `tqdm` and the root-logger filter hide per-task progress bars and IFEval's
language-detection warnings, and are undone on exit.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

_HFLM_CLASS = None


def counting_hflm_class():
    """HFLM that also counts tokens and time spent in generation and in loglikelihood forwards."""
    global _HFLM_CLASS
    if _HFLM_CLASS is not None:
        return _HFLM_CLASS
    from lm_eval.models.huggingface import HFLM

    class CountingHFLM(HFLM):
        def __init__(self, *args, engine: str = "hf", engine_precision: str = "fp32", seed: int = 0, **kwargs):
            super().__init__(*args, **kwargs)
            self.engine_name, self.engine_precision, self.gen_seed = engine, engine_precision, seed
            self._engine = None
            self.counters = {"gen_tokens": 0, "gen_prompt_tokens": 0, "gen_seconds": 0.0,
                             "ll_tokens": 0, "ll_seconds": 0.0, "gen_calls": 0, "ll_calls": 0,
                             "gen_prefill_seconds": 0.0, "gen_decode_seconds": 0.0, "gen_decode_steps": 0}

        def _model_call(self, inps, attn_mask=None, labels=None):
            t0 = time.perf_counter()
            out = super()._model_call(inps, attn_mask, labels)
            self.counters["ll_seconds"] += time.perf_counter() - t0
            self.counters["ll_tokens"] += int(inps.numel())  # includes right padding of the batch
            self.counters["ll_calls"] += 1
            return out

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            t0 = time.perf_counter()
            mask = generation_kwargs.get("attention_mask")
            out = super()._model_generate(context, max_length, stop, **generation_kwargs)
            self.counters["gen_seconds"] += time.perf_counter() - t0
            new = out[:, context.shape[1]:]
            pad = self.tokenizer.pad_token_id
            self.counters["gen_tokens"] += int((new != pad).sum()) if pad is not None else int(new.numel())
            self.counters["gen_prompt_tokens"] += int(mask.sum()) if mask is not None else int(context.numel())
            self.counters["gen_calls"] += 1
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            if self.engine_name == "hf":
                return super().generate_until(requests, disable_tqdm)
            return engine_generate_until(self, requests)

        def engine(self):
            if self._engine is None:
                from arena.generation.engine import build_engine

                self._engine = build_engine(self.engine_name, self.model, self.tokenizer, device=self.device,
                                            precision=self.engine_precision, field="eval.engine")
            return self._engine

    _HFLM_CLASS = CountingHFLM
    return CountingHFLM


def engine_generate_until(lm, requests) -> list[str]:
    """HFLM.generate_until's steps with the decoding done by `lm.engine()` over all requests at once
    (one call per sampling setting, every task's requests together), so the engine batches across
    documents and tasks."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

    from arena.generation.requests import GenRequest, Sampling

    eos = lm.tok_decode(lm.eot_token_id, skip_special_tokens=False)
    # One engine call per sampling setting, not per task: each request carries its own cap and stop
    # strings, so IFEval, BBH, NQ and the target share one continuous batch (per-task calls of 8-54
    # documents decoded a few rows per step, where a step costs the same up to ~64 rows).
    prepared: list[tuple[int, Any, list[str], int]] = []
    groups: dict[Any, list[int]] = {}
    for i, req in enumerate(requests):
        kwargs = normalize_gen_kwargs(req.args[1], lm.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen = kwargs.pop("max_gen_toks")
        sampling = Sampling(temperature=float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0,
                            top_p=float(kwargs.get("top_p", 1.0) or 1.0))
        prepared.append((i, sampling, until, max_gen))
        groups.setdefault(sampling, []).append(i)
    out: list[str | None] = [None] * len(requests)
    think = lm.think_end_token if isinstance(lm.think_end_token, str) else None
    for sampling, idx in groups.items():
        gen_reqs = []
        for i in idx:
            _, _, until, max_gen = prepared[i]
            enc, att = lm.tok_batch_encode([requests[i].args[0]], left_truncate_len=lm.max_length - max_gen,
                                           truncation=lm.truncation)
            gen_reqs.append(GenRequest(enc[0][att[0].bool()].tolist(), max_gen, tuple(until)))
        t0 = time.perf_counter()
        done = lm.engine().generate(gen_reqs, sampling, seed=lm.gen_seed)
        lm.counters["gen_seconds"] += time.perf_counter() - t0
        lm.counters["gen_calls"] += 1
        st = getattr(getattr(lm.engine(), "scheduler", None), "stats", None)  # the native engine's split
        if st:
            lm.counters["gen_prefill_seconds"] += st["prefill_s"]
            lm.counters["gen_decode_seconds"] += st["decode_s"]
            lm.counters["gen_decode_steps"] += st["steps"]
        for i, r, c in zip(idx, gen_reqs, done):
            lm.counters["gen_tokens"] += len(c.token_ids)
            lm.counters["gen_prompt_tokens"] += len(r.prompt_ids)
            toks = c.token_ids
            if isinstance(lm.think_end_token, int) and lm.think_end_token in toks:  # as HFLM: keep what follows the last one
                toks = toks[len(toks) - toks[::-1].index(lm.think_end_token):]
            text = lm.tok_decode(toks)
            if isinstance(lm.think_end_token, int):
                text = text.lstrip()
            s = postprocess_generated_text(generation=text, stop=prepared[i][2], think_end_token=think)
            out[i] = s
            lm.cache_hook.add_partial("generate_until", requests[i].args, s)
    return out  # type: ignore[return-value]


def mixed_precision(precision: str, device) -> Any | None:
    import torch

    from arena.training.device import resolve_precision

    p = resolve_precision(precision, device)
    return torch.bfloat16 if p in ("bf16-autocast", "bf16") else None


def quiet_lm_eval(verbose: bool = False) -> None:
    level = logging.INFO if verbose else logging.ERROR
    for name in ("lm-eval", "lm_eval", "datasets"):
        logging.getLogger(name).setLevel(level)
    try:
        import datasets

        if not verbose:
            datasets.disable_progress_bars()
    except ImportError:
        pass


def _drop_langdetect(record: logging.LogRecord) -> bool:
    """IFEval's language checker logs every undetectable reply (a number string) on the root logger."""
    return not str(record.msg).startswith("Unable to detect language")


def _silent(orig, *args, **kwargs):
    kwargs["disable"] = True  # callers pass disable=... themselves, so a partial default would lose
    return orig(*args, **kwargs)


class QuietProgress:
    """lm-eval draws a progress bar per task while building prompts (27 for BBH): always hidden.
    The request bars ("Running generate_until requests") are kept when `show` is true."""

    def __init__(self, show: bool, verbose: bool = False):
        self.show = show
        self.verbose = verbose
        self.saved: list = []

    def __enter__(self):
        import lm_eval.api.task as task_mod

        if not self.verbose:
            logging.getLogger().addFilter(_drop_langdetect)
        import lm_eval.models.huggingface as hf_mod

        mods = [task_mod] + ([] if self.show else [hf_mod])
        for m in mods:
            orig = m.tqdm
            self.saved.append((m, orig))
            m.tqdm = functools.partial(_silent, orig)
        return self

    def __exit__(self, *exc):
        for m, orig in self.saved:
            m.tqdm = orig
        logging.getLogger().removeFilter(_drop_langdetect)
        return False
