"""A Pythia-style (GPT-NeoX) RoPE transformer in one file.

With the same weights, the Pythia presets compute what GPT-NeoX computes (Hugging Face's
GPTNeoXForCausalLM): LayerNorm, parallel residual  x + attn(ln1(x)) + mlp(ln2(x)),
rotate-half RoPE on the first 25% of each head's dims, exact (erf) GELU, untied embeddings.
References: Pythia, https://arxiv.org/abs/2304.01373 ; RoPE, https://arxiv.org/abs/2104.09864

GrowLength needs one thing from the model: no fixed maximum length. RoPE tables are built
for the longest length seen so far and grown on demand, so a model trained at T=128 can be
run at T=1024 (direct positional extrapolation, the paper's Sec. 3.1). `--rope-switch pi|ntk|yarn`
instead rescales the tables at every stage change (`rope_frequencies`, `GPT.switch_rope`).

Speed, for the GPU: attention takes q, k, v as strided views with no layout copies (v of the
fused qkv projection, q and k of the one tensor RoPE writes them to; the Triton kernel writes
its output straight in (B, T, C) order), and the loss never materialises the whole
micro-batch's logits (chunked_cross_entropy).
"""
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.reference import attention_ref, doc_mask

ATTN_BACKENDS = ("triton", "sdpa", "naive")


@dataclass
class GPTConfig:
    vocab_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    rotary_pct: float = 0.25       # share of each head's dims that RoPE rotates (Pythia: 25%)
    rope_base: float = 10000.0
    parallel_residual: bool = True
    layer_norm_eps: float = 1e-5
    bias: bool = True              # GPT-NeoX linears carry biases
    attn: str = "sdpa"             # triton | sdpa | naive; a runtime choice, not part of the shape
    # RoPE at a stage switch (see `rope_frequencies`). The method is fixed for a run; GPT.switch_rope
    # sets the other two at every stage change. They live here so that a checkpoint carries them:
    # resume, eval, sample.py and any export then see the positions the model was trained with.
    rope_switch: str = "none"      # none (the paper: positions extrapolate) | pi | ntk | yarn
    rope_orig_len: int = 0         # the context the unscaled RoPE was trained at (0: the first stage's, set at it)
    rope_scale: float = 1.0        # s = current stage length / rope_orig_len (cumulative); 1.0: unscaled

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def shape(self) -> dict:
        """The fields that decide the weights' shapes and the maths (what a checkpoint must match)."""
        return {k: v for k, v in self.__dict__.items() if k != "attn"}


# Pythia sizes (Biderman et al. 2023, Table 1); vocab 50304 = GPT-2's 50257 padded to a multiple of 128.
PRESETS = {
    "tiny": dict(vocab_size=256, n_layer=4, n_head=4, n_embd=128),   # ~0.9M params, CPU course model
    "small": dict(vocab_size=256, n_layer=6, n_head=6, n_embd=192),  # ~2.7M: the second CPU size (Fig. 3)
    "pythia-70m": dict(vocab_size=50304, n_layer=6, n_head=8, n_embd=512),
    "pythia-160m": dict(vocab_size=50304, n_layer=12, n_head=12, n_embd=768),
    "pythia-410m": dict(vocab_size=50304, n_layer=24, n_head=16, n_embd=1024),
}
# Pythia's peak learning rates; the tiny model takes a larger one (small models tolerate it).
PRESET_LR = {"tiny": 3e-3, "small": 2e-3, "pythia-70m": 1e-3, "pythia-160m": 6e-4, "pythia-410m": 3e-4}


ROPE_SWITCHES = ("none", "pi", "ntk", "yarn")
YARN_ALPHA, YARN_BETA = 1.0, 32.0    # YaRN's ramp ends, in rotations over the original context (its Sec. 3.2)


def ntk_base(base: float, d: int, s: float) -> float:
    """NTK-aware scaling's new base for d rotary dims stretched by s (YaRN Eq. 16). It is only a
    new base, so export.py writes it as transformers' plain rope_theta."""
    return base * s ** (d / (d - 2))


def yarn_attention_factor(s: float) -> float:
    """YaRN's sqrt(1/t) = 0.1 ln(s) + 1 (Eq. 22; transformers' `attention_factor`, its default)."""
    return 0.1 * math.log(s) + 1.0


