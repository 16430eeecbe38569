"""Triton kernels for growlength.

`kernels.attention` holds the fused causal attention (forward + backward, registered as a
torch custom op); `kernels.reference` holds the plain-torch attention it is tested against,
which the model's `naive` backend also uses. Neither Triton nor `kernels.attention` is
imported here, so that `import kernels` (and `kernels.reference`) work without Triton.
"""
import os


def interpreting() -> bool:
    """True when TRITON_INTERPRET asks for Triton's CPU interpreter (1, true, on or yes,
    any case): kernels then run, slowly, on CPU tensors. Everyone reads the variable
    through here so that train.py, bench.py, the tests and the kernels agree.

    Triton itself reads the variable when a @triton.jit decorator runs, i.e. when
    kernels.attention is first imported: set it before that, changing it later does nothing.
    """
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")
