"""Lab 6, exercise: the loss jump at a stage switch, and NTK-aware RoPE scaling.

Replace each `raise NotImplementedError` with your code (lab6-*.md says what to read first),
then check it: pytest course/ -k lab6
"""

import numpy as np


def loss_jumps(seq_lens, losses, k: int = 5) -> list:
    """One number per stage switch in a per-step record (step i trained at seq_lens[i] with loss
    losses[i]): mean of the first k losses of the new stage minus the mean of the last k of
    the previous stage. None where either side has fewer than k steps."""
    raise NotImplementedError("lab 6, exercise 1: find the switches, average k steps on each side")


def ntk_frequencies(inv_freq, base: float, s: float):
    """RoPE frequencies (rot_dim/2,) after NTK-aware scaling by s: the base becomes
    base * s^(d/(d-2)), d = rot_dim = 2 * len(inv_freq), and the frequencies are rebuilt
    from it: base'^(-2j/d). (YaRN paper, Eq. 16.)"""
    raise NotImplementedError("lab 6, exercise 2: a new base, then the frequencies from it")


def predicted_jump(val_old: float, val_new: float, losses_before, k: int = 5) -> float:
    """Predict, before the switch, the loss jump loss_jumps will report for it.

    val_old, val_new: the model's validation loss at the old and the new length, measured
    at the moment of the switch (train.py evaluates at every stage change); losses_before:
    the training losses of the old stage, one per step (at least 2). Assume the new stage's
    first steps cost what the model's val-vs-context curve says, and that the loss goes on
    falling as it fell during the last steps before the switch."""
    raise NotImplementedError("lab 6, exercise 3: the context penalty, plus what k steps of the falling trend add")
