"""Lab 1, solution: the training FLOPs of one token, by hand."""


def flops_per_token(n_layer: int, n_embd: int, vocab_size: int, T: int) -> int:
    """Training FLOPs (forward + backward) per token of the course's GPT at sequence length T.

    Weights: every parameter a token passes through costs 2 FLOPs forward and 4 backward,
    so 6 per parameter. Per layer: qkv (3·d·d), the output projection (d·d), the MLP
    (2·4·d·d) = 12·d·d; then the head, d·vocab. Biases, LayerNorms and the input embedding
    (a lookup) are left out. Attention: each token's query meets on average T/2 earlier
    keys (causal), q·k and p·v each 2·d FLOPs per pair forward, x3 with backward:
    6·L·d·T per token."""
    L, d = n_layer, n_embd
    n = L * 12 * d * d + d * vocab_size
    return 6 * n + 6 * L * d * T


def cost_ratio(n_layer: int, n_embd: int, vocab_size: int, T_short: int, T_long: int) -> float:
    """How many times the FLOPs of a token at T_long those at T_short are (> 1 when T_long > T_short)."""
    return (flops_per_token(n_layer, n_embd, vocab_size, T_long)
            / flops_per_token(n_layer, n_embd, vocab_size, T_short))


def attention_crossover(n_layer: int, n_embd: int, vocab_size: int, part: str = "mlp") -> float:
    """The sequence length T at which causal attention's FLOPs per token (the part of
    flops_per_token that grows with T) equal those of `part`: "mlp" (the two MLP matrices of
    every layer) or "weights" (every weight a token passes through, the head included).
    Work it out on paper first: it is one division, and for "mlp" one of the arguments
    cancels out entirely."""
    L, d = n_layer, n_embd
    attention_per_T = 6 * L * d                       # FLOPs per token per unit of T
    if part == "mlp":
        return 6 * L * 8 * d * d / attention_per_T    # = 8·d: neither L nor the vocabulary matters
    if part == "weights":
        return 6 * (L * 12 * d * d + d * vocab_size) / attention_per_T
    raise ValueError(f"part {part!r}: expected 'mlp' or 'weights'")
