"""Lab 1, exercise: the training FLOPs of one token, by hand.

Replace each `raise NotImplementedError` with your code (lab1-*.md says what to read first),
then check it: pytest course/ -k lab1
"""


def flops_per_token(n_layer: int, n_embd: int, vocab_size: int, T: int) -> int:
    """Training FLOPs (forward + backward) per token of the course's GPT at sequence length T.

    Weights: every parameter a token passes through costs 2 FLOPs forward and 4 backward,
    so 6 per parameter. Per layer: qkv (3·d·d), the output projection (d·d), the MLP
    (2·4·d·d) = 12·d·d; then the head, d·vocab. Biases, LayerNorms and the input embedding
    (a lookup) are left out. Attention: each token's query meets on average T/2 earlier
    keys (causal), q·k and p·v each 2·d FLOPs per pair forward, x3 with backward:
    6·L·d·T per token."""
    raise NotImplementedError("lab 1, exercise 1: count 6 FLOPs per weight a token passes through, plus causal attention")


def cost_ratio(n_layer: int, n_embd: int, vocab_size: int, T_short: int, T_long: int) -> float:
    """How many times the FLOPs of a token at T_long those at T_short are (> 1 when T_long > T_short)."""
    raise NotImplementedError("lab 1, exercise 2: divide two flops_per_token values")


def attention_crossover(n_layer: int, n_embd: int, vocab_size: int, part: str = "mlp") -> float:
    """The sequence length T at which causal attention's FLOPs per token (the part of
    flops_per_token that grows with T) equal those of `part`: "mlp" (the two MLP matrices of
    every layer) or "weights" (every weight a token passes through, the head included).
    Work it out on paper first: it is one division, and for "mlp" one of the arguments
    cancels out entirely."""
    raise NotImplementedError("lab 1, exercise 3: set the attention term equal to the part's term, solve for T")
