"""Lab 2, wrong on purpose: a boundary given to the stage it closes; steps rounded down per stage;
the ramp's time shared in proportion to each length, not to the step to the next one."""
import math

MUTATED = ["stage_at", "steps_per_stage", "linear_ramp"]


def stage_at(progress, ratios):
    total, end = sum(ratios), 0.0
    for i, r in enumerate(ratios[:-1]):
        end += r / total
        if progress <= end:
            return i
    return len(ratios) - 1


def steps_per_stage(schedule, ratios, max_tokens, tokens_per_step):
    return [math.floor(r / sum(ratios) * max_tokens / tokens_per_step) for r in ratios]


def linear_ramp(lengths, ramp):
    ramp_lengths = lengths[:-1]
    return [ramp * L / sum(ramp_lengths) for L in ramp_lengths] + [1.0 - ramp]
