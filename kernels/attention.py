"""Fused causal attention in Triton, FlashAttention-2 style: forward and backward.

    o = softmax(sm_scale * q @ k^T + causal_mask) @ v          q, k, v, o: (B, H, T, D)

The plain-torch reference for this formula is `kernels.reference.attention_ref`.

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

Documents (train.py --doc-mask). With `doc_starts`, (B, T), query t sees keys
doc_starts[t] .. t only: the documents joined before its own are masked. The same rule
that skips blocks above the diagonal skips those: a query block starts its key loop at the
block holding its rows' earliest document start (`_doc_key_range`), and a key block (dK/dV)
stops its query loop at the end of its last key's document (`_doc_query_range`), so the work
follows the documents' lengths. Between the skipped blocks and the diagonal, blocks that
every row sees whole still take the unmasked path; only blocks a boundary cuts are masked.
HAS_DOCS is a constexpr: without documents the kernels compile exactly as before.

Layout. q, k and v may have any strides (only the last dim must be contiguous, as in
FlashAttention's API; otherwise that tensor is copied): each kernel takes the batch,
head and time strides of every tensor it touches, as the Triton tutorial does. So the
model passes (B, H, T, D) views without copying: v of its fused qkv projection,
(B, T, H, 3, D) in memory, and q, k of the one (B, T, H, 2, D) tensor its RoPE returns.
Each output (o, and dq, dk, dv) is allocated dense in the memory order of its input: for
such a view o is a transposed view of a contiguous (B, T, H, D) tensor, and the model's
`.reshape(B, T, C)` after attention is a free view.

Custom op. The forward and backward are registered with torch.library as
`growlength::flash_attn_fwd` / `flash_attn_bwd` (with fake implementations that give
the output shapes and strides), and the forward's autograd formula is the backward op.
torch.compile then treats attention as one opaque op, never tracing the Python that
launches the kernels, and compiles the whole model into one graph.

Limits:
- head dim D in {16, 32, 64, 128}; dtypes fp32, fp16, bf16 (fp32 uses IEEE fp32
  dots on GPU, not TF32: correct but slow, meant for checking);
- q, k and v have the same shape (B, H, T, D): no GQA/MQA, no cross-attention with
  different query and key lengths, no KV cache;
- the log-sum-exp the forward op returns beside o is not differentiable;
- masks: causal, none, or causal within documents (doc_starts: non-decreasing, as
  data.doc_starts makes them). No padding mask, no arbitrary mask, no sliding window, no
  attention bias / ALiBi, no dropout;
- B * H <= 65535 (CUDA grid limit on its second axis);
- no double backward;
- any T >= 1 works: ragged tails are masked, not padded.

Autotuning. On a GPU each kernel is autotuned over a few block sizes, keyed on
(T, D, causal, documents, dtype). The first call at a new sequence length therefore spends a
few seconds benchmarking; train.py runs every stage length once before its training
clock starts, so that happens outside the budget. Under TRITON_INTERPRET=1 (CPU tests)
there is exactly one small config. Inside `with fixed_configs():` every kernel runs its
first config without benchmarking: correctness tests on a GPU use it to stay fast.
"""

import contextlib
import math
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels import interpreting

# Read once at import: Triton itself decides at decoration time (below) whether
# @triton.jit functions are compiled or interpreted, so changing it later would not help.
_INTERPRET = interpreting()

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


def _empty_like_layout(t):
    """A (B, H, T, D) output for input t, dense in t's memory order: a transposed view of a
    contiguous (B, T, H, D) tensor when t's heads lie inside its time steps (t is a view of
    a (B, T, H, ·) tensor, as the model passes q, k, v), else a contiguous (B, H, T, D) one."""
    B, H, T, D = t.shape
    if t.stride(1) < t.stride(2):
        return _empty((B, T, H, D), t.dtype, t.device).transpose(1, 2)
    return _empty((B, H, T, D), t.dtype, t.device)


def _bht(t):
    """The batch, head and time strides of a (B, H, T, D) tensor, in elements; the D stride
    is 1 (flash_attention makes sure of it), so the kernels do not take it."""
    return t.stride(0), t.stride(1), t.stride(2)


