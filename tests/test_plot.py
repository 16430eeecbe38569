"""plot.py draws from real metrics; experiments.py's time-to-reach arithmetic."""
import json

import pytest

import experiments
import plot
import train
from test_train import FAST


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
