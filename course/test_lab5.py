"""Lab 5 checks: your tokens_in_budget, seconds_for_tokens and equal_time_plan against schedule.Plan
and schedule.Clock driven by a fake clock (each step at stage i takes tokens_per_step / rate_i seconds)."""
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


def simulate(plan, rates, per_stage=False):
    """train.py's loop on a fake clock: -> (tokens trained, training seconds), or the tokens
    of each stage."""
    time = FakeTime()
    clock, tokens, stage_tokens = Clock(time_fn=time), 0, [0] * len(plan.stages)
    clock.start()
    while not plan.done(clock.elapsed(), tokens):
        i = plan.stage_index(plan.progress(clock.elapsed(), tokens))
        time.now += plan.tokens_per_step / rates[i]          # one optimizer step
        tokens += plan.tokens_per_step
        stage_tokens[i] += plan.tokens_per_step
    return stage_tokens if per_stage else (tokens, clock.elapsed())


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
        got = lab.tokens_in_budget(budget, ratios, rates)
        assert got == pytest.approx(tokens, abs=2048 * len(ratios)), \
            f"tokens_in_budget({budget:.1f}, {ratios}, {rates}): expected {tokens} (+-1 step a stage), got {got}"


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_seconds_for_tokens_matches_a_token_budget_run(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        schedule, ratios, rates = random_arm(rng)
        max_tokens = int(rng.integers(1_000_000, 5_000_000))
        plan = Plan.make(schedule, shares(ratios), 2048, max_tokens=max_tokens)
        _, seconds = simulate(plan, rates)
        slack = sum(2048 / r for r in rates)            # one step per stage
        got = lab.seconds_for_tokens(max_tokens, ratios, rates)
        assert got == pytest.approx(seconds, abs=slack), \
            f"seconds_for_tokens({max_tokens}, {ratios}, {rates}): expected {seconds:.2f} (+-{slack:.2f}), got {got}"


def test_tokens_in_budget_equal_time_favours_growlength(lab):
    # The lab's arithmetic: 60 s at tiny's measured rates (tokens/s at T = 128, 256, 512, 1024).
    rates = [15000, 13000, 11500, 9500]
    grow = lab.tokens_in_budget(60, [1, 1, 1, 1], rates)
    fixed = lab.tokens_in_budget(60, [1], [9500])
    assert grow == pytest.approx(15 * (15000 + 13000 + 11500 + 9500)), \
        f"tokens_in_budget(60, [1, 1, 1, 1], {rates}): expected {15 * (15000 + 13000 + 11500 + 9500)}, got {grow}"
    assert fixed == pytest.approx(60 * 9500), f"tokens_in_budget(60, [1], [9500]): expected 570000, got {fixed}"
    got = lab.seconds_for_tokens(1_048_576, [1], [9500])
    assert got == pytest.approx(1_048_576 / 9500), \
        f"seconds_for_tokens(1048576, [1], [9500]): expected {1_048_576 / 9500:.2f}, got {got}"


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_equal_time_plan_replays_a_timed_run(lab, seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        schedule, ratios, rates = random_arm(rng)
        budget = float(rng.uniform(60, 600))
        timed = simulate(Plan.make(schedule, shares(ratios), 2048, budget_s=budget), rates, per_stage=True)
        max_tokens, token_ratios = lab.equal_time_plan(budget, ratios, rates, 2048)
        case = f"equal_time_plan({budget:.1f}, {[round(r, 3) for r in ratios]}, {[round(r) for r in rates]}, 2048) " \
               f"= ({max_tokens}, {[round(r, 4) for r in token_ratios]})"
        assert max_tokens % 2048 == 0, f"{case}: max_tokens is not a whole number of 2048-token steps"
        assert sum(token_ratios) == pytest.approx(1.0), f"{case}: the token ratios add up to {sum(token_ratios)}"
        replayed = simulate(Plan.make(schedule, list(token_ratios), 2048, max_tokens=max_tokens), rates, per_stage=True)
        for i, (want, got) in enumerate(zip(timed, replayed)):
            assert abs(got - want) <= 2048, \
                f"{case}: stage {i + 1} (T={schedule[i]}): the --budget run trains {want} tokens, the replay {got}"


def test_equal_time_plan_of_the_lab(lab):
    # Lab 1's one-thread tokens/s (T = 128, 256, 512, 1024), 60 s, 4096 tokens per step.
    rates = [9830, 8802, 6832, 5153]
    max_tokens, token_ratios = lab.equal_time_plan(60, [1, 1, 1, 1], rates, 4096)
    assert max_tokens == 462_848, f"equal_time_plan(60, [1, 1, 1, 1], {rates}, 4096): expected 462,848 tokens (113 steps), got {max_tokens}"
    expected = [r / sum(rates) for r in rates]
    assert list(token_ratios) == pytest.approx(expected), \
        f"equal_time_plan(60, [1, 1, 1, 1], {rates}, 4096): expected token ratios {expected}, got {token_ratios}"
    max_tokens, _ = lab.equal_time_plan(60, [1], [5153], 4096)
    assert max_tokens == 311_296, f"equal_time_plan(60, [1], [5153], 4096): expected 311,296 tokens (76 steps), got {max_tokens}"
