"""Lab 1 checks: your flops_per_token, cost_ratio and attention_crossover against model.flops_per_token."""
import numpy as np
import pytest

from course import adapters
from model import PRESETS, GPTConfig, flops_per_token as model_flops


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
        got, expected = lab.flops_per_token(L, d, V, T), model_flops(cfg, T)
        assert got == expected, f"flops_per_token(L={L}, d={d}, V={V}, T={T}): expected {expected}, got {got}"


def test_flops_per_token_of_the_tiny_model(lab):
    # tiny: L=4, d=128, vocab 256. 6N = 6 x 819,200; attention 6 x 4 x 128 x T.
    for T, expected in ((128, 5_308_416), (1024, 8_060_928)):
        got = lab.flops_per_token(4, 128, 256, T)
        assert got == expected, f"flops_per_token of tiny at T={T}: expected {expected:,}, got {got}"


@pytest.mark.parametrize("seed", [3, 4])
def test_cost_ratio_matches_the_model(lab, seed):
    for L, d, V, T in random_shapes(seed):
        T_long = T * int(np.random.default_rng(T).integers(2, 17))
        cfg = GPTConfig(vocab_size=V, n_layer=L, n_head=1, n_embd=d)
        expected = model_flops(cfg, T_long) / model_flops(cfg, T)
        got = lab.cost_ratio(L, d, V, T, T_long)
        assert got == pytest.approx(expected, rel=1e-12), \
            f"cost_ratio(L={L}, d={d}, V={V}, {T}, {T_long}): expected {expected}, got {got}"


@pytest.mark.parametrize("shape,T_short,T_long,expected", [
    ((4, 128, 256), 128, 1024, 1.5185), ((4, 128, 256), 1024, 128, 1 / 1.5185),
    ((12, 768, 50304), 128, 1024, 1.0662)])       # pythia-160m: lab 1's prediction question
def test_cost_ratio_of_the_presets(lab, shape, T_short, T_long, expected):
    got = lab.cost_ratio(*shape, T_short, T_long)
    assert got == pytest.approx(expected, abs=1e-4), \
        f"cost_ratio(L, d, V = {shape}, {T_short}, {T_long}): expected {expected:.4f}, got {got}"


def attention_flops(cfg, T):
    """The part of model.flops_per_token that grows with T."""
    return model_flops(cfg, T) - model_flops(cfg, 0)


@pytest.mark.parametrize("preset,part,expected", [("tiny", "mlp", 1024), ("tiny", "weights", 1600),
                                                  ("pythia-160m", "mlp", 6144),
                                                  ("pythia-160m", "weights", 123_568_128 / 9216)])
def test_attention_crossover_of_the_presets(lab, preset, part, expected):
    cfg = GPTConfig(**PRESETS[preset])
    got = lab.attention_crossover(cfg.n_layer, cfg.n_embd, cfg.vocab_size, part)
    assert got == pytest.approx(expected, rel=1e-9), \
        f"attention_crossover for {preset} (L={cfg.n_layer}, d={cfg.n_embd}, V={cfg.vocab_size}), {part!r}: " \
        f"expected {expected:.1f}, got {got}"


@pytest.mark.parametrize("seed", [5, 6])
def test_attention_crossover_balances_the_flops(lab, seed):
    # At the crossover, attention's FLOPs per token equal the part's, whatever the shape.
    for L, d, V, _ in random_shapes(seed):
        cfg = GPTConfig(vocab_size=V, n_layer=L, n_head=1, n_embd=d)
        mlp, weights = 6 * L * 8 * d * d, model_flops(cfg, 0)
        for part, target in (("mlp", mlp), ("weights", weights)):
            T = lab.attention_crossover(L, d, V, part)
            got = attention_flops(cfg, T)
            assert got == pytest.approx(target, rel=1e-9), \
                f"attention_crossover(L={L}, d={d}, V={V}, {part!r}) = {T}: attention there is {got:.4g} " \
                f"FLOPs per token, the {part} {target:.4g}"
