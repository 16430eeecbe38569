"""kernels/attention.py against its plain-torch reference.

By default the kernels run on CPU under the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), with one config: BLOCK_M=64, BLOCK_N=32 (forward, dQ) and
BLOCK_M=32, BLOCK_N=64 (dK/dV). The lengths below are chosen around those blocks:
T=1 and 17 (one partial block), 100 and 200 (ragged tails), 128 (whole blocks only),
257 (a one-row tail).

On a machine with a GPU, run the same tests on the compiled kernels, plus the longer
CUDA-only ones at the bottom:
    TRITON_INTERPRET=0 python -m pytest tests/test_attention.py
Every test runs inside `attention.fixed_configs()` (one config per kernel, no autotuning:
these tests are about correctness) except those that ask for the `autotuning` fixture;
one of them runs the real autotuner once at a training-like shape.
"""

import math

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from kernels import attention
from kernels.attention import flash_attention
from kernels.reference import attention_ref, doc_mask

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# Interpreted kernels run on CPU tensors; compiled ones need CUDA tensors.
DEVICE = "cpu" if attention._INTERPRET else "cuda"

if not attention._INTERPRET and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 but no CUDA GPU: nothing can run the kernels",
                allow_module_level=True)
if (attention._INTERPRET and np.lib.NumpyVersion(np.__version__) >= "2.4.0"
        and tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 7)):
    # Triton 3.6's interpreter turns loop bounds into ints with int(array), which
    # numpy >= 2.4 refuses (triton-lang/triton#9171, fixed in Triton 3.7).
    pytest.skip(f"Triton {triton.__version__}'s interpreter does not work with numpy "
                f"{np.__version__}: use numpy<2.4 or Triton>=3.7, or TRITON_INTERPRET=0 "
                f"on a GPU", allow_module_level=True)


@pytest.fixture
def autotuning():
    """Requested by the tests that want the kernels' real autotuner (see fixed_config)."""


@pytest.fixture(autouse=True)
def fixed_config(request):
    """Bypass autotuning (see the module docstring) unless the test asks for `autotuning`."""
    if "autotuning" in request.fixturenames:
        yield
    else:
        with attention.fixed_configs():
            yield


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every buffer the kernels write (o, lse, delta, dq, dk, dv) starts as NaN instead
    of whatever torch.empty happens to hold (often zeros, which can look right). A row
    or element a kernel fails to write then stays NaN and fails the finiteness and
    accuracy checks. Returns the list of shapes allocated, so tests can check that
    the kernels really allocate through the patched helper."""
    allocated = []

    def nan_empty(shape, dtype, device):
        allocated.append(tuple(shape))
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(attention, "_empty", nan_empty)
    return allocated


def make_inputs(B, H, T, D, dtype, seed, device=DEVICE):
    """q, k, v and the upstream gradient dO: fresh N(0, 1) draws, so scores are O(1)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g).to(device=device, dtype=dtype) for _ in range(4)]


