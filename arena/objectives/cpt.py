"""CPT: continued pre-training — next-token cross-entropy on every token of raw documents.

No chat template and no prompt mask: a document is its tokens (the tokenizer's own special tokens,
e.g. a BOS, then EOS appended) and every token after its first is a label. Documents longer than
`train.seq_len` are split into chunks (SFT never splits; CPT must, a document is not a turn), short
ones are packed whole with `arena.training.packing.pack` (best-fit bins, positions restarting per
document, so packed documents never attend to each other).

To limit forgetting, domain rows are mixed with rows of general text (`general`): a file, or
`base-samples` — documents sampled once, before training, from the starting model itself. `mix` is
the share of domain rows in the row stream, kept exactly over every window of slots (not only in
expectation), and every step's rows are a function of (seed, step), as in SFT: resume needs no data
state. "CPT then SFT" is a cpt run followed by an SFT run with `model.init_from` set to it
(docs/training.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from arena.components import OBJECTIVES
from arena.data.io import iter_jsonl
from arena.errors import ConfigError, DataError
from arena.generation.names import check_engine_name
from arena.generation.seeds import derive_seed
from arena.objectives.base import LossOutput, Objective, TrainContext
from arena.objectives.sft import packed_ce_sum
from arena.training.packing import PackedData, TokenizedExample, pack, padding_free_batch
from arena.training.varlen import cu_seq_lens, supports_packed_attention

TARGET = "target"  # documents: the target's own raw-text corpus (Target.cpt_documents)
BASE_SAMPLES = "base-samples"  # general: sampled from the starting model
SUFFIXES = (".txt", ".jsonl")
TEXT_FIELD = "text"
_DOMAIN, _GENERAL = 0, 1  # stream ids in the row-permutation seeds
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


# -- reading documents ---------------------------------------------------------------------------

def _check_suffix(field: str, spec: str, keyword: str) -> None:
    if Path(spec).suffix.lower() not in SUFFIXES:
        raise ConfigError(field, spec, "allowed: a .txt file (documents separated by a blank line), "
                          f"a .jsonl file (field {TEXT_FIELD!r}), or {keyword!r}")


def resolve_document_path(spec: str, data_dir: Optional[str], field: str) -> Path:
    """A document file: absolute as given; relative: inside the data folder first, then the cwd."""
    p = Path(spec).expanduser()
    tried = [p] if p.is_absolute() else ([Path(data_dir) / p] if data_dir else []) + [Path.cwd() / p]
    for cand in tried:
        if cand.is_file():
            return cand
    raise ConfigError(field, spec, f"file not found (looked for {', '.join(str(c) for c in tried)})")


def split_text_documents(text: str) -> list[str]:
    """A .txt file's documents: blocks separated by a blank line, stripped, empty blocks dropped."""
    return [d.strip() for d in _BLANK_LINE.split(text.replace("\r\n", "\n")) if d.strip()]


