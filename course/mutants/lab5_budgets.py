"""Lab 5, wrong on purpose: the ratios ignored (equal shares); the mean rate instead of each stage's;
the time shares reused as token shares."""
MUTATED = ["tokens_in_budget", "seconds_for_tokens", "equal_time_plan"]


def tokens_in_budget(budget_s, ratios, tokens_per_s):
    return sum(budget_s / len(ratios) * rate for rate in tokens_per_s)


def seconds_for_tokens(max_tokens, ratios, tokens_per_s):
    return max_tokens / (sum(tokens_per_s) / len(tokens_per_s))


def equal_time_plan(budget_s, ratios, tokens_per_s, tokens_per_step):
    tokens = sum(budget_s * r / sum(ratios) * rate for r, rate in zip(ratios, tokens_per_s))
    return -(-int(tokens) // tokens_per_step) * tokens_per_step, [r / sum(ratios) for r in ratios]
