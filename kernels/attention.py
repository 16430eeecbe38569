"""Fused causal attention in Triton, FlashAttention-2 style: forward and backward.

    o = softmax(sm_scale * q @ k^T + causal_mask) @ v          q, k, v, o: (B, H, T, D)

Materialising the (T, T) score matrix costs O(T^2) memory traffic; this kernel never
writes it. FlashAttention-2 (Dao 2023, https://arxiv.org/abs/2307.08691) in brief:

Forward. One program owns BLOCK_M query rows of one (batch, head) and walks over the
keys BLOCK_N at a time. It keeps, per row, the running max `m` of the scores seen so
far, the running normaliser `l = sum(exp(s - m))` and an unnormalised output `acc`.
When a new block raises the max, the old `l` and `acc` are rescaled by
`exp(m_old - m_new)` ("online softmax", Alg. 1 of the paper), so one pass suffices
and `o = acc / l` at the end. Besides `o` it stores one float per row, the
log-sum-exp `lse = m + log(l)` (natural log, fp32): everything the backward needs
to rebuild the softmax.

Backward. With `P = exp(S - lse)` recomputed block by block from q, k and the
stored `lse` (never stored itself):
    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta),   delta = rowsum(dO * O),
    dQ = sm_scale * dS K,   dK = sm_scale * dS^T Q                  (Alg. 2)
Three kernels: `delta` first; then one program per K/V block that loops over the
query blocks that can see it (for causal, only those at or after it) and owns dK and
dV; then one program per Q block that loops over key blocks and owns dQ. Every
output element has exactly one writer, so there are no atomics and the gradients
are bit-identical from run to run.

Tricks. Scores are kept in base 2: `sm_scale * log2(e)` is folded into the scale so
the exponentials are `exp2` (one hardware instruction). Accumulators are fp32;
only P and dS are rounded to the input dtype before their matmuls, as in the paper.
Causal attention splits each loop into an "off-band" part, whole blocks strictly on
one side of the diagonal that need no mask at all, and an "on-band" part (the
diagonal block, or the ragged last block) that is masked. Fully masked blocks are
never visited, which halves the work.

Limits:
- head dim D in {16, 32, 64, 128}; dtypes fp32, fp16, bf16 (fp32 uses IEEE fp32
  dots on GPU, not TF32: correct but slow, meant for checking);
- q, k and v have the same shape (B, H, T, D): no GQA/MQA, no cross-attention with
  different query and key lengths, no KV cache;
- masks: causal or none. No padding mask, no arbitrary mask, no sliding window, no
  attention bias / ALiBi, no dropout;
- B * H <= 65535 (CUDA grid limit on its second axis);
- no double backward; not tested under torch.compile;
- any T >= 1 works: ragged tails are masked, not padded.

Autotuning. On a GPU each kernel is autotuned over a few block sizes, keyed on
(T, D, causal, dtype). The first call at a new sequence length therefore spends a
few seconds benchmarking. A GrowLength run meets a new length at every stage, so
call `warmup([(B, H, T, D) for each stage])` before the training clock starts
(the modded-nanogpt habit of compiling every stage length up front).
Under TRITON_INTERPRET=1 (CPU tests) there is exactly one small config.
"""

import math
import os

import torch
import triton
import triton.language as tl

# Read once at import: Triton itself decides at decoration time (below) whether
# @triton.jit functions are compiled or interpreted, so changing it later would not help.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")

LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * LOG2E)
LN2 = 0.6931471805599453  # ln(2): converts a base-2 log-sum-exp back to natural log
# The same two numbers for use inside kernels: compiled Triton code may only read
# globals that are tl.constexpr (the interpreter would not complain; GPUs do).
_LOG2E_C = tl.constexpr(LOG2E)
_LN2_C = tl.constexpr(LN2)

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _empty(shape, dtype, device):
    """Every buffer the kernels write goes through here; tests patch it to fill with NaN,
    so an element the kernel forgets to write shows up instead of passing by luck."""
    return torch.empty(shape, dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------
# Autotuning configs


def _configs(gpu, interpret):
    """gpu: (BLOCK_M, BLOCK_N, num_warps, num_stages) tuples to try on a GPU;
    interpret: the single (BLOCK_M, BLOCK_N) used under the interpreter, where each
    program runs in numpy and fewer, bigger blocks are simply faster."""
    if _INTERPRET:
        bm, bn = interpret
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in gpu]