def read_documents(spec: str, data_dir: Optional[str], field: str) -> list[str]:
    """The documents of a .txt or .jsonl file (see the module docstring); bad input -> ArenaError naming `field`."""
    if Path(spec).suffix.lower() not in SUFFIXES:
        raise ConfigError(field, spec, f"allowed: a {' or '.join(SUFFIXES)} file")
    path = resolve_document_path(spec, data_dir, field)
    if path.suffix.lower() == ".txt":
        try:
            docs = split_text_documents(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{field}: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    else:
        docs = []
        try:
            for lineno, rec in iter_jsonl(path, required_fields=(TEXT_FIELD,)):
                if not isinstance(rec[TEXT_FIELD], str):
                    raise DataError(f"{path}: line {lineno}: field {TEXT_FIELD!r} must be a string, "
                                    f"got {type(rec[TEXT_FIELD]).__name__}")
                if rec[TEXT_FIELD].strip():
                    docs.append(rec[TEXT_FIELD].strip())
        except DataError as e:
            raise DataError(f"{field}: {e}") from None
    if not docs:
        raise DataError(f"{field}: {path} holds no documents (empty, or only blank "
                        f"{'blocks' if path.suffix.lower() == '.txt' else TEXT_FIELD + ' fields'})")
    return docs


def tokenize_documents(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of raw documents: the tokenizer's own special tokens (a BOS where it adds one),
    then EOS, so the model also learns where a document ends."""
    enc = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [list(ids) + ([eos] if eos is not None else []) for ids in enc]


def chunk_document(ids: list[int], seq_len: int) -> list[list[int]]:
    """Split a document into chunks of at most `seq_len` tokens overlapping by one token:

        chunk_k = ids[k(S−1) : k(S−1) + S],  k = 0, 1, …  (while a chunk adds a new token)

    The first token of a chunk carries no label (its positions restart at 0), and it is the last
    token of the previous chunk, which did carry one: every token after the document's first is
    a label exactly once, and each chunk keeps one token of left context.
    """
    if len(ids) <= seq_len:
        return [list(ids)]
    stride = seq_len - 1
    return [list(ids[s : s + seq_len]) for s in range(0, len(ids) - 1, stride)]


def pack_documents(docs: list[list[int]], seq_len: int, pad_id: int, seed: int) -> tuple[PackedData, int]:
    """(rows of chunked + packed documents, number of chunks); labels are the ids except each chunk's first."""
    chunks = [c for d in docs for c in chunk_document(d, seq_len) if len(c) >= 2]
    # n_prompt=0: `pack` leaves only the first token of each chunk unlabelled
    return pack([TokenizedExample(c, 0) for c in chunks], seq_len, pad_id, seed=seed), len(chunks)


# -- the mixed row stream ------------------------------------------------------------------------

def mix_fraction(mix: float) -> Fraction:
    """`mix` as an exact fraction p/q (denominator <= 1000), so slot counts are integer arithmetic."""
    return Fraction(mix).limit_denominator(1000)


def domain_slots_before(i: np.ndarray, mix: Fraction) -> np.ndarray:
    """c(i) = ⌊i·p/q⌋: domain rows among the first i slots of the stream. Slot i is a domain row
    iff c(i+1) > c(i), so any window of w consecutive slots holds ⌊w·mix⌋ or ⌈w·mix⌉ of them."""
    return (i * mix.numerator) // mix.denominator


def stream_rows(seed: int, start: int, n: int, mix: Fraction, n_domain: int, n_general: int) -> np.ndarray:
    """Rows of slots start..start+n−1 of the infinite stream, as indices into [domain rows; general rows].

    A domain slot takes the next item k = c(i) of the domain sub-stream, a general slot item
    k = i − c(i) of the general one; item k of a sub-stream of N rows is row perm_e[k mod N] of
    epoch e = ⌊k/N⌋, each (stream, epoch) with its own seeded permutation (SFT's stream, per origin).
    """
    i = np.arange(start, start + n, dtype=np.int64)
    c, c_next = domain_slots_before(i, mix), domain_slots_before(i + 1, mix)
    is_domain = c_next > c
    out = np.empty(n, dtype=np.int64)
    for stream, sel, k, N, offset in ((_DOMAIN, is_domain, c, n_domain, 0),
                                      (_GENERAL, ~is_domain, i - c, n_general, n_domain)):
        if not sel.any():
            continue
        ks = k[sel]
        rows = np.empty(len(ks), dtype=np.int64)
        for e in np.unique(ks // N):
            perm = np.random.default_rng([seed, stream, int(e)]).permutation(N)
            at = ks // N == e
            rows[at] = perm[ks[at] % N]
        out[sel] = rows + offset
    return out


def _concat(a: PackedData, b: Optional[PackedData]) -> PackedData:
    if b is None:
        return a
    parts = [torch.cat([getattr(a, k), getattr(b, k)]) for k in ("input_ids", "labels", "position_ids", "n_real", "n_label")]
    return PackedData(*parts, a.n_examples + b.n_examples, 0)


# -- general text sampled from the starting model ------------------------------------------------

def sample_base_documents(model, tokenizer, n: int, max_new_tokens: int, seed: int, device, precision: str,
                          backend: str = "auto") -> list[list[int]]:
    """`n` documents sampled (temperature 1, no top-p) from `model` starting at its BOS token
    (EOS where the tokenizer has none), each [start] + completion; completions under 2 tokens
    are dropped. The model must be the starting model: at prepare() every method's wrapped
    model computes the base function (tests/test_methods.py)."""
    from arena import rollouts as R

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ConfigError("objective.general", BASE_SAMPLES, "the tokenizer has neither a BOS nor an EOS token to start from")
    ro = R.sample(model, tokenizer, [[int(start)]], R.SamplingParams(1.0, 1.0, max_new_tokens, n), seed,
                  device, precision, backend)
    return [[int(start)] + c for c in ro.completion_lists() if len(c) >= 2]


# -- the objective -------------------------------------------------------------------------------

@OBJECTIVES.register("cpt")
class CPT(Objective):
    name = "cpt"
    description = "continued pre-training: next-token loss on every token of raw documents, mixed with general text"

    @dataclass
    class Options:
        documents: Optional[str] = None  # .txt / .jsonl file (data folder first, then cwd), or "target"
        general: Optional[str] = None  # .txt / .jsonl file, "base-samples", or null (domain only)
        general_docs: int = 256  # base-samples: documents sampled
        general_tokens: int = 128  # base-samples: new tokens per document at most
        mix: float = 0.2  # share of domain rows in the stream (ILP, arXiv 2604.10079: 0.2)
        backend: str = "auto"  # base-samples: generation engine (arena/generation/engine.py)

        def __post_init__(self):
            if not 0 < self.mix <= 1:
                raise ConfigError("mix", self.mix, "must be in (0, 1] (the share of domain-document rows)")
            for name in ("general_docs", "general_tokens"):
                if getattr(self, name) <= 0:
                    raise ConfigError(name, getattr(self, name), "must be a positive integer")
            check_engine_name(self.backend, "backend")

    @classmethod
    def validate_options(cls, o) -> None:
        """Cross-field rules (the defaults alone are not a runnable config: documents is required)."""
        if not o.documents:
            raise ConfigError("objective.documents", o.documents,
                              "required: a .txt or .jsonl file of raw documents, or 'target' (the target's corpus)")
        if o.documents != TARGET:
            _check_suffix("objective.documents", o.documents, TARGET)
        if o.general is None and o.mix != 1:
            raise ConfigError("objective.mix", o.mix, "must be 1.0 when objective.general is null "
                              f"(no general text to mix in); or set objective.general to a file or {BASE_SAMPLES!r}")
        if o.general is not None and o.general != BASE_SAMPLES:
            _check_suffix("objective.general", o.general, BASE_SAMPLES)

    def _domain_texts(self, ctx: TrainContext) -> list[str]:
        o = self.options
        if o.documents == TARGET:
            texts = list(ctx.target.cpt_documents())
            if not any(t.strip() for t in texts):
                raise DataError(f"objective.documents: target {ctx.target.name!r} gave no documents")
            return [t for t in texts if t.strip()]
        return read_documents(o.documents, getattr(ctx.target, "data_dir", None), "objective.documents")

    def prepare(self, ctx: TrainContext) -> dict:
        self.validate_options(self.options)  # also when built by hand, not through the config
        o, S, tok = self.options, ctx.train.seq_len, ctx.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        domain = tokenize_documents(tok, self._domain_texts(ctx))
        general = None
        if o.general == BASE_SAMPLES:
            general = sample_base_documents(ctx.model, tok, o.general_docs, o.general_tokens,
                                            derive_seed(ctx.seed, 0xC97), ctx.device, ctx.precision, o.backend)
            if not general:
                raise DataError(f"objective.general: all {o.general_docs} documents sampled from the starting model "
                                "ended at once; raise objective.general_tokens or give a file")
        elif o.general is not None:
            general = tokenize_documents(tok, read_documents(o.general, getattr(ctx.target, "data_dir", None),
                                                             "objective.general"))
        d_rows, d_chunks = pack_documents(domain, S, pad, seed=ctx.seed)
        g_rows, g_chunks = pack_documents(general, S, pad, seed=ctx.seed) if general else (None, 0)
        self.n_domain_rows, self.n_general_rows = d_rows.rows, (g_rows.rows if g_rows is not None else 0)
        self.data = _concat(d_rows, g_rows)
        self.mix = mix_fraction(o.mix) if general else Fraction(1)
        self.padding_free = ctx.train.packing == "padding_free" and supports_packed_attention(ctx.model)
        domain_tokens = int(d_rows.n_real.sum())
        general_tokens = int(g_rows.n_real.sum()) if g_rows is not None else 0
        return {
            "documents": len(domain),
            "general_documents": len(general) if general else 0,
            "general": o.general,
            "chunks": d_chunks,
            "general_chunks": g_chunks,
            "rows": self.data.rows,
            "domain_rows": self.n_domain_rows,
            "general_rows": self.n_general_rows,
            "epoch_tokens": domain_tokens + general_tokens,
            "domain_tokens": domain_tokens,
            "general_tokens": general_tokens,
            "mix": float(self.mix),
            "fill_ratio": round(self.data.fill_ratio(), 4),
            "layout": "padding_free" if self.padding_free else "rows",
        }

    def _row_indices(self, ctx: TrainContext, step: int, micro: int) -> np.ndarray:
        """Indices into self.data of micro-batch `micro` of step `step`; < n_domain_rows: a domain row."""
        B = ctx.train.batch_size
        start = (step * ctx.train.grad_accum + micro) * B
        return stream_rows(ctx.seed, start, B, self.mix, self.n_domain_rows, self.n_general_rows)

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        out, d = [], self.data
        for m in ctx.micro_range():
            idx = self._row_indices(ctx, step, m)
            rows = torch.from_numpy(idx)
            ids, labels, pos = d.input_ids[rows], d.labels[rows], d.position_ids[rows]
            batch = {"n_real": int(d.n_real[rows].sum()), "domain_rows": int((idx < self.n_domain_rows).sum())}
            if self.padding_free:
                ids, labels, pos = padding_free_batch(ids, labels, pos, d.n_real[rows])
                batch["cu_seq_lens"] = cu_seq_lens(pos)
            batch.update(input_ids=ids, labels=labels, position_ids=pos,
                         n_loss_tokens=int((labels[:, 1:] != -100).sum()))
            out.append(batch)
        return out

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        """Σ −log p(x_t | x_<t) over the micro-batch's labelled tokens (every token but each chunk's first)."""
        share = batch["domain_rows"] / ctx.train.batch_size
        return LossOutput(*packed_ce_sum(ctx, batch), {"domain_share": share})
