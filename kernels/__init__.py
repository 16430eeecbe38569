"""Triton kernels for growlength.

`kernels.attention` holds the fused causal attention (forward + backward) and the
plain-torch reference it is tested against. Nothing is imported here, so that
`import kernels` does not pull in Triton for code paths that never use it.
"""
