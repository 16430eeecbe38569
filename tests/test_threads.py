"""--threads: the count is chosen by measuring, recorded, and never changes a run's losses."""
import json
from pathlib import Path

import pytest
import torch

import train
from harness import threads

FAST = ["--preset", "tiny", "--schedule", "32,64", "--tokens-per-step", "1024", "--max-tokens", "20480",
        "--eval-tokens", "2048", "--eval-lengths", "64", "--eval-interval", "1e9", "--log-interval", "0",
        "--sample-tokens", "0", "--seed", "3"]


@pytest.fixture(autouse=True)
def keep_threads():
    """Every test here sets torch's global thread count: give the next test the one it had."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def records(out, kind):
    return [r for r in map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_the_flag_takes_auto_or_a_positive_count():
    assert threads.threads_flag("auto") == "auto" and threads.threads_flag("1") == 1
    for bad in ("0", "-2", "two", "", "1.5"):
        with pytest.raises(Exception, match="expected 'auto'"):
            threads.threads_flag(bad)
    with pytest.raises(Exception, match="may use"):
        threads.threads_flag(str(threads.usable_cores() + 1))


def test_candidates_cover_every_small_count_and_the_cores():
    assert threads.candidates(1) == [1]
    assert threads.candidates(2) == [1, 2]
    assert threads.candidates(6) == [1, 2, 4, 6]
    assert threads.candidates(8) == [1, 2, 4, 8]


@pytest.mark.parametrize("fast", [1, 2])
def test_auto_keeps_the_count_that_measured_fastest(monkeypatch, fast):
    """A probe whose cost depends on the thread count: the cheap count wins, whichever it is."""
    import time
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    calls = []

    def probe():
        calls.append(torch.get_num_threads())
        time.sleep(0.001 if torch.get_num_threads() == fast else 0.03)
    record = threads.fit("auto", probe, "cpu", verbose=False)
    assert record["threads"] == fast and torch.get_num_threads() == fast, record
    assert set(record["ms"]) == {"1", "2"} and record["ms"][str(fast)] < record["ms"][str(3 - fast)]
    assert set(calls) == {1, 2}


def test_fixed_counts_and_the_environment_are_kept(monkeypatch):
    assert threads.fit(1, lambda: pytest.fail("a fixed count measures nothing"), "cpu")["threads"] == 1
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    record = threads.fit("auto", lambda: pytest.fail("OMP_NUM_THREADS is a choice made"), "cpu")
    assert record == {"threads": 2, "how": "OMP_NUM_THREADS"} and torch.get_num_threads() == 2
    assert threads.fit("auto", lambda: pytest.fail("a GPU run keeps torch's default"), "cuda:0") is None


@pytest.mark.skipif(threads.usable_cores() < 2, reason="needs two cores to run at two threads")
def test_the_thread_count_never_changes_the_losses(tmp_path):
    """The same --max-tokens run at 1 and at 2 threads: every step's loss and the final eval equal, bit for bit."""
    runs = {}
    for n in (1, 2):
        assert train.main(FAST + ["--threads", str(n), "--out", str(tmp_path / str(n))]) == 0
        runs[n] = ([r["loss"] for r in records(tmp_path / str(n), "train")], records(tmp_path / str(n), "eval")[-1]["loss"])
        assert [r["threads"] for r in records(tmp_path / str(n), "threads")] == [n]   # recorded once: fixed
    assert runs[1] == runs[2] and len(runs[1][0]) == 20


def test_auto_measures_each_stage_and_records_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert train.main(FAST + ["--out", str(tmp_path / "run")]) == 0
    fits = records(tmp_path / "run", "threads")
    assert [r["seq_len"] for r in fits] == [32, 64]          # one fit per stage, the first before the first eval
    counts = {str(n) for n in threads.candidates(threads.usable_cores())}
    assert all(r["how"] == "auto" and set(r["ms"]) == counts and r["threads"] in map(int, counts) for r in fits)
    printed = capsys.readouterr().out
    assert printed.count("threads T=") == 2 and printed.index("threads T=32") < printed.index("eval @")


def test_a_bad_count_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(FAST + ["--threads", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0] and "expected 'auto'" in err[0], err
