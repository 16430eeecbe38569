"""Lab 5 checks: your tokens_in_budget and seconds_for_tokens against schedule.Plan and
schedule.Clock driven by a fake clock (each step at stage i takes tokens_per_step / rate_i seconds)."""
import numpy as np
import pytest

from course import adapters
from schedule import Clock, Plan


@pytest.fixture
def lab():
    return adapters.load("lab5_budgets")


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def simulate(plan, rates):
    """train.py's loop on a fake clock: -> (tokens trained, training seconds)."""
    time = FakeTime()
    clock, tokens = Clock(time_fn=time), 0
    clock.start()
    while not plan.done(clock.elapsed(), tokens):
        i = plan.stage_index(plan.progress(clock.elapsed(), tokens))
        time.now += plan.tokens_per_step / rates[i]          # one optimizer step
        tokens += plan.tokens_per_step
    return tokens, clock.elapsed()


def random_arm(rng):
    n = int(rng.integers(1, 6))
    ratios = [float(r) for r in rng.uniform(0.2, 4.0, n)]
    rates = [float(r) for r in np.sort(rng.uniform(2000, 40000, n))[::-1]]   # shorter T, more tokens/s
    return [128 * 2 ** i for i in range(n)], ratios, rates


def shares(ratios):
    return [r / sum(ratios) for r in ratios]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tokens_in_budget_matches_a_timed_run(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        schedule, ratios, rates = random_arm(rng)
        budget = float(rng.uniform(60, 600))
        plan = Plan.make(schedule, shares(ratios), 2048, budget_s=budget)
        tokens, _ = simulate(plan, rates)
        # a stage's last step may run past its end: at most one step of tokens per stage
        assert lab.tokens_in_budget(budget, ratios, rates) == pytest.approx(tokens, abs=2048 * len(ratios))


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_seconds_for_tokens_matches_a_token_budget_run(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        schedule, ratios, rates = random_arm(rng)
        max_tokens = int(rng.integers(1_000_000, 5_000_000))
        plan = Plan.make(schedule, shares(ratios), 2048, max_tokens=max_tokens)
        _, seconds = simulate(plan, rates)
        slack = sum(2048 / r for r in rates)            # one step per stage
        assert lab.seconds_for_tokens(max_tokens, ratios, rates) == pytest.approx(seconds, abs=slack)


def test_tokens_in_budget_equal_time_favours_growlength(lab):
    # The lab's arithmetic: 60 s at tiny's measured rates (tokens/s at T = 128, 256, 512, 1024).
    rates = [15000, 13000, 11500, 9500]
    grow = lab.tokens_in_budget(60, [1, 1, 1, 1], rates)
    fixed = lab.tokens_in_budget(60, [1], [9500])
    assert grow == pytest.approx(15 * (15000 + 13000 + 11500 + 9500))
    assert fixed == pytest.approx(60 * 9500)
    assert lab.seconds_for_tokens(1_048_576, [1], [9500]) == pytest.approx(1_048_576 / 9500)
