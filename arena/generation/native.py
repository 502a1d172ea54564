"""The native decoder: a Llama-family forward written for batched inference on the CPU.

Why not the transformers forward: at decode time one step of 32 sequences of SmolLM2-135M is a few
GFLOP, and the transformers forward spends most of the step outside the matmuls (per-module calls,
a growing DynamicCache concatenated every step, autocast casts of every weight every call). Here the
weights are read once (adapters merged, `weights.effective_linear`), cast once to the compute dtype,
kept in nn.Linear's [out, in] layout (F.linear then runs the kernel autocast runs) and fused where
the maths allows it (q|k|v into one matrix, gate|up into one), and the KV cache is
preallocated per slot (`scheduler.py`) so a step writes one position instead of copying the cache.

Numerics follow the transformers forward under the run's precision: the residual stream, RMSNorm,
RoPE and softmax statistics stay fp32, and under bf16 autocast the matmul inputs are bf16 as autocast
makes them. In fp32 greedy completions are token-identical to `model.generate`
(tests/test_generation_engine.py); in bf16 they agree as often as `model.generate` agrees with itself
at another batch size (benchmarks/bench_generation.py reports both shares).

Supported: model types whose decoder layer is Llama's (llama, mistral without a sliding window
shorter than the sequence, qwen2 with its q/k/v biases). Anything else raises `UnsupportedModel`,
which the engine factory turns into a clear error or a fallback to the `hf` engine.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from arena.generation.weights import base_transformer, effective_embedding, effective_linear

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")


class UnsupportedModel(ValueError):
    pass


def check_supported(model) -> None:
    cfg = base_transformer(model).config
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED_TYPES:
        raise UnsupportedModel(f"model type {kind!r} (the native engine runs {', '.join(SUPPORTED_TYPES)})")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"hidden_act {cfg.hidden_act!r} (the native engine implements silu)")


def compute_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision in ("bf16", "bf16-autocast") else torch.float32


def _onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w, b, "none", [], "")


def _onednn_pack(w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(w, 32)  # 32: the row count decode steps run at


@functools.cache
def _onednn_bf16_exact() -> bool:
    """Whether oneDNN's prepacked bf16 linear reproduces F.linear bit for bit here (probed once per
    process: engines are rebuilt every GRPO step)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        w, x, b = (torch.randn(*shape, generator=g).to(torch.bfloat16) for shape in ((96, 64), (8, 64), (96,)))
        return torch.equal(_onednn_linear(x, _onednn_pack(w), b), F.linear(x, w, b))
    except (RuntimeError, AttributeError):  # oneDNN without bf16 support, or a torch without the op
        return False


def prepacked_linear(dtype: torch.dtype, device: torch.device):
    """(pack, linear): oneDNN's prepacked bf16 linear on the CPU, or (None, F.linear) elsewhere.

    Why: F.linear with a bf16 [out, in] weight goes through torch's generic CPU gemm dispatch, which
    re-derives the oneDNN primitive (and re-lays the weight out) on every call; with the weight
    reordered once (`mkldnn._reorder_linear_weight`, what inductor's CPU weight prepacking does) a
    decode-sized matmul (≤ 64 rows, weights read from DRAM) ran 1.2-1.8x faster on a 2-core EPYC
    (benchmarks/bench_generation.py, docs/generation.md). Taken only where it reproduces F.linear on
    a probe bit for bit, so results do not depend on which path ran; fp32 keeps F.linear (MKL),
    whose completions the tests hold token-identical to `model.generate`.
    """
    if dtype != torch.bfloat16 or device.type != "cpu" or not _onednn_bf16_exact():
        return None, F.linear
    return _onednn_pack, _onednn_linear


def _fused_bias(*pairs) -> torch.Tensor | None:
    """The bias of matrices fused along their output dim (zeros for those without one), or None."""
    if all(b is None for _, b in pairs):
        return None
    return torch.cat([b if b is not None else torch.zeros(w.shape[0]) for w, b in pairs])


