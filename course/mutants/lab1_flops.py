"""Lab 1, wrong on purpose (tests/test_course.py checks that the lab's tests catch each):
attention counted over every key, masked half included (12·L·d·T, DESIGN.md's anchor);
the ratio upside down."""
from course.solutions.lab1_flops import flops_per_token as right_flops

MUTATED = ["flops_per_token", "cost_ratio"]


def flops_per_token(n_layer, n_embd, vocab_size, T):
    return right_flops(n_layer, n_embd, vocab_size, T) + 6 * n_layer * n_embd * T


def cost_ratio(n_layer, n_embd, vocab_size, T_short, T_long):
    return right_flops(n_layer, n_embd, vocab_size, T_short) / right_flops(n_layer, n_embd, vocab_size, T_long)
