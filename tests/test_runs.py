"""Nothing lost, nothing silent: run-folder ownership, metrics that match the checkpoint, a full
disk, and flags that would silently mean something else. Through the real command line where
the behaviour is about what the user sees."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from harness.checkpoint import CKPT_FORMAT
from harness.runfolder import RunFolder
from test_prepare import slowed
from test_train import FAST, ROOT, fail, records

SLOW = FAST[:6] + ["--budget", "1h"] + FAST[8:]      # runs until stopped


def start(args):
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_steps(out: Path, n: int, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (out / "metrics.jsonl").exists() and len(records(out, "train")) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {n} train records in {out} within {timeout}s")


def test_a_run_folder_belongs_to_one_live_run(tmp_path, capsys):
    out = tmp_path / "shared"
    first = start(SLOW + ["--out", str(out)])
    try:
        wait_for_steps(out, 1, first)
        fail(capsys, FAST + ["--out", str(out)], "in use by another run")
        fail(capsys, ["--resume", str(out)], "no checkpoint")     # nothing to resume yet, and still locked
    finally:
        first.kill()            # kill -9: the kernel drops the lock with the process
        first.communicate()
    # the lock died with its process: the folder can be used again (here: refused for its history)
    fail(capsys, FAST + ["--out", str(out)], "holds a metrics.jsonl but no checkpoint")


def test_default_run_folders_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = {RunFolder.make(None)[0] for _ in range(3)}
    assert len(paths) == 3 and all(p.is_dir() for p in paths)


# train.py's main with every step at least 50 ms longer: 60 steps then take >= 3 s on any
# machine, so a kill 1 s after the first checkpoint lands mid-run.
SLOW_STEPS = """import sys, time, train
fast = train.train_step
def slow(run, stage):
    time.sleep(0.05)
    return fast(run, stage)
train.train_step = slow
sys.exit(train.main(sys.argv[1:]))
"""


def test_killed_run_resumes_with_each_step_recorded_once(tmp_path):
    out = tmp_path / "killed"
    args = FAST[:8] + ["--max-tokens", "61440"] + FAST[8:] + ["--ckpt-interval", "0.5", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_STEPS, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_steps(out, 8, proc)
    deadline = time.time() + 120
    while not (out / "ckpt.pt").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL                    # killed, not finished
    saved = torch.load(out / "ckpt.pt", weights_only=True)["state"]["step"]
    recorded = len(records(out, "train"))
    # mid-run; the steps recorded after the checkpoint (if any) are trained again on resume
    assert saved <= recorded < 60, (saved, recorded)
    assert train.main(["--resume", str(out)]) == 0
    steps = [r["step"] for r in records(out, "train")]
    assert steps == list(range(1, 61)), (saved, steps)
    assert len(records(out, "config")) == 1


def test_full_disk_while_logging_leaves_whole_lines(tmp_path, capsys, monkeypatch):
    out, real_write, calls = tmp_path / "full", os.write, []

    def write(fd, data):
        if data.startswith(b'{"kind": "train"'):
            calls.append(1)
            if len(calls) == 5:     # half a line reaches the disk, then it is full
                real_write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", write)
    fail(capsys, FAST + ["--out", str(out)], "No space left on device")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines) and len(records(out, "train")) == 4


def test_checkpoint_that_unpickles_but_lacks_fields(tmp_path, capsys):
    out = tmp_path / "odd"
    out.mkdir()
    torch.save({"format": CKPT_FORMAT, "config": {}}, out / "ckpt.pt")
    fail(capsys, ["--resume", str(out)], "not a growlength checkpoint")


@pytest.mark.parametrize("flags,match", [
    (["--lr", "0"], "--lr 0.0: must be a positive number"),
    (["--lr=-1e-3"], "--lr -0.001"),
    (["--lr", "nan"], "--lr nan"),
    (["--min-lr-ratio", "1.5"], "--min-lr-ratio"),
    (["--warmup", "1"], "--warmup"),
    (["--ratios", "1e308,1e308"], "finite"),
    (["--data", ""], "--data ''"),
    (["--seed", str(2 ** 63)], "--seed"),
    (["--eval-lengths", "32,10000000000"], "RoPE tables"),
    (["--schedule", "32", "--tokens-per-step", str(2 ** 45)], "token ids"),
    (["--eval-lengths", "32,1000000"], "val split"),
    (["--micro-batch-tokens", "0"], "--micro-batch-tokens 0"),
])
def test_silently_wrong_flags_are_refused_and_leave_no_folder(tmp_path, capsys, flags, match):
    out = tmp_path / "x"
    fail(capsys, FAST + ["--out", str(out)] + flags, match)
    assert not out.exists()


def test_micro_batch_tokens_takes_auto_or_a_number():
    r = subprocess.run([sys.executable, "train.py", "--micro-batch-tokens", "lots"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: argument --micro-batch-tokens: expected 'auto' or a number of tokens, not 'lots' (see --help)"]


def test_metrics_that_is_a_directory(tmp_path, capsys):
    out = tmp_path / "m"
    (out / "metrics.jsonl").mkdir(parents=True)
    fail(capsys, FAST + ["--out", str(out)], "metrics.jsonl")


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path):
    """SIGINT while the corpus is being prepared: exit 130, one line, no traceback."""
    src = tmp_path / "big.txt"
    src.write_text("to be or not to be " * 200_000)     # ~4 MB, each 1 MB batch slowed to a second
    entry = "import train; sys.exit(train.main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-u", "-c", slowed(entry), *FAST, "--data", str(src), "--out", str(tmp_path / "r")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("preparing")     # started: interrupt it now
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert not (tmp_path / "r").exists()


def test_resume_refuses_data_that_changed(tmp_path, capsys):
    src = tmp_path / "play.txt"
    src.write_text("to be or not to be, that is the question. " * 2000)
    out = tmp_path / "r"
    assert train.main(FAST + ["--data", str(src), "--out", str(out), "--stop-at-step", "2"]) == 0
    before = (out / "ckpt.pt").read_bytes()
    src.write_text("whether tis nobler in the mind to suffer. " * 2000)     # same name, other text
    capsys.readouterr()
    fail(capsys, ["--resume", str(out)], "the data changed since the checkpoint")
    assert (out / "ckpt.pt").read_bytes() == before


def test_a_run_extended_after_its_end_records_each_jump_once(tmp_path):
    out = tmp_path / "ext"
    assert train.main(FAST + ["--out", str(out)]) == 0                      # 40 steps, one switch 32 -> 64
    assert train.main(["--resume", str(out), "--max-tokens", "61440"]) == 0   # 20 more at T=64
    assert [(j["from"], j["to"]) for j in records(out, "jump")] == [(32, 64)]


def test_a_checkpoint_temp_file_left_by_a_killed_run_is_removed(tmp_path):
    out = tmp_path / "tmp"
    assert train.main(FAST + ["--out", str(out), "--stop-at-step", "2"]) == 0
    stale = out / "ckpt.pt.tmp99999"                  # as a kill -9 mid-checkpoint leaves it
    stale.write_bytes(b"half a checkpoint")
    assert train.main(["--resume", str(out), "--stop-at-step", "3"]) == 0
    assert not stale.exists() and (out / "ckpt.pt").is_file()
