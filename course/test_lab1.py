"""Lab 1 checks: your flops_per_token and cost_ratio against model.flops_per_token."""
import numpy as np
import pytest

from course import adapters
from model import GPTConfig, flops_per_token as model_flops


@pytest.fixture
def lab():
    return adapters.load("lab1_flops")


def random_shapes(seed, n=20):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        heads = int(rng.integers(1, 9))
        yield (int(rng.integers(1, 25)), heads * int(rng.integers(8, 129)),
               int(rng.integers(2, 60000)), int(rng.integers(1, 20000)))


@pytest.mark.parametrize("seed", [1, 2])
def test_flops_per_token_matches_the_model(lab, seed):
    for L, d, V, T in random_shapes(seed):
        cfg = GPTConfig(vocab_size=V, n_layer=L, n_head=1, n_embd=d)
        assert lab.flops_per_token(L, d, V, T) == model_flops(cfg, T), (L, d, V, T)


def test_flops_per_token_of_the_tiny_model(lab):
    # tiny: L=4, d=128, vocab 256. 6N = 6 x 819,200; attention 6 x 4 x 128 x T.
    assert lab.flops_per_token(4, 128, 256, 128) == 5_308_416
    assert lab.flops_per_token(4, 128, 256, 1024) == 8_060_928


@pytest.mark.parametrize("seed", [3, 4])
def test_cost_ratio_matches_the_model(lab, seed):
    for L, d, V, T in random_shapes(seed):
        T_long = T * int(np.random.default_rng(T).integers(2, 17))
        cfg = GPTConfig(vocab_size=V, n_layer=L, n_head=1, n_embd=d)
        expected = model_flops(cfg, T_long) / model_flops(cfg, T)
        assert lab.cost_ratio(L, d, V, T, T_long) == pytest.approx(expected, rel=1e-12)


def test_cost_ratio_of_the_tiny_model(lab):
    assert lab.cost_ratio(4, 128, 256, 128, 1024) == pytest.approx(1.5185, abs=1e-4)
    assert lab.cost_ratio(4, 128, 256, 1024, 128) == pytest.approx(1 / 1.5185, abs=1e-4)
