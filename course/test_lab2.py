"""Lab 2 checks: your stage_at and steps_per_stage against schedule.Plan, driven as train.py drives it;
your linear_ramp by what a run with its --ratios trains at every moment."""
import numpy as np
import pytest

from course import adapters
from schedule import Plan, parse_ratios


@pytest.fixture
def lab():
    return adapters.load("lab2_schedule")


def random_plan(rng, max_tokens=None):
    n = int(rng.integers(1, 7))
    schedule = [64 * 2 ** i for i in range(n)]
    ratios = [float(r) for r in rng.uniform(0.05, 5.0, n)]
    tps = 64 * 2 ** (n - 1) * int(rng.integers(1, 5))
    plan = Plan.make(schedule, parse_ratios(",".join(map(repr, ratios)), n), tps,
                     max_tokens=max_tokens or int(rng.integers(tps, 200 * tps)))
    return schedule, ratios, plan


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stage_at_matches_the_plan(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        _, ratios, plan = random_plan(rng)
        # both sides of every boundary; exactly on one, see the dyadic test below
        near = [s.start + e for s in plan.stages[1:] for e in (-1e-9, 1e-9)]
        for p in list(rng.uniform(0, 1, 20)) + [0.0, 1.0] + near:
            got, expected = lab.stage_at(float(p), ratios), plan.stage_index(float(p))
            assert got == expected, f"stage_at({float(p)!r}, {ratios}): expected {expected}, got {got}"


def test_stage_at_boundaries_belong_to_the_next_stage(lab):
    # 1,1,2,4: stages cover [0, 1/8), [1/8, 1/4), [1/4, 1/2), [1/2, 1] (exact in binary)
    ratios = [1, 1, 2, 4]
    for p, i in [(0.0, 0), (0.124, 0), (0.125, 1), (0.2499, 1), (0.25, 2), (0.5, 3), (0.99, 3), (1.0, 3)]:
        got = lab.stage_at(p, ratios)
        assert got == i, f"stage_at({p}, {ratios}): expected {i}, got {got}"


def simulate(plan):
    """train.py's loop with nothing but the token budget: progress before every step."""
    steps, tokens = [0] * len(plan.stages), 0
    while not plan.done(0.0, tokens):
        steps[plan.stage_index(plan.progress(0.0, tokens))] += 1
        tokens += plan.tokens_per_step
    return steps


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_steps_per_stage_matches_a_simulated_run(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        schedule, ratios, plan = random_plan(rng)
        got = lab.steps_per_stage(schedule, ratios, plan.max_tokens, plan.tokens_per_step)
        expected = simulate(plan)
        assert list(got) == expected, f"steps_per_stage({schedule}, {ratios}, {plan.max_tokens}, " \
            f"{plan.tokens_per_step}): expected {expected}, got {list(got)}"


def test_steps_per_stage_of_the_lab_command(lab):
    # python train.py --schedule 128,256,512,1024 --max-tokens 65536 (8192 tokens/step): 8 steps
    for args, expected in [(([128, 256, 512, 1024], [1, 1, 1, 1], 65536, 8192), [2, 2, 2, 2]),
                           (([128, 256, 512, 1024], [1, 1, 2, 4], 65536, 8192), [1, 1, 2, 4]),
                           (([128, 256, 512, 1024], [1, 2, 4, 7], 57344, 4096), [1, 2, 4, 7]),  # exercise 2.3's run
                           (([128, 1024], [1, 1], 10 * 8192 + 1, 8192), [6, 5])]:
        got = list(lab.steps_per_stage(*args))
        assert got == expected, f"steps_per_stage{args}: expected {expected}, got {got}"


def ramp_window(p, lengths, ramp):
    """The linear ramp's window at progress p."""
    return lengths[-1] if p >= ramp else lengths[0] + (lengths[-1] - lengths[0]) * p / ramp


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_linear_ramp_trains_at_the_longest_length_the_window_has_reached(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n = int(rng.integers(2, 9))
        lengths = sorted(int(x) for x in rng.choice(np.arange(1, 65), n, replace=False) * 64)
        ramp = float(rng.uniform(0.05, 0.95))
        ratios = list(lab.linear_ramp(lengths, ramp))
        case = f"linear_ramp({lengths}, ramp={ramp:.4f}) = {[round(r, 4) for r in ratios]}"
        assert len(ratios) == n and all(r > 0 for r in ratios), f"{case}: expected {n} positive shares"
        assert sum(ratios) == pytest.approx(1.0), f"{case}: the shares add up to {sum(ratios)}, not 1"
        # Stage boundaries depend on the ratios alone: lengths of 1 keep Plan.make's
        # divisibility check out of the way of arbitrary ramp lengths.
        plan = Plan.make([1] * n, ratios, 1, max_tokens=1)
        edges = [0.0] + [s.start for s in plan.stages[1:]]
        for p in rng.uniform(0, 1, 50):
            if min(abs(p - e) for e in edges) < 1e-9:
                continue
            expected = max(L for L in lengths if L <= ramp_window(p, lengths, ramp))
            got = lengths[plan.stage_index(float(p))]
            assert got == expected, f"{case}: at progress {p:.4f} the window is " \
                f"{ramp_window(p, lengths, ramp):.1f}: expected T={expected}, the plan trains at T={got}"


def test_linear_ramp_of_the_lab_command(lab):
    # 128 -> 1024 over the first half: the window passes 256 at 1/14, 512 at 3/14, 1024 at 7/14.
    got = [r * 14 for r in lab.linear_ramp([128, 256, 512, 1024], 0.5)]
    assert got == pytest.approx([1, 2, 4, 7]), f"linear_ramp([128, 256, 512, 1024], 0.5) x 14: expected [1, 2, 4, 7], got {got}"
