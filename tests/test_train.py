"""The training loop end to end on CPU: learning, exact resume, interruption, and user errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from harness.config import DEFAULT_BUDGET

ROOT = Path(__file__).resolve().parent.parent
# A small, fast run: 2 stages, 40 steps of 1024 tokens, every step logged.
FAST = ["--preset", "tiny", "--schedule", "32,64", "--tokens-per-step", "1024", "--max-tokens", "40960",
        "--eval-tokens", "2048", "--eval-lengths", "32,128", "--eval-interval", "1e9", "--log-interval", "0",
        "--sample-tokens", "0", "--seed", "7"]


def records(out, kind):
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def fail(capsys, argv, match):
    """A user error: exit code 2 and exactly one line on stderr naming the problem."""
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], err


def test_short_run_learns_and_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(FAST + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stage  seq_len  batch" in printed and "final val loss" in printed
    cfg = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert cfg["kind"] == "config" and cfg["schedule"] == "32,64"
    evals = records(out, "eval")
    assert evals[0]["reason"] == "start" and evals[-1]["reason"] == "end"
    start, end = evals[0]["loss"]["32"], evals[-1]["loss"]["32"]
    assert start > 5.0 and end < start - 1.5, (start, end)        # ln(256) = 5.55 -> well below
    assert set(evals[-1]["loss"]) == {"32", "128"}                # eval beyond the trained length
    trains = records(out, "train")
    assert [r["seq_len"] for r in trains] == [32] * 20 + [64] * 20
    assert {r["batch_size"] * r["seq_len"] for r in trains} == {1024}
    assert trains[-1]["tokens"] == 40960
    assert [r["seq_len"] for r in records(out, "stage")] == [32, 64]
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["state"]["tokens"] == 40960 and ckpt["state"]["step"] == 40


def test_micro_batches_give_the_same_step(tmp_path):
    """Gradient accumulation over 4 micro-batches is the same optimizer step as one batch."""
    a, b = tmp_path / "a", tmp_path / "b"
    short = ["--max-tokens", "3072"]
    assert train.main(FAST + short + ["--out", str(a)]) == 0
    assert train.main(FAST + short + ["--out", str(b), "--micro-batch-tokens", "256"]) == 0
    la = [r["loss"] for r in records(a, "train")]
    lb = [r["loss"] for r in records(b, "train")]
    assert np.allclose(la, lb, rtol=1e-4), (la, lb)


def test_stopped_mid_stage_and_resumed_matches_an_uninterrupted_run(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train.main(FAST + ["--out", str(whole)]) == 0
    assert train.main(FAST + ["--out", str(split), "--stop-at-step", "13"]) == 0   # stage 1 is steps 1-20
    assert "resume with: python train.py --resume" in capsys.readouterr().out
    stopped = torch.load(split / "ckpt.pt", weights_only=True)["state"]
    assert stopped["step"] == 13 and stopped["tokens"] == 13 * 1024
    assert train.main(["--resume", str(split)]) == 0
    first_after = records(split, "train")[13]
    assert first_after["step"] == 14 and first_after["seq_len"] == 32 and first_after["tokens"] == 14 * 1024
    assert first_after["elapsed_s"] >= stopped["elapsed_s"]           # the clock continues, not restarts
    la = [r["loss"] for r in records(whole, "train")]
    lb = [r["loss"] for r in records(split, "train")]
    assert len(la) == len(lb) == 40
    assert np.allclose(la, lb, rtol=1e-5, atol=1e-6), [(i, x, y) for i, (x, y) in enumerate(zip(la, lb)) if x != y]


def test_wallclock_resume_restores_elapsed_time(tmp_path):
    out = tmp_path / "r"
    args = FAST[:6] + ["--budget", "1h"] + FAST[8:] + ["--out", str(out)]
    assert train.main(args + ["--stop-at-step", "3"]) == 0
    t1 = torch.load(out / "ckpt.pt", weights_only=True)["state"]["elapsed_s"]
    assert train.main(["--resume", str(out), "--stop-at-step", "6"]) == 0
    state = torch.load(out / "ckpt.pt", weights_only=True)["state"]
    assert state["step"] == 6 and state["elapsed_s"] > t1
    assert records(out, "train")[3]["elapsed_s"] >= round(t1, 3) - 1e-3   # step 4; records keep 3 decimals
    # the resume continued stage 1: it began once, so it is recorded once (plot.py marks each record)
    assert [r["stage"] for r in records(out, "stage")] == [1]


@pytest.mark.parametrize("flags,match", [
    (["--schedule", ""], "--schedule"),
    (["--schedule", "abc"], "whole numbers"),
    (["--schedule", "0,128"], "positive"),
    (["--schedule", "256,128"], "strictly increasing"),
    (["--ratios", "1,2,3"], "3 ratios for 2"),
    (["--ratios", "1,0"], "positive"),
    (["--budget", "5 parsecs"], "--budget"),
    (["--schedule", "32,96"], "does not divide"),
    (["--data", "/nonexistent/corpus.txt"], "--data"),
    (["--eval-lengths", "a,b"], "--eval-lengths"),
    (["--attn", "triton", "--device", "cpu"], "needs a CUDA device"),
])
def test_bad_flags_fail_in_one_line(tmp_path, capsys, monkeypatch, flags, match):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    fail(capsys, FAST + ["--out", str(tmp_path / "x")] + flags, match)
    assert not (tmp_path / "x" / "ckpt.pt").exists()


def corrupt_data(tmp_path, how):
    import prepare
    src = tmp_path / "c.txt"
    src.write_text("to be or not to be, that is the question " * 300)
    folder = prepare.prepare(src, tmp_path / "prep", "byte")
    path = folder / "train.bin"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-3])
    elif how == "out-of-range":
        ids = np.fromfile(path, dtype=np.uint16)
        ids[0] = 999
        ids.tofile(path)
    elif how == "missing":
        path.unlink()
    return folder


@pytest.mark.parametrize("how,match", [("truncated", "not a whole number"), ("out-of-range", "out of range"),
                                       ("missing", "missing")])
def test_bad_data_fails_in_one_line(tmp_path, capsys, how, match):
    folder = corrupt_data(tmp_path, how)
    fail(capsys, FAST + ["--data", str(folder), "--out", str(tmp_path / "x")], match)


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "done"
    assert train.main(FAST + ["--max-tokens", "2048", "--out", str(out)]) == 0
    return out


def test_resume_refusals_leave_the_checkpoint_intact(tmp_path, capsys, finished):
    before = (finished / "ckpt.pt").read_bytes()
    fail(capsys, ["--resume", str(tmp_path / "empty")], "no checkpoint")
    fail(capsys, ["--resume", str(finished), "--preset", "pythia-70m"], "--preset pythia-70m differs")
    fail(capsys, ["--resume", str(finished), "--schedule", "32,64,128"], "--schedule 32,64,128 differs")
    fail(capsys, ["--resume", str(finished), "--tokenizer", "gpt2"], "--tokenizer gpt2 differs")
    fail(capsys, FAST + ["--out", str(finished)], "already holds a run")
    # a checkpoint whose model is another shape (written by another version, say)
    ckpt = torch.load(finished / "ckpt.pt", weights_only=True)
    ckpt["model_config"]["n_layer"] = 6
    other = tmp_path / "other"
    other.mkdir()
    torch.save(ckpt, other / "ckpt.pt")
    fail(capsys, ["--resume", str(other)], "differs in n_layer")
    assert (finished / "ckpt.pt").read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint", "truncate"])
def test_corrupt_checkpoint(tmp_path, capsys, finished, content):
    path = finished / "ckpt.pt"
    content = path.read_bytes()[:5000] if content == "truncate" else content
    path.write_bytes(content)
    fail(capsys, ["--resume", str(finished)], "not a readable checkpoint")
    assert path.read_bytes() == content


def test_longer_budget_extends_a_finished_run(tmp_path, finished):
    assert train.main(["--resume", str(finished), "--max-tokens", "4096"]) == 0
    assert torch.load(finished / "ckpt.pt", weights_only=True)["state"]["tokens"] == 4096


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "disk"
    assert train.main(FAST + ["--out", str(out), "--stop-at-step", "2"]) == 0
    before = (out / "ckpt.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    fail(capsys, ["--resume", str(out), "--stop-at-step", "4"], "No space left on device")
    assert (out / "ckpt.pt").read_bytes() == before and not (out / "ckpt.pt.tmp").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    import model
    out = tmp_path / "nan"
    real_forward, calls = model.GPT.forward, []

    def forward(self, idx, targets=None):
        logits, loss = real_forward(self, idx, targets)
        if targets is not None and self.training:
            calls.append(1)
            if len(calls) == 6:
                loss = loss * float("nan")
        return logits, loss
    monkeypatch.setattr(model.GPT, "forward", forward)
    code = train.main(FAST + ["--out", str(out), "--ckpt-interval", "0"])
    assert code == 3
    assert "loss is nan at step 6" in capsys.readouterr().err
    state = torch.load(out / "ckpt.pt", weights_only=True)["state"]
    assert state["step"] == 5


@pytest.mark.parametrize("flags,line", [
    (["--schedule", "256,128"], "error: --schedule '256,128': lengths must be strictly increasing"),
    (["--preset", "huge"], "error: argument --preset: invalid choice: 'huge'"),
    (["--max-tokens", "lots"], "error: argument --max-tokens: invalid int value: 'lots'"),
])
def test_cli_error_is_one_line_without_traceback(flags, line):
    r = subprocess.run([sys.executable, "train.py", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), err


def test_sigint_checkpoints_and_exits_cleanly(tmp_path):
    out = tmp_path / "sig"
    args = FAST[:6] + ["--budget", "1h"] + FAST[8:] + ["--out", str(out)]
    p = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists() or \
            len(records(out, "train")) < 3:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert "stopped (signal SIGINT)" in stdout and f"--resume {out}" in stdout
    assert torch.load(out / "ckpt.pt", weights_only=True)["state"]["step"] >= 3


def test_defaults_chosen_for_this_machine_are_logged_not_saved(tmp_path):
    """attn and budget defaults depend on the device and on --max-tokens: the checkpoint keeps
    what was asked (None), so a resume elsewhere or with --max-tokens chooses again."""
    out = tmp_path / "d"
    args = [f for f in FAST if f != "--max-tokens" and f != "40960"]     # no budget flag at all
    assert train.main(args + ["--out", str(out), "--stop-at-step", "2"]) == 0
    saved = torch.load(out / "ckpt.pt", weights_only=True)["config"]
    assert saved["attn"] is None and saved["budget"] is None
    logged = records(out, "config")[0]
    assert logged["attn"] == "sdpa" and logged["budget"] == DEFAULT_BUDGET
    assert train.main(["--resume", str(out), "--max-tokens", "3072"]) == 0   # now a token budget
    assert torch.load(out / "ckpt.pt", weights_only=True)["state"]["step"] == 3

