"""The plain-torch attention every fast path is checked against. No Triton here.

    o = softmax(sm_scale * q @ k^T [+ causal mask]) @ v          q, k, v, o: (B, H, T, D)

With doc_starts (B, T), a document mask too: query t sees keys doc_starts[b, t] .. t only.

It materialises the (T, T) score matrix, so memory grows as T^2: meant for reading,
for testing (in float64) and for the model's `naive` backend, not for long contexts.
"""
import math

import torch


def doc_mask(doc_starts):
    """(B, T) document starts -> (B, 1, T, T) bool, True where query i may attend to key j:
    doc_starts[b, i] <= j <= i (causal, and inside i's document). data.doc_starts makes them."""
    j = torch.arange(doc_starts.shape[-1], device=doc_starts.device)
    return ((j[None, None, :] <= j[None, :, None]) & (j[None, None, :] >= doc_starts[:, :, None]))[:, None]


def attention_ref(q, k, v, causal=True, sm_scale=None, compute_dtype=None, doc_starts=None):
    """Attention spelled out, differentiable by autograd; any device, strides, T and D.

    Computes in fp32 (float64 for float64 inputs), or in `compute_dtype` if given (tests
    use the input's own low precision to measure what rounding alone costs), and returns
    the input dtype. sm_scale defaults to 1/sqrt(D).
    """
    if compute_dtype is None:
        compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    T = q.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    qc, kc, vc = (t.to(compute_dtype) for t in (q, k, v))
    att = (qc @ kc.transpose(-2, -1)) * scale                     # (B, H, T, T)
    if causal:
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        att = att.masked_fill(future, float("-inf"))
    if doc_starts is not None:    # every row keeps its diagonal, so none is all -inf
        att = att.masked_fill(~doc_mask(doc_starts), float("-inf"))
    att = torch.softmax(att, dim=-1)
    return (att @ vc).to(q.dtype)                                 # (B, H, T, D)
