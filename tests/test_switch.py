"""RoPE at a stage switch (--rope-switch) and the loss jump: each method's tables against its
published formula, `none` untouched, the scaling state through checkpoint -> resume -> eval,
and the jump metric on a synthetic loss sequence."""
import math
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

import data as datalib
import plot
import prepare
import schedule
import train
from harness.checkpoint import load_checkpoint
from model import GPT, GPTConfig, Rotary, make_config
from test_train import FAST, fail, records

ROOT = Path(__file__).resolve().parent.parent
BASE, ROT_DIM = 10000.0, 16
# The RoPE of a model trained at ORIG tokens, stretched to S * ORIG. With ORIG = 1024 the 8 frequencies
# make 163, 52, 16, 5.2, 1.6, 0.5, ... rotations over ORIG. YaRN's ramp runs over the dim index
# between the dims making beta = 32 and alpha = 1 rotations, i = 16 ln(1024 / (2 pi r)) / (2 ln 10^4)
# = 1.41 and 4.42, widened to whole dims 1 and 5: dims 0-1 keep their frequency, 2, 3, 4 keep
# 3/4, 1/2, 1/4 of it (the rest interpolated), 5-7 are interpolated, so all three regimes are checked.
ORIG, S = 1024, 4.0
POSITIONS, DIMS = [0, 1, 777, 4095], [0, 1, 2, 3, 4, 7]
YARN_KEEP = [1, 1, 0.75, 0.5, 0.25, 0, 0, 0]


def expected_angle(method, m, i):
    """Hand-computed angle of position m, frequency i (0 = fastest), from each method's paper."""
    theta = BASE ** (-2 * i / ROT_DIM)
    if method == "pi":                   # Chen et al. 2023: position m -> m / s
        return (m / S) * theta
    if method == "ntk":                  # base -> base * s^(d/(d-2))
        return m * (BASE * S ** (ROT_DIM / (ROT_DIM - 2))) ** (-2 * i / ROT_DIM)
    keep = YARN_KEEP[i]                                # YaRN Eq. 17-18 as its authors' code ramps it
    return m * ((1 - keep) * theta / S + keep * theta)


@pytest.mark.parametrize("method", ["pi", "ntk", "yarn"])
def test_tables_at_the_new_length_follow_each_methods_formula(method):
    rope = Rotary(ROT_DIM, BASE)
    rope.rescale(method, ORIG, S)
    cos, sin = rope.tables(int(S * ORIG), "cpu")
    factor = 0.1 * math.log(S) + 1 if method == "yarn" else 1.0      # YaRN Eq. 22, folded into cos/sin
    for m in POSITIONS:
        for i in DIMS:
            a = expected_angle(method, m, i)
            for col in (i, i + ROT_DIM // 2):     # NeoX layout: the frequencies twice
                # float32 angles: ~1e-7 relative, so ~1e-4 absolute at m = 4095
                assert cos[m, col].item() == pytest.approx(factor * math.cos(a), abs=2e-4), (m, i, col)
                assert sin[m, col].item() == pytest.approx(factor * math.sin(a), abs=2e-4), (m, i, col)


@pytest.mark.parametrize("method", ["none", "pi", "ntk", "yarn"])
def test_none_and_the_first_stage_leave_plain_rope_bit_identical(method):
    """`none` never changes the tables; every method at s = 1 (the first stage) is plain RoPE."""
    model = GPT(make_config("tiny", rope_switch=method))
    model.grow_rope(1024)
    rope = model.layers[0].attention.rotary
    t = torch.arange(1024, dtype=torch.float32)
    freqs = torch.outer(t, 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8)))
    plain = torch.cat((freqs, freqs), dim=-1)
    model.switch_rope(128, 128)
    assert torch.equal(rope.tables(1024, "cpu")[0], plain.cos()) and torch.equal(rope.tables(1024, "cpu")[1], plain.sin())
    model.switch_rope(128, 1024)
    changed = not torch.equal(rope.tables(1024, "cpu")[0], plain.cos())
    assert changed == (method != "none")
    assert (model.cfg.rope_scale == 1.0) == (method == "none")


@pytest.mark.parametrize("method", ["pi", "ntk", "yarn"])
def test_switching_through_the_stages_equals_switching_once(method):
    """The tables depend on (first length, current length) only: s is cumulative."""
    a, b = GPT(make_config("tiny", rope_switch=method)), GPT(make_config("tiny", rope_switch=method))
    a.grow_rope(2048)
    b.grow_rope(2048)
    for T in (256, 512, 1024):
        a.switch_rope(128, T)
    b.switch_rope(128, 1024)
    ra, rb = a.layers[2].attention.rotary, b.layers[2].attention.rotary
    assert torch.equal(ra.tables(2048, "cpu")[0], rb.tables(2048, "cpu")[0])
    assert a.cfg.rope_scale == 8.0 and a.cfg.rope_orig_len == 128


