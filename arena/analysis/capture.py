"""Per-token activations of chosen Linear modules on prompts (the base side is cached: capture_cache.py).

What is captured (docs/design.md "Diagnostics"): forward passes on prompts only — by default the raw
prompt text as the tokenizer encodes it (`prompt_format: raw`, as PEFT-Arena's released code
computes its geometry), or with the chat template and the assistant header (`prompt_format: chat`;
SmolLM2's template then prepends the same ~24-token system header to every prompt, 43% of the
general rows at the quickstart's caps, which pulls CSD's general/target ratio toward 1 and makes
the geometry weigh identical tokens) — padding removed through the attention mask, at most
`max_prompts` prompts and `max_tokens` tokens per distribution, each prompt cut at `max_length`
tokens (the last prompt is cut to fit the token cap: causal attention makes a truncated prompt's
activations identical to the full prompt's first tokens). Forward in bf16 autocast by default,
stored fp32. For each module: its per-token **inputs** (CSD needs the base model's h) and **outputs**
(geometry compares base and tuned outputs on the same tokens), rows in prompt order.

Cost control: the forward stops (an exception from the last hook) as soon as every chosen module
has fired, so later layers and the 49k-wide LM head are never computed; modules fed the very same
tensor (q/k/v_proj read one normalised hidden state) share one stored input.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from arena.analysis.module_select import compact_names, linear_module_names
from arena.errors import ArenaError, ConfigError
from arena.training.device import autocast
from arena.training.packing import chat_texts

SHARED_PREFIX = ("keep", "once")
PROMPT_FORMATS = ("raw", "chat")


@dataclass
class Caps:
    """Per-distribution limits. `shared_prefix`: the chat template's system header (and any other
    token prefix common to every prompt) gives identical rows at identical positions in every prompt
    — 27 of SmolLM2's 38 tokens for a short arith prompt. "keep" stores them for every prompt (as a
    plain capture does); "once" runs them through the model but stores them for the first prompt only,
    so the token budget goes to tokens that differ."""

    max_prompts: int = 300
    max_tokens: int = 4096
    max_length: int = 1024
    shared_prefix: str = "keep"
    prompt_format: str = "raw"  # raw: the prompt's own tokens; chat: the chat template around it

    def __post_init__(self):
        for name in ("max_prompts", "max_tokens", "max_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"diagnostics.{name}", v, "must be a positive integer")
        if self.shared_prefix not in SHARED_PREFIX:
            raise ConfigError("diagnostics.shared_prefix", self.shared_prefix, f"allowed: {', '.join(SHARED_PREFIX)}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError("diagnostics.prompt_format", self.prompt_format, f"allowed: {', '.join(PROMPT_FORMATS)}")

    def to_dict(self) -> dict:
        return {"max_prompts": self.max_prompts, "max_tokens": self.max_tokens, "max_length": self.max_length,
                "shared_prefix": self.shared_prefix, "prompt_format": self.prompt_format}


@dataclass
class Encoded:
    """Prompt token ids to run, and how many leading tokens of each are run but not stored."""

    ids: list[list[int]]
    skip: list[int]
    common_prefix: int = 0  # tokens every prompt starts with (reported whatever the mode)

    @property
    def kept(self) -> list[int]:
        return [len(s) - k for s, k in zip(self.ids, self.skip)]

    @classmethod
    def of(cls, ids) -> Encoded:
        return ids if isinstance(ids, Encoded) else cls([list(s) for s in ids], [0] * len(ids))


@dataclass
class Capture:
    """Activations of `modules` on one prompt set: (tokens × features) fp32 CPU tensors, prompt order."""

    modules: list[str]
    lengths: list[int]  # real (unpadded) tokens per prompt, in order
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    input_alias: dict[str, str] = field(default_factory=dict)  # module -> module whose stored input it shares
    seconds: float = 0.0
    cached: bool = False
    key: dict | None = None

    @property
    def n_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def n_prompts(self) -> int:
        return len(self.lengths)


# -- tokenisation ------------------------------------------------------------------------------------

def _common_prefix(seqs: list[list[int]]) -> int:
    if len(seqs) < 2:
        return 0
    n = min(len(x) for x in seqs)
    first = seqs[0]
    for i in range(n):
        if any(x[i] != first[i] for x in seqs[1:]):
            return i
    return n


def capture_token_ids(tokenizer, prompts: Sequence[str], caps: Caps) -> Encoded:
    """Prompt token ids (raw, or chat-formatted) under the caps: at most max_prompts prompts of at most
    max_length tokens, and at most max_tokens stored tokens (the last prompt is cut to fit)."""
    full = []
    for p in list(prompts)[: caps.max_prompts]:
        if caps.prompt_format == "chat":
            ids = tokenizer(chat_texts(tokenizer, p)[0], add_special_tokens=False)["input_ids"]
        else:  # the tokenizer's own special tokens (a BOS where the model has one), no template
            ids = tokenizer(p)["input_ids"]
        ids = ids[: caps.max_length]
        if ids:
            full.append(ids)
    prefix = _common_prefix(full)
    out, skip, total = [], [], 0
    for i, ids in enumerate(full):
        room = caps.max_tokens - total
        if room <= 0:
            break
        k = prefix if caps.shared_prefix == "once" and i > 0 else 0
        take = min(len(ids) - k, room)
        if take > 0:
            out.append(ids[: k + take])
            skip.append(k)
            total += take
    if not out:
        raise ArenaError("no prompt tokens to capture (empty prompt list?)")
    return Encoded(out, skip, prefix)


def _batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Prompt indices grouped by similar length (longest first) so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[cur[0]] > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


class _Stop(Exception):
    """Raised by the last hook of a forward: nothing after the captured modules is needed."""


# -- capture --------------------------------------------------------------------------------------

@torch.no_grad()
def capture_activations(model, token_ids: Encoded | list[list[int]], modules: Sequence[str], *, pad_id: int = 0,
                        device=None, precision: str = "bf16-autocast", inputs: bool = True, outputs: bool = True,
                        batch_tokens: int = 4096) -> Capture:
    """Run `model` on `token_ids` (right-padded batches) and keep the chosen modules' activations.

    Rows are the real tokens only (attention mask = 1) minus each prompt's `skip` leading tokens,
    prompts in the given order; fp32 on CPU.
    """
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    lookup = dict(model.named_modules())
    missing = [m for m in modules if not isinstance(lookup.get(m), torch.nn.Linear)]
    if missing:
        raise ArenaError(f"module {missing[0]!r} is not a Linear module of this model; available: "
                         f"{compact_names(linear_module_names(model))}")
    enc = Encoded.of(token_ids)
    token_ids, skip = enc.ids, enc.skip
    lengths = [len(s) for s in token_ids]
    offsets = [0]
    for n in enc.kept:
        offsets.append(offsets[-1] + n)
    n_tok = offsets[-1]
    store_in: dict[str, torch.Tensor] = {}
    store_out: dict[str, torch.Tensor] = {}
    alias: dict[str, str] = {}
    seen: dict[str, tuple] = {}  # this batch: module -> (input tensor, output tensor)

    def hook_for(name):
        def hook(mod, args, out):
            if name in seen:
                raise ArenaError(f"module {name} ran twice in one forward; capture supports modules used once")
            seen[name] = (args[0], out)
            if len(seen) == len(modules):
                raise _Stop

        return hook

    handles = [lookup[m].register_forward_hook(hook_for(m)) for m in modules]
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(lengths, batch_tokens):
            L = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
            att = torch.zeros((len(batch), L), dtype=torch.long)
            for j, i in enumerate(batch):
                ids[j, : lengths[i]] = torch.tensor(token_ids[i])
                att[j, : lengths[i]] = 1
            seen.clear()
            try:
                with autocast(device, precision):
                    model(input_ids=ids.to(device), attention_mask=att.to(device), use_cache=False)
            except _Stop:
                pass
            if len(seen) != len(modules):
                lost = [m for m in modules if m not in seen]
                raise ArenaError(f"modules {lost[:3]} never ran in the forward pass")
            if not alias:  # which modules share their input tensor (decided on the first batch)
                firsts: list[tuple[str, torch.Tensor]] = []
                for m in modules:
                    hit = next((f for f, t in firsts if t is seen[m][0]), None)
                    alias[m] = hit or m
                    if hit is None:
                        firsts.append((m, seen[m][0]))
            for m in modules:
                x, y = seen[m]
                if inputs and alias[m] == m:
                    _scatter(store_in, m, x, batch, skip, lengths, offsets, n_tok)
                elif inputs and seen[alias[m]][0] is not x:
                    raise ArenaError(f"module {m} stopped sharing its input with {alias[m]} between batches")
                if outputs:
                    _scatter(store_out, m, y, batch, skip, lengths, offsets, n_tok)
            seen.clear()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    cap = Capture(modules=list(modules), lengths=enc.kept, outputs=store_out, seconds=time.perf_counter() - t0)
    if inputs:
        cap.input_alias = {m: a for m, a in alias.items() if a != m}
        cap.inputs = {m: store_in[alias[m]] for m in modules}
    return cap


def _scatter(store, name, act, batch, skip, lengths, offsets, n_tok) -> None:
    act = act.detach()
    if name not in store:
        store[name] = torch.empty((n_tok, act.shape[-1]), dtype=torch.float32)
    dst = store[name]
    for j, i in enumerate(batch):
        dst[offsets[i] : offsets[i + 1]] = act[j, skip[i] : lengths[i]].float().cpu()


def check_finite(cap: Capture, what: str) -> None:
    """ArenaError naming the module and tensor if a capture holds NaN/inf (a diverged model)."""
    for kind, d in (("inputs", cap.inputs), ("outputs", cap.outputs)):
        for m, t in d.items():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                raise ArenaError(f"{what}: {int(bad.sum())} non-finite values (NaN/inf) in the {kind} of {m} "
                                 f"({tuple(t.shape)}); the model's weights or the forward pass are broken")


def tokenizer_pad_id(tokenizer) -> int:
    pid = tokenizer.pad_token_id
    return int(pid) if pid is not None else int(tokenizer.eos_token_id or 0)
