"""Lab 4, wrong on purpose: the accumulator is not rescaled when the running max grows;
merge adds the normalisers without rescaling them."""
import numpy as np

from course.solutions.lab4_online_softmax import merge as right_merge

MUTATED = ["attention_tile", "merge"]


def attention_tile(q, k, v, q_start, block_n, scale, causal=True):
    Br, D = q.shape
    m, l, acc = np.full(Br, -np.inf), np.zeros(Br), np.zeros((Br, D))
    rows = q_start + np.arange(Br)
    for j in range(0, min(k.shape[0], q_start + Br) if causal else k.shape[0], block_n):
        kb, vb = k[j:j + block_n], v[j:j + block_n]
        s = (q @ kb.T) * scale
        if causal:
            s = np.where((j + np.arange(kb.shape[0]))[None, :] > rows[:, None], -np.inf, s)
        m_new = np.maximum(m, s.max(axis=1))
        p = np.exp(s - m_new[:, None])
        alpha = np.exp(m - m_new)
        l = alpha * l + p.sum(axis=1)
        acc = acc + p @ vb                     # forgot alpha
        m = m_new
    return acc / l[:, None], m, l


def merge(a, b):
    m, _, acc = right_merge(a, b)
    return m, a[1] + b[1], acc
