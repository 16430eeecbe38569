"""Lab 2 checks: your stage_at and steps_per_stage against schedule.Plan, driven as train.py drives it."""
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
            assert lab.stage_at(float(p), ratios) == plan.stage_index(float(p)), (ratios, p)


def test_stage_at_boundaries_belong_to_the_next_stage(lab):
    # 1,1,2,4: stages cover [0, 1/8), [1/8, 1/4), [1/4, 1/2), [1/2, 1] (exact in binary)
    ratios = [1, 1, 2, 4]
    for p, i in [(0.0, 0), (0.124, 0), (0.125, 1), (0.2499, 1), (0.25, 2), (0.5, 3), (0.99, 3), (1.0, 3)]:
        assert lab.stage_at(p, ratios) == i, p


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
        assert list(got) == simulate(plan), (schedule, ratios, plan.max_tokens, plan.tokens_per_step)


def test_steps_per_stage_of_the_lab_command(lab):
    # python train.py --schedule 128,256,512,1024 --max-tokens 65536 (8192 tokens/step): 8 steps
    assert list(lab.steps_per_stage([128, 256, 512, 1024], [1, 1, 1, 1], 65536, 8192)) == [2, 2, 2, 2]
    assert list(lab.steps_per_stage([128, 256, 512, 1024], [1, 1, 2, 4], 65536, 8192)) == [1, 1, 2, 4]
    assert list(lab.steps_per_stage([128, 1024], [1, 1], 10 * 8192 + 1, 8192)) == [6, 5]
