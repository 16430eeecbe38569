"""The model: shapes at any T, RoPE's relative-position property, extrapolation, backends agree."""
import math

import pytest
import torch
import torch.nn.functional as F

from kernels import interpreting
from model import GPT, GPTConfig, PRESETS, Rotary, apply_rope, chunked_cross_entropy, make_config

needs_cuda_triton = pytest.mark.skipif(not torch.cuda.is_available() or interpreting(),
                                       reason="needs a CUDA GPU and TRITON_INTERPRET=0")


def triton_device():
    """Where the triton backend runs: on CPU under the interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), else compiled on CUDA."""
    pytest.importorskip("triton")
    if interpreting():
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip("TRITON_INTERPRET=0 and no CUDA GPU: nothing can run the triton backend")
    return "cuda"


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=256, n_layer=2, n_head=4, n_embd=64, **kw))


@pytest.mark.parametrize("T", [1, 7, 128, 300])
def test_output_shapes_and_loss(T):
    m = tiny()
    idx = torch.randint(0, 256, (3, T))
    logits, loss = m(idx, idx)
    assert logits is None                     # with targets the full logits are never built
    # an untrained model predicts ~uniformly: loss near ln(256)
    assert abs(loss.item() - math.log(256)) < 0.3
    logits, loss = m(idx)
    assert logits.shape == (3, T, 256) and loss is None


def test_rope_matches_complex_rotation():
    """Rotate-half RoPE (NeoX layout) is multiplication of (x_i + i x_{i+d/2}) by e^{i m theta_i}."""
    rot = Rotary(rot_dim=8, base=10000.0)
    x = torch.randn(2, 3, 50, 16)
    y = apply_rope(x, *rot.tables(50, x.device))                        # tables (50, 8): one row per position
    theta = 10000.0 ** (-torch.arange(0, 8, 2).float() / 8)            # (4,)
    m = torch.arange(50).float()[:, None]
    z = torch.complex(x[..., :4], x[..., 4:8]) * torch.exp(1j * m * theta)
    assert torch.allclose(y[..., :4], z.real, atol=1e-5) and torch.allclose(y[..., 4:8], z.imag, atol=1e-5)
    assert torch.equal(y[..., 8:], x[..., 8:])                          # the other 75% pass through


def test_rope_scores_depend_only_on_relative_position():
    rot = Rotary(rot_dim=16, base=10000.0)
    q, k = torch.randn(16), torch.randn(16)
    T = 600

    def score(m, n):
        qs = torch.zeros(1, 1, T, 16)
        ks = torch.zeros(1, 1, T, 16)
        qs[0, 0, m], ks[0, 0, n] = q, k
        cos, sin = rot.tables(T, qs.device)
        return (apply_rope(qs, cos, sin)[0, 0, m] @ apply_rope(ks, cos, sin)[0, 0, n]).item()
    assert score(10, 3) == pytest.approx(score(510, 503), abs=1e-4)
    assert score(5, 5) == pytest.approx(score(590, 590), abs=1e-4)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-4)      # but it does depend on m - n


def test_forward_beyond_any_length_seen_grows_the_tables():
    m = tiny()
    short = torch.randint(0, 256, (1, 64))
    m(short)                                                           # tables built for 64
    rot = m.layers[0].attention.rotary
    assert rot._cos.shape[0] == 64
    long = torch.cat([short, torch.randint(0, 256, (1, 4096 - 64))], dim=1)
    logits, _ = m(long)
    assert rot._cos.shape[0] >= 4096 and torch.isfinite(logits).all()
    # causal: the first 64 positions do not see the rest, so their logits are unchanged
    assert torch.allclose(logits[:, :64], m(short)[0], atol=1e-5)


