# The Triton interpreter must be switched on before any @triton.jit decorator runs,
# i.e. before the project's modules are imported; CPU machines have no other way to run kernels.
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
