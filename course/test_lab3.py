"""Lab 3 checks: your rope_tables and apply_rotary against model.Rotary and model.apply_rope;
your new_angle_fraction against a position-by-position count."""
import math

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
    assert np.shape(cos) == (T, rot_dim) and np.shape(sin) == (T, rot_dim), \
        f"rope_tables({T}, {rot_dim}, {base}): expected two ({T}, {rot_dim}) tables, got {np.shape(cos)} and {np.shape(sin)}"
    # model.Rotary computes the angles in fp32: at position 4095 that is ~2e-4 of rounding.
    case = f"rope_tables({T}, {rot_dim}, {base})"
    np.testing.assert_allclose(np.asarray(cos, dtype=np.float64), ref_cos.double().numpy(), atol=1e-3, rtol=0,
                               err_msg=f"{case}: cos (ACTUAL yours, DESIRED model.Rotary's)")
    np.testing.assert_allclose(np.asarray(sin, dtype=np.float64), ref_sin.double().numpy(), atol=1e-3, rtol=0,
                               err_msg=f"{case}: sin (ACTUAL yours, DESIRED model.Rotary's)")


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
        a, b = rotate(q, m) @ rotate(k, n), rotate(q, m + shift) @ rotate(k, n + shift)
        assert a == pytest.approx(b, abs=1e-9), \
            f"rope_tables(600, {rot_dim}): q.k at positions ({m}, {n}) is {a}, at ({m + shift}, {n + shift}) {b}: expected equal"
    # ... and it does depend on the distance (a table of ones and zeros would pass the line above)
    assert abs(rotate(q, 5) @ rotate(k, 0) - q @ k) > 1e-6, \
        f"rope_tables(600, {rot_dim}): q.k at distance 5 equals q.k unrotated: the tables do not rotate"


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
    case = f"apply_rotary(x of shape ({T}, {head_dim}), tables ({T}, {rot_dim}))"
    assert got.shape == (T, head_dim), f"{case}: expected shape {(T, head_dim)}, got {got.shape}"
    np.testing.assert_allclose(got, ref.double().numpy(), atol=1e-5, rtol=0,
                               err_msg=f"{case} (ACTUAL yours, DESIRED model.apply_rope's)")


@pytest.mark.parametrize("T_train,T_eval,expected", [(128, 256, [0, 0, 1, 1]), (128, 512, [0, 0, 1, 1]),
                                                     (128, 1024, [0, 0, 769 / 896, 1])])
def test_new_angle_fraction_of_the_tiny_model(lab, T_train, T_eval, expected):
    # tiny: rot_dim 8, base 10000, frequencies 1, 0.1, 0.01, 0.001 rad per position
    got = np.asarray(lab.new_angle_fraction(T_train, T_eval, 8, 10000.0), dtype=np.float64)
    np.testing.assert_allclose(got, expected, atol=1.5 / (T_eval - T_train), rtol=0,
                               err_msg=f"new_angle_fraction({T_train}, {T_eval}, 8, 10000): expected {expected}")


@pytest.mark.parametrize("seed", [7, 8])
def test_new_angle_fraction_counts_positions_off_the_trained_arc(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        T_train, rot_dim = int(rng.integers(2, 600)), 2 * int(rng.integers(1, 17))
        T_eval, base = T_train + int(rng.integers(1, 3000)), float(rng.choice([500.0, 10000.0, 500000.0]))
        freqs = 1.0 / base ** (np.arange(0, rot_dim, 2) / rot_dim)
        expected = []
        for f in freqs:                           # position by position, on the circle
            if (T_train - 1) * f >= 2 * np.pi:
                expected.append(0.0)
                continue
            new = [math.fmod(t * f, 2 * math.pi) > (T_train - 1) * f for t in range(T_train, T_eval)]
            expected.append(sum(new) / len(new))
        got = np.asarray(lab.new_angle_fraction(T_train, T_eval, rot_dim, base), dtype=np.float64)
        np.testing.assert_allclose(got, expected, atol=1.5 / (T_eval - T_train), rtol=0,
                                   err_msg=f"new_angle_fraction({T_train}, {T_eval}, {rot_dim}, {base})")