# Two stages of 10 steps: the switch 32 -> 64 is at step 11; 5 steps on each side for the jump.
SWITCHED = FAST + ["--max-tokens", "20480", "--rope-switch", "yarn"]


def test_scaling_state_survives_checkpoint_resume_and_eval(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train.main(SWITCHED + ["--out", str(whole)]) == 0
    assert train.main(SWITCHED + ["--out", str(split), "--stop-at-step", "13"]) == 0   # 3 steps after the switch
    saved = torch.load(split / "ckpt.pt", weights_only=True)["model_config"]
    assert saved["rope_switch"] == "yarn" and saved["rope_orig_len"] == 32 and saved["rope_scale"] == 2.0
    fail(capsys, ["--resume", str(split), "--rope-switch", "pi"], "--rope-switch pi differs")   # another run
    assert train.main(["--resume", str(split)]) == 0
    la = [r["loss"] for r in records(whole, "train")]
    lb = [r["loss"] for r in records(split, "train")]
    assert len(la) == len(lb) == 20
    assert np.allclose(la, lb, rtol=1e-5, atol=1e-6), [(i, x, y) for i, (x, y) in enumerate(zip(la, lb)) if x != y]
    assert records(whole, "jump") == records(split, "jump")   # the per-step losses ride in the checkpoint

    # eval (as experiments.py extend and sample.py build it): the checkpoint's config gives the run's RoPE
    ckpt = load_checkpoint(str(split))
    data = datalib.TokenData(prepare.resolve("shakespeare", "byte"))

    def val(model_config):
        model = GPT(GPTConfig(**model_config, attn="sdpa"))
        model.load_state_dict(ckpt["model"])
        return train.evaluate(model, data, [32, 128], 2048, "cpu", nullcontext())
    final = records(split, "eval")[-1]["loss"]
    assert val(ckpt["model_config"]) == final
    assert val({**ckpt["model_config"], "rope_scale": 1.0}) != final   # without the state: other positions


def test_jump_is_recorded_printed_and_plotted(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(SWITCHED + ["--out", str(out)]) == 0
    assert "loss jump 32 -> 64 at step 11:" in capsys.readouterr().out
    [jump] = records(out, "jump")
    losses = [r["loss"] for r in records(out, "train")]   # every step logged (FAST: --log-interval 0)
    assert jump["from"] == 32 and jump["to"] == 64 and jump["step"] == 11 and jump["k"] == train.JUMP_K
    assert jump["jump"] == pytest.approx(np.mean(losses[10:15]) - np.mean(losses[5:10]), abs=1e-5)
    plot.plot_switches([plot.load_run(out)], tmp_path / "switches.png")
    assert (tmp_path / "switches.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.main([str(out), "--out", str(tmp_path / "fig")]) == 0      # the jump marks on loss_vs_time


def test_loss_jumps_on_a_synthetic_sequence():
    # stage 128: 8 steps, of which the last 3 (k=3) average 2.0; stage 256 starts at 2.4 (mean of 3),
    # its last 3 average 2.2; stage 512 has only 2 steps: too short to measure.
    lens = [128] * 8 + [256] * 7 + [512] * 2
    losses = [9, 9, 9, 9, 9, 1.9, 2.0, 2.1] + [2.5, 2.4, 2.3, 9, 2.1, 2.2, 2.3] + [2.6, 2.7]
    jumps = schedule.loss_jumps(lens, losses, k=3)
    assert [(j["step"], j["from"], j["to"]) for j in jumps] == [(9, 128, 256), (16, 256, 512)]
    assert jumps[0]["before"] == pytest.approx(2.0) and jumps[0]["after"] == pytest.approx(2.4)
    assert jumps[0]["jump"] == pytest.approx(0.4)
    assert jumps[1]["jump"] is None and jumps[1]["k"] == 3
    assert schedule.loss_jumps([128] * 5, [1.0] * 5) == []          # one stage: no switch
    with pytest.raises(ValueError):
        schedule.loss_jumps([128, 256], [1.0])


def test_long_experiment_runs_at_cpu_scale(tmp_path):
    """`experiments.py long --scale cpu` end to end, in a copy of the project (its runs/ and results/
    stay out of the repository), on budgets of seconds."""
    for f in ROOT.glob("*.py"):
        shutil.copy(f, tmp_path)
    for folder in ("kernels", "harness"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "shakespeare.txt.gz", tmp_path / "data")
    r = subprocess.run([sys.executable, "experiments.py", "long", "--scale", "cpu", "--budget", "2s",
                        "--extra", "--eval-tokens 1024 --eval-interval 1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "runs" / "exp" / "long-cpu" / "results.md").read_text()   # not results/: no --publish
    assert "| grow-s1 |" in table and "| fixed256-s1 |" in table and "val@256" in table
    assert "grow: tokens/s by stage T=32" in table and "T=256" in table
    assert "reaches the fixed run's final val@256" in table
    assert (tmp_path / "runs" / "exp" / "long-cpu" / "figures" / "loss_vs_time.png").is_file()
