"""Lab 4, solution: one query tile of FlashAttention's online softmax, in NumPy."""
import numpy as np


def attention_tile(q, k, v, q_start: int, block_n: int, scale: float, causal: bool = True):
    """Attention output for one tile of queries, visiting the keys block_n at a time and never
    holding more than one (Br, block_n) block of scores.

    q: (Br, D), the queries at positions q_start .. q_start+Br-1; k, v: (T, D).
    Returns (o, m, l): o (Br, D) = softmax(scale * q @ k.T, causal mask) @ v; m (Br,) the
    running maximum of the scores; l (Br,) the normaliser sum(exp(s - m)), so that
    m + log(l) is each row's logsumexp (what the kernel stores for its backward)."""
    Br, D = q.shape
    T = k.shape[0]
    m = np.full(Br, -np.inf)
    l = np.zeros(Br)
    acc = np.zeros((Br, D))
    rows = q_start + np.arange(Br)                            # query positions
    stop = min(T, q_start + Br) if causal else T              # later keys are all masked
    for j in range(0, stop, block_n):
        kb, vb = k[j:j + block_n], v[j:j + block_n]           # (bn, D)
        s = (q @ kb.T) * scale                                # (Br, bn)
        if causal:
            cols = j + np.arange(kb.shape[0])
            s = np.where(cols[None, :] > rows[:, None], -np.inf, s)
        m_new = np.maximum(m, s.max(axis=1))                  # finite: key 0 is seen in the first block
        p = np.exp(s - m_new[:, None])                        # (Br, bn), masked entries 0
        alpha = np.exp(m - m_new)                             # rescales what was summed under the old max
        l = alpha * l + p.sum(axis=1)
        acc = alpha[:, None] * acc + p @ vb
        m = m_new
    return acc / l[:, None], m, l


def merge(a, b):
    """Combine two partial softmax states of the same queries over disjoint sets of keys.

    Each state is (m, l, acc): m (Br,) the max score over its keys, l (Br,) = sum exp(s - m),
    acc (Br, D) = exp(s - m) @ v (not yet divided by l). Returns the state over both key
    sets, as if computed in one pass (what FlashAttention's inner loop does block by block,
    and split-K / flash-decoding does across whole chunks)."""
    (ma, la, acca), (mb, lb, accb) = a, b
    m = np.maximum(ma, mb)
    fa, fb = np.exp(ma - m), np.exp(mb - m)
    return m, fa * la + fb * lb, fa[:, None] * acca + fb[:, None] * accb