# ----------------------------------------------------------------------------------------
# Autotuning configs


def _configs(gpu, interpret):
    """gpu: (BLOCK_M, BLOCK_N, num_warps, num_stages[, skip]) tuples to try on a GPU;
    interpret: the single (BLOCK_M, BLOCK_N) used under the interpreter, where each
    program runs in numpy and fewer, bigger blocks are simply faster."""
    if _INTERPRET:
        bm, bn = interpret
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": c[0], "BLOCK_N": c[1]}, num_warps=c[2], num_stages=c[3])
            for c in gpu]


# Forward and dQ own BLOCK_M query rows and step over keys by BLOCK_N, so they need
# BLOCK_M % BLOCK_N == 0 (the diagonal block is then a whole number of key steps);
# dK/dV owns BLOCK_N keys and steps over queries, so it needs BLOCK_N % BLOCK_M == 0.
# The interpreter configs keep the two block sizes different on purpose, so the CPU
# tests exercise that sub-stepping of the diagonal, as the GPU configs do.
# The first config of each list is the one `fixed_configs()` runs.
# Registers. A program's fp32 accumulators (acc, or dk and dv) and score tiles live in
# registers over its 32 * num_warps threads, 255 each at most; what does not fit spills to
# local memory, reread at every key step. So 128-wide tiles get 8 warps, and a config that
# still spills names where in `skip`, {(compute capability major, HEAD_DIM)} (8: sm_80/86/89,
# 9: sm_90): the autotuner never times it there (_skip_spilling). Measured with `python bench.py
# compile` (results/compile.md; triton 3.7.1, ptxas -v, bf16). A config over a GPU's shared
# memory Triton's autotuner skips itself (OutOfResources). fp32 inputs (IEEE dots without
# tensor cores, meant for checking, not speed) spill from D=32 on, and at D=128 the forward
# needs 176 KiB of shared memory, over sm_8x's 163/99 KiB (results/compile.md): a known limit.
_FWD_GPU = [
    (64, 64, 4, 3), (64, 64, 4, 4), (128, 64, 8, 3), (128, 64, 8, 4),
    (128, 64, 4, 3, {(8, 64), (8, 128), (9, 128)}),  # kept for sm_90 at D=64 (251 registers)
    (128, 128, 8, 2, {(8, 64), (8, 128)}), (128, 128, 8, 3, {(8, 128)})]
_DKDV_GPU = [
    (32, 64, 4, 3), (32, 64, 8, 3), (16, 128, 8, 3), (64, 64, 8, 3),
    (32, 128, 8, 3, {(8, 128)}), (64, 128, 8, 3, {(8, 128), (9, 128)})]
_DQ_GPU = [
    (64, 32, 4, 3), (64, 32, 4, 4), (64, 64, 4, 3), (64, 64, 8, 3), (128, 32, 8, 3),
    (128, 64, 8, 3, {(8, 128)})]
_GPU_CONFIGS = {"_attn_fwd": _FWD_GPU, "_attn_bwd_dkdv": _DKDV_GPU, "_attn_bwd_dq": _DQ_GPU}
_FWD_CONFIGS = _configs(_FWD_GPU, interpret=(64, 32))
_DKDV_CONFIGS = _configs(_DKDV_GPU, interpret=(32, 64))
_DQ_CONFIGS = _configs(_DQ_GPU, interpret=(64, 32))


def spills(kernel, config, head_dim, major):
    """True when `config` (a triton.Config) of the kernel named `kernel` is listed above as
    spilling registers on compute capability major.x at this head dim."""
    key = (config.kwargs.get("BLOCK_M"), config.kwargs.get("BLOCK_N"), config.num_warps,
           config.num_stages)
    return any(tuple(c[:4]) == key and (major, head_dim) in c[4]
               for c in _GPU_CONFIGS.get(kernel, ()) if len(c) > 4)


def _skip_spilling(kernel):
    """Triton's early_config_prune for the kernel named `kernel`: the autotuner times only
    the configs that do not spill on this GPU at this head dim."""
    def prune(configs, named_args, **kwargs):
        q = named_args["Q"]
        if q.device.type != "cuda":  # the interpreter: nothing is compiled
            return configs
        major = torch.cuda.get_device_capability(q.device)[0]
        head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
        return [c for c in configs if not spills(kernel, c, head_dim, major)] or configs
    return prune


