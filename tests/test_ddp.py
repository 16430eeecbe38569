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
