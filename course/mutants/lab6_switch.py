"""Lab 6, wrong on purpose: the 'before' window ends one step late (it takes the new stage's
first step); NTK's base stretched by s instead of s^(d/(d-2)); the jump predicted from the
val-vs-context curve alone, the falling trend forgotten."""
import numpy as np

from course.solutions.lab6_switch import loss_jumps as right_jumps

MUTATED = ["loss_jumps", "ntk_frequencies", "predicted_jump"]


def loss_jumps(seq_lens, losses, k=5):
    shifted_lens = [seq_lens[0]] + list(seq_lens[:-1])   # every switch detected one step late
    return right_jumps(shifted_lens, losses, k)


def ntk_frequencies(inv_freq, base, s):
    d = 2 * len(inv_freq)
    return 1.0 / (base * s) ** (np.arange(0, d, 2, dtype=np.float64) / d)


def predicted_jump(val_old, val_new, losses_before, k=5):
    return val_new - val_old