_DELTA_BLOCK = 64
# N_CTX is the sequence length T of the call: each training stage length tunes once.
_TUNE_KEY = ["N_CTX", "HEAD_DIM", "CAUSAL", "HAS_DOCS"]  # Triton adds the tensor dtypes to the key

_fixed = None  # inside `with fixed_configs(i):` the config index every kernel runs
_recorded = None  # inside `with recorded_launches() as calls:` the list launches go to


@contextlib.contextmanager
def fixed_configs(index: int = 0):
    """Within this block each kernel runs config `index` of its list (the last one of a
    shorter list), never benchmarking.

    Autotuning is for speed; a correctness test only needs one valid config, and tuning
    three kernels over 6-8 configs at every (T, D, dtype, causal) made the GPU tests take
    minutes. The test of every config runs them one index at a time. Not thread-safe: it
    flips a module flag."""
    global _fixed
    before, _fixed = _fixed, index
    try:
        yield
    finally:
        _fixed = before


@contextlib.contextmanager
def recorded_launches():
    """Within this block no kernel runs: every launch appends (kernel, args, kwargs) to the
    list this yields. kernels/compile.py calls the launchers below with meta tensors inside
    it, so what it compiles ahead of time has exactly the arguments the model passes."""
    global _recorded
    before, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = before


def _launch(kernel, grid, *args, **kwargs):
    """kernel[grid](*args, **kwargs), or, inside fixed_configs(i), the Autotuner's undecorated
    kernel (`kernel.fn`) with config i's block sizes, warps and stages. Every kernel launch
    goes through here (recorded_launches() relies on it)."""
    if _recorded is not None:
        _recorded.append((kernel, args, kwargs))
    elif not hasattr(kernel, "configs"):  # a plain @triton.jit kernel: nothing to tune
        kernel[grid](*args, **kwargs)
    elif _fixed is not None:
        config = kernel.configs[min(_fixed, len(kernel.configs) - 1)]
        kernel.fn[grid](*args, **kwargs, **config.all_kwargs())
    else:
        kernel[grid](*args, **kwargs)


# Dot operands. On a GPU the tensor cores multiply the input dtype (in_dt) directly and
# DOT_FP32 is False. Under the interpreter DOT_FP32 is True and every dot operand is
# upcast to fp32 as it is loaded, because the interpreter's tl.dot multiplies bf16
# operands as raw uint16 bits (fp32 is exact there; P and dS are still rounded to in_dt
# first, at the same places as on the GPU). The upcast sits at the loads rather than in
# a helper around tl.dot because each device-function call costs the interpreter ~1 ms.
#
# Strides. Every tensor X comes with stride_xb, stride_xh, stride_xt (batch, head, time,
# in elements); its D stride is 1. A program first moves each pointer to its own
# (batch, head), then addresses row t, column d at t * stride_xt + d. LSE and DELTA are
# the kernels' own contiguous (B, H, T) buffers.


# ----------------------------------------------------------------------------------------
# Forward


