"""What a user sees from sample.py, and from every entry point on Ctrl-C: one `error:` line on
stderr, a non-zero exit, no traceback."""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sample
import train
from test_train import FAST

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "run"
    assert train.main(FAST + ["--max-tokens", "2048", "--out", str(out)]) == 0
    return str(out)


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (Linux): a load-independent way to know how far it has got."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def signal_after(cmd, cpu_s, signum):
    """Start cmd, send it `signum` once it has used `cpu_s` CPU seconds; -> (exit code, stderr)."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while p.poll() is None and cpu_seconds(p.pid) < cpu_s and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signum)
    _, err = p.communicate(timeout=120)
    return p.returncode, err


@pytest.mark.parametrize("flags, match", [
    (["--top-k", "0"], "--top-k 0: must be >= 1"),
    (["--top-k", "-4"], "--top-k -4: must be >= 1"),
    (["--temperature", "nan"], "--temperature nan: must be a finite number >= 0"),
    (["--temperature", "inf"], "--temperature inf: must be a finite number >= 0"),
    (["--temperature", "-0.5"], "--temperature -0.5: must be a finite number >= 0"),
    (["--device", "tpu"], "--device tpu: not a device name"),
    (["--device", "meta"], "--device meta: not supported here"),
    (["--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
    (["--num-samples", "0"], "--num-samples >= 1"),
    # the KV cache is sized up front: refused before a byte of it is allocated
    (["--max-new-tokens", "1000000000000"], "KV cache for 1 x 1,000,000,000,001 tokens needs"),
    (["--prompt", "ROMEO \udcff"], "--prompt is not valid text: character 6 is '\\udcff'"),
])
def test_bad_sample_flags_are_one_line(run, capsys, flags, match):
    assert sample.main([run, *flags]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err


def test_a_checkpoint_the_model_cannot_build_is_one_line(run, tmp_path, capsys):
    """A checkpoint from another version, with a RoPE switch this model.py does not know."""
    ckpt = torch.load(Path(run) / "ckpt.pt", weights_only=True)
    ckpt["model_config"]["rope_switch"] = "longrope"
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    assert sample.main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "unknown RoPE switch 'longrope'" in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_sample_on_a_missing_cuda_device(run, capsys):
    assert sample.main([run, "--device", "cuda"]) == 2
    assert capsys.readouterr().err == "error: --device cuda: no such CUDA device on this machine\n"


@pytest.mark.parametrize("args, line", [
    (["--top-k", "0"], "error: --top-k 0: must be >= 1 (for the single most likely token, use --temperature 0)"),
    (["--device", "tpu"], "error: --device tpu: not a device name (cpu, cuda, cuda:1, mps, ...)"),
    # bytes the shell cannot decode reach Python as a lone surrogate
    ([b"--prompt", b"caf\xe9"], "error: --prompt is not valid text: character 3 is '\\udce9'"),
])
def test_sample_cli_errors_are_one_line(run, args, line):
    r = subprocess.run([sys.executable, "sample.py", run, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.splitlines() == [line]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_sampling_stops_in_one_line(run, signum, code):
    # Measured on this machine, not assumed: the CPU seconds of a whole run that generates one
    # token (imports, checkpoint, start-up). Two seconds past that, it is generating.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "sample.py", run, "--max-new-tokens", "1"], cwd=ROOT, capture_output=True,
                   check=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    start_up = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    rc, err = signal_after([sys.executable, "sample.py", run, "--max-new-tokens", "100000"], start_up + 2, signum)
    assert (rc, err) == (code, f"error: stopped by {signal.Signals(signum).name}\n")


@pytest.mark.parametrize("cmd", [   # flags that fail at once, should a signal ever come too late
    ["sample.py", "no-such-run"],
    ["export.py", "no-such-run", "no-such-out"],
    ["plot.py", "no-such-run"],
    ["bench.py", "lengths", "--lengths", "abc"],
    ["experiments.py", "tokens", "--seeds", "x"],
])
def test_ctrl_c_during_start_up_is_one_line(cmd):
    # 0.3 CPU seconds in: past Python's own start-up, well inside `import torch`
    rc, err = signal_after([sys.executable, *cmd], 0.3, signal.SIGINT)
    assert (rc, err) == (130, "error: stopped by SIGINT\n")