def rope_frequencies(inv_freq, base: float, method: str, orig_len: int, s: float):
    """RoPE stretched from a context of `orig_len` tokens to s * orig_len: -> (frequencies, attention factor).

    Each method is a different answer to "positions past orig_len were never seen" (YaRN paper,
    Peng et al. 2023, https://arxiv.org/abs/2309.00071, Sec. 2-3, whose notation this follows).
    `s` is cumulative (current stage length / first stage length), so the tables are a function
    of (first, current) alone. For PI and NTK that is exactly what applying the method at every
    switch with s = new/old compounds to; for YaRN the two differ slightly: modded-nanogpt
    (github.com/KellerJordan/modded-nanogpt, `Yarn.apply`) compounds per window change, we use
    the one-shot form of transformers' rope_type "yarn" (original_max_position_embeddings = first
    length), with the same formula to the operation, so an exported run loads there unchanged.
    `method` is one of ROPE_SWITCHES: GPT.__init__ refuses any other name.
    """
    if method == "none" or s == 1.0:
        # none: the paper's direct extrapolation, the tables never change. s == 1 is the first stage.
        return inv_freq, 1.0
    if method == "pi":
        # Position interpolation (Chen et al. 2023, arXiv 2306.15595): position m becomes m / s,
        # i.e. m * old/new, so the new length's positions span the angles the model was trained on.
        return inv_freq / s, 1.0
    d = 2 * inv_freq.numel()
    if method == "ntk":
        # NTK-aware scaling: a larger base. The fastest dim is unchanged and the slowest is slowed
        # by exactly s: high frequencies extrapolate, low ones interpolate.
        return 1.0 / (ntk_base(base, d, s) ** (torch.arange(0, d, 2, dtype=torch.float32) / d)), 1.0
    # yarn: NTK-by-parts (Eq. 17-18) + temperature (Eq. 22). r = rotations a dim makes over the
    # original context: dims with r > beta keep their frequency (extrapolate), dims with r < alpha
    # are interpolated like PI (theta / s), a ramp in between. The paper writes the ramp as linear
    # in r; the YaRN authors' code (github.com/jquesnelle/yarn), and transformers after it, make it
    # linear in the dim index between the dims where r = beta and r = alpha, widened outward to
    # whole dims (floor/ceil, transformers' truncate=True) and clipped to [0, d - 1]. We compute
    # theirs, in their order of operations, so an export matches to float rounding.
    def dim_at(r):      # the (fractional) dim index i that makes r rotations: orig_len * base^(-2i/d) = 2 pi r
        return d * math.log(orig_len / (r * 2 * math.pi)) / (2 * math.log(base))
    lo, hi = max(math.floor(dim_at(YARN_BETA)), 0), min(math.ceil(dim_at(YARN_ALPHA)), d - 1)
    if lo == hi:
        hi += 0.001     # as theirs: a one-dim ramp is a step
    keep = 1 - ((torch.arange(d // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0.0, 1.0)  # 1: extrapolate
    pos_freqs = base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)                        # 1 / inv_freq
    freq = 1.0 / (s * pos_freqs) * (1 - keep) + 1.0 / pos_freqs * keep
    # sqrt(1/t) = 0.1 ln(s) + 1 multiplies cos and sin (transformers' `attention_factor`), so it scales
    # q and k alike and the rotated part of q.k by its square: sharper attention over more tokens.
    return freq, yarn_attention_factor(s)


def machine_memory() -> int:
    """Bytes of RAM on this machine: the bound for what may be allocated on a CPU."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def rope_table_len(T: int) -> int:
    """RoPE tables grow to the next power of two, so a slowly growing T does not rebuild every call."""
    return max(T, 2 ** math.ceil(math.log2(max(T, 1))))


class Rotary(nn.Module):
    """Rotate-half RoPE on the first `rot_dim` dims of each head, tables grown on demand.

    The cos/sin tables describe RoPE completely, scaling included (an attention factor is folded
    into them), so whatever applies them needs nothing else."""

    def __init__(self, rot_dim: int, base: float):
        super().__init__()
        self.base = base
        inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)   # as trained at the first stage
        self.freq, self.attn_factor = inv_freq, 1.0                     # what the tables use (rescale)
        self._cos = self._sin = None   # (T_max, rot_dim), built lazily: no fixed maximum length

    def rescale(self, method: str, orig_len: int, s: float):
        """Switch the tables to `method` stretched by s (rope_frequencies). Rebuilt in place, at the
        same length, so anything holding them (a compiled graph) reads the new values."""
        self.freq, self.attn_factor = rope_frequencies(self.inv_freq.cpu(), self.base, method, orig_len, s)
        if self._cos is not None:
            cos, sin = self._build(self._cos.shape[0], self._cos.device)
            self._cos.copy_(cos)
            self._sin.copy_(sin)

    def _build(self, n: int, device):
        t = torch.arange(n, dtype=torch.float32, device=device)
        freqs = torch.outer(t, self.freq.to(device))          # (n, rot_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)               # (n, rot_dim), NeoX layout
        if self.attn_factor == 1.0:                           # unscaled: bit-identical to plain RoPE
            return emb.cos(), emb.sin()
        return emb.cos() * self.attn_factor, emb.sin() * self.attn_factor

    def tables(self, T: int, device):
        if self._cos is None or self._cos.shape[0] < T or self._cos.device != device:
            self._cos, self._sin = self._build(rope_table_len(T), device)
        return self._cos[:T], self._sin[:T]


def apply_rope(x, cos, sin):
    """Rotate-half RoPE (NeoX layout) on the first cos.shape[-1] dims of x's last axis; the
    rest pass through. cos and sin come from `Rotary.tables` and broadcast against x.

    Why plain torch: a rotation is a few elementwise ops, and torch.compile fuses them (with
    the concatenations) into one kernel that reads q and k once and writes them once, so
    the round trips of eager mode disappear without a kernel of our own; in eager mode the
    model at least rotates q and k in one call. RoPE inside the attention kernel would save
    that one pass too, but would tie the kernel to one RoPE variant and need the backward
    to rotate dq and dk back; here the tables stay the Rotary module's business (scaled
    RoPE variants only build different tables). Chosen without a GPU to measure on."""
    rot_dim = cos.shape[-1]
    # split, not two slices: its backward is one concatenation, where each slice's backward
    # would write a zero-filled gradient of x's full size.
    x_rot, x_pass = x.split([rot_dim, x.shape[-1] - rot_dim], dim=-1)
    # contiguous: x_rot is a strided view into the qkv projection, and a bf16 one becomes a
    # dense copy in .float() anyway; an fp32 one (CPU) would stay a view, on which the
    # elementwise ops below ran ~1.3x slower than on a copy (measured, 2-core CPU).
    x_rot = x_rot.float().contiguous()
    x1, x2 = x_rot.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)                        # rotate_half
    # In fp32: at long T, bf16 angles would blur positions (8 bits of mantissa).
    x_rot = (x_rot * cos + rotated * sin).to(x.dtype)
    return torch.cat((x_rot, x_pass), dim=-1)


def attention(q, k, v, backend: str, docs=None):
    """Causal attention of (B, nh, T, hs) q, k, v (any strides) -> (B, nh, T, hs). docs (--doc-mask): (B, T)
    document starts in the window (data.doc_starts); query t then sees keys docs[t] .. t only, as in Llama 3.
    Positions stay: a RoPE score depends on t - j alone, so restarting them per document computes the same."""
    if backend == "sdpa":
        if docs is not None:   # a (B, 1, T, T) boolean mask; FlexAttention measured slower on CPU (results/docmask.md)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=doc_mask(docs))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if backend == "naive":   # the readable reference: (T, T) scores and all
        return attention_ref(q, k, v, causal=True, doc_starts=docs)
    if backend == "triton":
        from kernels.attention import flash_attention   # imported late: Triton is optional off-CUDA
        return flash_attention(q, k, v, causal=True, doc_starts=docs)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTN_BACKENDS}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        # NeoX packs q, k, v per head: the output reads as (nh, 3, hs), so Pythia weights load as-is.
        self.query_key_value = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.dense = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.rotary = Rotary(int(cfg.head_dim * cfg.rotary_pct), cfg.rope_base)

    def qkv(self, x, pos: int = 0):
        """q, k, v (B, nh, t, hs) of tokens x (B, t, C) at positions pos..pos+t-1, RoPE applied to
        q and k. Views of the one projection, not copies: the Triton kernel and SDPA take any strides."""
        B, t, C = x.shape
        # NeoX packs q, k, v per head: the projection reads as (B, t, nh, 3, hs).
        qkv = self.query_key_value(x).view(B, t, self.n_head, 3, self.head_dim)
        qk, v = qkv.split([2, 1], dim=3)   # views (B, t, nh, 2, hs), (B, t, nh, 1, hs); backward: one cat
        cos, sin = self.rotary.tables(pos + t, x.device)                   # grown past the trained length if needed
        cos, sin = cos[pos:, None, None], sin[pos:, None, None]            # (t, 1, 1, rot_dim): these positions
        q, k = apply_rope(qk, cos, sin).unbind(3)                          # (B, t, nh, hs) each
        return q.transpose(1, 2), k.transpose(1, 2), v.squeeze(3).transpose(1, 2)

    def forward(self, x, docs=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x)                                              # (B, nh, T, hs) each
        y = attention(q, k, v, self.cfg.attn, docs)                        # (B, nh, T, hs)
        # The Triton kernel writes y as (B, T, nh, hs) in memory, so this reshape is a free
        # view there; for the other backends it may copy.
        y = y.transpose(1, 2).reshape(B, T, C)                             # (B, T, C)
        return self.dense(y)

    def forward_cached(self, x, kv, pos: int):
        """Attention for t new tokens at positions pos..pos+t-1, reading and extending the cache.

        kv: this layer's (keys, values) buffers, each (B, nh, max_len, hs); rows < pos hold the
        earlier tokens. Plain SDPA, not the Triton kernel: a decode step is one query row."""
        B, t, C = x.shape
        q, k, v = self.qkv(x, pos)                                         # (B, nh, t, hs) each
        keys, values = kv
        keys[:, :, pos:pos + t], values[:, :, pos:pos + t] = k, v
        # New token i (at pos+i) sees keys 0..pos+i: causal, shifted by the cached prefix. A single
        # new token sees them all: no mask, so SDPA takes its faster unmasked path.
        mask = None if t == 1 else torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(diagonal=pos)
        y = F.scaled_dot_product_attention(q, keys[:, :, :pos + t], values[:, :, :pos + t], attn_mask=mask)
        return self.dense(y.transpose(1, 2).reshape(B, t, C))         # (B, t, C)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.dense_4h_to_h = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))     # exact (erf) GELU, as NeoX


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose affine part is left to autograd on CPU: torch's fused CPU backward sums
    the weight and bias gradients in per-thread chunks, so a run's losses would depend on the
    thread count (harness/threads.py picks it by speed); a plain product and sum do not."""

    def forward(self, x):
        if x.is_cuda or self.weight is None or self.bias is None:
            return super().forward(x)
        return F.layer_norm(x, self.normalized_shape, None, None, self.eps) * self.weight + self.bias


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.parallel = cfg.parallel_residual
        self.input_layernorm = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.post_attention_layernorm = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.attention = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, docs=None):
        if self.parallel:   # GPT-NeoX / Pythia: both branches read the same x
            return x + self.attention(self.input_layernorm(x), docs) + self.mlp(self.post_attention_layernorm(x))
        x = x + self.attention(self.input_layernorm(x), docs)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_cached(self, x, kv, pos: int):
        """forward, with attention reading and extending this layer's KV cache."""
        if self.parallel:
            return (x + self.attention.forward_cached(self.input_layernorm(x), kv, pos)
                    + self.mlp(self.post_attention_layernorm(x)))
        x = x + self.attention.forward_cached(self.input_layernorm(x), kv, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


# Loss: the head and cross-entropy, a chunk of tokens at a time.
#
# Materialising the logits of a whole micro-batch costs vocab x 4 bytes per token in fp32
# (201 KB at vocab 50304, 6.6 GB for 32k tokens) and as much again for their gradient; that,
# not attention, bounds the micro-batch on a GPU. The loss is the last op of the graph, so
# its gradient is known as soon as the logits are: d(mean loss)/d(logits) =
# (softmax(logits) - onehot(target)) / N. So the forward walks over chunks of tokens, and for
# each chunk makes the fp32 logits, adds up the loss, and turns the logits straight into
# the gradients of the hidden states and of the head's weight (the Liger-Kernel /
# "fused linear cross-entropy" trick). Only one chunk of logits lives at a time, and no
# matmul is recomputed: backward just scales the stored gradients by the incoming one.
LOSS_CHUNK_ELEMENTS = 2 ** 25   # logits per chunk: 128 MB in fp32 (667 tokens at vocab 50304)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk, with_grad):
        # h: (N, C) hidden states, weight: (V, C) head, targets: (N,) token ids
        N = h.shape[0]
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        dh = torch.empty_like(h) if with_grad else None                        # (N, C)
        dw = torch.zeros_like(weight, dtype=torch.float32) if with_grad else None  # (V, C)
        for i in range(0, N, chunk):
            hc, tc = h[i:i + chunk], targets[i:i + chunk]
            logits = (hc @ weight.t()).float()                                 # (n, V), autocast's dtype, then fp32
            lse = torch.logsumexp(logits, dim=-1)                              # (n,)
            loss += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
            if with_grad:
                g = torch.exp(logits - lse[:, None])                           # softmax, (n, V)
                g[torch.arange(len(tc), device=g.device), tc] -= 1.0          # - onehot(target)
                g /= N                                                         # the mean over tokens
                dh[i:i + chunk] = g @ weight                                   # under autocast: bf16 matmuls,
                dw += (g.t() @ hc).float()                                     # as nn.Linear's backward
        ctx.save_for_backward(dh, dw)
        return loss / N

    @staticmethod
    def backward(ctx, dloss):
        dh, dw = ctx.saved_tensors
        return dh * dloss, dw * dloss, None, None, None


def chunked_cross_entropy(h, weight, targets, chunk_tokens=None):
    """F.cross_entropy(h @ weight.T, targets) (mean over tokens, no ignore_index) without
    holding the logits of more than `chunk_tokens` tokens at once (default: as many as fit
    LOSS_CHUNK_ELEMENTS logits). h (N, C), weight (V, C), targets (N,) -> scalar fp32."""
    chunk = chunk_tokens or max(1, LOSS_CHUNK_ELEMENTS // weight.shape[0])
    # Gradients are made in the forward, so say whether anyone will ask for them (eval won't).
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _ChunkedCrossEntropy.apply(h, weight, targets, chunk, with_grad)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        # A config can come from a checkpoint or a config.json: refuse what the model cannot compute.
        if cfg.n_head < 1 or cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} is not a multiple of n_head {cfg.n_head}")
        if cfg.rope_switch not in ROPE_SWITCHES:
            raise ValueError(f"unknown RoPE switch {cfg.rope_switch!r}; choose one of {ROPE_SWITCHES}")
        self.cfg = cfg
        self.embed_in = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_layer_norm = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.embed_out = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)   # untied, as Pythia
        self.apply(self._init_weights)
        # Residual-branch outputs scaled down with depth (GPT-2 paper, Sec. 2.3), as nanoGPT does.
        for name, p in self.named_parameters():
            if name.endswith("dense.weight") or name.endswith("dense_4h_to_h.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.rope_switch != "none" and cfg.rope_scale != 1.0:
            self._apply_rope()          # a config from a checkpoint may carry a stage's scaling

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def grow_rope(self, T: int):
        """Build the RoPE tables for T up front. train.py calls it with the longest training or
        eval length, so the tables never change during a run: torch.compile guards on them."""
        for block in self.layers:
            block.attention.rotary.tables(T, self.embed_in.weight.device)

    def switch_rope(self, first_len: int, new_len: int):
        """At a stage change: stretch RoPE by cfg.rope_switch from the length the weights were
        trained at (rope_orig_len: the first stage's, or a --init-from folder's) to `new_len`,
        s = new_len / that length (cumulative, never below 1), recorded in the config."""
        if self.cfg.rope_switch == "none":
            return                      # the paper's choice: tables untouched, positions extrapolate
        self.cfg.rope_orig_len = self.cfg.rope_orig_len or first_len
        self.cfg.rope_scale = max(1.0, new_len / self.cfg.rope_orig_len)
        self._apply_rope()

    def _apply_rope(self):
        for block in self.layers:
            block.attention.rotary.rescale(self.cfg.rope_switch, self.cfg.rope_orig_len, self.cfg.rope_scale)

    def set_attention(self, backend: str):
        if backend not in ATTN_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTN_BACKENDS}")
        self.cfg.attn = backend

    def forward(self, idx, targets=None, docs=None):
        """idx (B, T) token ids. Without targets: (logits (B, T, vocab), None). With targets
        (B, T): (None, mean cross-entropy): the full logits are never built (see the loss).
        docs (B, T): each position's document start in the window, to mask across documents."""
        x = self.embed_in(idx)                                  # (B, T, C)
        for block in self.layers:
            x = block(x, docs)
        x = self.final_layer_norm(x)
        if targets is None:
            return self.embed_out(x), None                      # (B, T, vocab)
        loss = chunked_cross_entropy(x.view(-1, x.size(-1)), self.embed_out.weight, targets.reshape(-1))
        return None, loss

    def new_kv_cache(self, batch: int, max_len: int):
        """Empty (keys, values) buffers per layer, each (B, nh, max_len, hs), preallocated so a
        decode step writes one row instead of re-running (or re-copying) the prefix.

        A cache that cannot fit raises MemoryError with a one-line message, for the caller to
        name its flag. In CPU (or MPS) memory it is refused before allocating: the zeros are
        written buffer by buffer, and an oversized cache would fill the machine and meet the
        OOM killer rather than an allocation error.

        The buffers take the dtype the attention runs in: under autocast (bf16 on a GPU, or CPU
        autocast) the keys and values are made in the autocast dtype, so fp32 buffers would
        make SDPA cast the whole cached prefix back down at every decode step."""
        c, w = self.cfg, self.embed_in.weight
        kind = w.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else w.dtype
        shape = (batch, c.n_head, max_len, c.head_dim)
        size = 2 * c.n_layer * math.prod(shape) * dtype.itemsize
        what = f"the KV cache for {batch} x {max_len:,} tokens needs {size / 2 ** 30:,.1f} GiB"
        if w.device.type != "cuda":
            ram = machine_memory()
            if size > ram // 2:
                raise MemoryError(f"{what}, over half of this machine's {ram / 2 ** 30:.0f} GiB")
        try:
            return [(w.new_zeros(shape, dtype=dtype), w.new_zeros(shape, dtype=dtype)) for _ in range(c.n_layer)]
        except RuntimeError:    # the allocator's refusal; torch.OutOfMemoryError on a GPU
            raise MemoryError(f"{what}, more than {w.device} can allocate") from None

    def forward_cached(self, idx, cache, pos: int):
        """Logits for tokens idx (B, t) at positions pos..pos+t-1, given the cache of the pos
        tokens before them (from new_kv_cache); their keys and values are added to it."""
        x = self.embed_in(idx)                                  # (B, t, C)
        for block, kv in zip(self.layers, cache):
            x = block.forward_cached(x, kv, pos)
        return self.embed_out(self.final_layer_norm(x))        # (B, t, vocab)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k=None, max_context=None,
                 use_cache: bool = True, vocab_size=None):
        """Sample max_new_tokens tokens after idx (B, T), one at a time.

        With the KV cache (default) the prompt runs once, then each step runs only the newest
        token against the stored keys and values: the cost per token no longer grows with the
        prefix's full forward. use_cache=False re-runs the whole context every step (the
        reference the cache is tested against). The context is not cropped unless
        `max_context` is given (RoPE extrapolates); a sliding window shifts every position,
        so it cannot reuse cached keys and always runs uncached. vocab_size: the tokenizer's (the
        head is padded, 50257 -> 50304; no padding id is ever drawn)."""
        if not use_cache or max_context is not None:
            for _ in range(max_new_tokens):
                ctx = idx if max_context is None else idx[:, -max_context:]
                idx = torch.cat((idx, sample_next(self(ctx)[0][:, -1], temperature, top_k, vocab_size)), dim=1)
            return idx
        cache = self.new_kv_cache(idx.size(0), idx.size(1) + max_new_tokens)
        pos, new = 0, idx                                       # the first step runs the whole prompt
        for _ in range(max_new_tokens):
            logits = self.forward_cached(new, cache, pos)       # (B, t, vocab)
            pos += new.size(1)
            new = sample_next(logits[:, -1], temperature, top_k, vocab_size)
            idx = torch.cat((idx, new), dim=1)
        return idx