@triton.jit
def _fwd_inner(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, offs_m, doc_m, lo, hi, qk_scale, N_CTX,
               HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               MASKED: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
               HAS_DOCS: tl.constexpr = False):
    """Fold keys [lo, hi) into the running (acc, m_i, l_i) of one query block.
    MASKED=False is the fast path for blocks known to be fully visible and in range.
    HAS_DOCS: doc_m holds each row's document start, and a masked block hides the keys before it."""
    in_dt = K.dtype.element_ty
    dot_dt = tl.float32 if DOT_FP32 else in_dt
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = offs_n[:, None] * stride_kt + offs_d[None, :]
        v_ptrs = offs_n[:, None] * stride_vt + offs_d[None, :]
        if MASKED:
            k = tl.load(K + k_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
        else:
            k = tl.load(K + k_ptrs).to(dot_dt)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
        if MASKED:
            keep = offs_n[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            if HAS_DOCS:
                keep = keep & (offs_n[None, :] >= doc_m[:, None])
            qk = tl.where(keep, qk, float("-inf"))
        # Scale inside the exponent (qk_scale > 0 commutes with max) so that multiply
        # and subtract fuse into one FMA. m_i is the running max in base-2 units.
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        if HAS_DOCS and MASKED:
            # A row may see no key of this block nor of any before it (its document starts
            # later): m stays -inf, and -inf - -inf would be NaN. Subtract 0 instead: p = 0.
            m_new = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(V + v_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
        else:
            v = tl.load(V + v_ptrs).to(dot_dt)
        acc = tl.dot(p.to(in_dt).to(dot_dt), v, acc * alpha[:, None],
                     input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _doc_key_range(DOC, offs_m, band_lo, N_CTX, BLOCK_N: tl.constexpr):
    """The keys a query block's rows may see, by document: -> (each row's document start,
    skip_lo, full_lo). Key blocks before skip_lo (the block holding the earliest start of any
    row) are skipped; [skip_lo, full_lo) needs the document mask; from full_lo on (the first
    block past every row's start) up to the diagonal band, every row sees every key.
    The forward and dQ kernels loop over these bounds; tests count visited blocks with it."""
    row_ok = offs_m < N_CTX
    doc_m = tl.load(DOC + offs_m, mask=row_ok, other=0)
    skip_lo = (tl.min(tl.where(row_ok, doc_m, N_CTX), 0) // BLOCK_N) * BLOCK_N
    full_lo = tl.minimum(tl.cdiv(tl.max(doc_m, 0), BLOCK_N) * BLOCK_N, band_lo)
    # Rows past T keep start 0: masked like causal rows, they see a key and make no 0/0.
    return doc_m, skip_lo, tl.maximum(full_lo, skip_lo)


@triton.jit
def _doc_query_range(DOC_END, offs_n, band_hi, full_hi, N_CTX, BLOCK_M: tl.constexpr):
    """The query rows that may see a key block, by document: -> (clear_hi, rows_hi). Rows
    from the band's end up to clear_hi (whole query blocks before the first key's document
    ends) see every key of the block unmasked; [clear_hi, rows_hi) needs the mask; query
    blocks from rows_hi on (past the end of the last key's document) are skipped. DOC_END
    holds, per position, where its document ends (exclusive). Used by the dK/dV kernel."""
    col_ok = offs_n < N_CTX
    end_n = tl.load(DOC_END + offs_n, mask=col_ok, other=0)
    first_end = tl.min(tl.where(col_ok, end_n, N_CTX), 0)
    clear_hi = tl.maximum(tl.minimum((first_end // BLOCK_M) * BLOCK_M, full_hi), band_hi)
    rows_hi = tl.maximum(tl.max(end_n, 0), clear_hi)
    return clear_hi, rows_hi


@triton.autotune(configs=_FWD_CONFIGS, key=_TUNE_KEY,
                 prune_configs_by={"early_config_prune": _skip_spilling("_attn_fwd")})
@triton.jit
def _attn_fwd(Q, K, V, O, LSE, DOC,
              stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
              stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot, stride_docb,
              qk_scale, N_HEAD, N_CTX,
              HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
              DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DOCS: tl.constexpr = False):
    # Causal: the last query blocks see the most keys. Launch them first so the short
    # programs, not the long ones, fill the GPU's final wave.
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: offsets can pass 2^31
    b = bh // N_HEAD
    h = bh % N_HEAD
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    O += b * stride_ob + h * stride_oh
    LSE += bh * N_CTX

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)  # (BLOCK_M, HEAD_DIM)
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
    if HAS_DOCS:  # causal, by documents (flash_attention): key blocks before every row's document are skipped
        doc_m, skip_lo, full_lo = _doc_key_range(DOC + b * stride_docb, offs_m, band_lo, N_CTX, BLOCK_N)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, offs_m, doc_m,
                                   skip_lo, full_lo, qk_scale, N_CTX,
                                   HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION, True)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, offs_m, doc_m,
                                   full_lo, band_lo, qk_scale, N_CTX,
                                   HEAD_DIM, BLOCK_N, CAUSAL, False, DOT_FP32, DOT_PRECISION)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, offs_m, doc_m,
                                   tl.maximum(band_lo, skip_lo), band_hi, qk_scale, N_CTX,
                                   HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION, True)
    else:
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, offs_m, offs_m,
                                   0, band_lo, qk_scale, N_CTX,
                                   HEAD_DIM, BLOCK_N, CAUSAL, False, DOT_FP32, DOT_PRECISION)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, offs_m, offs_m,
                                   band_lo, band_hi, qk_scale, N_CTX,
                                   HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION)
    # Every row saw at least one key (key 0, or itself), so l_i > 0 and m_i is finite.
    o = acc / l_i[:, None]
    tl.store(O + offs_m[:, None] * stride_ot + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + offs_m, (m_i + tl.log2(l_i)) * _LN2_C, mask=row_ok)


def _dot_flags(dtype):
    # fp32 inputs get IEEE fp32 dots: Triton's default on NVIDIA is TF32 (10-bit
    # mantissa), which would make the fp32 path no more accurate than bf16.
    return dict(DOT_FP32=_INTERPRET,
                DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32")


def _doc_args(docs, like):
    """The kernels' document arguments: (starts pointer, ends pointer, batch stride) and the
    HAS_DOCS flag. Without documents any pointer will do: HAS_DOCS=False never reads it."""
    if docs is None:
        return (like, like, 0), dict(HAS_DOCS=False)
    return (docs[0], docs[1], docs.stride(1)), dict(HAS_DOCS=True)


def _flash_fwd(q, k, v, causal, sm_scale, docs=None):
    """q, k, v (B, H, T, D), D stride 1 -> o (B, H, T, D) laid out like q, lse (B, H, T) fp32.
    docs: None, or (2, B, T) int32 contiguous: each position's document start and end."""
    B, H, T, D = q.shape
    o = _empty_like_layout(q)
    lse = _empty((B, H, T), torch.float32, q.device)

    def grid(meta):
        return (triton.cdiv(T, meta["BLOCK_M"]), B * H)

    (starts, _, stride_docb), has_docs = _doc_args(docs, lse)
    _launch(_attn_fwd, grid, q, k, v, o, lse, starts, *_bht(q), *_bht(k), *_bht(v), *_bht(o), stride_docb,
            sm_scale * LOG2E, H, T, HEAD_DIM=D, CAUSAL=causal, **_dot_flags(q.dtype), **has_docs)
    return o, lse


# ----------------------------------------------------------------------------------------
# Backward


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, stride_ob, stride_oh, stride_ot,
                    stride_dob, stride_doh, stride_dot, N_HEAD, N_CTX,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta_i = sum_j P_ij dP_ij = rowsum(dO * O): the softmax-Jacobian term, computed
    # once here instead of once per key block in the dQ and dK/dV loops.
    start_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // N_HEAD
    h = bh % N_HEAD
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
    do_ptrs = DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :]
    o = tl.load(o_ptrs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + bh * N_CTX + offs_m, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot, offs_n, lo, hi,
                qk_scale, N_CTX,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr,
                MASKED: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
                HAS_DOCS: tl.constexpr = False):
    """Add the contribution of query rows [lo, hi) to one key block's dk, dv.
    Works on transposed tiles (keys x queries) so dk and dv come out as (BLOCK_N, D)."""
    in_dt = Q.dtype.element_ty
    dot_dt = tl.float32 if DOT_FP32 else in_dt
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_ptrs = offs_m[:, None] * stride_qt + offs_d[None, :]
        do_ptrs = offs_m[:, None] * stride_dot + offs_d[None, :]
        if MASKED:
            row_ok = offs_m < N_CTX
            q = tl.load(Q + q_ptrs, mask=row_ok[:, None], other=0.0).to(dot_dt)
            do = tl.load(DO + do_ptrs, mask=row_ok[:, None], other=0.0).to(dot_dt)
            lse = tl.load(LSE + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
        else:
            q = tl.load(Q + q_ptrs).to(dot_dt)
            do = tl.load(DO + do_ptrs).to(dot_dt)
            lse = tl.load(LSE + offs_m)
            delta = tl.load(DELTA + offs_m)
        qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
        pT = tl.exp2(qkT * qk_scale - (lse * _LOG2E_C)[None, :])  # P^T, rebuilt from lse
        if MASKED:
            # Zero P before it is used: above the diagonal exp2 may overflow to inf.
            keep = offs_m[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[None, :] >= offs_n[:, None])
            if HAS_DOCS:
                doc_m = tl.load(DOC + offs_m, mask=offs_m < N_CTX, other=0)
                keep = keep & (offs_n[:, None] >= doc_m[None, :])
            pT = tl.where(keep, pT, 0.0)
        dv = tl.dot(pT.to(in_dt).to(dot_dt), do, dv, input_precision=DOT_PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (dO V^T)^T
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(in_dt).to(dot_dt), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.autotune(configs=_DKDV_CONFIGS, key=_TUNE_KEY,
                 prune_configs_by={"early_config_prune": _skip_spilling("_attn_bwd_dkdv")})
@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, DOC, DOC_END,
                   stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                   stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
                   stride_dkb, stride_dkh, stride_dkt, stride_dvb, stride_dvh, stride_dvt, stride_docb,
                   sm_scale, qk_scale, N_HEAD, N_CTX,
                   HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                   DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DOCS: tl.constexpr = False):
    # Natural order is already heaviest-first here: early key blocks are seen by the
    # most query blocks.
    start_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // N_HEAD
    h = bh % N_HEAD
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DK += b * stride_dkb + h * stride_dkh
    DV += b * stride_dvb + h * stride_dvh
    LSE += bh * N_CTX
    DELTA += bh * N_CTX

    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < N_CTX
    # Keys past T load as zero; their dk, dv rows are computed but never stored.
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
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
    if HAS_DOCS:  # causal, by documents: query blocks past the end of the block's document are skipped
        DOC += b * stride_docb
        clear_hi, rows_hi = _doc_query_range(DOC_END + b * stride_docb, offs_n, band_hi, full_hi, N_CTX, BLOCK_M)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot, offs_n,
                             band_lo, band_hi, qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, True,
                             DOT_FP32, DOT_PRECISION, True)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot, offs_n,
                             band_hi, clear_hi, qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, False,
                             DOT_FP32, DOT_PRECISION)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot, offs_n,
                             clear_hi, rows_hi, qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, True,
                             DOT_FP32, DOT_PRECISION, True)
    else:
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot, offs_n,
                             band_lo, band_hi, qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, True,
                             DOT_FP32, DOT_PRECISION)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot, offs_n,
                             band_hi, full_hi, qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, False,
                             DOT_FP32, DOT_PRECISION)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot, offs_n,
                             tail_lo, N_CTX, qk_scale, N_CTX, HEAD_DIM, BLOCK_M, CAUSAL, True,
                             DOT_FP32, DOT_PRECISION)

    tl.store(DK + offs_n[:, None] * stride_dkt + offs_d[None, :],
             (dk * sm_scale).to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + offs_n[:, None] * stride_dvt + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, doc_m, lo, hi, qk_scale,
              N_CTX, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
              MASKED: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
              HAS_DOCS: tl.constexpr = False):
    """Add the contribution of keys [lo, hi) to one query block's dq."""
    in_dt = K.dtype.element_ty
    dot_dt = tl.float32 if DOT_FP32 else in_dt
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = offs_n[:, None] * stride_kt + offs_d[None, :]
        v_ptrs = offs_n[:, None] * stride_vt + offs_d[None, :]
        if MASKED:
            k = tl.load(K + k_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
            v = tl.load(V + v_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0).to(dot_dt)
        else:
            k = tl.load(K + k_ptrs).to(dot_dt)
            v = tl.load(V + v_ptrs).to(dot_dt)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
        p = tl.exp2(qk * qk_scale - (lse * _LOG2E_C)[:, None])
        if MASKED:
            keep = offs_n[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            if HAS_DOCS:
                keep = keep & (offs_n[None, :] >= doc_m[:, None])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(in_dt).to(dot_dt), k, dq, input_precision=DOT_PRECISION)
    return dq


@triton.autotune(configs=_DQ_CONFIGS, key=_TUNE_KEY,
                 prune_configs_by={"early_config_prune": _skip_spilling("_attn_bwd_dq")})
@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, DOC,
                 stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                 stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
                 stride_dqb, stride_dqh, stride_dqt, stride_docb,
                 sm_scale, qk_scale, N_HEAD, N_CTX,
                 HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                 DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DOCS: tl.constexpr = False):
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)  # heaviest first, as in forward
    bh = tl.program_id(1).to(tl.int64)
    b = bh // N_HEAD
    h = bh % N_HEAD
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DQ += b * stride_dqb + h * stride_dqh
    LSE += bh * N_CTX
    DELTA += bh * N_CTX

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    # Rows past T load as zero; their dq is computed but never stored.
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=row_ok[:, None],
                 other=0.0)
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
    if HAS_DOCS:  # the forward's split of the key range by documents
        doc_m, skip_lo, full_lo = _doc_key_range(DOC + b * stride_docb, offs_m, band_lo, N_CTX, BLOCK_N)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, doc_m, skip_lo, full_lo,
                       qk_scale, N_CTX, HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION, True)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, doc_m, full_lo, band_lo,
                       qk_scale, N_CTX, HEAD_DIM, BLOCK_N, CAUSAL, False, DOT_FP32, DOT_PRECISION)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, doc_m,
                       tl.maximum(band_lo, skip_lo), band_hi,
                       qk_scale, N_CTX, HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION, True)
    else:
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, offs_m, 0, band_lo,
                       qk_scale, N_CTX, HEAD_DIM, BLOCK_N, CAUSAL, False, DOT_FP32, DOT_PRECISION)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, offs_m, band_lo, band_hi,
                       qk_scale, N_CTX, HEAD_DIM, BLOCK_N, CAUSAL, True, DOT_FP32, DOT_PRECISION)
    tl.store(DQ + offs_m[:, None] * stride_dqt + offs_d[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


def _flash_bwd(do, q, k, v, o, lse, causal, sm_scale, docs=None):
    """-> dq, dk, dv, each (B, H, T, D) laid out like q, k, v respectively."""
    B, H, T, D = q.shape
    do = do.to(q.dtype)
    if do.stride(-1) != 1:  # autograd hands over whatever the next op's backward made
        do = do.contiguous()
    flags = _dot_flags(q.dtype)

    delta = _empty((B, H, T), torch.float32, q.device)
    # Half the rows at D=128: 64 rows of o and dO in fp32 spill 8 bytes (results/compile.md).
    rows = _DELTA_BLOCK if D < 128 else _DELTA_BLOCK // 2
    _launch(_attn_bwd_delta, (triton.cdiv(T, rows), B * H),
            o, do, delta, *_bht(o), *_bht(do), H, T, HEAD_DIM=D, BLOCK_M=rows)

    dq, dk, dv = _empty_like_layout(q), _empty_like_layout(k), _empty_like_layout(v)
    (starts, ends, stride_docb), has_docs = _doc_args(docs, delta)
    _launch(_attn_bwd_dkdv, lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * H),
            q, k, v, do, lse, delta, dk, dv, starts, ends,
            *_bht(q), *_bht(k), *_bht(v), *_bht(do), *_bht(dk), *_bht(dv), stride_docb,
            sm_scale, sm_scale * LOG2E, H, T, HEAD_DIM=D, CAUSAL=causal, **flags, **has_docs)
    _launch(_attn_bwd_dq, lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H),
            q, k, v, do, lse, delta, dq, starts,
            *_bht(q), *_bht(k), *_bht(v), *_bht(do), *_bht(dq), stride_docb,
            sm_scale, sm_scale * LOG2E, H, T, HEAD_DIM=D, CAUSAL=causal, **flags, **has_docs)
    return dq, dk, dv


