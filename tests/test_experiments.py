"""experiments.py: which folder each run uses (kept, resumed, afresh), where results go, flag errors.

Most tests replace train.py by a fake that writes what a run writes (a config line as its
first metrics record, an end eval, a ckpt.pt holding its step), so the reuse rules are checked in milliseconds;
one test runs the real train.py to check the comparison against a config it really records.
"""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import experiments
import export
import model
import train
from harness.checkpoint import CKPT_FORMAT
from harness.config import parse_config
from test_train import FAST, records

ROOT = Path(__file__).resolve().parent.parent


class FakeTrain:
    """Stands in for experiments.run_train: records each command and writes a finished run,
    or one that fails (`fail`: arm folder names) or is stopped by Ctrl-C (`stop`)."""

    def __init__(self, fail=(), stop=()):
        self.calls, self.fail, self.stop = [], set(fail), set(stop)
        self.programs = []   # what each command ran (cmd[1])
        self.jumps = {}    # arm folder name -> the loss jump its run records (switch arms; None: not measured)
        self.meanwhile = None   # called with the run folder as the command starts

    def __call__(self, cmd):
        self.calls.append(cmd[2:])
        self.programs.append(cmd[1])
        if cmd[2] == "--resume":
            out = Path(cmd[3])
            if self.meanwhile:
                self.meanwhile(out)
            if held(out / ".lock"):    # as harness.runfolder.RunFolder.claim refuses
                return 2, f"error: --out {out} is in use by another run (pid 4242)\n", None
        else:
            cfg, _ = parse_config(cmd[2:])
            out = Path(cfg.out)
            out.mkdir(parents=True)
            self.write(out, {"kind": "config", **asdict(cfg), "attn": "sdpa", "world_size": 1})
            self.write(out, {"kind": "train", "step": 1, "elapsed_s": 0.5, "tokens": 8192, "loss": 3.0})
            self.checkpoint(out, 1)
        if out.name in self.fail:
            return 1, "some warning\nerror: something went wrong\n", None
        if out.name in self.stop:
            self.stop.discard(out.name)
            return 0, "", signal.SIGINT
        self.write(out, {"kind": "eval", "step": 2, "elapsed_s": 1.0, "tokens": 16384, "reason": "end",
                         "loss": {"128": 2.0, "1024": 1.9}})
        self.checkpoint(out, 2)     # as train.py: the final eval, then the final checkpoint
        if "--rope-switch" in cmd:
            jump = self.jumps.get(out.name)
            self.write(out, {"kind": "jump", "step": 2, "from": 128, "to": 256, "k": train.JUMP_K,
                             "before": None if jump is None else 3.0, "after": None if jump is None else 3.0 + jump,
                             "jump": jump})
        return 0, "", None

    @staticmethod
    def checkpoint(out, step):
        """A checkpoint as harness.checkpoint.load_checkpoint reads it, at this step (no weights)."""
        torch.save({"format": CKPT_FORMAT, "config": {}, "model_config": {}, "model": {}, "optimizer": {},
                    "state": {"step": step}}, out / "ckpt.pt")

    @staticmethod
    def write(out, rec):
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


def held(path: Path) -> bool:
    """Whether another open file holds path's flock (a live train.py, for a run folder's .lock)."""
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setattr(experiments, "PUBLISHED", tmp_path / "published")
    runner = FakeTrain()
    monkeypatch.setattr(experiments, "run_train", runner)
    return runner


def tokens(tmp_path, *flags):
    return experiments.main(["tokens", "--runs", str(tmp_path / "exp"), *flags])


