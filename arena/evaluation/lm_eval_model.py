"""The lm-eval model wrapper and the quieting of lm-eval's output around an evaluation.

`HFLM(pretrained=<model object>)` wraps the in-memory model as it is (also a peft-wrapped one
mid-training; nothing is written to disk). The subclass here only counts tokens and seconds; the
patches of lm-eval's module-level `tqdm` and the root-logger filter hide per-task progress bars and
IFEval's language-detection warnings, and are undone on exit.
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
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.counters = {"gen_tokens": 0, "gen_prompt_tokens": 0, "gen_seconds": 0.0,
                             "ll_tokens": 0, "ll_seconds": 0.0, "gen_calls": 0, "ll_calls": 0}

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

    _HFLM_CLASS = CountingHFLM
    return CountingHFLM


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
