"""bench.py runs end to end on CPU (its numbers are not checked: benchmarks are not tests)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "bench.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_lengths_prints_a_row_per_length(tmp_path):
    out = tmp_path / "t.md"
    r = run("lengths", "--lengths", "32,64", "--tokens", "256", "--iters", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["32", "64"]
    assert rows[-1].split("|")[4].strip() == "100%"            # ratios are against the longest T


def test_lengths_rejects_tokens_not_divisible():
    r = run("lengths", "--lengths", "32,48", "--tokens", "256")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == \
        ["error: --tokens 256 is not a multiple of length(s) [48]"]


def test_attention_needs_a_gpu():
    r = run("attention")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "CUDA" in r.stderr
