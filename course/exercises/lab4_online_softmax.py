"""Lab 4, exercise: one query tile of FlashAttention's online softmax, in NumPy.

Replace each `raise NotImplementedError` with your code (lab4-*.md says what to read first),
then check it: pytest course/ -k lab4
"""

import numpy as np


def attention_tile(q, k, v, q_start: int, block_n: int, scale: float, causal: bool = True):
    """Attention output for one tile of queries, visiting the keys block_n at a time and never
    holding more than one (Br, block_n) block of scores.

    q: (Br, D), the queries at positions q_start .. q_start+Br-1; k, v: (T, D).
    Returns (o, m, l): o (Br, D) = softmax(scale * q @ k.T, causal mask) @ v; m (Br,) the
    running maximum of the scores; l (Br,) the normaliser sum(exp(s - m)), so that
    m + log(l) is each row's logsumexp (what the kernel stores for its backward)."""
    raise NotImplementedError("lab 4, exercise 1: loop over key blocks keeping m, l and acc")


def merge(a, b):
    """Combine two partial softmax states of the same queries over disjoint sets of keys.

    Each state is (m, l, acc): m (Br,) the max score over its keys, l (Br,) = sum exp(s - m),
    acc (Br, D) = exp(s - m) @ v (not yet divided by l). Returns the state over both key
    sets, as if computed in one pass (what FlashAttention's inner loop does block by block,
    and split-K / flash-decoding does across whole chunks)."""
    raise NotImplementedError("lab 4, exercise 2: rescale both states to the larger max, then add")
