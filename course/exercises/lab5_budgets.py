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
