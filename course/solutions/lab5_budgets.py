"""Lab 5, solution: equal time vs equal tokens, predicted from tokens/s per stage."""


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
