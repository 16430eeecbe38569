"""Lab 5, exercise: equal time vs equal tokens, predicted from tokens/s per stage.

Replace each `raise NotImplementedError` with your code (lab5-*.md says what to read first),
then check it: pytest course/ -k lab5
"""


def tokens_in_budget(budget_s: float, ratios, tokens_per_s) -> float:
    """Tokens a wallclock run (--budget) trains when stage i gets ratios[i] / sum(ratios) of
    the budget and trains at tokens_per_s[i] (measured, e.g. by bench.py lengths)."""
    raise NotImplementedError("lab 5, exercise 1: each stage's seconds times its tokens/s")


def seconds_for_tokens(max_tokens: float, ratios, tokens_per_s) -> float:
    """Training seconds a token-budget run (--max-tokens) takes when stage i trains
    ratios[i] / sum(ratios) of the tokens at tokens_per_s[i]."""
    raise NotImplementedError("lab 5, exercise 2: each stage's tokens divided by its tokens/s")


def equal_time_plan(budget_s: float, ratios, tokens_per_s, tokens_per_step: int):
    """The token budget that replays a wallclock run: (max_tokens, token_ratios) such that
    `--max-tokens max_tokens --ratios token_ratios` trains, stage by stage, the tokens that
    `--budget budget_s --ratios ratios` trains on a machine with these tokens/s per stage
    (stage i: ratios[i] / sum(ratios) of the seconds). max_tokens is a whole number of
    steps of tokens_per_step; token_ratios are positive and sum to 1. Such a run's losses no
    longer depend on how busy the machine is when it runs."""
    raise NotImplementedError("lab 5, exercise 3: the tokens each stage trains in its seconds, then their shares")