def test_a_run_is_reused_only_with_the_config_it_recorded(tmp_path, fake):
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert len(fake.calls) == 3
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert len(fake.calls) == 3                          # all three kept
    assert tokens(tmp_path, "--max-tokens", "2000") == 0
    assert [c[c.index("--out") + 1].rsplit("/", 1)[1] for c in fake.calls[3:]] == \
        ["fixed128-s1-2", "fixed1024-s1-2", "grow-s1-2"]
    table = (tmp_path / "exp" / "tokens" / "results.md").read_text()
    assert "grow-s1-2" in table and "2,000 tokens" in table
    assert tokens(tmp_path, "--max-tokens", "1000") == 0  # back to the first settings: their runs
    assert len(fake.calls) == 6
    table = (tmp_path / "exp" / "tokens" / "results.md").read_text()
    assert "| grow-s1 |" in table and "grow-s1-2" not in table and "1,000 tokens" in table


def test_extra_flags_are_part_of_the_config(tmp_path, fake):
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert tokens(tmp_path, "--max-tokens", "1000", "--extra", "--lr 3e-3") == 0
    assert len(fake.calls) == 6 and all("3e-3" in c for c in fake.calls[3:])


def test_a_failed_run_starts_afresh(tmp_path, fake, capsys):
    fake.fail = {"grow-s1"}
    assert tokens(tmp_path, "--max-tokens", "1000") == 2
    assert capsys.readouterr().err == "error: [tokens] grow-s1 failed: something went wrong\n"
    assert json.loads((tmp_path / "exp" / "tokens" / "grow-s1" / "failed.json").read_text())["exit_code"] == 1
    fake.fail = set()
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert len(fake.calls) == 4                          # the two finished ones kept
    assert "--resume" not in fake.calls[-1] and fake.calls[-1][-1].endswith("grow-s1-2")


def test_an_interrupted_run_is_resumed(tmp_path, fake, capsys):
    fake.stop = {"fixed1024-s1"}
    assert tokens(tmp_path, "--max-tokens", "1000") == 130
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: stopped by SIGINT") and "resumes" in err[0]
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert fake.calls[2] == ["--resume", str(tmp_path / "exp" / "tokens" / "fixed1024-s1")]
    assert len(fake.calls) == 4


def test_results_go_to_results_only_with_publish(tmp_path, fake):
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    beside = tmp_path / "exp" / "tokens"
    assert (beside / "results.md").is_file() and (beside / "figures" / "loss_vs_time.png").is_file()
    assert not (tmp_path / "published").exists()
    assert tokens(tmp_path, "--max-tokens", "1000", "--publish") == 0
    assert (tmp_path / "published" / "tokens.md").read_text() == (beside / "results.md").read_text()
    assert (tmp_path / "published" / "tokens" / "val_vs_context.png").is_file()
    assert not list(tmp_path.rglob("*.tmp*"))


def test_config_difference_names_the_flags():
    want, _ = parse_config(["--lr", "1e-3", "--budget", "1m"])
    got = {**asdict(want), "attn": "sdpa", "out": "elsewhere", "resume": None}
    assert experiments.config_difference(want, got) == []        # attn: chosen by train.py
    got["lr"], got["budget"] = 3e-3, "2m"
    assert experiments.config_difference(want, got) == ["--budget 2m (now 1m)", "--lr 0.003 (now 0.001)"]


def test_a_run_without_a_full_config_line_is_not_reused(tmp_path, fake):
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    metrics = tmp_path / "exp" / "tokens" / "grow-s1" / "metrics.jsonl"
    first, *rest = metrics.read_text().splitlines()
    cfg = json.loads(first)
    del cfg["tokens_per_step"]     # an older version's record, say
    metrics.write_text("\n".join([json.dumps(cfg), *rest]) + "\n")
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert len(fake.calls) == 4 and fake.calls[-1][-1].endswith("grow-s1-2")