def fwd_bwd(fn, q, k, v, do, **kwargs):
    """(o, dq, dk, dv) of fn on fresh leaf copies of q, k, v."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    o = fn(q, k, v, **kwargs)
    o.backward(do)
    return o.detach(), q.grad, k.grad, v.grad


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


NAMES = ("o", "dq", "dk", "dv")


def check_case(B, H, T, D, dtype, causal, seed, device=DEVICE, sm_scale=None, doc_starts=None):
    q, k, v, do = make_inputs(B, H, T, D, dtype, seed, device)
    kw = dict(causal=causal, sm_scale=sm_scale, **({} if doc_starts is None else {"doc_starts": doc_starts}))
    ours = fwd_bwd(flash_attention, q, k, v, do, **kw)
    # The exact answer for these (already rounded) inputs: the reference in float64.
    exact = fwd_bwd(attention_ref, *(t.double() for t in (q, k, v, do)), **kw)
    for name, x in zip(NAMES, ours):
        assert x.dtype == dtype and x.shape == (B, H, T, D)
        assert torch.isfinite(x).all(), f"{name}: NaN/inf, e.g. a row the kernel never wrote"

    if dtype == F32:
        # fp32 accumulates everywhere and rounds only to fp32, so errors are ~1e-6 here
        # (measured). Inputs are N(0, 1) and outputs are O(1), so 1e-4 times the output
        # scale (at least 1) leaves 10-100x headroom yet catches any masking or
        # rescaling bug, which shows up at 1e-2 or more.
        for name, x, ref in zip(NAMES, ours, exact):
            tol = 1e-4 * max(1.0, ref.abs().max().item())
            assert max_err(x, ref) <= tol, f"{name}: error {max_err(x, ref):.2e} > {tol:.2e}"
    else:
        # Low precision: the bar is what rounding alone costs. The same reference math,
        # run entirely in the low dtype (scores, softmax, matmuls, autograd), is the
        # naive implementation a user would otherwise have; ours must be within 3x of
        # its error against float64 (the flash-attn repo's test convention, there 2-3x),
        # plus one unit in the last place at the output's scale (at least 1) so that
        # cases where the naive version is exact by luck, e.g. T=1 where softmax is
        # exactly 1 and its gradient exactly 0, do not demand bit-exactness.
        # Under the interpreter fp32 -> bf16 casts truncate rather than round to nearest
        # (GPUs round), so bf16 errors here run up to ~3x the naive one; the ulp term
        # still leaves about 2x headroom. A masking or rescaling bug costs 1e-1 or more.
        lowp = fwd_bwd(attention_ref, q, k, v, do, compute_dtype=dtype, **kw)
        ulp = torch.finfo(dtype).eps
        for name, x, naive, ref in zip(NAMES, ours, lowp, exact):
            tol = 3 * max_err(naive, ref) + ulp * max(1.0, ref.abs().max().item())
            assert max_err(x, ref) <= tol, (
                f"{name}: error {max_err(x, ref):.2e} > {tol:.2e} "
                f"(naive {dtype} reference error {max_err(naive, ref):.2e})")


# (B, H, T, D, dtype, causal): every T with every dtype (causal), D cycling through
# 16/32/64 and B*H > 1 throughout; non-causal at every T; D=128 twice (the slowest
# under the interpreter).
CASES = [
    (2, 3, 1, 16, F32, True),
    (1, 2, 1, 32, F16, True),
    (2, 1, 1, 64, BF16, True),
    (1, 2, 17, 16, F32, True),
    (2, 2, 17, 32, F16, True),
    (3, 1, 17, 64, BF16, True),
    (2, 1, 100, 16, F32, True),
    (1, 2, 100, 32, F16, True),
    (2, 2, 100, 64, BF16, True),
    (1, 3, 128, 32, F32, True),
    (1, 2, 128, 64, F16, True),
    (2, 2, 128, 16, BF16, True),
    (2, 1, 200, 64, F32, True),
    (1, 2, 200, 16, F16, True),
    (2, 2, 200, 32, BF16, True),
    (2, 1, 257, 32, F32, True),
    (1, 2, 257, 64, F16, True),
    (1, 2, 257, 16, BF16, True),
    (1, 2, 1, 32, BF16, False),
    (2, 1, 17, 16, F32, False),
    (2, 2, 100, 16, F32, False),
    (2, 1, 128, 64, F16, False),
    (1, 2, 200, 64, BF16, False),
    (1, 2, 257, 16, BF16, False),
    (1, 2, 65, 128, F16, True),
    (2, 1, 130, 128, BF16, False),
]


@pytest.mark.parametrize("B,H,T,D,dtype,causal", CASES)
def test_matches_reference(B, H, T, D, dtype, causal):
    check_case(B, H, T, D, dtype, causal, seed=1000 + T + D)


def test_custom_sm_scale():
    check_case(2, 2, 100, 32, F32, True, seed=7, sm_scale=0.3)


def test_every_output_comes_from_the_poisoned_allocator(poisoned_outputs):
    # Guards the poisoning itself: if a buffer were allocated with torch.empty directly,
    # an unwritten tail in it could go unnoticed. Forward: o, lse. Backward: delta, dq,
    # dk, dv. T=100 leaves ragged tails in every kernel's last block.
    assert torch.isnan(attention._empty((3,), F32, "cpu")).all()
    poisoned_outputs.clear()
    q, k, v, do = make_inputs(1, 2, 100, 16, F32, seed=3)
    o, dq, dk, dv = fwd_bwd(flash_attention, q, k, v, do)
    assert sorted(poisoned_outputs) == sorted([(1, 2, 100, 16)] * 4 + [(1, 2, 100)] * 2)
    for x in (o, dq, dk, dv):
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("causal", [True, False])
def test_lse_matches_logsumexp(causal):
    # The backward rebuilds P from this one number per row, so check it directly.
    T, D = 100, 32
    q, k, v, _ = make_inputs(2, 2, T, D, F32, seed=5)
    scale = 1 / math.sqrt(D)
    _, lse = attention._flash_fwd(q, k, v, causal, scale)
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    if causal:
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=DEVICE).triu(1),
                          float("-inf"))
    assert lse.dtype == F32 and lse.shape == (2, 2, T)
    assert max_err(lse, torch.logsumexp(s, dim=-1)) <= 1e-5


def test_non_contiguous_inputs():
    # q, k, v as a model produces them: (B, T, H, D) transposed to (B, H, T, D).
    B, T, H, D = 2, 100, 2, 16
    q, k, v, do = (t.transpose(1, 2) for t in make_inputs(B, T, H, D, F32, seed=11))
    assert not q.is_contiguous()
    ours = fwd_bwd(flash_attention, q, k, v, do)
    exact = fwd_bwd(attention_ref, *(t.double() for t in (q, k, v, do)))
    for name, x, ref in zip(NAMES, ours, exact):
        assert max_err(x, ref) <= 1e-4, name


def fused_qkv_views(qkv, D):
    """(B, H, T, D) views of q, k and v inside a (B, T, H, 3D) tensor, as the model has them."""
    return [t.transpose(1, 2) for t in qkv.split(D, dim=-1)]


@pytest.mark.parametrize("T,D,dtype", [(17, 16, F32), (100, 32, F32), (200, 16, BF16)])
def test_views_of_fused_qkv(T, D, dtype):
    # Gradients flow to the one (B, T, H, 3D) leaf through the views: dq, dk, dv land in
    # their slots of its gradient, so a kernel writing any of them in the wrong place fails.
    B, H = 2, 3
    g = torch.Generator().manual_seed(T)
    qkv = torch.randn(B, T, H, 3 * D, generator=g).to(DEVICE, dtype)
    do = torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    leaf = qkv.clone().requires_grad_(True)
    q, k, v = fused_qkv_views(leaf, D)
    assert not q.is_contiguous() and q.stride(-1) == 1
    o = flash_attention(q, k, v)
    o.backward(do)
    # o is laid out (B, T, H, D) in memory: the model's .view(B, T, C) after it is free.
    assert o.shape == (B, H, T, D) and o.transpose(1, 2).is_contiguous()
    exact_leaf = qkv.double().requires_grad_(True)
    o_ref = attention_ref(*fused_qkv_views(exact_leaf, D))
    o_ref.backward(do.double())
    tol = 1e-4 if dtype == F32 else 3e-2  # bf16: a few units in the last place of O(1) values
    assert torch.isfinite(o).all() and torch.isfinite(leaf.grad).all()
    assert max_err(o, o_ref) <= tol
    assert max_err(leaf.grad, exact_leaf.grad) <= tol * max(1.0, exact_leaf.grad.abs().max().item())


def test_every_input_with_its_own_strides():
    # q contiguous (B, H, T, D); k a transposed (B, T, H, D); v a slice with gaps of a wider
    # tensor; v's last dim not contiguous (copied by flash_attention); dO transposed.
    B, H, T, D = 2, 3, 100, 16  # H != 2: k's time stride (H*D) differs from v's (2D)
    q, k, v, do = make_inputs(B, H, T, D, F32, seed=21)
    k_src = k.transpose(1, 2).contiguous()                            # (B, T, H, D) memory
    v_src = torch.cat([v, torch.randn_like(v)], dim=-1)               # (B, H, T, 2D) memory
    do_src = do.transpose(1, 2).contiguous()
    kk = k_src.clone().requires_grad_(True)
    vv = v_src.clone().requires_grad_(True)
    qq = q.clone().requires_grad_(True)
    o = flash_attention(qq, kk.transpose(1, 2), vv[..., :D])
    o.backward(do_src.transpose(1, 2))
    assert o.is_contiguous()                                          # laid out like q
    exact = fwd_bwd(attention_ref, *(t.double() for t in (q, k, v, do)))
    ours = (o.detach(), qq.grad, kk.grad.transpose(1, 2), vv.grad[..., :D])
    for name, x, ref in zip(NAMES, ours, exact):
        assert max_err(x, ref) <= 1e-4, name
    assert torch.equal(vv.grad[..., D:], torch.zeros_like(v))         # the gap got no gradient
    # A last dim that is not contiguous is copied, not misread.
    v_cols = v.transpose(-1, -2).contiguous().transpose(-1, -2)      # stride(-1) == T
    assert v_cols.stride(-1) != 1
    assert max_err(flash_attention(q, k, v_cols), exact[0]) <= 1e-4


def test_custom_ops_pass_opcheck():
    # Schema, fake (meta) implementations with the real strides, autograd registration,
    # and AOT dispatch as torch.compile uses it, for the forward and the backward op.
    B, H, T, D = 1, 2, 20, 16
    qkv = torch.randn(B, T, H, 3 * D).to(DEVICE)
    q, k, v = fused_qkv_views(qkv, D)
    torch.library.opcheck(torch.ops.growlength.flash_attn_fwd.default, (q, k, v, True, 0.25))
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    torch.library.opcheck(torch.ops.growlength.flash_attn_fwd.default, (*leaves, False, 0.25))
    o, lse = torch.ops.growlength.flash_attn_fwd(q, k, v, True, 0.25)
    do = torch.randn(B, T, H, D).to(DEVICE).transpose(1, 2)
    torch.library.opcheck(torch.ops.growlength.flash_attn_bwd.default,
                          (do, q, k, v, o, lse, True, 0.25))
    docs = attention.doc_bounds(torch.tensor([[0] * 7 + [7] * 13]).to(DEVICE), T)    # with documents
    torch.library.opcheck(torch.ops.growlength.flash_attn_fwd.default, (*leaves, True, 0.25, docs))
    torch.library.opcheck(torch.ops.growlength.flash_attn_bwd.default, (do, q, k, v, o, lse, True, 0.25, docs))


def test_fake_outputs_have_the_real_strides():
    # torch.compile plans every op after attention from the fake implementations' strides
    # (opcheck compares only shapes and dtypes), so they must match what the kernels write.
    from torch._subclasses.fake_tensor import FakeTensorMode
    B, H, T, D = 1, 2, 20, 16
    qkv = torch.randn(B, T, H, 3 * D).to(DEVICE)
    q, k, _ = fused_qkv_views(qkv, D)
    v = torch.randn(B, H, T, D).to(DEVICE)                             # contiguous: the other layout
    o, lse = torch.ops.growlength.flash_attn_fwd(q, k, v, True, 0.25)
    do = torch.randn_like(o)
    real = (o, lse, *torch.ops.growlength.flash_attn_bwd(do, q, k, v, o, lse, True, 0.25))
    with FakeTensorMode() as mode:
        fq, fk, fv, fdo = (mode.from_tensor(t) for t in (q, k, v, do))
        fo, flse = torch.ops.growlength.flash_attn_fwd(fq, fk, fv, True, 0.25)
        fake = (fo, flse, *torch.ops.growlength.flash_attn_bwd(fdo, fq, fk, fv, fo, flse, True, 0.25))
    for name, r, f in zip(("o", "lse", "dq", "dk", "dv"), real, fake):
        assert (f.shape, f.stride(), f.dtype) == (r.shape, r.stride(), r.dtype), name
    assert real[0].stride() != real[4].stride()                        # both layouts were covered


def test_fixed_configs_bypass_autotuning(monkeypatch, autotuning):
    # With two configs the autotuner benchmarks both on a new key; inside fixed_configs()
    # it must not benchmark at all. Counted by patching the Autotuner's benchmark method.
    kernel = attention._attn_fwd
    cfg = kernel.configs[0]
    monkeypatch.setattr(kernel, "configs", [cfg, triton.Config(dict(cfg.kwargs), num_warps=8,
                                                                  num_stages=cfg.num_stages)])
    monkeypatch.setattr(kernel, "cache", {})
    benched = []
    monkeypatch.setattr(kernel, "_bench", lambda *a, config, **kw: benched.append(config) or [1.0] * 3)
    q, k, v, _ = make_inputs(1, 1, 20, 16, F32, seed=23)
    with attention.fixed_configs():
        flash_attention(q, k, v)
    assert benched == []
    flash_attention(q, k, v)
    assert len(benched) == 2                       # the real autotuner, for comparison


def test_fixed_configs_runs_the_config_asked_for(monkeypatch):
    """fixed_configs(i) runs config i (the last one of a shorter list): what the every-config
    test relies on to reach the GPU configs the other tests never run."""
    kernel, used = attention._attn_fwd, []
    first = kernel.configs[0]
    other = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)
    for name, cfg in (("first", first), ("other", other)):
        monkeypatch.setattr(cfg, "all_kwargs", lambda real=cfg.all_kwargs, name=name: used.append(name) or real())
    monkeypatch.setattr(kernel, "configs", [first, other])
    q, k, v, _ = make_inputs(1, 1, 20, 16, F32, seed=23)
    for index in (0, 1, 5):
        with attention.fixed_configs(index):
            flash_attention(q, k, v)
    assert used == ["first", "other", "other"]


def test_backward_is_deterministic():
    # No atomics: each gradient element has one writer, so reruns are bit-identical.
    q, k, v, do = make_inputs(2, 2, 200, 32, BF16, seed=13)
    first = fwd_bwd(flash_attention, q, k, v, do)
    second = fwd_bwd(flash_attention, q, k, v, do)
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), name


def _t(*shape, dtype=F32):
    return torch.randn(*shape).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("q,k,v,kwargs,match", [
    (_t(2, 16, 16), _t(2, 16, 16), _t(2, 16, 16), {}, "4-D"),
    (_t(1, 2, 16, 16), _t(1, 2, 32, 16), _t(1, 2, 16, 16), {}, "same shape"),
    (_t(1, 4, 16, 16), _t(1, 2, 16, 16), _t(1, 2, 16, 16), {}, "same shape"),
    (_t(1, 2, 16, 48), _t(1, 2, 16, 48), _t(1, 2, 16, 48), {}, "head dim D=48"),
    (_t(1, 2, 16, 16).long(), _t(1, 2, 16, 16).long(), _t(1, 2, 16, 16).long(), {}, "int64"),
    (_t(1, 2, 16, 16, dtype=torch.float64),) * 3 + ({}, "float64"),
    (_t(1, 2, 16, 16), _t(1, 2, 16, 16, dtype=F16), _t(1, 2, 16, 16), {}, "share a dtype"),
    (_t(1, 2, 0, 16), _t(1, 2, 0, 16), _t(1, 2, 0, 16), {}, "empty"),
    (_t(1, 2, 16, 16), _t(1, 2, 16, 16), _t(1, 2, 16, 16), {"sm_scale": 0.0}, "sm_scale"),
])
def test_bad_inputs_raise(q, k, v, kwargs, match):
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v, **kwargs)


def test_cpu_tensors_refused_without_interpreter(monkeypatch):
    monkeypatch.setattr(attention, "_INTERPRET", False)
    q = torch.randn(1, 2, 16, 16)
    with pytest.raises(ValueError, match="CUDA"):
        flash_attention(q, q, q)


# ----------------------------------------------------------------------------------------
# GPU: the compiled kernels at training-like lengths. Run with TRITON_INTERPRET=0.

needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or attention._INTERPRET,
    reason="needs a CUDA GPU and TRITON_INTERPRET=0 (the compiled kernels)")


@needs_gpu
@pytest.mark.parametrize("T", [1000, 2048])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("causal", [True, False])
def test_cuda_bf16_matches_reference(T, D, causal):
    check_case(2, 4, T, D, BF16, causal, seed=T + D, device="cuda")


@needs_gpu
@pytest.mark.parametrize("dtype", [F32, F16])
def test_cuda_other_dtypes(dtype):
    check_case(2, 4, 1000, 64, dtype, True, seed=17, device="cuda")


N_CONFIGS = max(len(k.configs) for k in (attention._attn_fwd, attention._attn_bwd_dkdv, attention._attn_bwd_dq))


@pytest.mark.parametrize("index", range(N_CONFIGS))
@pytest.mark.parametrize("causal", [True, False])
def test_every_config_matches_reference(index, causal):
    """The autotuner may pick any config of a kernel's list, and the other tests run only the
    first: each one must be right, ragged tail included (a single config under the interpreter;
    6-8 per kernel on a GPU, where T=1000 spans several blocks of every size)."""
    T, dtype = (1000, BF16) if DEVICE == "cuda" else (77, F32)
    with attention.fixed_configs(index):
        check_case(2, 2, T, 64, dtype, causal, seed=41 + index)


@needs_gpu
def test_cuda_autotuner_at_a_training_shape(autotuning):
    # The one test that autotunes (all configs of the three kernels): pythia-160m's
    # attention shape at T=1024, 16 sequences, bf16, as a training step calls it.
    B, H, T, D = 16, 12, 1024, 64
    g = torch.Generator(device="cuda").manual_seed(29)
    qkv = torch.randn(B, T, H, 3 * D, device="cuda", dtype=BF16, generator=g, requires_grad=True)
    q, k, v = fused_qkv_views(qkv, D)
    o = flash_attention(q, k, v)
    o.backward(torch.randn_like(o))
    for kernel in (attention._attn_fwd, attention._attn_bwd_dkdv, attention._attn_bwd_dq):
        assert kernel.best_config in kernel.configs
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert max_err(o, ref) <= 2e-2 * max(1.0, ref.abs().max().item())
    # the configs it chose, forward and both backward kernels, against the float64 reference
    check_case(B, H, T, D, BF16, True, seed=31, device="cuda")


@needs_gpu
def test_cuda_backward_is_deterministic():
    q, k, v, do = make_inputs(4, 8, 2048, 64, BF16, seed=19, device="cuda")
    first = fwd_bwd(flash_attention, q, k, v, do)
    second = fwd_bwd(flash_attention, q, k, v, do)
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------------------
# Document masking (train.py --doc-mask): query t sees keys doc_starts[t] .. t only.

def segmentation(B, T, cuts):
    """(B, T) int32 document starts with documents beginning at `cuts` (per row: a list)."""
    d = torch.zeros(B, T, dtype=torch.int32)
    for b, row in enumerate(cuts):
        for c in sorted(row):
            d[b, c:] = c
    return d.to(DEVICE)


def random_cuts(T, n, seed):
    """n random document starts in 1..T-1, and two documents of length 1 at the end."""
    g = torch.Generator().manual_seed(seed)
    return sorted(set(torch.randint(1, T, (n,), generator=g).tolist()) | {T - 2, T - 1})


# Interpreter blocks: forward/dQ 64 x 32, dK/dV 32 x 64. Boundaries on block edges (32, 64,
# 96, 128) and off them; every dtype and head dim once; ragged T; documents of length 1.
DOC_CASES = [
    (100, 16, F32, [random_cuts(100, 9, 1), [1, 2, 3, 50]]),
    (128, 32, F16, [[32, 64, 96], [33, 63, 65, 127]]),
    (200, 64, BF16, [random_cuts(200, 12, 2), [128, 129, 199]]),
    (77, 128, F32, [random_cuts(77, 20, 3), [40]]),
]


@pytest.mark.parametrize("T, D, dtype, cuts", DOC_CASES)
def test_document_mask_matches_reference(T, D, dtype, cuts):
    check_case(2, 2, T, D, dtype, True, seed=T + D, doc_starts=segmentation(2, T, cuts))


def test_one_document_is_causal_attention_exactly():
    """A window without a boundary takes the document path (HAS_DOCS) but must compute exactly
    what the causal kernel computes, bit for bit, forward and backward."""
    q, k, v, do = make_inputs(2, 2, 150, 32, F16, seed=5)
    plain = fwd_bwd(flash_attention, q, k, v, do)
    docs = fwd_bwd(flash_attention, q, k, v, do, doc_starts=torch.zeros(2, 150, dtype=torch.int64, device=DEVICE))
    for name, a, b in zip(NAMES, plain, docs):
        assert torch.equal(a, b), name


def test_document_mask_refuses_what_it_cannot_mean():
    q, k, v, _ = make_inputs(1, 1, 8, 16, F32, seed=0)
    with pytest.raises(ValueError, match="doc_starts must be integer"):
        flash_attention(q, k, v, causal=False, doc_starts=torch.zeros(1, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="doc_starts must be integer"):
        flash_attention(q, k, v, doc_starts=torch.zeros(1, 7, dtype=torch.int32))


@triton.jit
def _probe_bounds(DOC, DOC_END, KEY_LO, ROWS_HI, N_CTX, FWD_M: tl.constexpr, FWD_N: tl.constexpr,
                  BWD_M: tl.constexpr, BWD_N: tl.constexpr):
    """Program i: the loop bounds the kernels take from attention._doc_key_range (query block i
    of the forward and dQ) and attention._doc_query_range (key block i of dK/dV)."""
    i = tl.program_id(0)
    offs_m = i * FWD_M + tl.arange(0, FWD_M)
    _, skip_lo, _ = attention._doc_key_range(DOC, offs_m, i * FWD_M, N_CTX, FWD_N)
    tl.store(KEY_LO + i, skip_lo)
    offs_n = i * BWD_N + tl.arange(0, BWD_N)
    band_hi = tl.minimum((i + 1) * BWD_N, N_CTX)
    _, rows_hi = attention._doc_query_range(DOC_END, offs_n, band_hi, (N_CTX // BWD_M) * BWD_M, N_CTX, BWD_M)
    tl.store(ROWS_HI + i, rows_hi)


def block_sizes(kernel):
    config = kernel.configs[0]                 # what fixed_configs() runs, and all the interpreter has
    return config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]


def test_blocks_outside_the_documents_are_skipped():
    """Count the blocks the kernels visit, from the very functions that bound their loops: with
    short documents far fewer than causal attention visits, and never one fewer than needed
    (every block holding a visible query-key pair is visited). Documents of 20 tokens at T=512."""
    T = 512
    d = segmentation(1, T, [list(range(20, T, 20))])
    (fm, fn), (bm, bn) = block_sizes(attention._attn_fwd), block_sizes(attention._attn_bwd_dkdv)
    n = max(triton.cdiv(T, fm), triton.cdiv(T, bn))
    key_lo, rows_hi = (torch.full((n,), -1, dtype=torch.int32, device=DEVICE) for _ in range(2))
    bounds = attention.doc_bounds(d, T)
    _probe_bounds[(n,)](bounds[0], bounds[1], key_lo, rows_hi, T, fm, fn, bm, bn)
    visible = doc_mask(d.cpu())[0, 0]                                   # (query, key)
    fwd = causal_fwd = needed_fwd = 0
    for i in range(triton.cdiv(T, fm)):
        band_hi = min((i + 1) * fm, T)
        lo = int(key_lo[i])
        visited = set(range(lo // fn, triton.cdiv(band_hi, fn)))
        needed = {j // fn for j in range(T) if visible[i * fm:band_hi, j].any()}
        assert needed <= visited, (i, needed - visited)
        fwd, causal_fwd, needed_fwd = fwd + len(visited), causal_fwd + triton.cdiv(band_hi, fn), needed_fwd + len(needed)
    bwd = causal_bwd = needed_bwd = 0
    for i in range(triton.cdiv(T, bn)):
        hi = int(rows_hi[i])
        visited = set(range(i * bn // bm, triton.cdiv(hi, bm)))
        needed = {r // bm for r in range(T) if visible[r, i * bn:min((i + 1) * bn, T)].any()}
        assert needed <= visited, (i, needed - visited)
        bwd, causal_bwd, needed_bwd = bwd + len(visited), causal_bwd + triton.cdiv(T - i * bn, bm), needed_bwd + len(needed)
    assert fwd == needed_fwd and bwd == needed_bwd          # no block visited for nothing
    assert fwd <= causal_fwd / 3 and bwd <= causal_bwd / 3, (fwd, causal_fwd, bwd, causal_bwd)
