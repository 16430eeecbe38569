"""Lab 6 checks: your loss_jumps against schedule.loss_jumps, your ntk_frequencies against
model.rope_frequencies(..., "ntk", ...), your predicted_jump on records with a known trend."""
import numpy as np
import pytest
import torch

from course import adapters
from model import rope_frequencies
from schedule import loss_jumps as schedule_loss_jumps


@pytest.fixture
def lab():
    return adapters.load("lab6_switch")


def random_record(rng):
    """Per-step (seq_len, loss) of a run with 1-6 stages of 1-14 steps each: some shorter than k."""
    seq_lens, losses, T, level = [], [], 64, 5.5
    for _ in range(int(rng.integers(1, 7))):
        T *= 2
        level += float(rng.normal(0, 0.3))                  # a jump of random size and sign
        for _ in range(int(rng.integers(1, 15))):
            level -= float(rng.uniform(0, 0.05))
            seq_lens.append(T)
            losses.append(level + float(rng.normal(0, 0.05)))
    return seq_lens, losses


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_loss_jumps_match_the_schedule(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        seq_lens, losses = random_record(rng)
        k = int(rng.integers(1, 7))
        expected = [j["jump"] for j in schedule_loss_jumps(seq_lens, losses, k)]
        got = lab.loss_jumps(seq_lens, losses, k)
        case = f"loss_jumps(seq_lens={seq_lens}, k={k}): expected {expected}, got {got}"
        assert len(got) == len(expected), case
        for g, e in zip(got, expected):
            assert (g is None) == (e is None), case
            if e is not None:
                assert g == pytest.approx(e, abs=1e-12), case


def test_loss_jumps_of_a_hand_made_record(lab):
    seq_lens = [128] * 6 + [256] * 5 + [512] * 2
    losses = [3.0, 2.9, 2.8, 2.7, 2.6, 2.5] + [2.9, 2.8, 2.7, 2.6, 2.5] + [2.0, 2.0]
    # 128->256: after 2.7, before mean(2.9..2.5) = 2.7 -> 0.0; 256->512 has 2 steps after: None
    got = lab.loss_jumps(seq_lens, losses, 5)
    assert got[0] == pytest.approx(0.0, abs=1e-12) and got[1] is None, \
        f"loss_jumps of 6 x 128, 5 x 256, 2 x 512 steps, k=5: expected [0.0, None], got {got}"
    got = lab.loss_jumps(seq_lens, losses, 2)   # 128->256: mean(2.9, 2.8) - mean(2.6, 2.5)
    assert got[0] == pytest.approx(0.3) and got[1] == pytest.approx(2.0 - 2.55), \
        f"loss_jumps of 6 x 128, 5 x 256, 2 x 512 steps, k=2: expected [0.3, -0.55], got {got}"


@pytest.mark.parametrize("rot_dim,base", [(8, 10000.0), (16, 10000.0), (32, 500.0), (64, 10000.0)])
def test_ntk_frequencies_match_the_model(lab, rot_dim, base):
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
    for s in np.random.default_rng(rot_dim).uniform(1.0, 16.0, 5):
        ref, _ = rope_frequencies(inv_freq, base, "ntk", 128, float(s))
        got = lab.ntk_frequencies(inv_freq.double().numpy(), base, float(s))
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), ref.double().numpy(), rtol=1e-5,
                                   err_msg=f"ntk_frequencies(rot_dim={rot_dim}, base={base}, s={s:.3f}) "
                                           f"(ACTUAL yours, DESIRED model.rope_frequencies')")


def test_ntk_frequencies_keep_the_fastest_and_slow_the_slowest_by_s(lab):
    rot_dim, base = 32, 10000.0
    inv_freq = 1.0 / base ** (np.arange(0, rot_dim, 2) / rot_dim)
    s = 4.0
    got = np.asarray(lab.ntk_frequencies(inv_freq, base, s), dtype=np.float64)
    assert got[0] == pytest.approx(inv_freq[0]), \
        f"ntk_frequencies(rot_dim 32, s=4): the fastest frequency: expected {inv_freq[0]} (unchanged), got {got[0]}"
    assert got[-1] == pytest.approx(inv_freq[-1] / s), \
        f"ntk_frequencies(rot_dim 32, s=4): the slowest: expected {inv_freq[-1] / s:.4g} (divided by s), got {got[-1]:.4g}"


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_predicted_jump_of_a_record_with_a_known_trend(lab, seed):
    # A loss falling `slope` per step, plus a penalty of `penalty` from the switch on: what
    # loss_jumps reports is penalty + k * slope (the k steps after sit k steps later).
    rng = np.random.default_rng(seed)
    for _ in range(20):
        k, n_before = int(rng.integers(2, 8)), int(rng.integers(16, 40))
        slope, penalty, level = float(rng.uniform(-0.03, -0.003)), float(rng.uniform(-0.1, 0.4)), 2.5
        losses_before = [level + slope * t + float(rng.normal(0, 0.002)) for t in range(n_before)]
        val_old = level + slope * n_before + 0.03                   # val and train differ by a gap...
        val_new = val_old + penalty                                  # ... that the penalty does not change
        expected = penalty + k * slope
        got = lab.predicted_jump(val_old, val_new, losses_before, k)
        assert got == pytest.approx(expected, abs=0.01), \
            f"predicted_jump(val_old={val_old:.4f}, val_new={val_new:.4f}, {n_before} losses falling " \
            f"{-slope:.4f} a step, k={k}): expected {expected:.4f}, got {got}"


def test_predicted_jump_of_a_flat_record(lab):
    # No trend: the jump is the val-vs-context curve's step, whatever k.
    for k in (1, 5, 10):
        got = lab.predicted_jump(2.40, 2.52, [2.41] * 30, k)
        assert got == pytest.approx(0.12, abs=1e-6), f"predicted_jump(2.40, 2.52, flat losses, k={k}): expected 0.12, got {got}"