# ----------------------------------------------------------------------------------------
# Custom ops (what torch.compile sees) and public API


@torch.library.custom_op("growlength::flash_attn_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
            sm_scale: float, docs: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    return _flash_fwd(q, k, v, causal, sm_scale, docs)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, causal, sm_scale, docs=None):
    # Shapes and strides only (torch.compile traces with these); must match _flash_fwd.
    B, H, T, _ = q.shape
    return _empty_like_layout(q), q.new_empty((B, H, T), dtype=torch.float32)


@torch.library.custom_op("growlength::flash_attn_bwd", mutates_args=())
def _bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            o: torch.Tensor, lse: torch.Tensor, causal: bool,
            sm_scale: float, docs: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _flash_bwd(do, q, k, v, o, lse, causal, sm_scale, docs)


@_bwd_op.register_fake
def _bwd_fake(do, q, k, v, o, lse, causal, sm_scale, docs=None):
    return _empty_like_layout(q), _empty_like_layout(k), _empty_like_layout(v)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, sm_scale, docs = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, docs)
    ctx.causal, ctx.sm_scale = causal, sm_scale
    ctx.set_materialize_grads(False)  # lse's gradient stays None instead of a tensor of zeros


def _backward(ctx, do, _dlse):  # lse is not differentiable: its gradient is ignored
    q, k, v, o, lse, docs = ctx.saved_tensors
    dq, dk, dv = _bwd_op(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale, docs)
    return dq, dk, dv, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


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
                         f"use kernels.reference.attention_ref or torch SDPA instead")
    B, H, T, D = q.shape
    if D not in HEAD_DIMS:
        raise ValueError(f"flash_attention: head dim D={D} not supported; the kernels are "
                         f"compiled for D in {HEAD_DIMS} (tl.arange needs a power of two)")
    if T < 1 or B * H < 1:
        raise ValueError(f"flash_attention: empty input, shape {tuple(q.shape)}")
    if B * H > 65535:
        raise ValueError(f"flash_attention: B*H={B * H} exceeds 65535, the CUDA grid limit "
                         f"on the axis that indexes (batch, head); split the batch")


