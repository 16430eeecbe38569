# The Triton interpreter must be switched on before any @triton.jit decorator runs,
# i.e. before the project's modules are imported; CPU machines have no other way to run kernels.
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
# One torch thread per test process, inherited by every train.py a test starts (whose --threads
# auto keeps it): the suite's tensors are small, and on a busy machine -- CI, a laptop -- two
# threads fighting another process made the suite 8x slower (results/threads.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