class NativeDecoder:
    """Weights of a Llama-family model, ready for `forward`. Build one per weight version."""

    @torch.no_grad()
    def __init__(self, model, precision: str = "fp32", device: torch.device | str = "cpu", prepack: bool = True):
        check_supported(model)
        base = base_transformer(model)
        cfg = base.config
        self.device = torch.device(device)
        self.dtype = compute_dtype(precision)
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        self.window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 1 << 20))
        inner = base.model
        self.rotary = inner.rotary_emb  # the model's own RoPE (handles every rope_type transformers knows)
        dt, dev = self.dtype, self.device
        pack, self._matmul = prepacked_linear(dt, dev) if prepack else (None, F.linear)

        def mat(w):  # [out, in], as nn.Linear keeps it: F.linear then runs the same kernel autocast runs
            w = w.to(device=dev, dtype=dt).contiguous()
            return pack(w) if pack is not None else w

        def vec(b, out_dtype=dt):
            return None if b is None else b.to(device=dev, dtype=out_dtype)

        self.embed = effective_embedding(inner.embed_tokens).to(device=dev, dtype=torch.float32)
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            (wq, bq), (wk, bk), (wv, bv) = (effective_linear(x) for x in (a.q_proj, a.k_proj, a.v_proj))
            wo, bo = effective_linear(a.o_proj)
            (wg, bg), (wu, bu) = effective_linear(m.gate_proj), effective_linear(m.up_proj)
            wd, bd = effective_linear(m.down_proj)
            qkv_b = _fused_bias((wq, bq), (wk, bk), (wv, bv))
            gu_b = _fused_bias((wg, bg), (wu, bu))
            self.layers.append({
                "ln1": layer.input_layernorm.weight.detach().to(dev, torch.float32),
                "ln2": layer.post_attention_layernorm.weight.detach().to(dev, torch.float32),
                "qkv": mat(torch.cat([wq, wk, wv])), "qkv_b": vec(qkv_b),
                "o": mat(wo), "o_b": vec(bo),
                "gu": mat(torch.cat([wg, wu])), "gu_b": vec(gu_b),
                "down": mat(wd), "down_b": vec(bd),
            })
        self.norm = inner.norm.weight.detach().to(dev, torch.float32)
        w_head, b_head = effective_linear(base.lm_head)
        self.lm_head, self.lm_head_b = mat(w_head), vec(b_head)
        self.vocab_size = w_head.shape[0]

    def kv_bytes_per_token(self) -> int:
        """Bytes of keys + values one cached position takes across all layers."""
        return 2 * len(self.layers) * self.n_kv * self.head_dim * self.dtype.itemsize

    # -- pieces ---------------------------------------------------------------------------------

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """w · x / sqrt(mean(x²) + eps), in fp32 (as LlamaRMSNorm)."""
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    @staticmethod
    def _rotate(x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], dim=-1)

    def _linear(self, x, w, b):
        return self._matmul(x.to(self.dtype), w, b)

    def decode_attention(self, q, keys, values, mask):
        """softmax(q·Kᵀ/√d + mask)·V for one query per row, [B, nh, 1, d] → [B, nh, 1, d].

        Why not SDPA here: torch's CPU flash kernel is built for query blocks, and with one query it
        spent ~1.1 ms per layer on 8 rows × 200 keys (half of a decode step, measured with
        torch.profiler on the 2-core CPU), ~50× its FLOPs. Grouped-query heads are folded into the
        query dim ([B, n_kv, g, d] against [B, n_kv, S, d]) so K and V are never repeated. Numerics
        are transformers' eager attention: scores from a matmul in the compute dtype, softmax in fp32.
        """
        B, nh, _, d = q.shape
        g = nh // self.n_kv
        qg = q.reshape(B, self.n_kv, g, d)
        scores = torch.matmul(qg, keys.transpose(-1, -2)).float() * (d ** -0.5)  # [B, n_kv, g, S]
        scores = scores.masked_fill(~mask.view(B, 1, 1, -1), float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        return torch.matmul(probs, values).reshape(B, nh, 1, d)

    def attention(self, q, keys, values, mask):
        """Attention of q [B, nh, T, d] to keys/values [B, n_kv, S, d] under a bool mask [B, 1, T, S]
        (None: plain causal self-attention, T == S)."""
        if mask is None:
            return F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
        if q.shape[2] == 1:
            return self.decode_attention(q, keys, values, mask)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.n_kv != self.n_heads)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, T, head_dim] for positions [B, T] (fp32, as the model computes them)."""
        probe = torch.empty(0, dtype=torch.float32, device=self.device)
        cos, sin = self.rotary(probe, positions)
        return cos[:, None].float(), sin[:, None].float()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the final hidden states [..., H] (the lm_head in the compute dtype)."""
        return self._linear(self._rms(hidden, self.norm), self.lm_head, self.lm_head_b).float()

    # -- the forward ------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, positions: torch.Tensor, attend) -> torch.Tensor:
        """Final hidden states [B, T, H] (before the last norm) of ids [B, T] at positions [B, T].

        `attend(layer, q, k, v) -> o` owns the keys/values: it stores this call's (k after RoPE,
        [B, n_kv, T, d], compute dtype), attends q [B, n_heads, T, d] to whatever cache it keeps and
        returns o [B, n_heads, T, d]. Keeping it outside lets one forward serve rows whose caches
        live apart (the scheduler's length buckets decode in one batch) and prefixes cached elsewhere.
        """
        B, T = ids.shape
        x = self.embed[ids]
        cos, sin = self.rope(positions)
        nh, nkv, d = self.n_heads, self.n_kv, self.head_dim
        for i, L in enumerate(self.layers):
            qkv = self._linear(self._rms(x, L["ln1"]), L["qkv"], L["qkv_b"])
            q, k, v = qkv.split([nh * d, nkv * d, nkv * d], dim=-1)
            q = q.view(B, T, nh, d).transpose(1, 2).float()
            k = k.view(B, T, nkv, d).transpose(1, 2).float()
            v = v.view(B, T, nkv, d).transpose(1, 2).to(self.dtype)
            q = (q * cos + self._rotate(q) * sin).to(self.dtype)
            k = (k * cos + self._rotate(k) * sin).to(self.dtype)
            o = attend(i, q, k, v)
            x = x + self._linear(o.transpose(1, 2).reshape(B, T, nh * d), L["o"], L["o_b"]).float()
            g, u = self._linear(self._rms(x, L["ln2"]), L["gu"], L["gu_b"]).chunk(2, dim=-1)
            x = x + self._linear(F.silu(g) * u, L["down"], L["down_b"]).float()
        return x

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], prefixes: list | None = None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run right-padded prompts: (logits of each prompt's last token [B, V], per-layer (k, v)
        [B, n_kv, P, d] of the tokens run here). Right padding needs no query masking: under the
        causal mask a real token never sees the padding after it, and padded rows' outputs are never
        read.

        `prefixes` (one per row, None or a `prefix.PrefixKV`): the row's prompt continues that
        already-prefilled prefix, so only the continuation runs here, at positions after the prefix,
        attending to the prefix's cached keys/values (stacked per layer, padded to the longest).
        """
        B, P = len(prompts), max(len(p) for p in prompts)
        dev = self.device
        ids = torch.zeros((B, P), dtype=torch.long, device=dev)
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        for r, p in enumerate(prompts):
            ids[r, : len(p)] = torch.tensor(p, dtype=torch.long)
        pre = [0 if x is None else x.length for x in (prefixes or [None] * B)]
        start = torch.tensor(pre, dtype=torch.long, device=dev)
        positions = start[:, None] + torch.arange(P, device=dev)[None, :]
        causal = torch.ones((P, P), dtype=torch.bool, device=dev).tril()
        mask = causal[None] & (torch.arange(P, device=dev)[None, None, :] < lens[:, None, None])  # [B, P, P]
        L = max(pre)
        if self.window is not None and L + P > self.window:
            raise ValueError("prefix sharing is off for sliding-window models whose window the prompt exceeds")
        if self.window is not None and P > self.window:
            mask &= ~torch.ones((P, P), dtype=torch.bool, device=dev).tril(-self.window)[None]
        stack = None
        if L:
            seen = (torch.arange(L, device=dev)[None, :] < start[:, None])[:, None, :].expand(B, P, L)
            mask = torch.cat([seen, mask], dim=-1)

            def stacked(i: int, which: str, like: torch.Tensor) -> torch.Tensor:
                out = torch.zeros((B, self.n_kv, L, self.head_dim), dtype=like.dtype, device=dev)
                for r, x in enumerate(prefixes):
                    if x is not None:
                        out[r, :, : x.length] = getattr(x, which)[i]
                return out

            stack = stacked

        # One unpadded prompt needs no mask: the causal kernel is ~1.7x faster than the same attention
        # under an explicit mask at 1,200 tokens (2-core CPU, bf16), and attention is half the cost there.
        mask4 = None if B == 1 and not L and (self.window is None or P <= self.window) else mask[:, None]
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []

        def attend(i, q, k, v):
            kv.append((k, v))
            if stack is not None:
                k, v = torch.cat([stack(i, "k", k), k], dim=2), torch.cat([stack(i, "v", v), v], dim=2)
            return self.attention(q, k, v, mask4)

        hidden = self.forward(ids, positions, attend)
        last = hidden[torch.arange(B, device=dev), lens - 1]
        return self.logits(last), kv