@pytest.mark.parametrize("T", [1, 33, 130])
def test_sdpa_and_naive_backends_agree(T):
    m = tiny()
    idx = torch.randint(0, 256, (2, T))
    m.set_attention("sdpa")
    la, (_, lossa) = m(idx)[0], m(idx, idx)
    lossa.backward()
    ga = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.set_attention("naive")
    lb, (_, lossb) = m(idx)[0], m(idx, idx)
    lossb.backward()
    assert torch.allclose(la, lb, atol=1e-5)
    assert all(torch.allclose(a, p.grad, atol=1e-5) for a, p in zip(ga, m.parameters()))


@pytest.mark.parametrize("fields, match", [
    (dict(n_embd=64, n_head=5), "n_embd 64 is not a multiple of n_head 5"),
    (dict(n_head=0), "is not a multiple of n_head 0"),
    (dict(rope_switch="linear"), "unknown RoPE switch 'linear'"),
])
def test_a_config_the_model_cannot_compute_is_refused(fields, match):
    """Configs also come from checkpoints and config.json files: a ValueError callers can report."""
    with pytest.raises(ValueError, match=match):
        GPT(GPTConfig(**fields))


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown attention backend"):
        tiny().set_attention("flash3")


def test_presets():
    # Pythia-70M has 70,426,624 parameters (GPT-NeoX layout, untied, vocab 50304).
    assert GPT(make_config("pythia-70m")).num_params() == 70_426_624
    cfg = make_config("pythia-160m")
    assert (cfg.n_layer, cfg.n_embd, cfg.head_dim, cfg.parallel_residual) == (12, 768, 64, True)
    assert int(cfg.head_dim * cfg.rotary_pct) == 16
    assert 0.5e6 < GPT(make_config("tiny")).num_params() < 1.5e6
    assert set(PRESETS) == {"tiny", "small", "pythia-70m", "pythia-160m", "pythia-410m"}
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("gpt-5")


def test_parallel_residual_is_what_it_says():
    m = tiny()
    block = m.layers[0]
    x = torch.randn(2, 10, 64)
    expected = x + block.attention(block.input_layernorm(x)) + block.mlp(block.post_attention_layernorm(x))
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_generate_extends_past_its_prompt():
    m = tiny()
    out = m.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=20, temperature=0.8, top_k=10)
    assert out.shape == (1, 23) and int(out.max()) < 256
    greedy = m.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=5, temperature=0)
    assert torch.equal(greedy, m.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=5, temperature=0))


@pytest.mark.parametrize("T", [17, 100])
def test_triton_backend_matches_sdpa_in_the_model(T):
    """--attn triton (on CPU: under the Triton interpreter) gives the loss and gradients of --attn sdpa."""
    device = triton_device()
    from kernels import attention
    m = tiny().to(device)                                  # head dim 16
    idx = torch.randint(0, 256, (2, T), device=device)
    results = []
    for backend in ("sdpa", "triton"):
        m.zero_grad()
        m.set_attention(backend)
        with attention.fixed_configs():
            _, loss = m(idx, idx)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
    (la, ga), (lb, gb) = results
    assert la == pytest.approx(lb, abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(ga, gb))


@needs_cuda_triton
@pytest.mark.parametrize("T", [100, 256])
def test_cuda_triton_backend_matches_sdpa_in_bf16(T):
    """On a GPU, under bf16 autocast as train.py runs: the same loss and gradients as SDPA, to
    bf16's precision (a few units of 2^-8 relative; a masking bug costs O(1))."""
    from kernels import attention
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=256, n_layer=2, n_head=4, n_embd=256)).cuda()   # head dim 64
    idx = torch.randint(0, 256, (4, T), device="cuda")
    results = []
    for backend in ("sdpa", "triton"):
        m.zero_grad()
        m.set_attention(backend)
        with attention.fixed_configs(), torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = m(idx, idx)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
    (la, ga), (lb, gb) = results
    assert la == pytest.approx(lb, abs=2e-2)
    for a, b in zip(ga, gb):
        assert (a - b).abs().max() <= 3e-2 * max(a.abs().max().item(), 1e-3)


