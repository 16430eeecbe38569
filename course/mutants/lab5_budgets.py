"""Lab 5, wrong on purpose: the ratios ignored (equal shares); the mean rate instead of each stage's."""
MUTATED = ["tokens_in_budget", "seconds_for_tokens"]


def tokens_in_budget(budget_s, ratios, tokens_per_s):
    return sum(budget_s / len(ratios) * rate for rate in tokens_per_s)


def seconds_for_tokens(max_tokens, ratios, tokens_per_s):
    return max_tokens / (sum(tokens_per_s) / len(tokens_per_s))
