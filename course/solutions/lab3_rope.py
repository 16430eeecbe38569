"""Lab 3, solution: the rotary (RoPE) tables and the rotation, in NumPy."""
import numpy as np


def rope_tables(T: int, rot_dim: int, base: float = 10000.0):
    """cos and sin tables, each (T, rot_dim), for positions 0..T-1, in the GPT-NeoX
    (rotate-half) layout: frequency j = base^(-2j/rot_dim) for j < rot_dim/2, and the
    angle table is [angles, angles] side by side, angles[t, j] = t * frequency j."""
    inv_freq = 1.0 / base ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim)  # (rot_dim/2,)
    angles = np.outer(np.arange(T, dtype=np.float64), inv_freq)                       # (T, rot_dim/2)
    emb = np.concatenate([angles, angles], axis=-1)                                   # (T, rot_dim)
    return np.cos(emb), np.sin(emb)


def apply_rotary(x, cos, sin):
    """Rotate the first rot_dim = cos.shape[-1] dims of x (T, head_dim) by the tables (T, rot_dim),
    rotate-half style: with x1, x2 the two halves of those dims,
        out = x * cos + [-x2, x1] * sin;
    the remaining head_dim - rot_dim dims pass through unchanged."""
    rot_dim = cos.shape[-1]
    xr, xp = x[..., :rot_dim], x[..., rot_dim:]
    x1, x2 = xr[..., :rot_dim // 2], xr[..., rot_dim // 2:]
    rotated = np.concatenate([-x2, x1], axis=-1)
    return np.concatenate([xr * cos + rotated * sin, xp], axis=-1)


def new_angle_fraction(T_train: int, T_eval: int, rot_dim: int, base: float = 10000.0):
    """For each of the rot_dim/2 RoPE frequencies, the fraction of the positions
    T_train .. T_eval-1 whose angle, taken on the circle (mod 2·pi), lies outside the arc of
    angles the model saw in training: [0, (T_train - 1)·frequency], the whole circle once that
    arc is 2·pi or longer. Returns an array (rot_dim/2,) of fractions in [0, 1]."""
    inv_freq = 1.0 / base ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim)   # (rot_dim/2,)
    seen = (T_train - 1) * inv_freq                                                    # the arc's end
    t = np.arange(T_train, T_eval, dtype=np.float64)
    on_circle = np.mod(np.outer(t, inv_freq), 2 * np.pi)                               # (n, rot_dim/2)
    new = (on_circle > seen) & (seen < 2 * np.pi)      # a fast frequency has shown every angle
    return new.mean(axis=0)
