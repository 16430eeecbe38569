"""Lab 1, wrong on purpose (tests/test_course.py checks that the lab's tests catch each):
attention counted over every key, masked half included (12·L·d·T, what a non-causal kernel
pays); the ratio upside down; the crossover solved with the non-causal 12·L·d·T."""
from course.solutions.lab1_flops import flops_per_token as right_flops

MUTATED = ["flops_per_token", "cost_ratio", "attention_crossover"]


def flops_per_token(n_layer, n_embd, vocab_size, T):
    return right_flops(n_layer, n_embd, vocab_size, T) + 6 * n_layer * n_embd * T


def cost_ratio(n_layer, n_embd, vocab_size, T_short, T_long):
    return right_flops(n_layer, n_embd, vocab_size, T_short) / right_flops(n_layer, n_embd, vocab_size, T_long)


def attention_crossover(n_layer, n_embd, vocab_size, part="mlp"):
    weights = 8 * n_embd * n_embd if part == "mlp" else 12 * n_embd * n_embd + n_embd * vocab_size / n_layer
    return 6 * weights / (12 * n_embd)
