"""Lab 3 checks: your rope_tables and apply_rotary against model.Rotary and model.apply_rope."""
import numpy as np
import pytest
import torch

from course import adapters
from model import Rotary, apply_rope


@pytest.fixture
def lab():
    return adapters.load("lab3_rope")


@pytest.mark.parametrize("T,rot_dim,base", [(1, 2, 10000.0), (17, 8, 10000.0), (300, 16, 500.0),
                                            (1024, 32, 10000.0), (4096, 8, 10000.0)])
def test_rope_tables_match_the_model(lab, T, rot_dim, base):
    cos, sin = lab.rope_tables(T, rot_dim, base)
    ref_cos, ref_sin = Rotary(rot_dim, base).tables(T, "cpu")            # fp32, angles rounded
    assert np.shape(cos) == (T, rot_dim) and np.shape(sin) == (T, rot_dim)
    # model.Rotary computes the angles in fp32: at position 4095 that is ~2e-4 of rounding.
    np.testing.assert_allclose(np.asarray(cos, dtype=np.float64), ref_cos.double().numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(np.asarray(sin, dtype=np.float64), ref_sin.double().numpy(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rope_tables_give_relative_positions(lab, seed):
    # The point of RoPE: q.k after rotation depends on the distance m - n only.
    rng = np.random.default_rng(seed)
    rot_dim = 2 * int(rng.integers(1, 17))
    cos, sin = (np.asarray(t, dtype=np.float64) for t in lab.rope_tables(600, rot_dim, 10000.0))
    q, k = rng.standard_normal(rot_dim), rng.standard_normal(rot_dim)

    def rotate(x, t):   # the reference rotation, written here so this test needs only your tables
        h = rot_dim // 2
        return x * cos[t] + np.concatenate([-x[h:], x[:h]]) * sin[t]
    for m, n in rng.integers(0, 300, (10, 2)):
        shift = int(rng.integers(1, 300))
        assert rotate(q, m) @ rotate(k, n) == pytest.approx(rotate(q, m + shift) @ rotate(k, n + shift), abs=1e-9)
    # ... and it does depend on the distance (a table of ones and zeros would pass the line above)
    assert abs(rotate(q, 5) @ rotate(k, 0) - q @ k) > 1e-6


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_apply_rotary_matches_the_model(lab, seed):
    rng = np.random.default_rng(seed)
    T, head_dim = int(rng.integers(1, 200)), 4 * int(rng.integers(1, 17))
    rot_dim = 2 * int(rng.integers(1, head_dim // 2 + 1))
    x = rng.standard_normal((T, head_dim))
    cos = rng.uniform(-1, 1, (T, rot_dim))          # any tables: the rotation is what is checked
    sin = rng.uniform(-1, 1, (T, rot_dim))
    got = np.asarray(lab.apply_rotary(x, cos, sin), dtype=np.float64)
    ref = apply_rope(torch.from_numpy(x).float(), torch.from_numpy(cos).float(), torch.from_numpy(sin).float())
    assert got.shape == (T, head_dim)
    np.testing.assert_allclose(got, ref.double().numpy(), atol=1e-5, rtol=0)
