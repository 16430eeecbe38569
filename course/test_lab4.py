"""Lab 4 checks: your attention_tile and merge against a float64 softmax attention
(kernels.reference.attention_ref) on random inputs."""
import numpy as np
import pytest
import torch

from course import adapters
from kernels.reference import attention_ref


@pytest.fixture
def lab():
    return adapters.load("lab4_online_softmax")


def reference(q, k, v, scale, causal):
    """float64 attention over all T queries, and every row's logsumexp."""
    t = lambda a: torch.from_numpy(a)[None, None]                    # (1, 1, T, D)
    o = attention_ref(t(q), t(k), t(v), causal=causal, sm_scale=scale)[0, 0].numpy()
    s = (q @ k.T) * scale
    if causal:
        s = np.where(np.triu(np.ones_like(s, dtype=bool), 1), -np.inf, s)
    return o, torch.logsumexp(torch.from_numpy(s), dim=-1).numpy()


def random_case(rng, big=False):
    T = int(rng.integers(1, 260))
    D = int(rng.choice([4, 16, 32, 64]))
    q, k, v = (rng.standard_normal((T, D)) for _ in range(3))
    scale = 1 / np.sqrt(D) * (float(rng.uniform(20, 60)) if big else 1.0)
    Br = int(rng.integers(1, T + 1))
    q_start = int(rng.integers(0, T - Br + 1))
    block_n = int(rng.choice([1, 5, 16, 32, 64, max(1, T)]) if T < 40 else rng.choice([5, 16, 32, 64, T]))
    return q, k, v, scale, Br, q_start, block_n


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_attention_tile_matches_softmax_attention(lab, seed, causal):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        q, k, v, scale, Br, q0, bn = random_case(rng)
        o_ref, lse_ref = reference(q, k, v, scale, causal)
        o, m, l = lab.attention_tile(q[q0:q0 + Br], k, v, q0, bn, scale, causal)
        case = f"attention_tile(T={len(k)}, D={q.shape[1]}, tile rows {q0}..{q0 + Br - 1}, block_n={bn}, " \
               f"scale={scale:.4g}, causal={causal}) (ACTUAL yours, DESIRED the reference's)"
        np.testing.assert_allclose(o, o_ref[q0:q0 + Br], atol=1e-10, rtol=0, err_msg=f"{case}: o")
        np.testing.assert_allclose(np.asarray(m) + np.log(l), lse_ref[q0:q0 + Br], atol=1e-10, rtol=0,
                                   err_msg=f"{case}: m + log(l)")


@pytest.mark.parametrize("seed", [4, 5])
def test_attention_tile_is_stable_with_large_scores(lab, seed):
    # Scores in the hundreds: exp() without the running max overflows float64 (exp(710) = inf).
    rng = np.random.default_rng(seed)
    for _ in range(6):
        q, k, v, scale, Br, q0, bn = random_case(rng, big=True)
        q, k = q * 4, k * 4
        o_ref, lse_ref = reference(q, k, v, scale, True)
        o, m, l = lab.attention_tile(q[q0:q0 + Br], k, v, q0, bn, scale, True)
        case = f"attention_tile(T={len(k)}, D={q.shape[1]}, tile rows {q0}..{q0 + Br - 1}, block_n={bn}, " \
               f"scores up to {np.abs(q @ k.T).max() * scale:.0f}) (ACTUAL yours, DESIRED the reference's)"
        assert np.isfinite(o).all(), f"{case}: o holds inf or nan (exp of a score without the running max?)"
        np.testing.assert_allclose(o, o_ref[q0:q0 + Br], atol=1e-9, rtol=0, err_msg=f"{case}: o")
        np.testing.assert_allclose(np.asarray(m) + np.log(l), lse_ref[q0:q0 + Br], rtol=1e-12,
                                   err_msg=f"{case}: m + log(l)")


def partial_state(q, k, v, scale):
    """(m, l, acc) over these keys, computed in one go (float64, no blocks)."""
    s = (q @ k.T) * scale
    m = s.max(axis=1)
    p = np.exp(s - m[:, None])
    return m, p.sum(axis=1), p @ v


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_merge_of_two_key_sets_is_the_whole(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(15):
        T, D, Br = int(rng.integers(2, 200)), int(rng.choice([4, 16, 64])), int(rng.integers(1, 40))
        scale = float(rng.uniform(0.1, 30.0))
        q, k, v = rng.standard_normal((Br, D)), rng.standard_normal((T, D)), rng.standard_normal((T, D))
        split = rng.permutation(T)
        cut = int(rng.integers(1, T))
        a = partial_state(q, k[split[:cut]], v[split[:cut]], scale)
        b = partial_state(q, k[split[cut:]], v[split[cut:]], scale)
        m, l, acc = lab.merge(a, b)
        m_all, l_all, acc_all = partial_state(q, k, v, scale)
        case = f"merge of {cut} and {T - cut} keys (Br={Br}, D={D}, scale={scale:.3g}) (ACTUAL yours, " \
               f"DESIRED the state over all {T} keys at once)"
        np.testing.assert_allclose(m, m_all, rtol=1e-12, atol=0, err_msg=f"{case}: m")
        np.testing.assert_allclose(l, l_all, rtol=1e-10, err_msg=f"{case}: l")
        np.testing.assert_allclose(acc / np.asarray(l)[:, None], acc_all / l_all[:, None], atol=1e-10, rtol=0,
                                   err_msg=f"{case}: acc / l")
