"""Lab 3, wrong on purpose: the GPT-J (interleaved) layout instead of NeoX's rotate-half;
the rotation's sign flipped (a rotation by -angle); angles compared unwrapped (no mod 2·pi)."""
import numpy as np

MUTATED = ["rope_tables", "apply_rotary", "new_angle_fraction"]


def rope_tables(T, rot_dim, base=10000.0):
    inv_freq = 1.0 / base ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim)
    emb = np.repeat(np.outer(np.arange(T, dtype=np.float64), inv_freq), 2, axis=-1)   # f0 f0 f1 f1 ...
    return np.cos(emb), np.sin(emb)


def apply_rotary(x, cos, sin):
    rot_dim = cos.shape[-1]
    xr, xp = x[..., :rot_dim], x[..., rot_dim:]
    x1, x2 = xr[..., :rot_dim // 2], xr[..., rot_dim // 2:]
    return np.concatenate([xr * cos + np.concatenate([x2, -x1], axis=-1) * sin, xp], axis=-1)


def new_angle_fraction(T_train, T_eval, rot_dim, base=10000.0):
    inv_freq = 1.0 / base ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim)
    angles = np.outer(np.arange(T_train, T_eval, dtype=np.float64), inv_freq)
    return (angles > (T_train - 1) * inv_freq).mean(axis=0)       # forgot the circle
