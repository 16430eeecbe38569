"""Lab 3, exercise: the rotary (RoPE) tables and the rotation, in NumPy.

Replace each `raise NotImplementedError` with your code (lab3-*.md says what to read first),
then check it: pytest course/ -k lab3
"""

import numpy as np


def rope_tables(T: int, rot_dim: int, base: float = 10000.0):
    """cos and sin tables, each (T, rot_dim), for positions 0..T-1, in the GPT-NeoX
    (rotate-half) layout: frequency j = base^(-2j/rot_dim) for j < rot_dim/2, and the
    angle table is [angles, angles] side by side, angles[t, j] = t * frequency j."""
    raise NotImplementedError("lab 3, exercise 1: inverse frequencies, the angle table, then cos and sin")


def apply_rotary(x, cos, sin):
    """Rotate the first rot_dim = cos.shape[-1] dims of x (T, head_dim) by the tables (T, rot_dim),
    rotate-half style: with x1, x2 the two halves of those dims,
        out = x * cos + [-x2, x1] * sin;
    the remaining head_dim - rot_dim dims pass through unchanged."""
    raise NotImplementedError("lab 3, exercise 2: x * cos + rotate_half(x) * sin on the first rot_dim dims")


def new_angle_fraction(T_train: int, T_eval: int, rot_dim: int, base: float = 10000.0):
    """For each of the rot_dim/2 RoPE frequencies, the fraction of the positions
    T_train .. T_eval-1 whose angle, taken on the circle (mod 2·pi), lies outside the arc of
    angles the model saw in training: [0, (T_train - 1)·frequency], the whole circle once that
    arc is 2·pi or longer. Returns an array (rot_dim/2,) of fractions in [0, 1]."""
    raise NotImplementedError("lab 3, exercise 3: the largest trained angle per frequency, then where each new position lands on the circle")
