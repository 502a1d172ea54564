"""The reference engines over transformers: `hf` (a batched sampling loop over the model's forward
with its KV cache) and `generate` (plain `model.generate`, the peer every benchmark compares with).

Both run requests in the given order in chunks of `max_batch` sequences, chunk c seeded with
derive_seed(seed, c), so the same requests and seed give the same completions. Per-request caps and
stop strings are applied after the chunk's loop: a completion is cut at the first token that ends
it, which is where an engine that stops per sequence would have stopped.
"""

from __future__ import annotations

import torch

from arena.generation.engine import ENGINES, EngineOptions, stop_token_ids
from arena.generation.requests import Completion, GenRequest, Sampling, StopChecker, sample_tokens
from arena.generation.seeds import derive_seed
from arena.models.loader import unwrap_peft
from arena.training.device import autocast


def left_pad(prompt_ids, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), P), pad_id, dtype=torch.long)
    att = torch.zeros((len(prompt_ids), P), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        att[i, P - len(p):] = 1
    return ids, att


def _cache_kwarg(model) -> str:
    """transformers 5.x calls the KV cache argument `cache`; 4.x called it `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(unwrap_peft(model).forward).parameters else "past_key_values"


@torch.no_grad()
def hf_loop(model, ids, att, sampling: Sampling, max_new: int, seed: int, stop_ids, pad_id: int, device, precision: str):
    """(tokens [B, T], alive [B, T] bool, logprobs [B, T]) of a left-padded batch."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp_min(0)
    B = ids.shape[0]
    stop = torch.tensor(stop_ids, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logps, alive = [], [], []
    cache_arg = _cache_kwarg(model)
    cache, cur, cur_pos = None, ids, pos
    for _ in range(max_new):
        with autocast(device, precision):
            out = model(input_ids=cur, attention_mask=att, position_ids=cur_pos, use_cache=True, logits_to_keep=1,
                        **({cache_arg: cache} if cache is not None else {}))
        cache = out.get("cache", None) if out.get("cache", None) is not None else out.get("past_key_values", None)
        tok, lp = sample_tokens(out.logits[:, -1, :], sampling, gen)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
        logps.append(torch.where(done, torch.zeros_like(lp), lp))
        alive.append(~done)
        done = done | torch.isin(tok, stop)
        if bool(done.all()):
            break
        att = torch.cat([att, torch.ones((B, 1), dtype=att.dtype, device=device)], dim=1)
        cur_pos = cur_pos[:, -1:] + 1
        cur = tok[:, None]
    return torch.stack(tokens, 1), torch.stack(alive, 1), torch.stack(logps, 1)


@torch.no_grad()
def generate_loop(model, ids, att, sampling: Sampling, max_new: int, seed: int, stop_ids, pad_id: int, device, precision: str):
    """`model.generate` with its raw logits turned into temperature-scaled log-probs."""
    ids, att = ids.to(device), att.to(device)
    kwargs = {} if sampling.greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with autocast(device, precision):
            out = model.generate(input_ids=ids, attention_mask=att, do_sample=not sampling.greedy, max_new_tokens=max_new,
                                 pad_token_id=pad_id, eos_token_id=list(stop_ids), output_logits=True,
                                 return_dict_in_generate=True, **kwargs)
    comp = out.sequences[:, ids.shape[1]:]
    logits = torch.stack(out.logits, 1)[:, : comp.shape[1]].float()
    logp_all = torch.log_softmax(logits if sampling.greedy else logits / sampling.temperature, dim=-1)
    logp = logp_all.gather(-1, comp.unsqueeze(-1)).squeeze(-1)
    is_stop = torch.isin(comp, torch.tensor(stop_ids, device=device))
    # Alive up to and including the first stop token: no stop strictly before t.
    before = torch.cat([torch.zeros_like(is_stop[:, :1]), is_stop[:, :-1]], dim=1).long().cumsum(1) > 0
    return comp, ~before, torch.where(~before, logp, torch.zeros_like(logp))


def cut(tokens: list[int], logps: list[float], request: GenRequest, stop: StopChecker, stop_ids: set[int]) -> Completion:
    """The completion of one request from its loop row: cut at a stop id, a stop string or the cap."""
    may = stop.may_end_string(torch.tensor(tokens, dtype=torch.long)) if tokens else []
    for j, t in enumerate(tokens[: request.max_new_tokens]):
        if t in stop_ids:
            return Completion(tokens[: j + 1], logps[: j + 1], "stop")
        if may[j] and stop.hits_string(tokens[: j + 1], request.stop_strings):
            return Completion(tokens[: j + 1], logps[: j + 1], "stop_string")
    n = min(len(tokens), request.max_new_tokens)
    return Completion(tokens[:n], logps[:n], "length")


class LoopEngine:
    def __init__(self, name, loop, model, tokenizer, device, precision, options: EngineOptions):
        self.name, self.loop, self.model, self.tokenizer = name, loop, model, tokenizer
        self.device, self.precision, self.max_batch = device, precision, options.max_batch
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    def generate(self, requests: list[GenRequest], sampling: Sampling, seed: int) -> list[Completion]:
        stop = StopChecker(self.tokenizer, self.stop_ids, tuple({s for r in requests for s in r.stop_strings}))
        ids_set = set(self.stop_ids)
        out: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for c, s in enumerate(range(0, len(requests), self.max_batch)):
                chunk = requests[s: s + self.max_batch]
                ids, att = left_pad([r.prompt_ids for r in chunk], self.pad_id)
                tok, alive, logp = self.loop(self.model, ids, att, sampling, max(r.max_new_tokens for r in chunk),
                                             derive_seed(seed, c), self.stop_ids, self.pad_id, self.device, self.precision)
                tok, alive, logp = tok.cpu(), alive.cpu(), logp.float().cpu()
                for j, r in enumerate(chunk):
                    n = int(alive[j].sum())
                    out.append(cut(tok[j, :n].tolist(), logp[j, :n].tolist(), r, stop, ids_set))
        finally:
            self.model.train(was_training)
        return out


@ENGINES.register("hf")
def hf_engine(model, tokenizer, *, device, precision, options, field="engine"):
    return LoopEngine("hf", hf_loop, model, tokenizer, device, precision, options)


@ENGINES.register("generate")
def generate_engine(model, tokenizer, *, device, precision, options, field="engine"):
    return LoopEngine("generate", generate_loop, model, tokenizer, device, precision, options)
