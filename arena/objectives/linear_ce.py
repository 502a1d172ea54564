"""The output head's projection and the cross-entropy, fused and computed in row chunks.

Why: the stock path projects the n label positions onto the whole vocabulary ([n, V] logits,
n ≈ 450 and V = 49,152 for SmolLM2 at 4 × 256), casts them to fp32, takes a log-softmax, and in
backward allocates the same [n, V] fp32 tensors again (the scatter of the NLL gradient, the
log-softmax gradient, its bf16 cast). Each is ~90 MB, too large for the allocator's free lists, so
each is a fresh mapping whose pages are faulted in on first touch: on 2 CPU cores these few
element-wise passes took ~0.8 s of a ~3 s LoRA step, more than the two vocabulary matmuls.

Here the rows are processed a chunk at a time (~16 MB of fp32 logits, which stays in cache and is
reused by the allocator), and the gradient with respect to the hidden states is computed in the
forward while the chunk's probabilities are at hand (as Liger-Kernel's fused linear
cross-entropy does on GPU): the backward only scales what the forward kept. No [n, V] tensor ever
exists. The cost is that the forward does the backward's matmul too, so it is used only when a
gradient is wanted.

Numerics: every logit is the same bf16 (or fp32) matmul output as the stock path's, and each row's
log-softmax is the same fp32 kernel, so per-token losses are bit-identical; only the sum over
chunks is added in a different order (fp32, ~1e-7 relative). The gradient rounds differently: the
stock path rounds g·(p − onehot) to bf16 before its matmul, this one (p − onehot) and scales by g
after it (g is the backward's incoming scalar, known only then), so both are one bf16 rounding of
the same quantity. A trainable head (full fine-tuning, tied embeddings) gets its gradient
accumulated in fp32 over chunks, where the stock path's comes out of one bf16 matmul.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 22  # fp32 logits per chunk: 16 MB, e.g. 85 rows of a 49k vocabulary


def chunk_rows(vocab: int, chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """Rows per chunk: the most rows whose fp32 logits fit `chunk_elements` (at least 8, so the
    matmuls keep a usable shape on very large vocabularies)."""
    return max(8, chunk_elements // max(1, vocab))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, weight_c, targets, rows):
        # weight: the parameter (what gets the gradient); weight_c: the same values in the compute
        # dtype (the cast cache's copy, or a cast made once per call)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(hidden.device.type, enabled=False):  # dtypes are chosen here, not by autocast
            grad_h, grad_w, loss = _chunks(hidden, weight, weight_c, targets, rows, want_h, want_w)
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        return loss

    @staticmethod
    def backward(ctx, g):
        saved = list(ctx.saved_tensors)
        want_h, want_w = ctx.needs_input_grad[:2]
        gh = (saved.pop(0).to(torch.float32) * g).to(ctx.hidden_dtype) if want_h else None
        gw = (saved.pop(0) * g).to(ctx.weight_dtype) if want_w else None
        return gh, gw, None, None, None


def _chunks(hidden, weight, weight_c, targets, rows, want_h, want_w):
    """The chunk loop: (∂L/∂h in the compute dtype, ∂L/∂W in fp32, L), each gradient only if wanted."""
    h = hidden.to(weight_c.dtype)
    grad_h = torch.empty_like(h) if want_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
    # one reused product buffer: the chunk's ∂L/∂W in the compute dtype, accumulated in fp32
    part = torch.empty(weight_c.shape, dtype=weight_c.dtype, device=weight.device) if want_w else None
    loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for s in range(0, h.shape[0], rows):
        hc, t = h[s:s + rows], targets[s:s + rows, None]
        logp = torch.log_softmax(hc @ weight_c.T, dim=-1, dtype=torch.float32)
        loss -= logp.gather(1, t).sum()
        if want_h or want_w:
            p = logp.exp_()  # softmax, in place
            p.scatter_add_(1, t, torch.full(t.shape, -1.0, dtype=p.dtype, device=p.device))  # p − onehot(y)
            pc = p.to(weight_c.dtype)
            if want_h:
                torch.mm(pc, weight_c, out=grad_h[s:s + rows])
            if want_w:
                grad_w.add_(torch.mm(pc.T, hc, out=part))
    return grad_h, grad_w, loss


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             weight_c: torch.Tensor | None = None, rows: int | None = None) -> torch.Tensor:
    """Σ_i −log softmax(W h_i)[y_i], in fp32, without materialising the [n, V] logits.

        L = Σ_i ( log Σ_v exp(z_iv) − z_{i,y_i} ),   z_i = W h_i (in W's compute dtype)
        ∂L/∂h_i = Wᵀ (softmax(z_i) − e_{y_i}),       ∂L/∂W = Σ_i (softmax(z_i) − e_{y_i}) h_iᵀ

    `hidden` [n, d] are the final hidden states at the scored positions, `weight` [V, d] the
    output head (no bias), `targets` [n] the token ids (all scored). `weight_c` is `weight` in the
    dtype the matmuls run in (bf16 under autocast); default: `weight` itself. The gradients are
    computed during the forward when autograd will want them (see the module docstring).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and head weight {tuple(weight.shape)} do not match ([n, d], [V, d])")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} must be one id per hidden row ({hidden.shape[0]})")
    if hidden.shape[0] == 0:
        return (hidden.sum() + weight.sum()) * 0.0
    weight_c = weight.detach() if weight_c is None else weight_c.detach()
    return _LinearCrossEntropy.apply(hidden, weight, weight_c, targets, rows or chunk_rows(weight.shape[0]))