# Forward and dQ own BLOCK_M query rows and step over keys by BLOCK_N, so they need
# BLOCK_M % BLOCK_N == 0 (the diagonal block is then a whole number of key steps);
# dK/dV owns BLOCK_N keys and steps over queries, so it needs BLOCK_N % BLOCK_M == 0.
# The interpreter configs keep the two block sizes different on purpose, so the CPU
# tests exercise that sub-stepping of the diagonal, as the GPU configs do.
_FWD_CONFIGS = _configs(
    gpu=[(64, 64, 4, 3), (64, 64, 4, 4), (128, 64, 4, 3), (128, 64, 4, 4),
         (128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 128, 4, 3)],
    interpret=(64, 32))
_DKDV_CONFIGS = _configs(
    gpu=[(32, 64, 4, 3), (32, 128, 4, 3), (32, 128, 8, 3), (64, 64, 4, 3),
         (64, 128, 8, 2), (64, 128, 8, 3)],
    interpret=(32, 64))
_DQ_CONFIGS = _configs(
    gpu=[(64, 32, 4, 3), (128, 32, 4, 3), (128, 32, 4, 4), (64, 64, 4, 3),
         (128, 64, 8, 2), (128, 64, 8, 3)],
    interpret=(64, 32))
_DELTA_BLOCK = 64
# N_CTX is the sequence length T of the call: each training stage length tunes once.
_TUNE_KEY = ["N_CTX", "HEAD_DIM", "CAUSAL"]  # Triton adds the tensor dtypes to the key


# Dot operands. On a GPU the tensor cores multiply the input dtype (in_dt) directly and
# DOT_FP32 is False. Under the interpreter DOT_FP32 is True and every dot operand is
# upcast to fp32 as it is loaded, because the interpreter's tl.dot multiplies bf16
# operands as raw uint16 bits (fp32 is exact there; P and dS are still rounded to in_dt
# first, at the same places as on the GPU). The upcast sits at the loads rather than in
# a helper around tl.dot because each device-function call costs the interpreter ~1 ms.


# ----------------------------------------------------------------------------------------
# Forward


