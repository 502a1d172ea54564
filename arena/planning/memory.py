"""Per-device memory of one training run: pure functions of shapes, budget and world size.

Bytes, for arena's loop: fp32 master weights (bf16 autocast computes; `train.precision: bf16`
keeps 2-byte weights), fp32 gradients, AdamW's two fp32 moments, FSDP2 full sharding over N ranks
(arena/training/distributed.py). Symbols: P parameters, P_t trainable, P_e embeddings (+ untied
head), P_l one decoder layer, h hidden, f intermediate, L layers, g·d key/value width, V vocab,
T tokens of one micro-batch, n its label tokens, N world size.

    weights     = P·w / N                      (w = 4 fp32 masters, 2 pure bf16)
    gradients   = P_t·4 / N
    optimizer   = 2·P_t·4 / N                  (AdamW exp_avg, exp_avg_sq)
    gathered    = (P_e + 2·P_l)·w   if N > 1   (FSDP2: the root unit stays gathered between forward
                                                and backward; one layer computing, one prefetched)
    cast cache  = 2·(P − P_t)       one process on CPU (bf16 copy of each frozen weight)
    activations = L·T·a_layer + one layer's again in backward (its gradients)
                  with checkpointing: L·T·4h (each layer's fp32 input) + 2·T·a_layer
    logits      = n·10·V                       (bf16 logits 2V, their fp32 copy 4V, log-softmax 4V,
                                                at label positions only: arena's losses)
                  fused head + CE (SFT/CPT, `train.fused_ce`, one process): 10·min(n, c)·V + 2·n·h
                                               (one chunk of c rows, arena/objectives/linear_ce.py,
                                                and the bf16 hidden-state gradient it keeps)

a_layer, the bytes one token leaves saved in a Llama decoder layer under bf16 autocast with an
fp32 residual stream, counted from the saved tensors of the HF implementation:

    full FT:  38·h + 6·g·d + 8·f   (two RMSNorm inputs and outputs 16h, six bf16 casts of the linear
                                    inputs 12h, q/rope/attention output/o_proj input 8h, repeat_kv
                                    2h, k/v/rope 6gd, gate/up/SiLU/product 8f)
    adapters: 20·h + 6·g·d + 6·f + (2 + m)·a/L   (frozen linears keep no inputs; each adapter keeps
                                    the bf16 copy of its input, 2 bytes per input feature, and its
                                    dropout's record m: torch's bool mask 1 byte, arena's skip
                                    sampler the int64 indices of the dropped elements 8·p, no
                                    dropout 0; a = Σ in_features of the adapted linears)

Rollouts (RL objectives) sample from a gathered copy (every unit unsharded, no collective inside):

    rollout = P·w (the whole model, every rank) + KV cache 2·L·g·d·2·S·len + S·V·4 (one step's logits)

with S the sequences sampled together (micro-batch prompts × samples) of len = seq_len tokens.
The measured-vs-planned check is benchmarks/bench_plan_memory.py (docs/distributed.md#planner).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from arena.planning.shapes import ModelShape

GiB = 2**30


@dataclass(frozen=True)
class Budget:
    """What one micro-batch on one rank holds."""

    tokens: int  # T
    label_tokens: int  # n
    world: int = 1  # N
    weight_bytes: int = 4  # w
    checkpointing: bool = False
    dropout_bytes: float = 1.0  # m: what an adapter's dropout keeps per input element (see above)
    cast_cache: bool = False
    fused_ce: bool = False  # the loss projects the head in row chunks (no [n, V] logits kept)
    rollout_seqs: int = 0  # S (0: no rollouts)
    rollout_len: int = 0


@dataclass(frozen=True)
class MemoryPlan:
    weights: float
    gradients: float
    optimizer: float
    gathered: float
    cast_cache: float
    activations: float
    logits: float
    rollout: float

    @property
    def train_peak(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.gathered + self.cast_cache
                + self.activations + self.logits)

    @property
    def rollout_peak(self) -> float:
        """Sampling: sharded state (no activations) + the gathered whole model + KV cache."""
        if not self.rollout:
            return 0.0
        return self.weights + self.gradients + self.optimizer + self.cast_cache + self.rollout

    @property
    def peak(self) -> float:
        return max(self.train_peak, self.rollout_peak)

    def to_dict(self) -> dict:
        return {**asdict(self), "train_peak": self.train_peak, "rollout_peak": self.rollout_peak, "peak": self.peak}


def layer_activation_bytes(s: ModelShape, full: bool, dropout_bytes: float = 1.0) -> float:
    """a_layer: bytes one token leaves saved in one decoder layer (module docstring)."""
    kv = s.kv_heads * s.head_dim
    if full:
        return 38 * s.hidden + 6 * kv + 8 * s.intermediate
    return 20 * s.hidden + 6 * kv + 6 * s.intermediate + (2 + dropout_bytes) * s.adapted_inputs / s.layers


def activation_bytes(s: ModelShape, b: Budget) -> float:
    full = s.adapter_params == 0 and s.trainable == s.params
    a = layer_activation_bytes(s, full, b.dropout_bytes) * b.tokens
    if b.checkpointing:
        return s.layers * b.tokens * 4 * s.hidden + 2 * a
    return s.layers * a + a


def logits_bytes(s: ModelShape, b: Budget) -> float:
    if b.fused_ce:
        from arena.objectives.linear_ce import chunk_rows

        return 10.0 * min(b.label_tokens, chunk_rows(s.vocab)) * s.vocab + 2.0 * b.label_tokens * s.hidden
    return 10.0 * b.label_tokens * s.vocab


def rollout_bytes(s: ModelShape, b: Budget) -> float:
    if not b.rollout_seqs:
        return 0.0
    kv = 2 * s.layers * s.kv_heads * s.head_dim * 2 * b.rollout_seqs * b.rollout_len
    return s.params * b.weight_bytes + kv + 4.0 * b.rollout_seqs * s.vocab


def plan_memory(s: ModelShape, b: Budget) -> MemoryPlan:
    n, w = b.world, b.weight_bytes
    return MemoryPlan(
        weights=s.params * w / n,
        gradients=s.trainable * 4 / n,
        optimizer=2 * s.trainable * 4 / n,
        gathered=(s.embed_params + 2 * s.layer_params) * w if n > 1 else 0.0,
        cast_cache=2.0 * (s.params - s.trainable) if b.cast_cache else 0.0,
        activations=activation_bytes(s, b),
        logits=logits_bytes(s, b),
        rollout=rollout_bytes(s, b),
    )
