"""What every generation engine takes and returns, and the two pieces all of them share: the
sampling step and the stop rules.

A request is token ids (already chat-templated and tokenized by the caller, so every engine sees the
same prompt), a cap on new tokens and optional stop strings (lm-eval's `until`). A completion is the
new token ids up to and including the token that ended it (an EOS id, or the token that completed a
stop string), the behaviour log-probs of those tokens, and why it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from arena.errors import ConfigError


@dataclass
class GenRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.prompt_ids:
            raise ValueError("a generation request needs a non-empty prompt")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (a stop token), "stop_string", or "length" (cut at max_new_tokens)

    @property
    def finished(self) -> bool:
        return self.finish_reason != "length"


@dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy (log-probs then of the untempered distribution); top_p in (0, 1]."""

    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError("temperature", self.temperature, "must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", self.top_p, "must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def inverse_cdf_draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of nonnegative weights `probs` [B, V], drawn with P(i) = probs[i] / Σ probs:
    i = min{i : C_i > u}, C = cumsum(probs) in float64, u ~ Uniform[0, C_V) (one draw per row).

    Exactly categorical, and an index whose weight is 0 is never drawn (C_i > u ≥ C_{i-1} means
    probs[i] > 0). Why not torch.multinomial: on the CPU it draws an exponential variate for every
    vocabulary entry (32 rows × 49,152 ids: ~35 ms, a third of a rollout decode step on 2 cores),
    this draws B uniforms over one cumulative sum (~1.7 ms). float64 keeps each id's share exact to
    ~1e-16 where an fp32 cumsum over 49k ids would shift tail ids by up to ~3e-8 each.
    """
    cdf = probs.cumsum(-1, dtype=torch.float64)
    total = cdf[:, -1:]
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total after rounding
    return torch.searchsorted(cdf, u, right=True)


def sample_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None,
                  draw: str = "multinomial") -> tuple[torch.Tensor, torch.Tensor]:
    """One sampling step from [B, V] logits: (tokens [B], log softmax(z/T)[token] [B]).

    Log-probs are those of the temperature-scaled distribution, which is what the RL losses
    recompute with gradient; top-p truncation changes what is sampled, not this formula (as TRL and
    verl do), so an on-policy ratio is exactly 1 up to numerics.

    `draw`: "multinomial" (torch.multinomial, the stream `model.generate` consumes: the hf engine
    keeps it so its samples equal generate's) or "inverse_cdf" (`inverse_cdf_draw`, the same law,
    ~20x cheaper; the native engine's).
    """
    if draw not in ("multinomial", "inverse_cdf"):
        raise ValueError(f"draw must be 'multinomial' or 'inverse_cdf', got {draw!r}")

    def one(p: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(p, 1, generator=generator) if draw == "multinomial" else inverse_cdf_draw(p, generator)

    logits = logits.float()
    if sampling.greedy:  # z[tok] - logsumexp(z): the full log-softmax is never written (B x V floats)
        tok = logits.argmax(dim=-1, keepdim=True)
        return tok.squeeze(-1), (logits.gather(-1, tok) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(-1)
    logp = torch.log_softmax(logits / sampling.temperature, dim=-1)
    probs = logp.exp()
    if sampling.top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        drop = sp.cumsum(-1) - sp >= sampling.top_p  # keep the smallest prefix reaching top_p (never empty)
        tok = si.gather(-1, one(sp.masked_fill(drop, 0.0)))
    else:
        tok = one(probs)
    return tok.squeeze(-1), logp.gather(-1, tok).squeeze(-1)


_PIECES: dict[int, list[str]] = {}


def _pieces(tokenizer) -> list[str]:
    """Each vocabulary id decoded alone (cached per tokenizer object)."""
    key = id(tokenizer)
    if key not in _PIECES:
        _PIECES[key] = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    return _PIECES[key]


@dataclass
class StopChecker:
    """Stop ids (EOS) end a completion at once; a stop string ends it at the token that completes
    the string in the decoded text (as lm-eval's HF stopping criterion sees it: special tokens kept).

    Decoding every row every step would cost more than the step on a CPU, so a row is decoded only
    when its new token's own text contains the last character of some stop string (or is a partial
    UTF-8 piece): a string can only be completed by a token that supplies its last character.
    """

    tokenizer: object
    stop_ids: list[int]
    stop_strings: tuple[str, ...] = ()
    _stop_ids: torch.Tensor = field(init=False, repr=False)
    _may_end: torch.Tensor | None = field(init=False, repr=False)

    def __post_init__(self):
        self._stop_ids = torch.tensor(sorted(set(self.stop_ids)), dtype=torch.long)
        strings = [s for s in self.stop_strings if s]
        self._may_end = None
        if strings:
            finals = {s[-1] for s in strings}
            pieces = _pieces(self.tokenizer)
            self._may_end = torch.tensor([("\ufffd" in p) or any(c in p for c in finals) for p in pieces], dtype=torch.bool)
            self._window = 4 * max(len(s) for s in strings) + 2

    def is_stop_id(self, tokens: torch.Tensor) -> list[bool]:
        return torch.isin(tokens, self._stop_ids).tolist()

    def may_end_string(self, tokens: torch.Tensor) -> list[bool]:
        if self._may_end is None:
            return [False] * len(tokens)
        inside = tokens < len(self._may_end)
        return (self._may_end[tokens.clamp(max=len(self._may_end) - 1)] & inside).tolist()

    def hits_string(self, token_ids: list[int], strings: tuple[str, ...]) -> bool:
        if not strings:
            return False
        # A stop string of c characters spans at most 4c byte-level tokens: decode that tail only.
        text = self.tokenizer.decode(token_ids[-self._window:], skip_special_tokens=False)
        return any(s and s in text for s in strings)
