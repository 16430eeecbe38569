"""On a GPU a run fits by itself: auto micro-batch per stage, one line on out-of-memory, MFU.

CPU has no out-of-memory exception to catch, so these tests pretend: they switch the probe on
(`oom_possible`) and make a step above a token limit raise torch.OutOfMemoryError.
"""
import json

import numpy as np
import pytest
import torch

import model as M
import train
from harness import device as hw
from test_train import FAST, fail, records

# 1536 tokens per step: stage T=32 has batch 48, T=64 batch 24 -- several divisors to choose from.
AUTO = [f if f != "1024" else "1536" for f in FAST] + ["--max-tokens", "6144"]
LIMIT = 600     # tokens a "GPU" step may hold: T=32 -> 16 (512; 24 = 768 is too many), T=64 -> 8 (512)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Out of memory above LIMIT tokens per forward; returns the (T, micro-batch) sizes tried."""
    tried, real_step = [], hw.warm_step

    def step(*args):
        m, T = args[-2:]
        tried.append((T, m))
        if m * T > LIMIT:
            raise torch.OutOfMemoryError("fake: out of memory")
        real_step(*args)
    monkeypatch.setattr(hw, "oom_possible", lambda device: True)
    monkeypatch.setattr(hw, "warm_step", step)
    return tried


def test_auto_micro_batch_is_the_largest_divisor_that_fits(tmp_path, capsys, fake_gpu):
    out = tmp_path / "auto"
    assert train.main(AUTO + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "warm-up T=32: micro-batch 16 x 32" in printed and "warm-up T=64: micro-batch 8 x 64" in printed
    table = printed[printed.index("stage  seq_len  batch  micro"):].splitlines()
    assert table[1].split()[:4] == ["1", "32", "48", "16"] and table[2].split()[:4] == ["2", "64", "24", "8"]
    config = records(out, "config")[0]
    assert config["micro_batches"] == {"32": 16, "64": 8} and config["micro_batch_tokens"] == "auto"
    assert all(m * T <= LIMIT for T, m in fake_gpu[-1:])
    assert (32, 48) in fake_gpu and (64, 24) in fake_gpu        # it started from the whole batch


def test_found_micro_batches_train_like_one_batch(tmp_path, fake_gpu):
    """Gradient accumulation over the found micro-batches is the same step as the whole batch."""
    auto, whole = tmp_path / "auto", tmp_path / "whole"
    assert train.main(AUTO + ["--out", str(auto)]) == 0
    assert train.main(AUTO + ["--out", str(whole), "--micro-batch-tokens", "1536"]) == 0
    la, lb = [r["loss"] for r in records(auto, "train")], [r["loss"] for r in records(whole, "train")]
    assert len(la) == len(lb) == 4 and np.allclose(la, lb, rtol=1e-4), (la, lb)


def test_an_explicit_micro_batch_wins_over_auto(tmp_path, capsys, fake_gpu):
    assert train.main(AUTO + ["--out", str(tmp_path / "r"), "--micro-batch-tokens", "256"]) == 0
    assert "warm-up T=" not in capsys.readouterr().out and not fake_gpu   # nothing probed


def test_nothing_fits_is_one_line(tmp_path, capsys, fake_gpu):
    global LIMIT
    LIMIT, old = 16, LIMIT
    try:
        fail(capsys, AUTO + ["--out", str(tmp_path / "r")], "not even one sequence fits")
    finally:
        LIMIT = old
    assert not (tmp_path / "r").exists()          # an error before training leaves no folder


def test_out_of_memory_while_training_is_one_line_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    out, real_forward, calls = tmp_path / "oom", M.GPT.forward, []

    def forward(self, idx, targets=None):
        if targets is not None and self.training:
            calls.append(1)
            if len(calls) == 6:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 24.56 GiB")
        return real_forward(self, idx, targets)
    monkeypatch.setattr(M.GPT, "forward", forward)
    assert train.main(FAST + ["--out", str(out), "--ckpt-interval", "0"]) == train.EXIT_OOM
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of GPU memory at step 6" in err[0] and "--micro-batch-tokens" in err[0], err
    assert "T=32" in err[0] and "intact" in err[0]
    assert torch.load(out / "ckpt.pt", weights_only=True)["state"]["step"] == 5


@pytest.mark.parametrize("preset", ["pythia-70m", "pythia-160m", "tiny"])
def test_flops_per_token_counts_every_weight_matrix_and_causal_attention(preset):
    cfg = M.make_config(preset)
    model = M.GPT(cfg)
    # Counted from the real tensors: every matrix a token is multiplied by (the head included),
    # not the input embedding (a lookup), not biases or norms (no matmul).
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and not name.startswith("embed_in"))
    for T in (128, 1024, 16384):
        attention = 6 * cfg.n_layer * cfg.n_embd * T      # 12·L·d·T for every key, half of it causal
        assert M.flops_per_token(cfg, T) == 6 * n + attention


def test_mfu_only_where_the_peak_is_known(tmp_path):
    assert hw.peak_flops("cpu") is None
    out = tmp_path / "cpu"
    assert train.main(FAST + ["--max-tokens", "2048", "--out", str(out)]) == 0
    assert all("mfu" not in r for r in records(out, "train"))


def test_summary_splits_the_wall_time(tmp_path, capsys):
    assert train.main(FAST + ["--max-tokens", "2048", "--out", str(tmp_path / "w")]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("wall time")]
    assert len(line) == 1
    for part in ("training", "warm-up", "evaluation", "checkpointing", "other"):
        assert part in line[0]
    assert json.loads((tmp_path / "w" / "metrics.jsonl").read_text().splitlines()[0])["kind"] == "config"


def test_out_of_memory_at_the_first_step_leaves_the_folder_reusable(tmp_path, capsys, monkeypatch):
    """The error says to lower --micro-batch-tokens: the same --out must then take the new run."""
    out, real_forward = tmp_path / "given", M.GPT.forward
    out.mkdir()                                    # an existing (empty) folder: not ours to delete

    def forward(self, idx, targets=None):
        if targets is not None and self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 24.56 GiB")
        return real_forward(self, idx, targets)
    monkeypatch.setattr(M.GPT, "forward", forward)
    assert train.main(FAST + ["--out", str(out)]) == train.EXIT_OOM
    assert "no checkpoint was written yet" in capsys.readouterr().err
    assert out.is_dir() and list(out.iterdir()) == []
    monkeypatch.setattr(M.GPT, "forward", real_forward)
    assert train.main(FAST + ["--out", str(out), "--max-tokens", "2048"]) == 0