@pytest.mark.parametrize("flags, match", [
    (["--seeds", "1,1"], "each seed once"),
    (["--seeds", "-3"], "each seed once"),
    (["--seeds", ""], "give comma-separated integers"),
    (["--extra", "--bogus 1"], "unrecognized arguments: --bogus 1"),
    (["--extra", "--lr abc"], "invalid float value: 'abc'"),
    (["--extra", "--out x"], "--out is set by the experiments"),
    (["--extra", "--seed 3"], "use --seeds"),
    (["--budget", "soon"], "soon"),
    (["--sizes", "tiny,huge"], "unknown preset(s) huge"),
    (["--max-tokens", "0"], "--max-tokens 0"),
    (["--switch-eval-tokens", "0"], "--switch-eval-tokens 0: must be >= 1"),
    (["--base-tokens", "0"], "--base-tokens 0: must be >= 1"),
    (["--extend-tokens", "-5"], "--extend-tokens -5: must be >= 1"),
])
def test_bad_flags_are_one_line_before_any_run(tmp_path, fake, capsys, flags, match):
    assert tokens(tmp_path, *flags) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert fake.calls == [] and not (tmp_path / "exp").exists()


@pytest.mark.parametrize("flags, line", [
    (["--seeds", "1,x"], "error: --seeds '1,x': give comma-separated integers, e.g. 1,2"),
    (["--extra", '"--lr 1e-3'], "error: --extra '\"--lr 1e-3': No closing quotation"),
])
def test_cli_errors_are_one_line(tmp_path, flags, line):
    r = subprocess.run([sys.executable, "experiments.py", "tokens", "--runs", str(tmp_path), *flags],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.splitlines() == [line]
    assert list(tmp_path.iterdir()) == []


def test_a_real_run_is_kept_then_rerun_under_new_settings(tmp_path, monkeypatch):
    """The real train.py records its config; the same flags find it again, others do not."""
    monkeypatch.setattr(experiments, "COMMON", [])
    args = SimpleNamespace(extra=[], runs=tmp_path)
    i = FAST.index("--seed")              # run_arm gives the seed
    flags = FAST[:i] + FAST[i + 2:] + ["--max-tokens", "2048"]
    out = experiments.run_arm("t", "arm", 7, flags, args)
    assert out == tmp_path / "t" / "arm-s7" and experiments.finished(out)

    def must_not_run(cmd):
        raise AssertionError(f"ran {cmd}")
    monkeypatch.setattr(experiments, "run_train", must_not_run)
    assert experiments.run_arm("t", "arm", 7, flags, args) == out
    folder, state = experiments.choose_folder(out, parse_config(flags + ["--max-tokens", "4096"])[0])
    assert (folder, state) == (tmp_path / "t" / "arm-s7-2", "new")


@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_lets_the_run_checkpoint(tmp_path, signum, to_group):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to
    experiments.py alone (it passes it on) while a run trains: experiments.py waits for
    train.py's checkpoint, then exits 128 + signal in one line."""
    p = subprocess.Popen([sys.executable, "experiments.py", "tokens", "--runs", str(tmp_path), "--max-tokens",
                          "10000000", "--extra", "--tokens-per-step 1024 --eval-tokens 2048 --log-interval 0"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "tokens" / "fixed128-s1" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count('"train"') < 2):
        time.sleep(0.2)
    if to_group:
        os.killpg(p.pid, signum)
    else:
        p.send_signal(signum)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signum, err
    assert err.splitlines() == [f"error: stopped by {signum.name}; {metrics.parent} has checkpointed: "
                                "the same command resumes it"]
    assert (metrics.parent / "ckpt.pt").is_file() and not (metrics.parent / "failed.json").exists()
    want, _ = parse_config([*experiments.COMMON, *experiments.ARMS["fixed128"], "--max-tokens", "10000000",
                                  "--seed", "1", "--tokens-per-step", "1024", "--eval-tokens", "2048",
                                  "--log-interval", "0"])
    assert experiments.choose_folder(metrics.parent, want) == (metrics.parent, "resumable")


def test_extension_uses_only_wallclock_runs_with_these_settings(tmp_path, fake, capsys, monkeypatch):
    assert experiments.main(["wallclock", "--runs", str(tmp_path), "--seeds", "1", "--budget", "1m"]) == 0
    capsys.readouterr()
    assert experiments.main(["extension", "--runs", str(tmp_path), "--seeds", "1", "--budget", "2m"]) == 2
    assert capsys.readouterr().err.startswith("error: no finished wallclock runs with these settings")
    extended = []
    monkeypatch.setattr(experiments, "extend", lambda out, *_: extended.append(out.name) or {"64": 2.0})
    assert experiments.main(["extension", "--runs", str(tmp_path), "--seeds", "1", "--budget", "1m"]) == 0
    assert extended == ["fixed128-s1", "fixed1024-s1", "grow-s1"] and len(fake.calls) == 3
    assert (tmp_path / "extension" / "results.md").read_text().startswith("| run | 64 |")


SWITCH_VAL = {"128": 2.0, "1024": 1.9, "4096": 2.5}


def test_switch_table_says_na_for_a_jump_not_measured(tmp_path, fake, monkeypatch):
    """A stage shorter than k steps records jump null: the table says n/a, the mean over seeds leaves it
    out, and the note names the settings the runs recorded (--extra may change them), not fixed ones."""
    fake.jumps = {f"{m}-s2": 0.25 for m in model.ROPE_SWITCHES}     # seed 1: not measured
    monkeypatch.setattr(experiments, "final_val", lambda out, eval_tokens: SWITCH_VAL)
    monkeypatch.setattr(train, "JUMP_K", 3)
    assert experiments.main(["switch", "--runs", str(tmp_path), "--seeds", "1,2", "--max-tokens", "1000",
                             "--extra", "--tokens-per-step 1024"]) == 0
    assert sorted(p.name for p in (tmp_path / "switch").iterdir() if p.is_dir()) == \
        sorted(["figures", *(f"{m}-s{s}" for m in model.ROPE_SWITCHES for s in (1, 2))])
    table = (tmp_path / "switch" / "results.md").read_text()
    assert "| yarn-s1 | n/a | 2.0000 | 1.9000 | 2.5000 | 1 |" in table
    assert "| yarn-s2 | +0.2500 | 2.0000 |" in table
    assert "| yarn | 0.2500 | 2.0000 ± 0.0000 |" in table
    assert "1,000 training tokens per run, schedule 128,256,512,1024" in table
    assert "preset tiny, data shakespeare (byte tokenizer), 1,024 tokens/step" in table and "8192" not in table
    assert "first 3 steps of a stage minus the last 3" in table
    assert (tmp_path / "switch" / "figures" / "loss_around_switches.png").is_file()


def test_spread_leaves_out_what_was_not_measured():
    assert experiments.spread([1.0, None, 3.0]) == "2.0000 ± 1.0000"
    assert experiments.spread([None, None]) == "n/a"


def test_switch_row_skips_a_line_cut_short(tmp_path, fake, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "final_val", lambda out, eval_tokens: SWITCH_VAL)
    fake.jumps = {"pi-s1": 0.5}
    args = SimpleNamespace(extra=[], runs=tmp_path, max_tokens=1000, switch_eval_tokens=16)
    out = experiments.run_arm("switch", "pi", 1, experiments.switch_flags("pi", args), args)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"kind": "jump", "step": 9, "fr')           # a crash mid-write
    row = experiments.switch_row(out, args)
    assert row["jumps"] == {"128->256": 0.5} and row["val"] == SWITCH_VAL


def test_final_val_is_reused_only_for_the_same_eval_tokens(tmp_path, monkeypatch):
    asked = []

    def evaluate(model, data, lengths, eval_tokens, device, autocast):
        asked.append(eval_tokens)
        return {str(T): float(eval_tokens) for T in lengths}
    monkeypatch.setattr(experiments, "trained", lambda out: (None, None))
    monkeypatch.setattr(train, "evaluate", evaluate)
    assert experiments.final_val(tmp_path, 100)["4096"] == 100.0
    assert experiments.final_val(tmp_path, 100)["4096"] == 100.0 and asked == [100]     # kept
    assert experiments.final_val(tmp_path, 200)["4096"] == 200.0 and asked == [100, 200]
    assert json.loads((tmp_path / "switch_val.json").read_text())["eval_tokens"] == 200
    (tmp_path / "switch_val.json").write_text('{"eval_tokens": 200, "lo')    # cut short: evaluated again
    assert experiments.final_val(tmp_path, 200)["4096"] == 200.0 and asked == [100, 200, 200]


def test_extend_evaluates_the_checkpoint_the_run_evaluated(tmp_path):
    """extend (and final_val, through the same helper) rebuild the model and data a run trained on:
    at a length the run evaluated, on as many tokens, the same loss."""
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-tokens", "2048", "--out", str(out)]) == 0
    losses = experiments.extend(out, 2048, 128)
    assert list(losses) == ["64", "128"]
    assert losses["128"] == records(out, "eval")[-1]["loss"]["128"]
    assert json.loads((out / "extension.json").read_text()) == losses


# ----------------------------------------------------------------------------- nothing lost, nothing silently wrong

def hold(path: Path):
    """path's flock, as another process holding it (flock conflicts between open files, even in one
    process), with that process's pid written in it."""
    f = open(path, "a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.truncate(0)
    f.write("4242")
    f.flush()
    return f


def test_a_run_killed_in_its_final_checkpoint_is_resumed_not_kept(tmp_path, fake):
    """metrics.jsonl says `end` at step 2 but ckpt.pt holds step 1 (killed while the final checkpoint
    was written): not finished, so no experiment evaluates that stale model; the same command resumes it."""
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    grow = tmp_path / "exp" / "tokens" / "grow-s1"
    fake.checkpoint(grow, 1)
    assert not experiments.finished(grow)
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert fake.calls[3:] == [["--resume", str(grow)]] and experiments.finished(grow)


def test_a_run_whose_checkpoint_cannot_be_read_is_not_reused(tmp_path, fake, capsys):
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    (tmp_path / "exp" / "tokens" / "grow-s1" / "ckpt.pt").write_bytes(b"cut short")
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert "grow-s1 holds a checkpoint that cannot be read: not used" in capsys.readouterr().out
    assert len(fake.calls) == 4 and fake.calls[-1][-1].endswith("grow-s1-2")


def test_a_second_experiments_py_on_the_same_folder_is_refused(tmp_path, fake, capsys):
    folder = tmp_path / "exp" / "tokens"
    folder.mkdir(parents=True)
    other = hold(folder / ".lock")
    try:
        assert tokens(tmp_path, "--max-tokens", "1000") == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {folder} is in use by another experiments.py (pid 4242): wait for it to finish, "
            "or give another --runs"]
        assert fake.calls == [] and sorted(p.name for p in folder.iterdir()) == [".lock"]
    finally:
        other.close()
    assert tokens(tmp_path, "--max-tokens", "1000") == 0 and len(fake.calls) == 3
    assert tokens(tmp_path, "--max-tokens", "1000") == 0 and len(fake.calls) == 3   # our lock let go


def test_a_run_a_live_train_holds_is_never_marked_failed(tmp_path, fake, capsys):
    """Found held (its .lock, harness.runfolder) before the run, or taken between the look and the
    run: one line, the run left as it is, and the same command resumes it once it is free."""
    fake.stop = {"grow-s1"}
    assert tokens(tmp_path, "--max-tokens", "1000") == 130
    grow = tmp_path / "exp" / "tokens" / "grow-s1"
    line = f"error: {grow} is in use by a live train.py (pid 4242): wait for it or stop it, then run this command again"
    capsys.readouterr()
    train_lock = hold(grow / ".lock")
    try:
        assert tokens(tmp_path, "--max-tokens", "1000") == 2
        assert capsys.readouterr().err.splitlines() == [line] and len(fake.calls) == 3
    finally:
        train_lock.close()
    taken = []
    fake.meanwhile = lambda out: taken.append(hold(out / ".lock"))
    try:
        assert tokens(tmp_path, "--max-tokens", "1000") == 2
        assert capsys.readouterr().err.splitlines() == [line] and len(fake.calls) == 4
    finally:
        taken[0].close()
    assert not (grow / "failed.json").exists()
    fake.meanwhile = None
    assert tokens(tmp_path, "--max-tokens", "1000") == 0
    assert fake.calls[-1] == ["--resume", str(grow)] and experiments.finished(grow)


def test_train_runs_in_the_callers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert experiments.run_train([sys.executable, "-c", "import os, sys; sys.stderr.write(os.getcwd())"]) == \
        (0, str(tmp_path), None)


@pytest.mark.parametrize("extra", ["--data mytext.txt --lr 3e-3", "--lr 3e-3 --data=mytext.txt"])
def test_a_relative_data_path_in_extra_is_the_callers_file(tmp_path, fake, monkeypatch, extra):
    """train.py is called by its path and runs where the user is; the run records the absolute path,
    so the same command from another folder (another mytext.txt) is another run."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert tokens(tmp_path, "--max-tokens", "1000", "--extra", extra) == 0
    assert fake.programs == [str(ROOT / "train.py")] * 3
    assert all(c.count("--data") == 1 and c[c.index("--data") + 1] == str(here / "mytext.txt") and "3e-3" in c
               for c in fake.calls)
    assert experiments.recorded_config(tmp_path / "exp" / "tokens" / "grow-s1")["data"] == str(here / "mytext.txt")
    monkeypatch.chdir(tmp_path)
    assert tokens(tmp_path, "--max-tokens", "1000", "--extra", extra) == 0
    assert len(fake.calls) == 6 and fake.calls[-1][-1].endswith("grow-s1-2")


def test_publish_never_replaces_results_unasked(tmp_path, fake, capsys):
    assert tokens(tmp_path, "--max-tokens", "1000", "--publish") == 0     # nothing there yet
    table = tmp_path / "published" / "tokens.md"
    table.write_text("the committed table\n")
    capsys.readouterr()
    assert tokens(tmp_path, "--max-tokens", "2000", "--publish") == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --publish: {table} exists (committed results?); --force-publish replaces them, "
        "or leave out --publish to write beside the runs"]
    assert table.read_text() == "the committed table\n" and len(fake.calls) == 3     # refused before any run
    assert tokens(tmp_path, "--max-tokens", "2000", "--force-publish") == 0
    assert "2,000 tokens" in table.read_text()


@pytest.mark.parametrize("spelled", [["--extra", "--compile"], ["--extra=--compile"]])
def test_extra_takes_a_lone_flag(tmp_path, fake, spelled):
    assert tokens(tmp_path, "--max-tokens", "1000", *spelled) == 0
    assert len(fake.calls) == 3 and all(c.count("--compile") == 1 for c in fake.calls)


# ----------------------------------------------------------------------------- extend-context, end to end

def table_rows(text: str, first_cell: str) -> list:
    """The rows (lists of cells) of the markdown table in text whose header starts with first_cell."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [rows[0]] + rows[2:]      # the header, then the rows after the |---| line


def test_extend_context_starts_every_arm_from_the_base_run(tmp_path):
    """The whole command at toy size with the real train.py: a base run at 128, its export, four arms from
    it, the table at 64 .. 4096. The arms without a RoPE switch must start at the base's final loss (the
    same weights); an arm with one may start from rescaled RoPE, so its first eval need not."""
    runs = tmp_path / "exp"
    argv = ["extend-context", "--runs", str(runs), "--seeds", "1", "--base-tokens", "4096", "--extend-tokens",
            "3072", "--eval-tokens", "1024", "--extra", "--tokens-per-step 1024 --eval-tokens 2048"]
    assert experiments.main(argv) == 0
    folder = runs / "extend-context"
    text = (folder / "results.md").read_text()
    header, *rows = table_rows(text, "run")
    assert header == ["run", "train s", "wall s", "tokens"] + [f"val@{2 ** i}" for i in range(6, 13)]
    names = ["base-s1", "direct-none-s1", "direct-ntk-s1", "grow-none-s1", "grow-ntk-s1"]
    assert [r[0] for r in rows] == names
    assert [r[3] for r in rows] == ["4,096"] + ["3,072"] * 4
    assert all(0 < float(v) < 10 for r in rows for v in r[4:])
    _, *stages = table_rows(text, "run | stage")
    assert [(r[0], r[2]) for r in stages] == [("base-s1", "128"), ("direct-none-s1", "1024"),
                                              ("direct-ntk-s1", "1024")] + \
        [(f"grow-{m}-s1", T) for m in ("none", "ntk") for T in ("256", "512", "1024")]
    base_end = records(folder / "base-s1", "eval")[-1]["loss"]["128"]
    assert base_end < 5.3           # trained: an untrained model scores about ln 256 = 5.55
    for arm in ("direct-none-s1", "grow-none-s1"):
        start = records(folder / arm, "eval")[0]
        assert start["reason"] == "start" and start["loss"]["128"] == pytest.approx(base_end, abs=2e-5), arm
    assert experiments.recorded_config(folder / "grow-ntk-s1")["init_from"] == str(folder / "base-s1-hf")
    said = [line for line in text.splitlines() if " grow minus direct " in line]
    assert [line.split(":")[0] for line in said] == ["- none", "- ntk"] and all("of 7 lengths" in x for x in said)
    assert (folder / "figures" / "val_vs_context.png").is_file()


def test_an_export_is_reused_only_whole_and_of_the_same_checkpoint(tmp_path, capsys):
    """extend-context's --init-from folder: kept if it holds the run's weights, written again if an export was
    cut short (no config.json, written last), and never replaced when it holds other weights."""
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, "7"), (b, "8")):
        assert train.main(FAST[:-1] + [seed, "--max-tokens", "1024", "--out", str(out)]) == 0
    weights = {run: torch.load(run / "ckpt.pt", weights_only=True)["model"] for run in (a, b)}
    hf = tmp_path / "a-hf"
    assert experiments.exported(a) == hf and experiments.same_weights(hf, weights[a])
    written = (hf / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert experiments.exported(a) == hf and (hf / "model.safetensors").stat().st_mtime_ns == written
    assert "a-hf: exported earlier from this checkpoint, kept" in capsys.readouterr().out
    (hf / "config.json").unlink()                                          # an export cut short
    assert experiments.exported(a) == hf and (hf / "config.json").is_file()
    assert "a-hf: exported a" in capsys.readouterr().out
    shutil.rmtree(hf)
    export.export(b, hf)                                                   # another run's weights under that name
    assert experiments.exported(a) == tmp_path / "a-hf-2"
    assert "a-hf holds other weights: not used" in capsys.readouterr().out
    assert experiments.same_weights(hf, weights[b]) and experiments.same_weights(tmp_path / "a-hf-2", weights[a])
    assert not experiments.same_weights(hf, weights[a])


@pytest.mark.parametrize("extra", ["--init-from somewhere", "--rope-switch ntk"])
def test_extend_context_refuses_extra_flags_it_sets(tmp_path, fake, capsys, extra):
    assert experiments.main(["extend-context", "--runs", str(tmp_path), "--extra", extra]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is set by the experiments (its runs" in err[0], err
    assert fake.calls == [] and list(tmp_path.iterdir()) == []
