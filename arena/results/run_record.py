"""The run record: one schema-versioned JSON object per run folder (`record.json`).

Written by `run_training` (the training part), by the sweep worker when a run fails outside the
library (`runners.worker.write_failure`), and extended in place by the stages (`eval`,
`diagnostics`, `interpolation`, `sweep`, through `arena.runs.update_record`). Read by the results
library (`arena.results.flatten`).

Every section is optional: a record is whatever its writers got to before they stopped, so a
failed run may hold only `run_id`, `status` and `error`. `from_dict` keeps values as they are
(a reader shows what it can of a malformed record rather than refusing it), keys it does not know
in `extra`, and the order of the keys it read, so `RunRecord.from_dict(d).to_dict() == d` with the
same key order: rewriting a record never reorders or drops anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

SCHEMA_VERSION = 1


@dataclass
class RunRecord:
    """The sections of record.json, in the order `run_training` writes them."""

    schema_version: Optional[int] = None  # stamped with SCHEMA_VERSION by arena.records.write_record
    run_id: Optional[str] = None
    status: Optional[str] = None  # running | done | failed (training); the sweep's state is in `sweep`
    created: Optional[str] = None  # ISO 8601, UTC
    config: Optional[dict] = None  # the resolved RunConfig as a dict
    model: Optional[dict] = None  # name, source, path of the loaded model
    method: Optional[dict] = None  # name, trainable_params, total_params, trainable_fraction, lr, additive
    objective: Optional[str] = None
    target: Optional[str] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    environment: Optional[dict] = None  # python, platform, package versions, git state
    data: Optional[dict] = None  # what the objective's prepare() reports (examples, rows, layout)
    probes: Optional[dict] = None  # {"base": {...}, "tuned": {...}}: held-out target NLL, greedy accuracy
    train: Optional[dict] = None  # the training loop's result (steps, tokens, seconds, losses, memory)
    timings: Optional[dict] = None  # load_s, data_s, train_s, probe_s, total_s
    error: Optional[str] = None  # "ExceptionType: message" of a failed run
    retryable: Optional[bool] = None  # set by the sweep: an interruption, not a failure of the run
    written_by: Optional[str] = None  # "runner" when the sweep worker wrote the record, not run_training
    traceback: Optional[str] = None  # the last 4000 characters
    finished: Optional[str] = None
    eval: Optional[dict] = None  # arena eval: base, tuned, compare
    diagnostics: Optional[dict] = None  # arena analyze: modules, summary
    interpolation: Optional[dict] = None  # arena interpolate: path -> curve
    sweep: Optional[dict] = None  # the sweep's bookkeeping: name, label, seed, stages, status
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept verbatim
    # The key order of the dict this record was read from (to_dict writes it back in that order).
    key_order: tuple = field(default=(), repr=False, compare=False)

    @classmethod
    def known_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in ("extra", "key_order"))

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        known = set(cls.known_keys())
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known}, key_order=tuple(d))

    def to_dict(self) -> dict:
        """The JSON object: the keys read (in their order, a null kept as null), then every other
        section that is set, in field order."""
        known = self.known_keys()
        out: dict[str, Any] = {}
        for k in self.key_order:
            if k in known:
                out[k] = getattr(self, k)
            elif k in self.extra:
                out[k] = self.extra[k]
        for k in known:
            if k not in out and getattr(self, k) is not None:
                out[k] = getattr(self, k)
        for k, v in self.extra.items():
            out.setdefault(k, v)
        return out