def test_triton_attention_path_makes_no_copy_of_q_k_v(monkeypatch):
    """The kernel reads v straight from the qkv projection's output and q, k straight from
    the one RoPE output, and its output goes to the dense projection as a free view."""
    device = triton_device()
    from kernels import attention
    m = tiny(attn="triton").to(device)
    layer = m.layers[0].attention
    seen = {}
    real_fwd = attention._flash_fwd

    def spy(q, k, v, causal, sm_scale, docs=None):
        o, lse = real_fwd(q, k, v, causal, sm_scale, docs)
        if "o" not in seen:                                    # layer 0's call, as the hooks
            seen.update(q=q, k=k, v=v, o=o)
        return o, lse
    monkeypatch.setattr(attention, "_flash_fwd", spy)
    layer.query_key_value.register_forward_hook(lambda mod, inp, out: seen.update(qkv=out))
    layer.dense.register_forward_pre_hook(lambda mod, inp: seen.update(y=inp[0]))
    with attention.fixed_configs():
        m(torch.randint(0, 256, (2, 33), device=device))

    def storage(t):
        return t.untyped_storage().data_ptr()
    assert storage(seen["v"]) == storage(seen["qkv"])
    assert storage(seen["q"]) == storage(seen["k"]) != storage(seen["qkv"])
    assert seen["y"].data_ptr() == seen["o"].data_ptr()


def test_triton_model_compiles_without_graph_breaks():
    """torch.compile sees the attention as one custom op: one graph for the whole model."""
    device = triton_device()
    m = tiny(attn="triton").to(device)
    m.grow_rope(64)
    idx = torch.randint(0, 256, (2, 33), device=device)
    from kernels import attention
    for args in ((idx, idx), (idx,)):
        with attention.fixed_configs():                    # explain runs the model once
            explained = torch._dynamo.explain(m)(*args)
        assert explained.graph_break_count == 0, explained.break_reasons
        assert explained.graph_count == 1


@pytest.mark.parametrize("N,V,chunk", [(1, 7, None), (37, 11, 5), (130, 256, 64), (64, 1000, 13)])
def test_chunked_cross_entropy_equals_cross_entropy(N, V, chunk):
    torch.manual_seed(N)
    h = torch.randn(N, 32, requires_grad=True)
    w = (0.3 * torch.randn(V, 32)).requires_grad_(True)
    targets = torch.randint(0, V, (N,))
    upstream = 1.7                                             # backward scales by the incoming gradient
    loss = chunked_cross_entropy(h, w, targets, chunk)
    (upstream * loss).backward()
    h2, w2 = (t.detach().clone().requires_grad_(True) for t in (h, w))
    ref = F.cross_entropy(h2 @ w2.t(), targets)
    (upstream * ref).backward()
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(h.grad, h2.grad, atol=1e-5) and torch.allclose(w.grad, w2.grad, atol=1e-5)


def test_chunked_cross_entropy_without_grad_makes_no_gradients():
    h, w = torch.randn(20, 8, requires_grad=True), torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (20,))
    with torch.no_grad():
        loss = chunked_cross_entropy(h, w, targets, 7)
    assert loss.item() == pytest.approx(F.cross_entropy(h @ w.t(), targets).item(), abs=1e-5)
    assert not loss.requires_grad


def test_model_loss_is_cross_entropy_of_its_logits():
    m = tiny()
    idx, targets = torch.randint(0, 256, (2, 50)), torch.randint(0, 256, (2, 50))
    logits, _ = m(idx)
    _, loss = m(idx, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.view(-1, 256), targets.view(-1)).item(), abs=1e-5)


def test_attention_takes_rope_from_the_rotary_tables(monkeypatch):
    """RoPE variants (scaled tables) only change Rotary.tables: the model must read them there."""
    m = tiny()
    idx = torch.randint(0, 256, (1, 20))
    before = m(idx)[0]
    real_tables = Rotary.tables
    monkeypatch.setattr(Rotary, "tables", lambda self, T, device: tuple(
        t * 0.5 for t in real_tables(self, T, device)))
    assert not torch.allclose(m(idx)[0], before, atol=1e-3)
