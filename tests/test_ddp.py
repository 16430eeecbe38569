"""torchrun with 2 CPU processes (gloo): same stage on every rank, identical weights at the end."""
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def test_two_ranks_train_through_a_stage_change(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    args = ["--preset", "tiny", "--schedule", "32,64", "--tokens-per-step", "1024", "--max-tokens", "16384",
            "--eval-tokens", "1024", "--eval-lengths", "64", "--log-interval", "0", "--sample-tokens", "0",
            "--out", str(out)]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29533", "tests/ddp_worker.py", str(out), "--", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("final val loss") == 1                       # only rank 0 reports
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)                 # bit-identical replicas
    saved = torch.load(out / "ckpt.pt", weights_only=True)
    assert all(torch.equal(w0[k], saved["model"][k]) for k in w0)     # unwrapped model, no "module." prefix
    assert len(saved["state"]["data_rng"]) == 2                              # each rank's data stream is kept
    assert not torch.equal(saved["state"]["data_rng"][0], saved["state"]["data_rng"][1])
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["seq_len"] for r in recs if r["kind"] == "train"] == [32] * 8 + [64] * 8
    assert [r["seq_len"] for r in recs if r["kind"] == "stage"] == [32, 64]
    assert recs[0]["world_size"] == 2


def test_a_dead_rank_is_one_line_from_rank_0_not_a_traceback(tmp_path):
    """kill -9 of rank 1 mid-run (the OOM killer, say): rank 0's broken collective is one line."""
    import os
    import signal
    import time
    out = tmp_path / "ddp"
    args = ["--preset", "tiny", "--schedule", "32,64", "--tokens-per-step", "1024", "--max-tokens", "100000000",
            "--eval-tokens", "1024", "--eval-lengths", "64", "--sample-tokens", "0", "--out", str(out)]
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29541", "train.py", *args],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 200
        while time.time() < deadline and '"kind": "train"' not in _read(out / "metrics.jsonl"):
            time.sleep(0.5)        # training has started: both ranks are in the loop's collectives
        killed = False
        for pid in os.listdir("/proc"):
            try:
                env = (Path("/proc") / pid / "environ").read_bytes().split(b"\0")
                cmd = (Path("/proc") / pid / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if pid.isdigit() and b"RANK=1" in env and str(out).encode() in cmd and b"train.py" in cmd:
                os.kill(int(pid), signal.SIGKILL)
                killed = True
        assert killed
        _, err = p.communicate(timeout=200)
    finally:
        p.kill()
    assert p.returncode != 0
    assert err.count("error: rank 0: lost contact with another rank") == 1, err[-3000:]
    assert "[rank0]:" not in err, err[-3000:]          # no traceback from rank 0 (torchrun's own summary remains)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
