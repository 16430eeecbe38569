"""Generation with a KV cache computes what the uncached model computes.

The cached path (GPT.forward_cached) runs the prompt once, then one token per step against
stored keys and values; the full forward is the reference. Token equality alone could hide
small errors behind argmax, so the logits are compared too.
"""
import pytest
import torch

from model import GPT, GPTConfig


def model(parallel=True):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=256, n_layer=2, n_head=4, n_embd=64, parallel_residual=parallel)).eval()


@pytest.mark.parametrize("parallel", [True, False])
def test_cached_logits_equal_the_full_forward(parallel):
    """A prompt chunk, a single token, then another chunk: every position's logits as in one pass."""
    m = model(parallel)
    idx = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        full = m(idx)[0]
        cache = m.new_kv_cache(2, 40)
        parts = [m.forward_cached(idx[:, :17], cache, 0), m.forward_cached(idx[:, 17:18], cache, 17),
                 m.forward_cached(idx[:, 18:], cache, 18)]
    cached = torch.cat(parts, dim=1)
    assert full.abs().max() > 0.1
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()


def test_greedy_generation_is_identical_with_and_without_cache():
    m = model()
    prompt = torch.randint(0, 256, (2, 5))
    cached = m.generate(prompt, 40, temperature=0)
    uncached = m.generate(prompt, 40, temperature=0, use_cache=False)
    assert cached.shape == (2, 45) and torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("top_k", [None, 20])
def test_seeded_sampling_is_identical_with_and_without_cache(top_k):
    m = model()
    prompt = torch.randint(0, 256, (3, 4))
    torch.manual_seed(123)
    cached = m.generate(prompt, 40, temperature=1.0, top_k=top_k)
    torch.manual_seed(123)
    uncached = m.generate(prompt, 40, temperature=1.0, top_k=top_k, use_cache=False)
    assert len(set(cached[0, 4:].tolist())) > 10          # really sampled, not a constant run
    assert torch.equal(cached, uncached)


def test_generation_past_the_rope_tables_grows_them():
    """Tables built for 16 positions (as after training at T=16) are grown mid-generation:
    RoPE extrapolates, the cache keeps working and still equals the uncached path."""
    m = model()
    m.grow_rope(16)
    assert m.layers[0].attention.rotary._cos.shape[0] == 16
    prompt = torch.randint(0, 256, (1, 10))
    cached = m.generate(prompt, 50, temperature=0)
    assert m.layers[0].attention.rotary._cos.shape[0] >= 60
    assert torch.equal(cached, m.generate(prompt, 50, temperature=0, use_cache=False))


def test_a_sliding_window_still_runs_uncached():
    m = model()
    out = m.generate(torch.zeros(1, 3, dtype=torch.long), 20, temperature=0, max_context=8)
    assert out.shape == (1, 23)


def test_under_bf16_autocast_the_cache_is_bf16_and_equals_the_full_forward():
    """train.py samples under autocast, where k and v come out of the projection in bf16. The
    cache holds them in bf16 too (fp32 buffers would make SDPA cast the whole prefix back at
    every decode step), and cached logits still match the uncached forward to bf16 precision."""
    m = model()
    idx = torch.randint(0, 256, (2, 40))
    assert m.new_kv_cache(1, 4)[0][0].dtype == torch.float32          # no autocast: the weights' dtype
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = m(idx)[0].float()
        cache = m.new_kv_cache(2, 40)
        assert all(t.dtype == torch.bfloat16 for kv in cache for t in kv)
        steps = [m.forward_cached(idx[:, :17], cache, 0)] + [m.forward_cached(idx[:, i:i + 1], cache, i)
                                                            for i in range(17, 40)]
    cached = torch.cat(steps, dim=1).float()
    # bf16 keeps 8 bits of mantissa (~0.4% per rounding); logits here are up to ~0.6, differences ~2e-3
    assert full.abs().max() > 0.1
    assert torch.allclose(cached, full, atol=1e-2, rtol=0), (cached - full).abs().max()
    prompt = torch.randint(0, 256, (1, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached = m.generate(prompt, 20, temperature=0)
        uncached = m.generate(prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)


def test_a_cache_too_large_for_this_machine_is_refused_before_allocating(monkeypatch):
    """--max-new-tokens 10**12 (sample.py, train.py --sample-tokens): one MemoryError line, and
    not one buffer allocated (on CPU the check comes first: an oversized cache meets the OOM
    killer, not an allocation error)."""
    monkeypatch.setattr(torch.Tensor, "new_zeros", lambda *a, **kw: pytest.fail("the cache was allocated"))
    with pytest.raises(MemoryError, match=r"KV cache for 1 x 1,000,000,000,005 tokens needs [\d,.]+ GiB, over half") as e:
        model().generate(torch.zeros(1, 5, dtype=torch.long), 10 ** 12)
    assert "\n" not in str(e.value)


def test_an_allocation_the_device_refuses_is_a_memory_error(monkeypatch):
    """On a GPU the allocator answers (torch.OutOfMemoryError, a RuntimeError): the same one line."""
    def refuse(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmany more lines")
    monkeypatch.setattr(torch.Tensor, "new_zeros", refuse)
    with pytest.raises(MemoryError, match=r"KV cache for 2 x 30 tokens needs 0.0 GiB, more than cpu can allocate") as e:
        model().generate(torch.zeros(2, 10, dtype=torch.long), 20)
    assert "\n" not in str(e.value)