def doc_bounds(doc_starts, T: int):
    """(B, T) document starts -> the kernels' (2, B, T) int32: each position's document start and
    end (exclusive; the first position whose start lies past it). Starts must be what
    data.doc_starts gives: non-decreasing along T, 0 <= start[t] <= t."""
    starts = doc_starts.to(torch.int32).contiguous()
    t = torch.arange(T, device=starts.device, dtype=torch.int32).expand_as(starts).contiguous()
    ends = torch.searchsorted(starts, t, right=True).to(torch.int32)
    return torch.stack([starts, ends])


def flash_attention(q, k, v, causal=True, sm_scale=None, doc_starts=None):
    """Fused attention softmax(sm_scale * q @ k^T [+ causal mask]) @ v, differentiable.

    q, k, v: (B, H, T, D) tensors of one dtype (fp32, fp16 or bf16) on a CUDA device
    (any device under TRITON_INTERPRET=1), D in {16, 32, 64, 128}, any T >= 1, any
    strides (a tensor whose last dim is not contiguous is copied first). sm_scale
    defaults to 1/sqrt(D). Returns o, (B, H, T, D) in the input dtype, laid out in
    memory like q (see "Layout" above); its gradients are laid out like q, k and v.

    doc_starts: (B, T) document starts (data.doc_starts; causal only): query t attends to keys
    doc_starts[t] .. t. Key blocks before a query block's earliest start, and (dK/dV) query
    blocks past a key block's document, are skipped: the work follows the document lengths.
    """
    _check_inputs(q, k, v)
    docs = None
    if doc_starts is not None:
        if not causal or tuple(doc_starts.shape) != (q.shape[0], q.shape[2]) or doc_starts.is_floating_point():
            raise ValueError(f"flash_attention: doc_starts must be integer (B, T) = {(q.shape[0], q.shape[2])} "
                             f"with causal=True, got {tuple(doc_starts.shape)} {doc_starts.dtype}, causal={causal}")
        docs = doc_bounds(doc_starts.to(q.device), q.shape[2])
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    if not sm_scale > 0:
        # The kernels take the row max of unscaled scores, which needs a positive scale.
        raise ValueError(f"flash_attention: sm_scale must be > 0, got {sm_scale}")
    # The kernels step along D one element at a time; anything else is copied.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    o, _ = torch.ops.growlength.flash_attn_fwd(q, k, v, bool(causal), sm_scale, docs)
    return o
