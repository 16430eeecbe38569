"""bench.py runs end to end on CPU (its numbers are not checked: benchmarks are not tests)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("args, line", [
    (["--lengths", "abc"], "error: argument --lengths: 'abc' is not an integer (see --help)"),
    (["--lengths", "0,128"], "error: argument --lengths: 0 must be >= 1 (see --help)"),
    (["--tokens", "-5"], "error: argument --tokens: -5 must be >= 1 (see --help)"),
    (["--preset", "huge"], "error: argument --preset: invalid choice: 'huge'"),
    (["--out", "/no/such/folder/t.md"], "error: --out /no/such/folder/t.md: folder /no/such/folder does not exist"),
])
def test_lengths_bad_arguments_are_one_line_before_anything_runs(args, line):
    r = run("lengths", *args)
    assert r.returncode == 2 and r.stdout == "", r.stdout      # nothing ran: not even the header
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith(line), err


def test_lengths_shows_the_reason_of_a_failed_child():
    """--attn triton on a CPU without the interpreter: the child's own error, in one line."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "bench.py", "lengths", "--lengths", "32", "--tokens", "256", "--iters", "1",
                        "--attn", "triton", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: lengths: T=32 failed: ValueError: flash_attention: "
                                               "tensors are on cpu, but Triton kernels need a CUDA GPU"), err