@triton.jit
def _fwd_inner(acc, m_i, l_i, q, K, V, offs_m, lo, hi, qk_scale, N_CTX,
               HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               MASKED: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold keys [lo, hi) into the running (acc, m_i, l_i) of one query block.
    MASKED=False is the fast path for blocks known to be fully visible and in range."""
    in_dt = K.dtype.element_ty
    dot_dt = tl.float32 if DOT_FP32 else in_dt
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ptrs = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
        if MASKED:
            k = tl.load(K + kv_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
        else:
            k = tl.load(K + kv_ptrs).to(dot_dt)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
        if MASKED:
            keep = offs_n[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            qk = tl.where(keep, qk, float("-inf"))
        # Scale inside the exponent (qk_scale > 0 commutes with max) so that multiply
        # and subtract fuse into one FMA. m_i is the running max in base-2 units.
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(V + kv_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
        else:
            v = tl.load(V + kv_ptrs).to(dot_dt)
        acc = tl.dot(p.to(in_dt).to(dot_dt), v, acc * alpha[:, None],
                     input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.autotune(configs=_FWD_CONFIGS, key=_TUNE_KEY)
@triton.jit
def _attn_fwd(Q, K, V, O, LSE, qk_scale, N_CTX,
              HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
              DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Causal: the last query blocks see the most keys. Launch them first so the short
    # programs, not the long ones, fill the GPU's final wave.
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: B*H*T*D can pass 2^31
    head = bh * N_CTX * HEAD_DIM  # all tensors are contiguous (B, H, T, D)
    Q += head
    K += head
    V += head
    O += head
    LSE += bh * N_CTX

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    q_ptrs = offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    q = tl.load(Q + q_ptrs, mask=row_ok[:, None], other=0.0)  # (BLOCK_M, HEAD_DIM)
    if DOT_FP32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    if CAUSAL:
        # Keys left of this block are visible to every row (and < T since this block
        # starts below T): no mask. The diagonal block is masked; right of it is skipped.
        band_lo = start_m * BLOCK_M
        band_hi = tl.minimum(band_lo + BLOCK_M, N_CTX)
    else:
        # Every whole key block is visible; only a ragged last one needs a mask.
        band_lo = (N_CTX // BLOCK_N) * BLOCK_N
        band_hi = N_CTX
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, offs_m, 0, band_lo, qk_scale, N_CTX,
                               HEAD_DIM, BLOCK_N, CAUSAL, False, DOT_FP32, DOT_PRECISION)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, offs_m, band_lo, band_hi, qk_scale,
                               N_CTX, HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION)
    # Every row saw at least one key (key 0, or itself), so l_i > 0 and m_i is finite.
    o = acc / l_i[:, None]
    tl.store(O + q_ptrs, o.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + offs_m, (m_i + tl.log2(l_i)) * _LN2_C, mask=row_ok)


def _dot_flags(dtype):
    # fp32 inputs get IEEE fp32 dots: Triton's default on NVIDIA is TF32 (10-bit
    # mantissa), which would make the fp32 path no more accurate than bf16.
    return dict(DOT_FP32=_INTERPRET,
                DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32")


def _flash_fwd(q, k, v, causal, sm_scale):
    """q, k, v contiguous (B, H, T, D) -> o (B, H, T, D), lse (B, H, T) fp32."""
    B, H, T, D = q.shape
    o = _empty(q.shape, q.dtype, q.device)
    lse = _empty((B, H, T), torch.float32, q.device)

    def grid(meta):
        return (triton.cdiv(T, meta["BLOCK_M"]), B * H)

    _attn_fwd[grid](q, k, v, o, lse, sm_scale * LOG2E, T,
                    HEAD_DIM=D, CAUSAL=causal, **_dot_flags(q.dtype))
    return o, lse


# ----------------------------------------------------------------------------------------
# Backward


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, N_CTX, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta_i = sum_j P_ij dP_ij = rowsum(dO * O): the softmax-Jacobian term, computed
    # once here instead of once per key block in the dQ and dK/dV loops.
    start_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    ptrs = bh * N_CTX * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    o = tl.load(O + ptrs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + ptrs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + bh * N_CTX + offs_m, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, offs_n, lo, hi, qk_scale, N_CTX,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr,
                MASKED: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Add the contribution of query rows [lo, hi) to one key block's dk, dv.
    Works on transposed tiles (keys x queries) so dk and dv come out as (BLOCK_N, D)."""
    in_dt = Q.dtype.element_ty
    dot_dt = tl.float32 if DOT_FP32 else in_dt
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        ptrs = offs_m[:, None] * HEAD_DIM + offs_d[None, :]
        if MASKED:
            row_ok = offs_m < N_CTX
            q = tl.load(Q + ptrs, mask=row_ok[:, None], other=0.0).to(dot_dt)
            do = tl.load(DO + ptrs, mask=row_ok[:, None], other=0.0).to(dot_dt)
            lse = tl.load(LSE + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
        else:
            q = tl.load(Q + ptrs).to(dot_dt)
            do = tl.load(DO + ptrs).to(dot_dt)
            lse = tl.load(LSE + offs_m)
            delta = tl.load(DELTA + offs_m)
        qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
        pT = tl.exp2(qkT * qk_scale - (lse * _LOG2E_C)[None, :])  # P^T, rebuilt from lse
        if MASKED:
            # Zero P before it is used: above the diagonal exp2 may overflow to inf.
            keep = offs_m[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[None, :] >= offs_n[:, None])
            pT = tl.where(keep, pT, 0.0)
        dv = tl.dot(pT.to(in_dt).to(dot_dt), do, dv, input_precision=DOT_PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (dO V^T)^T
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(in_dt).to(dot_dt), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.autotune(configs=_DKDV_CONFIGS, key=_TUNE_KEY)
@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale, qk_scale, N_CTX,
                   HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                   DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Natural order is already heaviest-first here: early key blocks are seen by the
    # most query blocks.
    start_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    head = bh * N_CTX * HEAD_DIM
    Q += head
    K += head
    V += head
    DO += head
    DK += head
    DV += head
    LSE += bh * N_CTX
    DELTA += bh * N_CTX

    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < N_CTX
    kv_ptrs = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    # Keys past T load as zero; their dk, dv rows are computed but never stored.
    k = tl.load(K + kv_ptrs, mask=col_ok[:, None], other=0.0)
    v = tl.load(V + kv_ptrs, mask=col_ok[:, None], other=0.0)
    if DOT_FP32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)

    # Query rows split three ways: the diagonal band (masked), whole query blocks
    # below it (no mask), and a ragged last query block (masked).
    full_hi = (N_CTX // BLOCK_M) * BLOCK_M
    if CAUSAL:
        band_lo = start_n * BLOCK_N  # rows above this block cannot see it: skipped
        band_hi = tl.minimum(band_lo + BLOCK_N, N_CTX)
        tail_lo = tl.maximum(full_hi, band_hi)
    else:
        band_lo = 0  # no diagonal: an empty band
        band_hi = 0
        tail_lo = full_hi
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, offs_n, band_lo, band_hi,
                         qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, True,
                         DOT_FP32, DOT_PRECISION)
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, offs_n, band_hi, full_hi,
                         qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, False,
                         DOT_FP32, DOT_PRECISION)
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, offs_n, tail_lo, N_CTX,
                         qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, True,
                         DOT_FP32, DOT_PRECISION)

    tl.store(DK + kv_ptrs, (dk * sm_scale).to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + kv_ptrs, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _dq_inner(dq, q, do, lse, delta, K, V, offs_m, lo, hi, qk_scale, N_CTX,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
              MASKED: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Add the contribution of keys [lo, hi) to one query block's dq."""
    in_dt = K.dtype.element_ty
    dot_dt = tl.float32 if DOT_FP32 else in_dt
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ptrs = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
        if MASKED:
            k = tl.load(K + kv_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
            v = tl.load(V + kv_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
        else:
            k = tl.load(K + kv_ptrs).to(dot_dt)
            v = tl.load(V + kv_ptrs).to(dot_dt)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
        p = tl.exp2(qk * qk_scale - (lse * _LOG2E_C)[:, None])
        if MASKED:
            keep = offs_n[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(in_dt).to(dot_dt), k, dq, input_precision=DOT_PRECISION)
    return dq


@triton.autotune(configs=_DQ_CONFIGS, key=_TUNE_KEY)
@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, sm_scale, qk_scale, N_CTX,
                 HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                 DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)  # heaviest first, as in forward
    bh = tl.program_id(1).to(tl.int64)
    head = bh * N_CTX * HEAD_DIM
    Q += head
    K += head
    V += head
    DO += head
    DQ += head
    LSE += bh * N_CTX
    DELTA += bh * N_CTX

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    q_ptrs = offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    # Rows past T load as zero; their dq is computed but never stored.
    q = tl.load(Q + q_ptrs, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + q_ptrs, mask=row_ok[:, None], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    if CAUSAL:  # the same split of the key range as the forward pass
        band_lo = start_m * BLOCK_M
        band_hi = tl.minimum(band_lo + BLOCK_M, N_CTX)
    else:
        band_lo = (N_CTX // BLOCK_N) * BLOCK_N
        band_hi = N_CTX
    dq = _dq_inner(dq, q, do, lse, delta, K, V, offs_m, 0, band_lo, qk_scale, N_CTX,
                   HEAD_DIM, BLOCK_N, CAUSAL, False, DOT_FP32, DOT_PRECISION)
    dq = _dq_inner(dq, q, do, lse, delta, K, V, offs_m, band_lo, band_hi, qk_scale, N_CTX,
                   HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION)
    tl.store(DQ + q_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


def _flash_bwd(do, q, k, v, o, lse, causal, sm_scale):
    B, H, T, D = q.shape
    do = do.to(q.dtype).contiguous()  # autograd may hand over a strided gradient
    flags = _dot_flags(q.dtype)

    delta = _empty((B, H, T), torch.float32, q.device)
    _attn_bwd_delta[(triton.cdiv(T, _DELTA_BLOCK), B * H)](
        o, do, delta, T, HEAD_DIM=D, BLOCK_M=_DELTA_BLOCK)

    dq = _empty(q.shape, q.dtype, q.device)
    dk = _empty(k.shape, k.dtype, k.device)
    dv = _empty(v.shape, v.dtype, v.device)
    _attn_bwd_dkdv[lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * H)](
        q, k, v, do, lse, delta, dk, dv, sm_scale, sm_scale * LOG2E, T,
        HEAD_DIM=D, CAUSAL=causal, **flags)
    _attn_bwd_dq[lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)](
        q, k, v, do, lse, delta, dq, sm_scale, sm_scale * LOG2E, T,
        HEAD_DIM=D, CAUSAL=causal, **flags)
    return dq, dk, dv


# ----------------------------------------------------------------------------------------
# Autograd wrapper and public API


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        o, lse = _flash_fwd(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal = causal
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _flash_bwd(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale)
        return dq, dk, dv, None, None


def _check_inputs(q, k, v):
    """Raise ValueError, saying what is wrong, for inputs the kernels cannot take."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"flash_attention: {name} must be a torch.Tensor, "
                             f"got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"flash_attention: {name} must be 4-D (B, H, T, D), "
                             f"got shape {tuple(t.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"flash_attention: q, k, v must have the same shape (no GQA or "
                         f"cross-attention), got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attention: q, k, v must share a dtype, "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in DTYPES:
        raise ValueError(f"flash_attention: dtype {q.dtype} not supported; "
                         f"use float32, float16 or bfloat16")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flash_attention: q, k, v must be on one device, "
                         f"got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"flash_attention: tensors are on {q.device}, but Triton kernels need a "
                         f"CUDA GPU (or TRITON_INTERPRET=1 for the slow CPU interpreter); "
                         f"use attention_ref or torch SDPA instead")
    B, H, T, D = q.shape
    if D not in HEAD_DIMS:
        raise ValueError(f"flash_attention: head dim D={D} not supported; the kernels are "
                         f"compiled for D in {HEAD_DIMS} (tl.arange needs a power of two)")
    if T < 1 or B * H < 1:
        raise ValueError(f"flash_attention: empty input, shape {tuple(q.shape)}")
    if B * H > 65535:
        raise ValueError(f"flash_attention: B*H={B * H} exceeds 65535, the CUDA grid limit "
                         f"on the axis that indexes (batch, head); split the batch")


def flash_attention(q, k, v, causal=True, sm_scale=None):
    """Fused attention softmax(sm_scale * q @ k^T [+ causal mask]) @ v, differentiable.

    q, k, v: (B, H, T, D) tensors of one dtype (fp32, fp16 or bf16) on a CUDA device
    (any device under TRITON_INTERPRET=1), D in {16, 32, 64, 128}, any T >= 1.
    sm_scale defaults to 1/sqrt(D). Returns (B, H, T, D) in the input dtype.
    """
    _check_inputs(q, k, v)
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    if not sm_scale > 0:
        # The kernels take the row max of unscaled scores, which needs a positive scale.
        raise ValueError(f"flash_attention: sm_scale must be > 0, got {sm_scale}")
    # The kernels index (B, H, T, D) as one contiguous block; this copies only if needed
    # (e.g. q coming from a (B, T, H, D) -> (B, H, T, D) transpose).
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _FlashAttention.apply(q, k, v, bool(causal), sm_scale)


def attention_ref(q, k, v, causal=True, sm_scale=None, compute_dtype=None):
    """The reference: plain torch, materialising the (T, T) scores.

    Computes in fp32 (float64 for float64 inputs), or in `compute_dtype` if given (tests
    use the input's own low precision to measure what rounding alone costs), and returns
    the input dtype. Differentiable by autograd; any device, any T, any D.
    """
    if compute_dtype is None:
        compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    T = q.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    qc, kc, vc = (t.to(compute_dtype) for t in (q, k, v))
    att = (qc @ kc.transpose(-2, -1)) * scale  # (B, H, T, T)
    if causal:
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        att = att.masked_fill(future, float("-inf"))
    att = torch.softmax(att, dim=-1)
    return (att @ vc).to(q.dtype)  # (B, H, T, D)


def warmup(shapes, dtype=torch.bfloat16, device="cuda", causal=True):
    """Run forward + backward once per (B, H, T, D) in `shapes`, so that autotuning for
    every sequence length happens now, not inside a timed training budget.

    The autotune key is (T, D, causal, dtype); B and H do not enter it, but the best
    block sizes depend on how many programs fill the GPU, so pass the micro-batch shape
    each stage will really use, e.g. [(B_s, n_head, T_s, head_dim) for each stage s].
    """
    for B, H, T, D in shapes:
        q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        flash_attention(q, k, v, causal=causal).backward(torch.randn_like(q))
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
