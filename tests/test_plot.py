"""plot.py draws from real metrics; experiments.py's time-to-reach arithmetic."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import experiments
import plot
import train
from test_train import FAST

ROOT = Path(__file__).resolve().parent.parent


def test_plot_writes_every_figure(tmp_path):
    runs = []
    for sched in ("32,64", "64"):
        out = tmp_path / f"run{sched}"
        assert train.main(FAST + ["--schedule", sched, "--max-tokens", "8192", "--out", str(out)]) == 0
        runs.append(str(out))
    assert plot.main(runs + ["--out", str(tmp_path / "fig")]) == 0
    for name in ("loss_vs_time", "loss_vs_tokens", "val_vs_time", "val_vs_context"):
        png = tmp_path / "fig" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_rejects_a_folder_without_metrics(tmp_path, capsys):
    assert plot.main([str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_time_to_reach_interpolates_between_evals():
    evals = [{"elapsed_s": t, "loss": {"1024": l}} for t, l in [(0, 5.0), (10, 3.0), (20, 2.0), (30, 1.5)]]
    assert experiments.time_to_reach(evals, 2.5) == pytest.approx(15.0)
    assert experiments.time_to_reach(evals, 3.0) == pytest.approx(10.0)
    assert experiments.time_to_reach(evals, 1.0) is None


def write_metrics(folder, lines):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("\n".join(lines))
    return folder


def test_unusable_lines_are_skipped_with_one_warning(tmp_path, capsys):
    """A crash leaves a half line; older or edited files lack keys or hold null: skipped, counted."""
    good = [{"kind": "train", "step": s, "elapsed_s": s, "tokens": 1024 * s, "loss": 3.0 - s / 10} for s in (1, 2, 3)]
    bad = [{"kind": "train", "step": 4, "elapsed_s": 4.0, "tokens": 4096, "loss": None},
           {"kind": "train", "step": 5, "elapsed_s": 5.0},
           {"kind": "eval", "step": 5, "elapsed_s": 5.0, "loss": {"128": None}}]
    evals = [{"kind": "eval", "step": 3, "elapsed_s": 3.0, "tokens": 3072, "loss": {"128": 2.5, "1024": None}}]
    lines = [json.dumps(r) for r in [{"kind": "config"}, *good, *bad, *evals]] + ['{"kind": "train", "st']
    run = write_metrics(tmp_path / "crashed", lines)
    assert plot.main([str(run), "--out", str(tmp_path / "fig")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {run / 'metrics.jsonl'}: skipped 4 unusable line(s) (line 5 first): "
                   "cut short by a crash, or missing fields"]
    loaded = plot.load_run(run)
    assert [r["step"] for r in loaded["train"]] == [1, 2, 3] and loaded["eval"][0]["loss"] == {"128": 2.5}
    assert (tmp_path / "fig" / "val_vs_time.png").is_file()


def test_out_that_is_a_file_is_one_line(tmp_path):
    run = write_metrics(tmp_path / "run", [json.dumps({"kind": "config"}), json.dumps(
        {"kind": "train", "step": 1, "elapsed_s": 1.0, "tokens": 8, "loss": 3.0})])
    (tmp_path / "taken").write_text("a file")
    for out, line in [(tmp_path / "taken", f"error: --out {tmp_path / 'taken'}: is a file, not a folder"),
                      (tmp_path / "taken" / "fig", f"error: --out {tmp_path / 'taken' / 'fig'}: cannot create "
                                                   "the folder (Not a directory)")]:
        r = subprocess.run([sys.executable, "plot.py", str(run), "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.splitlines() == [line]
    assert (tmp_path / "taken").read_text() == "a file"


def test_a_figure_that_cannot_be_written_keeps_the_old_one(tmp_path, capsys, monkeypatch):
    """savefig dies half-way (full disk): the previous figure stays, no temp file is left."""
    run = write_metrics(tmp_path / "run", [json.dumps({"kind": "train", "step": 1, "elapsed_s": 1.0,
                                                       "tokens": 1024, "loss": 3.0})])
    fig = tmp_path / "fig"
    fig.mkdir()
    (fig / "loss_vs_time.png").write_bytes(b"the old figure")

    def half_then_full(self, f, **kw):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(plt.Figure, "savefig", half_then_full)
    assert plot.main([str(run), "--out", str(fig)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: could not write {fig / 'loss_vs_time.png'} (No space left on device); "
        "the previous version, if any, is intact"]
    assert (fig / "loss_vs_time.png").read_bytes() == b"the old figure"
    assert [p.name for p in fig.iterdir()] == ["loss_vs_time.png"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_real_full_disk_is_one_line(tmp_path):
    run = write_metrics(tmp_path / "run", [json.dumps({"kind": "train", "step": 1, "elapsed_s": 1.0,
                                                       "tokens": 1024, "loss": 3.0})])
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("this machine does not allow a tmpfs mount")
    try:
        (disk / "loss_vs_time.png").write_bytes(b"the old figure")
        r = subprocess.run([sys.executable, "plot.py", str(run), "--out", str(disk)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "No space left on device" in r.stderr
        assert (disk / "loss_vs_time.png").read_bytes() == b"the old figure"
        assert [p.name for p in disk.iterdir()] == ["loss_vs_time.png"]
    finally:
        subprocess.run(["umount", str(disk)])


def test_records_without_the_keys_a_figure_reads_are_skipped(tmp_path, capsys):
    """The stage marks and the switch panels read a stage's and a train record's step and a jump's value
    (null when not measured, but present): a hand-edited record without one is skipped, not a KeyError."""
    recs = [{"kind": "train", "step": s, "elapsed_s": s, "tokens": 1024 * s, "loss": 3.0} for s in (1, 2, 3, 4)]
    recs += [{"kind": "stage", "step": 0, "elapsed_s": 0, "tokens": 0},
             {"kind": "stage", "step": 2, "elapsed_s": 2, "tokens": 2048},
             {"kind": "jump", "step": 3, "from": 32, "to": 64, "jump": None},
             {"kind": "eval", "step": 4, "elapsed_s": 4, "tokens": 4096, "loss": {"64": 2.5}},
             {"kind": "train", "elapsed_s": 5, "tokens": 5120, "loss": 3.0},       # no step
             {"kind": "stage", "elapsed_s": 4, "tokens": 4096},                   # no step
             {"kind": "jump", "step": 3, "from": 32, "to": 64},                   # no jump
             {"kind": "jump", "step": 3, "from": 32, "to": 64, "jump": "big"}]
    run = write_metrics(tmp_path / "edited", [json.dumps(r) for r in recs])
    assert plot.main([str(run), "--out", str(tmp_path / "fig")]) == 0
    assert "skipped 4 unusable line(s) (line 9 first)" in capsys.readouterr().err
    loaded = plot.load_run(run)
    assert len(loaded["train"]) == 4 and len(loaded["stage"]) == 2 and loaded["jump"] == [recs[6]]
    plot.plot_switches([loaded], tmp_path / "switches.png")
    assert (tmp_path / "switches.png").is_file()


def test_a_val_length_no_run_evaluated_is_one_line(tmp_path):
    run = write_metrics(tmp_path / "run", [json.dumps(r) for r in [
        {"kind": "train", "step": 1, "elapsed_s": 1.0, "tokens": 1024, "loss": 3.0},
        {"kind": "eval", "step": 1, "elapsed_s": 1.0, "tokens": 1024, "loss": {"128": 2.5, "1024": 2.4}}]])
    r = subprocess.run([sys.executable, "plot.py", str(run), "--out", str(tmp_path / "fig"), "--val-length", "512"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: --val-length 512: no run was evaluated at that length (lengths evaluated: 128, 1024)"]
    assert not (tmp_path / "fig" / "val_vs_time.png").exists()
    assert plot.main([str(run), "--out", str(tmp_path / "fig"), "--val-length", "128"]) == 0
    assert (tmp_path / "fig" / "val_vs_time.png").is_file()


def test_each_runs_jump_numbers_sit_on_their_own_line_in_its_colour(tmp_path, monkeypatch):
    runs = []
    for i, jump in enumerate((0.1, -0.2)):
        recs = [{"kind": "train", "step": s, "elapsed_s": s, "tokens": 1024 * s, "loss": 3.0} for s in (1, 2, 3)]
        recs += [{"kind": "stage", "step": 0, "elapsed_s": 0, "tokens": 0},
                 {"kind": "stage", "step": 1, "elapsed_s": 1, "tokens": 1024},
                 {"kind": "jump", "step": 2, "from": 32, "to": 64, "jump": jump}]
        runs.append(plot.load_run(write_metrics(tmp_path / f"run{i}", [json.dumps(r) for r in recs])))
    figs = []
    monkeypatch.setattr(plot, "save", lambda fig, path: figs.append(fig))
    plot.plot_train(runs, "elapsed_s", "s", tmp_path / "unused.png")
    marks = [(a.get_text(), a.xyann[1], a.get_color()) for a in figs[0].axes[0].texts]
    plt.close(figs[0])
    assert marks == [("+0.10", -12, "C0"), ("-0.20", -22, "C1")]


def test_figures_go_into_the_run_folder_at_its_longest_stage(tmp_path, monkeypatch):
    """No --out: figures/ inside the (first) run folder, never the repository; val_vs_time at the
    longest training stage (the README's val@1024), not the longest evaluated length (2048)."""
    run = write_metrics(tmp_path / "run", [json.dumps(r) for r in [
        {"kind": "config", "schedule": "128,256,512,1024"},
        {"kind": "train", "step": 1, "elapsed_s": 1.0, "tokens": 2048, "loss": 3.0},
        {"kind": "eval", "step": 1, "elapsed_s": 1.0, "tokens": 2048,
         "loss": {"128": 2.5, "1024": 2.4, "2048": 2.6}}]])
    drawn = []
    monkeypatch.setattr(plot, "plot_val_time", lambda runs, length, path: drawn.append((length, path)))
    monkeypatch.chdir(tmp_path)
    assert plot.main([str(run)]) == 0
    assert drawn == [("1024", run / "figures" / "val_vs_time.png")]
    assert (run / "figures" / "loss_vs_time.png").is_file() and not (tmp_path / "figures").exists()
    no_stage = plot.load_run(run) | {"config": []}     # a run without its config record: the longest shared
    assert plot.default_val_length([no_stage]) == "2048"
