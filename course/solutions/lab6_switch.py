"""Lab 6, solution: the loss jump at a stage switch, and NTK-aware RoPE scaling."""
import numpy as np


def loss_jumps(seq_lens, losses, k: int = 5) -> list:
    """One number per stage switch in a per-step record (step i trained at seq_lens[i] with loss
    losses[i]): mean of the first k losses of the new stage minus the mean of the last k of
    the previous stage. None where either side has fewer than k steps."""
    starts = [i for i in range(1, len(seq_lens)) if seq_lens[i] != seq_lens[i - 1]]
    bounds = [0] + starts + [len(seq_lens)]
    jumps = []
    for prev, start, end in zip(bounds, bounds[1:], bounds[2:]):
        before, after = losses[prev:start][-k:], losses[start:end][:k]
        if len(before) < k or len(after) < k:
            jumps.append(None)
        else:
            jumps.append(sum(after) / k - sum(before) / k)
    return jumps


def ntk_frequencies(inv_freq, base: float, s: float):
    """RoPE frequencies (rot_dim/2,) after NTK-aware scaling by s: the base becomes
    base * s^(d/(d-2)), d = rot_dim = 2 * len(inv_freq), and the frequencies are rebuilt
    from it: base'^(-2j/d). (YaRN paper, Eq. 16.)"""
    d = 2 * len(inv_freq)
    new_base = base * s ** (d / (d - 2))
    return 1.0 / new_base ** (np.arange(0, d, 2, dtype=np.float64) / d)


def predicted_jump(val_old: float, val_new: float, losses_before, k: int = 5) -> float:
    """Predict, before the switch, the loss jump loss_jumps will report for it.

    val_old, val_new: the model's validation loss at the old and the new length, measured
    at the moment of the switch (train.py evaluates at every stage change); losses_before:
    the training losses of the old stage, one per step (at least 2). Assume the new stage's
    first steps cost what the model's val-vs-context curve says, and that the loss goes on
    falling as it fell during the last steps before the switch."""
    recent = np.asarray(losses_before[-2 * k:], dtype=np.float64)
    slope = np.polyfit(np.arange(len(recent)), recent, 1)[0]     # loss per step, < 0 while it falls
    # The k steps after the switch sit on average k steps later than the k before it.
    return (val_new - val_old) + k * slope
