"""Lab 5, solution: equal time vs equal tokens, predicted from tokens/s per stage."""
import math


def tokens_in_budget(budget_s: float, ratios, tokens_per_s) -> float:
    """Tokens a wallclock run (--budget) trains when stage i gets ratios[i] / sum(ratios) of
    the budget and trains at tokens_per_s[i] (measured, e.g. by bench.py lengths)."""
    total = sum(ratios)
    return sum(budget_s * r / total * rate for r, rate in zip(ratios, tokens_per_s))


def seconds_for_tokens(max_tokens: float, ratios, tokens_per_s) -> float:
    """Training seconds a token-budget run (--max-tokens) takes when stage i trains
    ratios[i] / sum(ratios) of the tokens at tokens_per_s[i]."""
    total = sum(ratios)
    return sum(max_tokens * r / total / rate for r, rate in zip(ratios, tokens_per_s))


def equal_time_plan(budget_s: float, ratios, tokens_per_s, tokens_per_step: int):
    """The token budget that replays a wallclock run: (max_tokens, token_ratios) such that
    `--max-tokens max_tokens --ratios token_ratios` trains, stage by stage, the tokens that
    `--budget budget_s --ratios ratios` trains on a machine with these tokens/s per stage
    (stage i: ratios[i] / sum(ratios) of the seconds). max_tokens is a whole number of
    steps of tokens_per_step; token_ratios are positive and sum to 1. Such a run's losses no
    longer depend on how busy the machine is when it runs."""
    total = sum(ratios)
    stage_tokens = [budget_s * r / total * rate for r, rate in zip(ratios, tokens_per_s)]
    # A --budget run stops at the first step that ends past the budget: round up to a step.
    max_tokens = math.ceil(sum(stage_tokens) / tokens_per_step) * tokens_per_step
    return max_tokens, [t / sum(stage_tokens) for t in stage_tokens]