def sample_next(logits, temperature: float, top_k=None, vocab_size=None):
    """One token per row from the last position's logits (B, vocab); temperature <= 0: greedy."""
    logits = logits[:, :vocab_size].float()     # a padded head's rows past the tokenizer's are no token
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


def make_config(preset: str, vocab_size=None, attn: str = "sdpa", rope_switch: str = "none") -> GPTConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = dict(PRESETS[preset])
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return GPTConfig(**fields, attn=attn, rope_switch=rope_switch)


# ----------------------------------------------------------------------------- FLOPs per token

def flops_per_token(cfg: GPTConfig, T: int) -> float:
    """Training FLOPs per token at sequence length T (PaLM, arXiv 2204.02311, App. B; nanoGPT's
    estimate_mfu). Weights: 6 per parameter per token (2 forward, 4 backward), counting every
    matrix the token passes through -- the head included, the input embedding (a lookup) not.
    Attention scores and their use, q·k and p·v: 12·L·d·T forward+backward per token with every
    key visited; a causal kernel skips the masked half, so 6·L·d·T (what ours and SDPA's run)."""
    d, L = cfg.n_embd, cfg.n_layer
    per_layer = 3 * d * d + d * d + 2 * 4 * d * d      # qkv, output projection, MLP in and out
    n = L * per_layer + d * cfg.vocab_size              # + the head (untied)
    return 6 * n + 6 * L * d * T
