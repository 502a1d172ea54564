"""Services a run can move out of the trainer's process (docs/services.md): a rollout worker that samples
from a policy snapshot at most `max_staleness` steps old while the trainer trains, and a teacher
service that answers with transported scores (full logits, top-k log-probs, or last hidden states).

- `config.py`: the run config's `services:` section (typed, validated).
- `channel.py`: one request/response channel to a handler in a child process (over a loopback
  connection) or a Ray actor; death and silence are detected, never waited on forever.
- `host.py`: the other end: builds the handler and serves requests in order.
- `rollout_worker.py`: the rollout handler and the trainer's client with bounded staleness.
- `teacher_service.py`, `transport.py`: the teacher handler, its client, and the transported forms.
"""
