"""A Pythia-style (GPT-NeoX) RoPE transformer in one file.

With the same weights, the Pythia presets compute what GPT-NeoX computes (Hugging Face's
GPTNeoXForCausalLM): LayerNorm, parallel residual  x + attn(ln1(x)) + mlp(ln2(x)),
rotate-half RoPE on the first 25% of each head's dims, exact (erf) GELU, untied embeddings.
References: Pythia, https://arxiv.org/abs/2304.01373 ; RoPE, https://arxiv.org/abs/2104.09864

GrowLength needs one thing from the model: no fixed maximum length. RoPE tables are built
for the longest length seen so far and grown on demand, so a model trained at T=128 can be
run at T=1024 (direct positional extrapolation, the paper's Sec. 3.1). `--rope-switch pi|ntk|yarn`
instead rescales the tables at every stage change (`rope_frequencies`, `GPT.switch_rope`).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    rope_orig_len: int = 0         # the first stage's length: the context the unscaled RoPE was trained at
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


def rope_frequencies(inv_freq, base: float, method: str, orig_len: int, s: float):
    """RoPE stretched from a context of `orig_len` tokens to s * orig_len: -> (frequencies, attention factor).

    Each method is a different answer to "positions past orig_len were never seen" (YaRN paper,
    Peng et al. 2023, https://arxiv.org/abs/2309.00071, Sec. 2-3, whose notation this follows).
    `s` is cumulative (current stage length / first stage length), so the tables are a function
    of (first, current) alone. For PI and NTK that is exactly what applying the method at every
    switch with s = new/old compounds to; for YaRN the two differ slightly: modded-nanogpt
    (github.com/KellerJordan/modded-nanogpt, `Yarn.apply`) compounds per window change, we use
    Hugging Face's one-shot form (rope_type "yarn", original_max_position_embeddings = first length).
    """
    if method == "none" or s == 1.0:
        # none: the paper's direct extrapolation, the tables never change. s == 1 is the first stage.
        return inv_freq, 1.0
    if method == "pi":
        # Position interpolation (Chen et al. 2023, arXiv 2306.15595): position m becomes m / s,
        # i.e. m * old/new, so the new length's positions span the angles the model was trained on.
        return inv_freq / s, 1.0
    if method == "ntk":
        # NTK-aware scaling: the base grows to base * s^(d/(d-2)) (YaRN Eq. 16). The fastest dim is
        # unchanged and the slowest is slowed by exactly s: high frequencies extrapolate, low ones interpolate.
        d = 2 * inv_freq.numel()
        new_base = base * s ** (d / (d - 2))
        return 1.0 / (new_base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)), 1.0
    if method == "yarn":
        # YaRN = NTK-by-parts (Eq. 17-18) + temperature (Eq. 22). r = rotations a dim makes over the
        # original context: dims with r > beta keep their frequency (extrapolate), dims with r < alpha
        # are interpolated like PI (theta / s), a linear ramp in between. HF rounds the ramp's ends to
        # whole dims; this is the paper's continuous ramp, as modded-nanogpt uses.
        rotations = orig_len * inv_freq / (2 * math.pi)
        gamma = ((rotations - YARN_ALPHA) / (YARN_BETA - YARN_ALPHA)).clamp(0.0, 1.0)
        freq = (1.0 - gamma) * inv_freq / s + gamma * inv_freq
        # sqrt(1/t) = 0.1 ln(s) + 1 multiplies cos and sin (HF's `attention_factor`), so it scales
        # q and k alike and the rotated part of q.k by its square: sharper attention over more tokens.
        return freq, 0.1 * math.log(s) + 1.0
    raise ValueError(f"unknown RoPE switch {method!r}; choose one of {ROPE_SWITCHES}")


class Rotary(nn.Module):
    """Rotate-half RoPE on the first `rot_dim` dims of each head, tables grown on demand.

    The cos/sin tables describe RoPE completely, scaling included (an attention factor is folded
    into them), so whatever applies them needs nothing else."""

    def __init__(self, rot_dim: int, base: float):
        super().__init__()
        self.rot_dim, self.base = rot_dim, base
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
            # Grow to the next power of two so a slowly growing T does not rebuild every call.
            n = max(T, 2 ** math.ceil(math.log2(max(T, 1))))
            self._cos, self._sin = self._build(n, device)
        return self._cos[:T], self._sin[:T]

    def forward(self, x):  # x: (B, nh, T, hs)
        T = x.shape[-2]
        cos, sin = self.tables(T, x.device)
        x_rot, x_pass = x[..., : self.rot_dim].float(), x[..., self.rot_dim:]
        x1, x2 = x_rot.chunk(2, dim=-1)
        rotated = torch.cat((-x2, x1), dim=-1)                    # rotate_half
        # In fp32: at long T, bf16 angles would blur positions (8 bits of mantissa).
        x_rot = (x_rot * cos + rotated * sin).to(x.dtype)
        return torch.cat((x_rot, x_pass), dim=-1)


def naive_attention(q, k, v):
    """Causal softmax(q k^T / sqrt(d)) v, spelled out: the readable reference."""
    T, hs = q.shape[-2], q.shape[-1]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))       # (B, nh, T, T)
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att.float(), dim=-1).to(q.dtype)
    return att @ v                                                # (B, nh, T, hs)


def attention(q, k, v, backend: str):
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if backend == "naive":
        return naive_attention(q, k, v)
    if backend == "triton":
        from kernels.attention import flash_attention   # imported late: Triton is optional off-CUDA
        return flash_attention(q, k, v, causal=True)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTN_BACKENDS}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.cfg = cfg
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        # NeoX packs q, k, v per head: the output reads as (nh, 3, hs), so Pythia weights load as-is.
        self.query_key_value = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.dense = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.rotary = Rotary(int(cfg.head_dim * cfg.rotary_pct), cfg.rope_base)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.query_key_value(x).view(B, T, self.n_head, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)   # each (B, nh, T, hs)
        q, k = self.rotary(q), self.rotary(k)
        y = attention(q, k, v, self.cfg.attn)
        y = y.transpose(1, 2).contiguous().view(B, T, C)              # (B, T, C)
        return self.dense(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.dense_4h_to_h = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))     # exact (erf) GELU, as NeoX


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.parallel = cfg.parallel_residual
        self.input_layernorm = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.attention = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x):
        if self.parallel:   # GPT-NeoX / Pythia: both branches read the same x
            return x + self.attention(self.input_layernorm(x)) + self.mlp(self.post_attention_layernorm(x))
        x = x + self.attention(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_in = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_layer_norm = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.embed_out = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)   # untied, as Pythia
        self.apply(self._init_weights)
        # Residual-branch outputs scaled down with depth (GPT-2 paper, Sec. 2.3), as nanoGPT does.
        for name, p in self.named_parameters():
            if name.endswith("dense.weight") or name.endswith("dense_4h_to_h.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.rope_switch not in ROPE_SWITCHES:
            raise ValueError(f"unknown RoPE switch {cfg.rope_switch!r}; choose one of {ROPE_SWITCHES}")
        self._apply_rope()              # a config from a checkpoint may carry a stage's scaling

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
        """At a stage change: stretch RoPE from the first stage's length to `new_len` by
        cfg.rope_switch (s = new_len / first_len, cumulative), recorded in the config."""
        if self.cfg.rope_switch == "none":
            return                      # the paper's choice: tables untouched, positions extrapolate
        self.cfg.rope_orig_len, self.cfg.rope_scale = first_len, new_len / first_len
        self._apply_rope()

    def _apply_rope(self):
        for block in self.layers:
            block.attention.rotary.rescale(self.cfg.rope_switch, self.cfg.rope_orig_len, self.cfg.rope_scale)

    def set_attention(self, backend: str):
        if backend not in ATTN_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTN_BACKENDS}")
        self.cfg.attn = backend

    def forward(self, idx, targets=None):
        x = self.embed_in(idx)                                  # (B, T, C)
        for block in self.layers:
            x = block(x)
        logits = self.embed_out(self.final_layer_norm(x))      # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k=None, max_context=None):
        """Sample tokens one at a time (no KV cache: simple, and fine at course sizes).
        The context is not cropped unless `max_context` is given: RoPE extrapolates."""
        for _ in range(max_new_tokens):
            ctx = idx if max_context is None else idx[:, -max_context:]
            logits = self(ctx)[0][:, -1, :].float()
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


def make_config(preset: str, vocab_size=None, attn: str = "sdpa", rope_switch: str = "none") -> GPTConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = dict(PRESETS[preset])
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return GPTConfig(**fields, attn=attn, rope_switch=rope_switch)
